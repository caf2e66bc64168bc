//! `loadtest`: the fleet simulator and the load run.
//!
//!     loadtest generate --events 100000 --out fleet.jsonl
//!     loadtest features --attack-rate 0.1 --events 300000 --out target/train
//!     loadtest run --rate 20000 --duration 600 --report docs/loadtest

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use outlier_common::kafka::KafkaConfig;
use outlier_loadtest::run::{RunConfig, run};
use outlier_loadtest::sim::{Corpus, SimConfig, Simulator};

#[derive(Parser)]
#[command(version, about = "Outlier's fleet simulator and load test")]
struct Cli {
    /// Folder with benign_commands.jsonl and attacks_train.jsonl.
    #[arg(long, default_value = "data", global = true)]
    data: PathBuf,
    #[arg(long, default_value_t = 1, global = true)]
    seed: u64,
    #[arg(long, default_value_t = 50, global = true)]
    hosts: usize,
    #[arg(long, default_value_t = 24, global = true)]
    workloads: usize,
    /// Fraction of activities that are attacks.
    #[arg(long, default_value_t = 0.002, global = true)]
    attack_rate: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write labelled JSON Lines v1 (for replay and for training).
    Generate {
        #[arg(long)]
        events: usize,
        /// Output file, or `-` for stdout.
        #[arg(long, default_value = "-")]
        out: PathBuf,
        #[arg(long, default_value = "sim")]
        org: String,
    },
    /// Write the classifier's training data: simulated events as feature
    /// vectors with their labels (see scripts/train).
    Features {
        #[arg(long, default_value_t = 300_000)]
        events: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Drive a running stack at a rate and report what it sustained.
    Run {
        /// Events per second.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// Seconds of load measured, after the warm-up (the run produces for
        /// warm-up + duration seconds).
        #[arg(long, default_value_t = 600)]
        duration: u64,
        /// Seconds of load at the start excluded from the detection and
        /// latency figures (the workloads learn their baselines, the
        /// services start up); the report shows whole-run latency too.
        #[arg(long, default_value_t = 60)]
        warmup: u64,
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value = "http://127.0.0.1:8123")]
        clickhouse_url: String,
        #[arg(long, default_value = "outlier")]
        clickhouse_db: String,
        /// Where to write report.md and the plots.
        #[arg(long, default_value = "loadtest-report")]
        report: PathBuf,
        /// Describe the machine in the report.
        #[arg(long, default_value = "")]
        machine: String,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    outlier_common::telemetry::init_tracing();
    let cli = Cli::parse();
    let corpus = Arc::new(
        Corpus::load(&cli.data).map_err(|e| anyhow::anyhow!("{}: {e}", cli.data.display()))?,
    );
    let sim = |org: String, prefix: String| SimConfig {
        seed: cli.seed,
        org,
        hosts: cli.hosts,
        workloads: cli.workloads,
        attack_rate: cli.attack_rate,
        id_prefix: prefix,
        ..SimConfig::default()
    };
    match cli.command {
        Command::Generate {
            events,
            out,
            ref org,
        } => {
            let mut w: Box<dyn Write> = if out.as_os_str() == "-" {
                Box::new(std::io::BufWriter::new(std::io::stdout()))
            } else {
                Box::new(std::io::BufWriter::new(std::fs::File::create(&out)?))
            };
            for e in Simulator::new(sim(org.clone(), "sim".into()), corpus).take(events) {
                serde_json::to_writer(&mut w, &e)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
        }
        Command::Features { events, ref out } => {
            let w = outlier_loadtest::dataset::write(
                sim("train".into(), "train".into()),
                corpus,
                events,
                out,
            )?;
            println!(
                "{} rows ({} malicious) written to {}",
                w.rows,
                w.malicious,
                out.display()
            );
        }
        Command::Run {
            rate,
            duration,
            warmup,
            brokers,
            clickhouse_url,
            clickhouse_db,
            report,
            machine,
            quiet,
        } => {
            let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let org = format!("loadtest-{stamp}");
            let cfg = RunConfig {
                kafka: KafkaConfig {
                    brokers,
                    ..KafkaConfig::default()
                },
                clickhouse_url,
                clickhouse_db,
                rate,
                duration: Duration::from_secs(warmup + duration),
                warmup: Duration::from_secs(warmup),
                sim: sim(org, format!("lt{stamp}")),
                drain: Duration::from_secs(120),
                progress: !quiet,
            };
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let result = run(cfg, corpus).await?;
            let md = outlier_loadtest::report::write(&result, &report, &command, &machine)?;
            println!("{md}");
            println!("report: {}", report.join("report.md").display());
        }
    }
    Ok(())
}
