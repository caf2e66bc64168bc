use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use outlier_common::{config, telemetry};
use outlier_indexer::IndexerConfig;

/// jemalloc, not glibc's allocator: see `outlier_common::alloc`.
#[global_allocator]
static ALLOC: outlier_common::alloc::Jemalloc = outlier_common::alloc::Jemalloc;

/// Outlier's indexer: sinks scored events into ClickHouse.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML); settings can also come from OUTLIER_INDEXER__* variables.
    #[arg(long, env = "OUTLIER_INDEXER_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides the config).
    #[arg(long)]
    brokers: Option<String>,
    /// ClickHouse HTTP URL (overrides the config).
    #[arg(long)]
    clickhouse_url: Option<String>,
    /// Print the effective configuration (JSON) and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_tracing();
    outlier_indexer::install_crypto_provider();
    let cli = Cli::parse();
    let mut cfg: IndexerConfig = match config::load("OUTLIER_INDEXER", cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("indexer: bad configuration: {}", config::describe(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(b) = cli.brokers {
        cfg.kafka.brokers = b;
    }
    if let Some(u) = cli.clickhouse_url {
        cfg.clickhouse.url = u;
    }
    if cli.print_config {
        println!("{}", config::to_redacted_json(&cfg));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = cfg.validate() {
        eprintln!("indexer: bad configuration: {e}");
        return ExitCode::from(2);
    }
    let shutdown = telemetry::shutdown_on_signals();
    match outlier_indexer::run(cfg, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "indexer failed");
            ExitCode::FAILURE
        }
    }
}
