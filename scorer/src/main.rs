use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use outlier_common::{config, telemetry};
use outlier_proto::FeedbackLabel;
use outlier_scorer::ScorerConfig;

/// jemalloc, not glibc's allocator: see `outlier_common::alloc`.
#[global_allocator]
static ALLOC: outlier_common::alloc::Jemalloc = outlier_common::alloc::Jemalloc;

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Tell the scorers an event is benign (learn it) or malicious (forget it).
    Feedback {
        /// JSON Lines v1 events (as replayed), or `-` for stdin.
        #[arg(long)]
        file: PathBuf,
        #[arg(long, value_enum)]
        label: Label,
        /// Who says so (audited in ClickHouse feedback_audit); default: the
        /// Kafka principal, else $USER.
        #[arg(long)]
        actor: Option<String>,
        /// Why (audited).
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Label {
    Benign,
    Malicious,
}

#[tokio::main]
async fn main() -> ExitCode {
    outlier_common::install_crypto_provider();
    telemetry::init_tracing();
    let cli = Cli::parse();
    let mut cfg: ScorerConfig = match config::load("OUTLIER_SCORER", cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scorer: bad configuration: {}", config::describe(&e));
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("scorer: bad configuration: {e}");
        return ExitCode::from(2);
    }
    if let Some(b) = cli.brokers {
        cfg.kafka.brokers = b;
    }
    if let Some(u) = cli.baselines {
        cfg.baseline.uri = u;
    }
    if cli.print_config {
        println!("{}", config::to_redacted_json(&cfg));
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Feedback {
        file,
        label,
        actor,
        note,
    }) = cli.command
    {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(&file)
        };
        let events = match text
            .map_err(|e| e.to_string())
            .and_then(|t| outlier_scorer::feedback::parse_events(&t))
        {
            Ok(e) => e,
            Err(e) => {
                eprintln!("scorer: {}: {e}", file.display());
                return ExitCode::from(2);
            }
        };
        let actor = actor
            .or_else(|| cfg.kafka.sasl.as_ref().map(|s| s.username.clone()))
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "cli".into());
        let label = match label {
            Label::Benign => FeedbackLabel::Benign,
            Label::Malicious => FeedbackLabel::Malicious,
        };
        for e in events {
            let id = e.event_id.clone();
            if let Err(err) =
                outlier_scorer::feedback::publish(&cfg.kafka, e, label, &actor, &note).await
            {
                eprintln!("scorer: feedback on {id} not delivered: {err}");
                return ExitCode::from(3);
            }
            eprintln!("scorer: feedback on {id} published");
        }
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
