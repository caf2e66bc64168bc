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
        /// Real captures to add (benign activity of real hosts, with attacks
        /// injected), e.g. data/real.
        #[arg(long)]
        real: Option<PathBuf>,
        /// Use each real capture up to this fraction of its time span (the
        /// rest is for `loadtest eval`: the decision's fit window, then
        /// validation).
        #[arg(long, default_value_t = 0.49)]
        real_until: f64,
        /// Attacks of the corpus injected into the real captures.
        #[arg(long, default_value_t = 300)]
        real_attacks: usize,
    },
    /// Detection on real hosts (docs/detection.md): attack tests injected
    /// into real captures, scored by the scorer's own per-event path
    /// in-process, with the first seed's design beside it.
    Eval {
        /// Folder of real captures (`*.jsonl.gz` from scripts/record-benign).
        #[arg(long, default_value = "data/real")]
        captures: PathBuf,
        /// Attack tests (corpus format); repeat for several files.
        #[arg(long, default_value = "data/attack_tests.jsonl")]
        attacks: Vec<PathBuf>,
        /// At most this many tests from each attacks file (a deterministic
        /// sample; 0: all of them).
        #[arg(long, default_value_t = 0)]
        per_file: usize,
        /// Fraction of each capture (by time) replayed as the baseline.
        #[arg(long, default_value_t = 0.7)]
        split: f64,
        /// Use each capture only up to this fraction of its time span (the
        /// decision's weights are fitted with `--until 0.7 --split 0.7`,
        /// before the validation part).
        #[arg(long, default_value_t = 1.0)]
        until: f64,
        /// Scorer configuration (TOML) to evaluate; default: the defaults.
        #[arg(long)]
        scorer_config: Option<PathBuf>,
        /// Write every validation outcome here (TSV).
        #[arg(long)]
        outcomes: Option<PathBuf>,
        /// Write the labelled streams here (for scripts/eval-detection).
        #[arg(long)]
        streams: Option<PathBuf>,
        /// Org of the streams.
        #[arg(long, default_value = "eval")]
        org: String,
        /// Attack tests' events count towards their workload's own operating
        /// point (scoring.decision.own_budget): the tests, dozens per
        /// host-hour, then raise the threshold for each other. By default
        /// each test is judged as if it were the only attack.
        #[arg(long)]
        attacks_in_own: bool,
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
        Command::Features {
            events,
            ref out,
            ref real,
            real_until,
            real_attacks,
        } => {
            let real = match real {
                Some(dir) => Some(outlier_loadtest::dataset::RealRows {
                    captures: outlier_loadtest::eval::load_captures(dir)?,
                    until: real_until,
                    attacks: real_attacks,
                }),
                None => None,
            };
            let w = outlier_loadtest::dataset::write(
                sim("train".into(), "train".into()),
                corpus,
                events,
                out,
                real,
            )?;
            println!(
                "{} rows ({} malicious, {} from real captures) written to {}",
                w.rows,
                w.malicious,
                w.real,
                out.display()
            );
        }
        Command::Eval {
            captures,
            attacks,
            per_file,
            split,
            until,
            scorer_config,
            outcomes,
            streams,
            org,
            attacks_in_own,
        } => {
            eval(
                &captures,
                &attacks,
                per_file,
                split,
                until,
                scorer_config.as_deref(),
                outcomes.as_deref(),
                streams.as_deref(),
                &org,
                cli.seed,
                attacks_in_own,
            )?;
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
                    // OUTLIER_KAFKA_USER/_PASSWORD_FILE, or the local stack's admin.
                    sasl: outlier_common::kafka::SaslConfig::from_env(),
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

#[allow(clippy::too_many_arguments)]
fn eval(
    captures: &std::path::Path,
    attacks: &[PathBuf],
    per_file: usize,
    split: f64,
    until: f64,
    scorer_config: Option<&std::path::Path>,
    outcomes: Option<&std::path::Path>,
    streams_dir: Option<&std::path::Path>,
    org: &str,
    seed: u64,
    attacks_in_own: bool,
) -> anyhow::Result<()> {
    use outlier_loadtest::eval;
    let caps: Vec<_> = eval::load_captures(captures)?
        .iter()
        .map(|c| c.until(until))
        .collect();
    let mut tests = Vec::new();
    for a in attacks {
        let mut t = eval::load_attacks(a)?;
        if per_file > 0 && t.len() > per_file {
            // Every k-th test: deterministic, spread over the file.
            let k = t.len() as f64 / per_file as f64;
            t = (0..per_file)
                .map(|i| t[(i as f64 * k) as usize].clone())
                .collect();
        }
        tests.extend(t);
    }
    let streams = eval::build_streams(&caps, tests, split, org, seed);
    if let Some(dir) = streams_dir {
        eval::write_streams(&streams, dir)?;
    }
    let cfg: outlier_scorer::ScorerConfig =
        outlier_common::config::load("OUTLIER_SCORER", scorer_config).map_err(|e| {
            anyhow::anyhow!("scorer config: {}", outlier_common::config::describe(&e))
        })?;
    let classifier =
        outlier_scorer::threat::classifier(&cfg.scoring.classifier).map_err(anyhow::Error::msg)?;
    let warn_p = classifier
        .as_ref()
        .map(|c| c.model().meta.warn_threshold)
        .unwrap_or(1.0);
    let mut judge = outlier_scorer::judge::Judge::new(
        cfg.scoring.clone(),
        cfg.baseline.warmup_events,
        classifier,
    );
    let mut prev_scoring = cfg.scoring.clone();
    prev_scoring.decision.mode = outlier_scorer::config::DecisionMode::Max;
    let prev_classifier =
        outlier_scorer::threat::classifier(&cfg.scoring.classifier).map_err(anyhow::Error::msg)?;
    let mut previous = outlier_scorer::judge::Judge::new(
        prev_scoring,
        cfg.baseline.warmup_events,
        prev_classifier,
    );
    let out = eval::score_streams(&streams, &mut judge, &mut previous, attacks_in_own);
    if let Some(p) = outcomes {
        eval::write_outcomes(&out, p)?;
    }
    let hours: f64 = streams.host_hours.values().sum();
    let benign = out.iter().filter(|o| o.truth.test.is_none()).count();
    println!(
        "{} hosts, {} baseline events, {} validation events ({} benign, {:.2} host-hours), {} attack tests",
        caps.len(),
        streams.baseline.len(),
        out.len(),
        benign,
        hours,
        streams.tests.len()
    );
    println!(
        "| decision | attack tests flagged | benign events flagged | benign flags per host-hour |"
    );
    println!("|---|---|---|---|");
    let row = |r: eval::Rates| {
        println!(
            "| {} | {:.1}% | {:.3}% | {:.2} |",
            r.rule,
            100.0 * r.tests_flagged,
            100.0 * r.benign_flagged,
            r.per_host_hour
        )
    };
    row(eval::rates(
        "this design: verdict warn or alert",
        &out,
        hours,
        |o| o.verdict >= 1,
    ));
    row(eval::rates(
        "this design: verdict alert",
        &out,
        hours,
        |o| o.verdict >= 2,
    ));
    row(eval::rates(
        "this design: alert, and repeats of a pending alert",
        &out,
        hours,
        |o| o.verdict >= 2 || o.signals.repeat_of_alert,
    ));
    row(eval::rates(
        "previous design: warn or alert",
        &out,
        hours,
        |o| o.previous >= 1,
    ));
    row(eval::rates("previous design: alert", &out, hours, |o| {
        o.previous >= 2
    }));
    row(eval::rates(
        "anomaly score ≥ 0.5 alone",
        &out,
        hours,
        |o| o.signals.anomaly >= 0.5,
    ));
    row(eval::rates(
        &format!("classifier alone (P ≥ {warn_p:.3})"),
        &out,
        hours,
        |o| o.signals.p_malicious >= warn_p,
    ));
    row(eval::rates(
        "first seed's design (≥ 0.6)",
        &out,
        hours,
        |o| o.seed_score >= 0.6,
    ));
    for budget in [0.001, 0.0001] {
        row(
            eval::at_budget("this design's P", &out, hours, budget, |o| {
                o.signals.p_decision
            })
            .1,
        );
        row(eval::at_budget("anomaly", &out, hours, budget, |o| o.signals.anomaly).1);
        row(eval::at_budget("first seed's design", &out, hours, budget, |o| o.seed_score).1);
        row(eval::at_budget("classifier P", &out, hours, budget, |o| {
            o.signals.p_malicious
        })
        .1);
    }
    println!("\nper host (this design; the first seed's design ≥ 0.6):\n");
    println!(
        "| host | validation hours | benign events | flagged (warn or alert) | alerted | repeats of a pending alert | per host-hour | seed's design flagged |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (host, h) in &streams.host_hours {
        let mine: Vec<&eval::Outcome> = out
            .iter()
            .filter(|o| &o.host == host && o.truth.test.is_none())
            .collect();
        let n = mine.len().max(1) as f64;
        let warn = mine.iter().filter(|o| o.verdict >= 1).count();
        let alert = mine.iter().filter(|o| o.verdict >= 2).count();
        let repeats = mine.iter().filter(|o| o.signals.repeat_of_alert).count();
        let seed = mine.iter().filter(|o| o.seed_score >= 0.6).count();
        println!(
            "| {host} | {h:.2} | {} | {:.3}% | {:.3}% | {:.3}% | {:.1} | {:.3}% |",
            mine.len(),
            100.0 * warn as f64 / n,
            100.0 * alert as f64 / n,
            100.0 * repeats as f64 / n,
            warn as f64 / h.max(1e-9),
            100.0 * seed as f64 / n
        );
    }
    let (right, of) = eval::tactic_accuracy(&out, |o| o.verdict >= 1);
    println!("\ntop-1 tactic right for {right} of {of} flagged attack tests");
    Ok(())
}
