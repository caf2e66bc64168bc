//! Live capture on this machine, for real: the `collector run` binary is
//! started (as root) against the test stack's Kafka, this test starts
//! processes, opens files and makes connections, and asserts that the
//! collector published exactly those events with the right fields — once
//! with the eBPF programs and once with the /proc fallback.
//!
//! Needs root (eBPF, and /proc of every process) and the test stack's Kafka
//! (`scripts/stack up --infra`, or `scripts/test`).
#![cfg(feature = "services")]

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outlier_common::kafka::{KafkaConfig, SaslConfig};
use outlier_proto::{Event, Protocol, event::Detail};
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn brokers() -> String {
    std::env::var("OUTLIER_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "live capture tests load eBPF programs and read every process's /proc: run them as root"
    );
}

/// A running `collector run`, publishing to a topic of its own.
struct Collector {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn start(mode: &str, brokers: &str, topic: &str, org: &str, extra_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "http_addr = \"127.0.0.1:0\"\n\
                 [identity]\norg = \"{org}\"\nhost = \"test-host\"\n\
                 [workloads]\ndefault = \"live-test\"\n\
                 [spool]\ndir = \"{}\"\n\
                 [kafka]\nbrokers = \"{brokers}\"\n\
                 [kafka.topics]\nevents = \"{topic}\"\n{extra_toml}\n{}",
                dir.path().join("spool").display(),
                SaslConfig::from_env()
                    .map(|s| s.to_toml())
                    .unwrap_or_default()
            ),
        )
        .unwrap();
        let log = dir.path().join("collector.log");
        let child = Command::new(env!("CARGO_BIN_EXE_collector"))
            .arg("--config")
            .arg(&config)
            .args(["run", "--mode", mode])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let c = Self {
            child,
            log,
            _dir: dir,
        };
        c.wait_for_log("collector running", Duration::from_secs(30));
        c
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(what) {
            assert!(
                Instant::now() < deadline,
                "collector did not log {what:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with SIGTERM, as a service manager would.
    fn stop(mut self) -> String {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = self.child.wait().unwrap();
        let log = self.log_text();
        assert!(status.success(), "collector exited with {status}:\n{log}");
        assert!(log.contains("collector stopped"), "{log}");
        log
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn topic(name: &str) -> (KafkaConfig, String) {
    let kafka = KafkaConfig {
        brokers: brokers(),
        sasl: SaslConfig::from_env(),
        ..KafkaConfig::default()
    };
    kafka.probe(Duration::from_secs(5)).unwrap_or_else(|e| {
        panic!(
            "Kafka not reachable at {} ({e}): run scripts/stack up --infra",
            kafka.brokers
        )
    });
    let t = format!("{name}-{}", uuid::Uuid::now_v7().simple());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(kafka.ensure_topics(&[(&t, 3)])).unwrap();
    (kafka, t)
}

/// Reads events from `topic` until `done` or `timeout`.
fn read_events(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let group = format!("reader-{}", uuid::Uuid::now_v7().simple());
    let consumer: BaseConsumer = kafka.consumer_config("live-test", &group).create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while Instant::now() < deadline && !done(&out) {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            if outlier_common::kafka::is_heartbeat(&m) {
                continue;
            }
            let e = Event::decode(m.payload().unwrap()).expect("an outlier.v1.Event");
            assert_eq!(
                m.key(),
                Some(e.partition_key().as_bytes()),
                "keyed by org/workload"
            );
            out.push(e);
        }
    }
    out
}

fn argv(e: &Event) -> Vec<String> {
    match &e.detail {
        Some(Detail::Exec(x)) => x.argv.clone(),
        _ => Vec::new(),
    }
}

fn own_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim_end()
        .to_string()
}

/// Accepts connections on a listener and reports each peer's address
/// (which is the connecting process's local address).
fn accept_peers(l: TcpListener, n: usize) -> std::thread::JoinHandle<Vec<SocketAddr>> {
    std::thread::spawn(move || {
        let mut peers = Vec::new();
        let mut held = Vec::new();
        for _ in 0..n {
            let (mut s, peer) = l.accept().unwrap();
            peers.push(peer);
            // Hold the connection until the client closes it.
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            held.push(std::thread::spawn(move || {
                let mut b = [0u8; 16];
                let _ = s.read(&mut b);
            }));
        }
        for h in held {
            let _ = h.join();
        }
        peers
    })
}

/// What the test does, and what the collector must report of it.
struct Workload {
    /// Children started, by role.
    pids: BTreeMap<&'static str, u32>,
    marker: String,
    written: std::path::PathBuf,
    peers: Vec<SocketAddr>,
    v4_port: u16,
    v6_port: u16,
    _dir: tempfile::TempDir,
}

fn sh(args: &[&OsStr]) -> Child {
    Command::new("/bin/sh").args(args).spawn().unwrap()
}

/// Starts the processes. Each lives ~0.6 s so the /proc fallback, which
/// polls, sees them too.
fn run_workload(with_files: bool) -> Workload {
    let marker = format!("outlier-live-{}", uuid::Uuid::now_v7().simple());
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("written.txt");
    let l4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let l6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let (v4_port, v6_port) = (
        l4.local_addr().unwrap().port(),
        l6.local_addr().unwrap().port(),
    );
    let a4 = accept_peers(l4, 1);
    let a6 = accept_peers(l6, 1);
    let mut pids = BTreeMap::new();
    let mut children = Vec::new();

    // argv with spaces, quotes and bytes that are not UTF-8.
    let odd: [&OsStr; 6] = [
        OsStr::new("-c"),
        OsStr::new("sleep 0.6; :"),
        OsStr::new(&marker),
        OsStr::new("two words"),
        OsStr::new("it's \"quoted\""),
        OsStr::from_bytes(b"caf\xe9 \xff"),
    ];
    let c = sh(&odd);
    pids.insert("odd", c.id());
    children.push(c);

    // argv beyond the bound: 100 arguments.
    let many: Vec<String> = (0..100).map(|i| format!("arg-{i}")).collect();
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("-c"),
        OsStr::new("sleep 0.6; :"),
        OsStr::new(&marker),
    ];
    args.extend(many.iter().map(OsStr::new));
    let c = sh(&args);
    pids.insert("long", c.id());
    children.push(c);

    // Outbound connections over IPv4 and IPv6, held open for a while.
    for (role, host, port) in [("v4", "127.0.0.1", v4_port), ("v6", "::1", v6_port)] {
        let c = Command::new("/bin/bash")
            .args([
                "-c",
                &format!("exec 3<>/dev/tcp/{host}/{port}; sleep 0.6; exec 3>&-"),
                &marker,
            ])
            .spawn()
            .unwrap();
        pids.insert(role, c.id());
        children.push(c);
    }

    if with_files {
        // A read of a sensitive file, and a file created for writing.
        let c = Command::new("/bin/cat")
            .arg("/etc/shadow")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        pids.insert("cat", c.id());
        children.push(c);
        let script = format!("echo x > '{}'", written.display());
        let c = sh(&[OsStr::new("-c"), OsStr::new(&script), OsStr::new(&marker)]);
        pids.insert("write", c.id());
        children.push(c);
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let mut peers = a4.join().unwrap();
    peers.extend(a6.join().unwrap());
    Workload {
        pids,
        marker,
        written,
        peers,
        v4_port,
        v6_port,
        _dir: dir,
    }
}

/// Checks the events of the workload's processes (and their children).
fn check(events: &[Event], w: &Workload, org: &str, source: &str, with_files: bool) {
    let me = std::process::id();
    let roots: HashSet<u32> = w.pids.values().copied().collect();
    let ours: Vec<&Event> = events
        .iter()
        .filter(|e| roots.contains(&e.pid) || roots.contains(&e.ppid))
        .collect();
    let by = |role: &str| w.pids[role];
    for e in &ours {
        assert_eq!(e.org, org);
        assert_eq!(e.host, "test-host");
        assert_eq!(e.workload, "live-test");
        assert_eq!(e.source, source);
        assert_eq!(e.uid, 0);
        assert!(!e.event_id.is_empty());
        let age = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            - e.ts_ns;
        assert!(age < 120_000_000_000, "timestamp {} is not recent", e.ts_ns);
    }
    let execs = |pid: u32| -> Vec<&Event> {
        ours.iter()
            .filter(|e| e.pid == pid && matches!(e.detail, Some(Detail::Exec(_))))
            .copied()
            .collect()
    };
    let one = |pid: u32, role: &str| -> &Event {
        let x = execs(pid);
        assert_eq!(x.len(), 1, "one exec of {role} (pid {pid}): {x:#?}");
        x[0]
    };

    let odd = one(by("odd"), "odd");
    assert_eq!(
        argv(odd),
        [
            "/bin/sh",
            "-c",
            "sleep 0.6; :",
            &w.marker,
            "two words",
            "it's \"quoted\"",
            "caf\\xe9 \\xff"
        ]
    );
    assert_eq!((odd.ppid, odd.comm.as_str()), (me, "sh"));
    assert_eq!(odd.parent_comm, own_comm());
    assert!(odd.exe.ends_with("sh"), "{}", odd.exe);
    let Some(Detail::Exec(x)) = &odd.detail else {
        unreachable!()
    };
    assert!(!x.argv_truncated);
    assert_eq!(x.argc, 7);

    let long = one(by("long"), "long");
    let Some(Detail::Exec(x)) = &long.detail else {
        unreachable!()
    };
    assert!(x.argv_truncated, "an argv over the bound is flagged");
    assert_eq!(x.argv.len(), 64);
    assert_eq!(x.argc, 104, "the real argument count is kept");
    assert_eq!(x.argv[3], w.marker);
    assert_eq!(x.argv[63], "arg-59");

    // Each `sh -c 'sleep 0.6; :'` ran sleep as its child.
    for role in ["odd", "long"] {
        let sleeps: Vec<&&Event> = ours
            .iter()
            .filter(|e| e.ppid == by(role) && argv(e) == ["sleep", "0.6"])
            .collect();
        assert_eq!(sleeps.len(), 1, "the sleep of {role}: {ours:#?}");
        assert_eq!(sleeps[0].parent_comm, "sh");
    }

    for (role, ip, port) in [("v4", "127.0.0.1", w.v4_port), ("v6", "::1", w.v6_port)] {
        let b = one(by(role), role);
        assert_eq!(argv(b)[3], w.marker);
        let conns: Vec<&&Event> = ours
            .iter()
            .filter(|e| e.pid == by(role) && matches!(e.detail, Some(Detail::Connect(_))))
            .collect();
        assert_eq!(conns.len(), 1, "one connect by {role}: {ours:#?}");
        let Some(Detail::Connect(c)) = &conns[0].detail else {
            unreachable!()
        };
        assert_eq!((c.remote_ip.as_str(), c.remote_port), (ip, u32::from(port)));
        assert_eq!(c.protocol(), Protocol::Tcp);
        assert_eq!(conns[0].comm, "bash");
        // The local end the kernel chose is the peer the listener saw.
        let peer = w
            .peers
            .iter()
            .find(|p| p.ip().to_string() == ip)
            .expect("the listener saw the connection");
        assert_eq!(c.local_port, u32::from(peer.port()), "{role} local port");
        assert_eq!(c.local_ip, ip);
    }

    if with_files {
        let cat = one(by("cat"), "cat");
        assert_eq!(argv(cat), ["/bin/cat", "/etc/shadow"]);
        let opens: Vec<&&Event> = ours
            .iter()
            .filter(|e| e.pid == by("cat") && matches!(e.detail, Some(Detail::Open(_))))
            .collect();
        assert_eq!(opens.len(), 1, "cat opened one sensitive file: {opens:#?}");
        let Some(Detail::Open(o)) = &opens[0].detail else {
            unreachable!()
        };
        assert_eq!(o.path, "/etc/shadow");
        assert_eq!(o.flags & 0o3, 0, "read-only");
        // The fd cat got: 3, unless a descriptor of this test process
        // without close-on-exec (a C library's) was inherited at spawn.
        assert!(
            o.retval.is_some_and(|fd| fd >= 3),
            "the fd: {:#?}",
            opens[0]
        );
        // As given (/bin/cat) on the syscall tracepoints, as the kernel
        // resolved it (/usr/bin/cat where /bin is a link) with btf hooks.
        assert_eq!(
            Path::new(&opens[0].exe).canonicalize().unwrap(),
            Path::new("/bin/cat").canonicalize().unwrap()
        );

        let writes: Vec<&&Event> = ours
            .iter()
            .filter(|e| e.pid == by("write") && matches!(e.detail, Some(Detail::Open(_))))
            .collect();
        assert_eq!(writes.len(), 1, "one write open: {writes:#?}");
        let Some(Detail::Open(o)) = &writes[0].detail else {
            unreachable!()
        };
        assert_eq!(Path::new(&o.path), w.written);
        assert_ne!(o.flags & 0o100, 0, "O_CREAT");
        assert_ne!(o.flags & 0o1, 0, "O_WRONLY");
    }

    // Nothing else: the exec events are exactly the processes started
    // (and their sleeps), and no other connect or open.
    let expected_execs = w.pids.len() + 4; // + two sleeps + two in bash
    let n_exec = ours
        .iter()
        .filter(|e| matches!(e.detail, Some(Detail::Exec(_))))
        .count();
    assert_eq!(n_exec, expected_execs, "{ours:#?}");
    let n_other = ours.len() - n_exec;
    assert_eq!(n_other, 2 + if with_files { 2 } else { 0 }, "{ours:#?}");
}

fn expected_count(w: &Workload, with_files: bool) -> usize {
    w.pids.len() + 4 + 2 + if with_files { 2 } else { 0 }
}

fn live_capture(mode: &str, source: &str, with_files: bool) {
    require_root();
    let (kafka, t) = topic(&format!("live-{mode}"));
    let org = format!("org-{}", uuid::Uuid::now_v7().simple());
    let collector = Collector::start(mode, &kafka.brokers, &t, &org, "");
    let log = collector.log_text();
    assert!(log.contains(&format!("mode=\"{source}\"")), "{log}");
    let w = run_workload(with_files);
    let want = expected_count(&w, with_files);
    let roots: HashSet<u32> = w.pids.values().copied().collect();
    let mine = |ev: &[Event]| {
        ev.iter()
            .filter(|e| roots.contains(&e.pid) || roots.contains(&e.ppid))
            .count()
    };
    read_events(&kafka, &t, Duration::from_secs(30), |ev| mine(ev) >= want);
    // Then everything, a little later, to catch anything extra.
    std::thread::sleep(Duration::from_secs(2));
    let events = read_events(&kafka, &t, Duration::from_secs(10), |ev| mine(ev) > want);
    collector.stop();
    check(&events, &w, &org, source, with_files);
}

#[test]
fn ebpf_capture_publishes_exactly_what_happened() {
    live_capture("ebpf", "ebpf", true);
}

#[test]
fn procfs_fallback_publishes_the_same_processes_and_connections() {
    live_capture("procfs", "procfs", false);
}
