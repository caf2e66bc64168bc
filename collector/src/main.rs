use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use outlier_collector::config::{CollectorConfig, Mode};
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
    /// Print the effective configuration (JSON) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Auto,
    Ebpf,
    Procfs,
}

#[derive(Subcommand)]
enum Command {
    /// Capture this host's process executions, connections and sensitive
    /// file opens (eBPF, or the /proc fallback) and publish them until SIGTERM.
    Run {
        /// Capture mode (overrides capture.mode): auto tries eBPF first.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Spool directory (overrides spool.dir).
        #[arg(long)]
        spool: Option<PathBuf>,
        /// Also print every event to stdout as JSON Lines v1.
        #[arg(long)]
        print: bool,
    },
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
    if let Err(e) = cfg.kafka.validate() {
        eprintln!("collector: bad configuration: {e}");
        return ExitCode::from(2);
    }
    if let Some(Command::Run { mode, spool, .. }) = &cli.command {
        if let Some(m) = mode {
            cfg.capture.mode = match m {
                ModeArg::Auto => Mode::Auto,
                ModeArg::Ebpf => Mode::Ebpf,
                ModeArg::Procfs => Mode::Procfs,
            };
        }
        if let Some(s) = spool {
            cfg.spool.dir.clone_from(s);
        }
    }
    if cli.print_config {
        println!("{}", config::to_redacted_json(&cfg));
        return ExitCode::SUCCESS;
    }
    match cli.command {
        None => {
            eprintln!("collector: a command is needed: run or replay (see --help)");
            ExitCode::from(2)
        }
        Some(Command::Run { print, .. }) => {
            let shutdown = telemetry::shutdown_on_signals();
            match outlier_collector::live::run(cfg, print, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "collector failed");
                    eprintln!("collector: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Replay { file, topic }) => {
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
