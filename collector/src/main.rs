use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use outlier_collector::config::CollectorConfig;
use outlier_collector::publish::Publisher;
use outlier_collector::replay;
use outlier_common::{config, telemetry};
use tokio::io::BufReader;

/// Outlier's host agent.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML); settings can also come from OUTLIER_COLLECTOR__* variables.
    #[arg(long, env = "OUTLIER_COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides the config).
    #[arg(long)]
    brokers: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish JSON Lines v1 events from a file (or `-` for stdin) to Kafka.
    Replay {
        /// Path of the file, or `-` for standard input.
        #[arg(long)]
        file: PathBuf,
        /// Publish to this topic instead of the configured events topic.
        #[arg(long)]
        topic: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_tracing();
    let cli = Cli::parse();
    let mut cfg: CollectorConfig = match config::load("OUTLIER_COLLECTOR", cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("collector: bad configuration: {}", config::describe(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(b) = cli.brokers {
        cfg.kafka.brokers = b;
    }
    match cli.command {
        Command::Replay { file, topic } => {
            if let Some(t) = topic {
                cfg.kafka.topics.events = t;
            }
            run_replay(&cfg, &file).await
        }
    }
}

async fn run_replay(cfg: &CollectorConfig, file: &std::path::Path) -> ExitCode {
    // Fail fast, and say so, when Kafka cannot be reached at all.
    let probe = {
        let k = cfg.kafka.clone();
        tokio::task::spawn_blocking(move || k.probe(Duration::from_secs(10))).await
    };
    match probe {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(brokers = %cfg.kafka.brokers, error = %e, "kafka unreachable");
            eprintln!("collector: kafka unreachable at {}: {e}", cfg.kafka.brokers);
            return ExitCode::from(3);
        }
        Err(e) => {
            eprintln!("collector: {e}");
            return ExitCode::FAILURE;
        }
    }
    let publisher = match Publisher::new(&cfg.kafka, "outlier-collector-replay") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("collector: cannot create kafka producer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stats = if file.as_os_str() == "-" {
        replay::replay(BufReader::new(tokio::io::stdin()), &publisher).await
    } else {
        match tokio::fs::File::open(file).await {
            Ok(f) => replay::replay(BufReader::new(f), &publisher).await,
            Err(e) => {
                eprintln!("collector: cannot open {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    };
    let stats = match stats {
        Ok(s) => s,
        Err(e) => {
            eprintln!("collector: reading {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let _ = publisher.flush(Duration::from_secs(30));
    eprintln!(
        "collector: {} lines, {} published, {} invalid (skipped), {} failed",
        stats.lines, stats.published, stats.invalid, stats.failed
    );
    if stats.failed > 0 {
        eprintln!(
            "collector: kafka did not acknowledge {} events",
            stats.failed
        );
        return ExitCode::from(3);
    }
    if stats.published == 0 {
        eprintln!("collector: no valid event in the input");
        return ExitCode::from(4);
    }
    ExitCode::SUCCESS
}
