//! Collector benchmark: live eBPF capture on this machine, published to the
//! stack's Kafka, at fixed event rates.
//!
//!     scripts/stack up --infra
//!     cargo bench -p outlier-collector --bench capture      (as root)
//!
//! The load is real syscalls made by this process: `execve` of a file that
//! is not executable (fails with EACCES after the kernel has resolved it, so
//! the exec hooks run and the event is reported, without the cost of a
//! fork) and `openat` for writing (kept by the in-kernel filter), half each.
//! Every phase's events carry a marker (argv[0], the opened path), so after
//! the run the topic is read back and each phase's events are counted: what
//! was made, what arrived. Per phase it reports the collector's CPU (all its
//! threads, from /proc/PID/task/*/schedstat, including the time it took to
//! deliver the phase's events), the kernel programs' run time (BPF stats),
//! ring-buffer drops and spool drops. A last phase forks and execs
//! `/bin/true` as fast as two threads can, the ceiling of real process
//! creation on this machine.
//!
//! Environment: OUTLIER_TEST_KAFKA (brokers, default 127.0.0.1:9092),
//! OUTLIER_BENCH_RATES (events/s, default 1000,5000,20000,40000),
//! OUTLIER_BENCH_SECS (seconds per phase, default 10; 1,000/s runs twice as
//! long for the CPU resolution), OUTLIER_BENCH_HOOKS (`capture.hooks`:
//! btf, the default, or tracepoints), OUTLIER_BENCH_COMPAT
//! (`capture.compat_syscalls`, default true).

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use outlier_common::kafka::KafkaConfig;
use outlier_proto::{Event, event::Detail};
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};

const MARK: &str = "outlier-bench";

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The collector's metrics, by full series name (`name{labels}`).
fn metrics(port: u16) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return out;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        if let Some((k, v)) = line.rsplit_once(' ')
            && let Ok(v) = v.parse()
        {
            out.insert(k.to_string(), v);
        }
    }
    out
}

fn sum(m: &HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// CPU time of every thread of `pid`, in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Run time and run count of the collector's kernel programs.
fn bpf_stats() -> (Duration, u64) {
    let mut t = Duration::ZERO;
    let mut n = 0;
    for p in aya::programs::loaded_programs().flatten() {
        if p.name_as_str().is_some_and(|s| s.starts_with("outlier_")) {
            t += p.run_time();
            n += p.run_count();
        }
    }
    (t, n)
}

struct Collector {
    child: Child,
    http: u16,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn start(brokers: &str, topic: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let http = free_port();
        let config = dir.path().join("collector.toml");
        let hooks = std::env::var("OUTLIER_BENCH_HOOKS").unwrap_or_else(|_| "btf".into());
        let compat = std::env::var("OUTLIER_BENCH_COMPAT").unwrap_or_else(|_| "true".into());
        // The stack's data directory is quiet, as in the stack's own config:
        // Kafka writing the benchmark's events must not become events.
        let state = std::env::var("OUTLIER_STATE")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.outlier").to_string());
        let state = std::fs::canonicalize(&state)
            .map(|p| p.display().to_string())
            .unwrap_or(state);
        std::fs::write(
            &config,
            format!(
                "http_addr = \"127.0.0.1:{http}\"\n\
                 [identity]\norg = \"bench\"\nhost = \"bench-host\"\n\
                 [workloads]\ndefault = \"bench\"\n\
                 [capture]\nmode = \"ebpf\"\nhooks = \"{hooks}\"\ncompat_syscalls = {compat}\n\
                 quiet_paths = [\"/dev/null\", \"/dev/pts/\", \"/proc/\", \"/sys/\", \"{state}/\", \"{}/\"]\n\
                 [spool]\ndir = \"{}\"\n\
                 [kafka]\nbrokers = \"{brokers}\"\n\
                 [kafka.topics]\nevents = \"{topic}\"\n",
                dir.path().display(),
                dir.path().join("spool").display()
            ),
        )
        .unwrap();
        let sasl = outlier_common::kafka::SaslConfig::from_env()
            .map(|s| s.env_vars("OUTLIER_COLLECTOR"))
            .unwrap_or_default();
        let child = Command::new(env!("CARGO_BIN_EXE_collector"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .envs(sasl)
            .env("OUTLIER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("collector.log")).unwrap())
            .spawn()
            .unwrap();
        let c = Self {
            child,
            http,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !metrics(http).contains_key("outlier_collector_spool_backlog_events") {
            assert!(Instant::now() < deadline, "the collector did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The programs are attached once the capture mode is reported.
        std::thread::sleep(Duration::from_secs(2));
        c
    }

    /// Waits until everything captured so far is acknowledged by Kafka.
    fn drain(&self) {
        // Longer than the capture loop's batch wait: what is still in the
        // ring buffer reaches the spool first.
        std::thread::sleep(Duration::from_millis(300));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let m = metrics(self.http);
            let pending = m
                .get("outlier_collector_spool_backlog_events")
                .copied()
                .unwrap_or(1.0);
            if pending == 0.0 || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// Makes `rate` marked events a second for `secs` seconds (or as many as it
/// can when `rate` is 0); returns how many of each it made and the seconds
/// it took.
fn generate(phase: &str, rate: u64, secs: f64, dir: &std::path::Path) -> (u64, u64, f64) {
    // A file that exists but is not executable: execve fails with EACCES.
    let noexec = dir.join("not-executable");
    std::fs::write(&noexec, b"#!/bin/true\n").unwrap();
    let noexec = CString::new(noexec.display().to_string()).unwrap();
    let argv = [
        CString::new(format!("{MARK}-{phase}")).unwrap(),
        CString::new("--bench").unwrap(),
    ];
    let envp: [CString; 0] = [];
    let target = dir.join(format!("{MARK}-{phase}"));
    let (mut execs, mut opens) = (0u64, 0u64);
    let start = Instant::now();
    let total = (rate as f64 * secs) as u64;
    let one = || {
        // Fails (EACCES) and does not replace this process.
        let err = nix::unistd::execve(&noexec, &argv, &envp).unwrap_err();
        assert_eq!(err, nix::errno::Errno::EACCES);
        let fd = nix::fcntl::open(
            &target,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        drop(fd);
    };
    if rate == 0 {
        while start.elapsed().as_secs_f64() < secs {
            for _ in 0..100 {
                one();
            }
            execs += 100;
            opens += 100;
        }
    } else {
        // Paced in 1 ms ticks: each tick makes what the schedule owes.
        while execs + opens < total {
            let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
            while execs + opens + 2 <= due {
                one();
                execs += 1;
                opens += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    (execs, opens, start.elapsed().as_secs_f64())
}

/// Forks and execs `/bin/true MARK-phase` from two threads for `secs`.
fn fork_exec(phase: &str, secs: f64) -> (u64, f64) {
    let start = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let arg = format!("{MARK}-{phase}");
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed().as_secs_f64() < secs {
                    let ok = Command::new("/bin/true")
                        .arg(&arg)
                        .status()
                        .is_ok_and(|s| s.success());
                    assert!(ok);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let n = handles.into_iter().map(|h| h.join().unwrap()).sum();
    (n, start.elapsed().as_secs_f64())
}

struct Phase {
    name: String,
    target: u64,
    made: u64,
    secs: f64,
    cpu_ns: u64,
    bpf: (Duration, u64),
    ring_drops: f64,
    unreadable: f64,
    spool_drops: f64,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("capture: benchmark");
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("the collector benchmark loads eBPF programs: run it as root");
        std::process::exit(1);
    }
    let brokers = std::env::var("OUTLIER_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let kafka = KafkaConfig {
        brokers: brokers.clone(),
        sasl: outlier_common::kafka::SaslConfig::from_env(),
        ..KafkaConfig::default()
    };
    kafka
        .probe(Duration::from_secs(5))
        .expect("Kafka reachable: run scripts/stack up --infra");
    let topic = format!("bench-collector-{}", uuid::Uuid::now_v7().simple());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(kafka.ensure_topics(&[(&topic, 3)])).unwrap();
    let rates: Vec<u64> = std::env::var("OUTLIER_BENCH_RATES")
        .unwrap_or_else(|_| "1000,5000,20000,40000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs: f64 = env_or("OUTLIER_BENCH_SECS", 10.0);
    let work = tempfile::tempdir().unwrap();

    // The syscall loop's own speed with nothing attached, for the overhead
    // the probes add to the workload.
    let (e0, o0, s0) = generate("warmup", 0, 3.0, work.path());
    let bare_rate = (e0 + o0) as f64 / s0;

    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF stats");
    let collector = Collector::start(&brokers, &topic);
    let pid = collector.child.id();
    let mut phases = Vec::new();
    let mut run_phase = |name: String, target: u64, f: &mut dyn FnMut() -> (u64, f64)| {
        let m0 = metrics(collector.http);
        let (c0, b0) = (cpu_ns(pid), bpf_stats());
        let (made, took) = f();
        collector.drain();
        let (c1, b1) = (cpu_ns(pid), bpf_stats());
        let m1 = metrics(collector.http);
        let d = |k: &str| sum(&m1, k) - sum(&m0, k);
        let p = Phase {
            name,
            target,
            made,
            secs: took,
            cpu_ns: c1 - c0,
            bpf: (b1.0 - b0.0, b1.1 - b0.1),
            ring_drops: d("outlier_collector_kernel_drops_total{reason=\"ringbuf_full\""),
            unreadable: d("outlier_collector_kernel_drops_total{reason=\"read_failed\""),
            spool_drops: d("outlier_collector_spool_dropped_total"),
        };
        eprintln!(
            "{}: {} events in {:.1} s, collector {:.1}% of a core",
            p.name,
            p.made,
            p.secs,
            p.cpu_ns as f64 / 1e7 / p.secs
        );
        phases.push(p);
    };

    run_phase("idle".into(), 0, &mut || {
        std::thread::sleep(Duration::from_secs_f64(secs));
        (0, secs)
    });
    for &rate in &rates {
        let name = format!("r{rate}");
        let s = if rate <= 1000 { 2.0 * secs } else { secs };
        run_phase(name.clone(), rate, &mut || {
            let (e, o, t) = generate(&name, rate, s, work.path());
            (e + o, t)
        });
    }
    run_phase("max".into(), 0, &mut || {
        let (e, o, t) = generate("max", 0, secs, work.path());
        (e + o, t)
    });
    run_phase("forkexec".into(), 0, &mut || fork_exec("forkexec", secs));
    drop(collector);

    // Count what arrived, per phase.
    let group = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let consumer: BaseConsumer = kafka.consumer_config("bench", &group).create().unwrap();
    consumer.subscribe(&[topic.as_str()]).unwrap();
    let mut arrived: HashMap<String, u64> = HashMap::new();
    let mut seen = 0u64;
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(10) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            idle_since = Instant::now();
            if outlier_common::kafka::is_heartbeat(&m) {
                continue;
            }
            seen += 1;
            let Ok(e) = Event::decode(m.payload().unwrap_or_default()) else {
                continue;
            };
            let tag = match &e.detail {
                Some(Detail::Exec(x)) => x
                    .argv
                    .iter()
                    .find_map(|a| a.strip_prefix(&format!("{MARK}-")).map(str::to_string)),
                Some(Detail::Open(o)) => o
                    .path
                    .rsplit('/')
                    .next()
                    .and_then(|f| f.strip_prefix(&format!("{MARK}-")))
                    .map(str::to_string),
                _ => None,
            };
            if let Some(t) = tag {
                *arrived.entry(t).or_default() += 1;
            }
        }
    }

    println!(
        "\nCollector benchmark ({} events read back from Kafka)\n",
        seen
    );
    println!(
        "syscall loop alone: {:.0} events/s; with the probes attached: see `max`\n",
        bare_rate
    );
    println!(
        "| phase | target ev/s | made | achieved ev/s | arrived in Kafka | ring-buffer drops | paths unreadable | spool drops | collector CPU (% of a core) | CPU per 1k ev/s | kernel programs (ns/run, % of a core) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let idle_cpu = phases
        .first()
        .map_or(0.0, |p| p.cpu_ns as f64 / 1e7 / p.secs);
    for p in &phases {
        let achieved = p.made as f64 / p.secs;
        let cpu = p.cpu_ns as f64 / 1e7 / p.secs;
        let per_k = if achieved > 0.0 {
            format!("{:.2}%", (cpu - idle_cpu).max(0.0) / (achieved / 1000.0))
        } else {
            "—".into()
        };
        let got = arrived.get(&p.name).copied().unwrap_or(0);
        let bpf_ns = if p.bpf.1 > 0 {
            p.bpf.0.as_nanos() as f64 / p.bpf.1 as f64
        } else {
            0.0
        };
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.2} | {} | {:.0} ns, {:.2}% |",
            p.name,
            if p.target > 0 {
                p.target.to_string()
            } else if p.name == "idle" {
                "—".into()
            } else {
                "as fast as possible".into()
            },
            p.made,
            achieved,
            if p.name == "idle" {
                "—".to_string()
            } else {
                got.to_string()
            },
            p.ring_drops,
            p.unreadable,
            p.spool_drops,
            cpu,
            per_k,
            bpf_ns,
            p.bpf.0.as_secs_f64() * 100.0 / p.secs
        );
    }
}
