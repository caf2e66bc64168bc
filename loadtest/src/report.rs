//! The load run's report: a Markdown summary and PNG plots (latency over
//! time, throughput, score distributions of benign and attack events).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use outlier_proto::Verdict;
use plotters::prelude::*;

use crate::run::RunResult;

/// Percentile of a sample (nearest rank).
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[(((p / 100.0) * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Detection counts for a set of events.
#[derive(Debug, Default, Clone, Copy)]
pub struct Detection {
    pub events: u64,
    pub flagged: u64,
    pub alerted: u64,
    pub unscored: u64,
}

impl Detection {
    pub fn rate(&self) -> f64 {
        if self.events == 0 {
            f64::NAN
        } else {
            self.flagged as f64 / self.events as f64
        }
    }
}

/// Benign, malicious overall and malicious per tactic.
pub fn detection(r: &RunResult) -> (Detection, Detection, BTreeMap<String, Detection>) {
    let (mut benign, mut malicious) = (Detection::default(), Detection::default());
    let mut per_tactic: BTreeMap<String, Detection> = BTreeMap::new();
    for (label, seen) in &r.outcomes {
        let l = &r.labels[*label as usize];
        let bump = |d: &mut Detection| {
            d.events += 1;
            match seen {
                Some(s) if s.verdict == Verdict::Alert => {
                    d.flagged += 1;
                    d.alerted += 1;
                }
                Some(s) if s.verdict == Verdict::Warn => d.flagged += 1,
                Some(_) => {}
                None => d.unscored += 1,
            }
        };
        if l.malicious {
            bump(&mut malicious);
            bump(per_tactic.entry(l.tactic.clone()).or_default());
        } else {
            bump(&mut benign);
        }
    }
    (benign, malicious, per_tactic)
}

/// Writes `report.md` and its plots into `dir`; returns the Markdown.
pub fn write(r: &RunResult, dir: &Path, command: &str, machine: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)?;
    let after = |l: &[(f64, f64)]| -> Vec<f64> {
        l.iter()
            .filter(|x| x.0 >= r.warmup_secs)
            .map(|x| x.1)
            .collect()
    };
    let all = |l: &[(f64, f64)]| -> Vec<f64> { l.iter().map(|x| x.1).collect() };
    let sustained = r.produced as f64 / r.produce_secs;
    let (benign, malicious, per_tactic) = detection(r);
    let loss_scored = r.produced.saturating_sub(r.scored_unique);
    let loss_rows = r.produced.saturating_sub(r.rows_in_clickhouse);

    let mut md = String::new();
    writeln!(md, "# Load test report\n")?;
    writeln!(md, "Command: `{command}`  ")?;
    writeln!(md, "Machine: {machine}  ")?;
    writeln!(md, "Org of the run: `{}`\n", r.org)?;
    writeln!(md, "| measure | result |\n|---|---|")?;
    writeln!(
        md,
        "| events produced | {} in {:.0} s |",
        r.produced, r.produce_secs
    )?;
    writeln!(md, "| sustained rate | {sustained:.0} events/s |")?;
    let pcts = |v: &[f64]| {
        format!(
            "p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            percentile(v, 50.0),
            percentile(v, 90.0),
            percentile(v, 99.0),
            percentile(v, 100.0)
        )
    };
    let latency_rows = [
        (
            "produced → scored (Kafka), after warm-up".to_string(),
            after(&r.scored_latency),
        ),
        (
            "produced → queryable (ClickHouse, 1 in 500 sampled), after warm-up".to_string(),
            after(&r.queryable_latency),
        ),
        (
            format!(
                "produced → scored, whole run ({:.0} s warm-up included)",
                r.warmup_secs
            ),
            all(&r.scored_latency),
        ),
        (
            "produced → queryable, whole run".to_string(),
            all(&r.queryable_latency),
        ),
    ];
    for (what, v) in &latency_rows {
        writeln!(md, "| {what} | {} |", pcts(v))?;
    }
    writeln!(
        md,
        "| loss: produced − scored | {loss_scored} ({} scored twice) |",
        r.scored_duplicates
    )?;
    writeln!(md, "| loss: produced − rows in ClickHouse | {loss_rows} |")?;
    let inc = r.incidents;
    let host_hours = r.hosts as f64 * r.produce_secs / 3600.0;
    writeln!(
        md,
        "| flagged events grouped into incidents (whole run) | {} in {} incidents: {:.1} per incident; {} incidents with an alert |",
        inc.events,
        inc.incidents,
        inc.events as f64 / inc.incidents.max(1) as f64,
        inc.with_alert
    )?;
    writeln!(
        md,
        "| incidents per host-hour ({} hosts × {:.0} s) | {:.1} ({:.1} with an alert) |",
        r.hosts,
        r.produce_secs,
        inc.incidents as f64 / host_hours.max(1e-9),
        inc.with_alert as f64 / host_hours.max(1e-9)
    )?;
    writeln!(
        md,
        "| attack events flagged (warn or alert), after warm-up | {:.1}% of {} ({:.1}% alert) |",
        100.0 * malicious.rate(),
        malicious.events,
        100.0 * malicious.alerted as f64 / malicious.events.max(1) as f64
    )?;
    writeln!(
        md,
        "| benign events flagged (false-positive rate), after warm-up | {:.2}% of {} ({:.2}% alert) |",
        100.0 * benign.rate(),
        benign.events,
        100.0 * benign.alerted as f64 / benign.events.max(1) as f64
    )?;
    writeln!(md, "\n## Detection per ATT&CK tactic (after warm-up)\n")?;
    writeln!(
        md,
        "| tactic | events | flagged | recall | alert |\n|---|---|---|---|---|"
    )?;
    for (t, d) in &per_tactic {
        writeln!(
            md,
            "| {t} | {} | {} | {:.1}% | {:.1}% |",
            d.events,
            d.flagged,
            100.0 * d.rate(),
            100.0 * d.alerted as f64 / d.events.max(1) as f64
        )?;
    }
    writeln!(
        md,
        "\n![latency](latency.png)\n\n![throughput](throughput.png)\n\n![scores](scores.png)"
    )?;
    std::fs::write(dir.join("report.md"), &md)?;

    plot_latency(r, &dir.join("latency.png"))?;
    plot_throughput(r, &dir.join("throughput.png"))?;
    plot_scores(r, &dir.join("scores.png"))?;
    Ok(md)
}

fn windows(points: &[(f64, f64)], width: f64) -> Vec<(f64, f64, f64)> {
    let mut by: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (t, v) in points {
        by.entry((t / width) as i64).or_default().push(*v);
    }
    by.into_iter()
        .map(|(k, v)| (k as f64 * width, percentile(&v, 50.0), percentile(&v, 99.0)))
        .collect()
}

fn plot_latency(r: &RunResult, path: &Path) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let s = windows(&r.scored_latency, 10.0);
    let q = windows(&r.queryable_latency, 10.0);
    let ymax = s.iter().chain(&q).map(|x| x.2).fold(10.0, f64::max) * 1.1;
    let xmax = r.produce_secs.max(1.0);
    let mut c = ChartBuilder::on(&root)
        .caption("End-to-end latency (10 s windows)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    c.configure_mesh()
        .x_desc("seconds into the run")
        .y_desc("ms")
        .draw()?;
    for (data, name, color, p99) in [
        (&s, "produced→scored p50", BLUE, false),
        (&s, "produced→scored p99", RED, true),
        (&q, "produced→queryable p50", GREEN, false),
        (&q, "produced→queryable p99", MAGENTA, true),
    ] {
        c.draw_series(LineSeries::new(
            data.iter().map(|x| (x.0, if p99 { x.2 } else { x.1 })),
            color.stroke_width(2),
        ))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot_throughput(r: &RunResult, path: &Path) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let ymax = r
        .produced_per_sec
        .iter()
        .chain(&r.scored_per_sec)
        .copied()
        .max()
        .unwrap_or(1) as f64
        * 1.15;
    let xmax = r.produced_per_sec.len().max(r.scored_per_sec.len()).max(2) as f64;
    let mut c = ChartBuilder::on(&root)
        .caption("Throughput", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    c.configure_mesh()
        .x_desc("seconds into the run")
        .y_desc("events/s")
        .draw()?;
    c.draw_series(LineSeries::new(
        r.produced_per_sec
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, *v as f64)),
        BLUE.stroke_width(2),
    ))?
    .label("produced")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    c.draw_series(LineSeries::new(
        r.scored_per_sec
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, *v as f64)),
        RED.stroke_width(2),
    ))?
    .label("scored")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot_scores(r: &RunResult, path: &Path) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (mut benign, mut attack) = ([0u64; 20], [0u64; 20]);
    for (label, seen) in &r.outcomes {
        if let Some(s) = seen {
            let b = ((s.score * 20.0) as usize).min(19);
            if r.labels[*label as usize].malicious {
                attack[b] += 1;
            } else {
                benign[b] += 1;
            }
        }
    }
    let norm = |h: &[u64; 20]| {
        let t = h.iter().sum::<u64>().max(1) as f64;
        h.iter().map(|x| *x as f64 / t).collect::<Vec<_>>()
    };
    let (b, a) = (norm(&benign), norm(&attack));
    let ymax = b.iter().chain(&a).copied().fold(0.01, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&root)
        .caption(
            "Anomaly score distribution (after warm-up)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1f64, 0f64..ymax)?;
    c.configure_mesh()
        .x_desc("anomaly score")
        .y_desc("fraction of events")
        .draw()?;
    for (data, name, color, off) in [(&b, "benign", BLUE, 0.0), (&a, "attack", RED, 0.025)] {
        c.draw_series(data.iter().enumerate().map(|(i, v)| {
            let x0 = i as f64 / 20.0 + off;
            Rectangle::new([(x0, 0.0), (x0 + 0.022, *v)], color.mix(0.7).filled())
        }))?
        .label(name)
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 50.0);
        assert_eq!(percentile(&xs, 99.0), 99.0);
        assert_eq!(percentile(&xs, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
