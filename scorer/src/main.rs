use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use outlier_common::{config, telemetry};
use outlier_scorer::ScorerConfig;

/// Outlier's scorer: scores events against learned per-workload baselines.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML); settings can also come from OUTLIER_SCORER__* variables.
    #[arg(long, env = "OUTLIER_SCORER_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides the config).
    #[arg(long)]
    brokers: Option<String>,
    /// LanceDB location for baselines (overrides the config).
    #[arg(long)]
    baselines: Option<String>,
    /// Print the effective configuration (JSON) and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_tracing();
    let cli = Cli::parse();
    let mut cfg: ScorerConfig = match config::load("OUTLIER_SCORER", cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scorer: bad configuration: {}", config::describe(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(b) = cli.brokers {
        cfg.kafka.brokers = b;
    }
    if let Some(u) = cli.baselines {
        cfg.baseline.uri = u;
    }
    if cli.print_config {
        println!("{}", serde_json::to_string_pretty(&cfg).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let shutdown = telemetry::shutdown_on_signals();
    match outlier_scorer::run(cfg, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "scorer failed");
            ExitCode::FAILURE
        }
    }
}
