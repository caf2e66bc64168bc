//! The evasion suite: what an attacker who knows how the collector hooks
//! the kernel would try, each case asserted to arrive with the true path,
//! address or executable. The real `collector run` (as root, eBPF with the
//! `btf` hooks) captures this machine while the test acts; loopback only.
//!
//! Cases: path tricks (`..`, `//`, a relative path, a symlink, a hard
//! link, a bind mount of a sensitive file and of a sensitive directory),
//! io_uring open and connect, UDP sendto, TCP Fast Open, creat, a 32-bit
//! binary (built here with `gcc -m32 -nostdlib`; skipped with the reason
//! when the toolchain cannot), fexecve of a memfd, argv rewritten by a
//! sibling thread while the exec copies it, and a thread's failing execve
//! racing the real one.
#![cfg(feature = "services")]
// The cases are raw syscalls (fork with a racing thread, io_uring, creat,
// sendto with MSG_FASTOPEN) that std does not offer.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::libc;
use outlier_common::kafka::SaslConfig;
use serde_json::Value;

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the evasion suite loads eBPF programs: run it as root"
    );
}

/// A running `collector run --print` (events as JSON Lines on stdout).
struct Live {
    child: Child,
    out: PathBuf,
    log: PathBuf,
}

impl Live {
    fn start(dir: &Path, sensitive: &Path) -> Self {
        let config = dir.join("collector.toml");
        let brokers =
            std::env::var("OUTLIER_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_string());
        // OUTLIER_EVASION_HOOKS=tracepoints shows what the fallback misses.
        let hooks = std::env::var("OUTLIER_EVASION_HOOKS").unwrap_or_else(|_| "btf".into());
        std::fs::write(
            &config,
            format!(
                "http_addr = \"127.0.0.1:0\"\nheartbeat_interval_s = 0\n\
                 [identity]\norg = \"evasion\"\nhost = \"test-host\"\n\
                 [spool]\ndir = \"{}\"\n\
                 [kafka]\nbrokers = \"{brokers}\"\n\
                 [kafka.topics]\nevents = \"outlier.evasion-test\"\n\
                 [capture]\nmode = \"ebpf\"\nhooks = \"{hooks}\"\n\
                 sensitive_paths = [\"{}/\"]\nsensitive_in_homes = []\n{}",
                dir.join("spool").display(),
                sensitive.display(),
                SaslConfig::from_env()
                    .map(|s| s.to_toml())
                    .unwrap_or_default()
            ),
        )
        .unwrap();
        let out = dir.join("events.jsonl");
        let log = dir.join("collector.log");
        let child = Command::new(env!("CARGO_BIN_EXE_collector"))
            .arg("--config")
            .arg(&config)
            .args(["run", "--print"])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let live = Self { child, out, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !live.log_text().contains("collector running") {
            assert!(
                Instant::now() < deadline,
                "collector did not start:\n{}",
                live.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            live.log_text().contains(&format!("hooks=\"{hooks}\"")),
            "the {hooks} hooks are in use:\n{}",
            live.log_text()
        );
        live
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The first event `pred` accepts, waiting up to 20 s for it.
    fn find(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn s(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}
fn argv(v: &Value) -> Vec<String> {
    v.get("argv")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}
fn is_open(v: &Value, path: &Path) -> bool {
    s(v, "kind") == "open" && s(v, "path") == path.to_str().unwrap()
}
fn is_connect(v: &Value, port: u16) -> bool {
    s(v, "kind") == "connect"
        && s(v, "remote_ip") == "127.0.0.1"
        && u(v, "remote_port") == u64::from(port)
}

/// A 32-bit x86 program (no libc): opens `path` and connects to
/// 127.0.0.1:`port` through `int $0x80`. None (with the reason) when the
/// toolchain cannot build one.
fn build_32bit(dir: &Path, path: &Path, port: u16) -> Result<PathBuf, String> {
    let src = dir.join("evasion32.c");
    std::fs::write(
        &src,
        format!(
            r#"
static long sys3(long n, long a, long b, long c) {{
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}}
struct sin {{ unsigned short family; unsigned short port; unsigned int addr; char zero[8]; }};
void _start(void) {{
    sys3(5, (long)"{path}", 0, 0);                     /* open */
    long fd = sys3(359, 2, 1, 0);                       /* socket(AF_INET, SOCK_STREAM) */
    struct sin a = {{ 2, (unsigned short)((({port} & 0xff) << 8) | ({port} >> 8)), 0x0100007f, {{0}} }};
    sys3(362, fd, (long)&a, sizeof a);                  /* connect */
    sys3(1, 0, 0, 0);                                   /* exit */
}}
"#,
            path = path.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let bin = dir.join("evasion32");
    let out = Command::new("gcc")
        .args([
            "-m32",
            "-nostdlib",
            "-static",
            "-ffreestanding",
            "-fno-pic",
            "-fno-stack-protector",
            "-O1",
            "-o",
        ])
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(|e| format!("gcc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gcc -m32 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(bin)
}

/// Runs an exec in a forked child whose sibling thread rewrites argv[3]
/// while the kernel copies it. The program writes the argument it really
/// got to `out`. Returns the marker in argv[2] (the script).
fn exec_with_racing_argv(out: &Path, round: usize) -> String {
    static mut BUF: [u8; 64] = [0; 64];
    extern "C" fn flip(_: *mut libc::c_void) -> *mut libc::c_void {
        let mut i: u64 = 0;
        loop {
            let c = if i.is_multiple_of(2) { b'A' } else { b'B' };
            // SAFETY: the buffer outlives the exec; a racing write is the
            // point of the test (the exec copies it concurrently).
            unsafe {
                let p = std::ptr::addr_of_mut!(BUF) as *mut u8;
                for k in 0..32 {
                    std::ptr::write_volatile(p.add(k), c);
                }
            }
            i += 1;
        }
    }
    let script = format!(
        "printf %s \"$0\" > '{}' # evasion-argv-{round}",
        out.display()
    );
    let sh = CString::new("/bin/sh").unwrap();
    let c = CString::new("-c").unwrap();
    let script_c = CString::new(script.clone()).unwrap();
    // SAFETY: fork in a test process; the child only starts a thread that
    // writes a static buffer, then execs (or exits).
    unsafe {
        let p = std::ptr::addr_of_mut!(BUF) as *mut u8;
        for k in 0..32 {
            *p.add(k) = b'A';
        }
        *p.add(32) = 0;
        let argv = [
            sh.as_ptr(),
            c.as_ptr(),
            script_c.as_ptr(),
            p as *const libc::c_char,
            std::ptr::null(),
        ];
        fork_exec_racing(flip, 10_000, &argv);
    }
    script
}

/// A forked child whose second thread keeps failing to exec a file that
/// is not executable while the first execs `sh -c 'exit 0' MARKER`.
fn exec_racing_failures(noexec: &Path, marker: &str) {
    static mut BAD: [u8; 256] = [0; 256];
    extern "C" fn fail(_: *mut libc::c_void) -> *mut libc::c_void {
        let argv: [*const libc::c_char; 2] =
            [std::ptr::addr_of!(BAD) as *const _, std::ptr::null()];
        loop {
            // SAFETY: execs a path that always fails (EACCES).
            unsafe { libc::execv(std::ptr::addr_of!(BAD) as *const _, argv.as_ptr()) };
        }
    }
    let sh = CString::new("/bin/sh").unwrap();
    let c = CString::new("-c").unwrap();
    let exit = CString::new("exit 0").unwrap();
    let m = CString::new(marker).unwrap();
    let argv = [
        sh.as_ptr(),
        c.as_ptr(),
        exit.as_ptr(),
        m.as_ptr(),
        std::ptr::null(),
    ];
    let bad = noexec.as_os_str().as_encoded_bytes();
    // SAFETY: as above; the failing thread only calls execv.
    unsafe {
        let p = std::ptr::addr_of_mut!(BAD) as *mut u8;
        std::ptr::copy_nonoverlapping(bad.as_ptr(), p, bad.len().min(255));
        fork_exec_racing(fail, 200_000, &argv);
    }
}

/// Forks a child that starts `thread`, lets it run for `spin` iterations,
/// then execs `argv` (null-terminated, `argv[0]` the program); waits for it.
///
/// # Safety
/// `argv` holds valid C strings; `thread` may only touch static memory.
unsafe fn fork_exec_racing(
    thread: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
    spin: usize,
    argv: &[*const libc::c_char],
) {
    // SAFETY: the child only starts a thread and execs (or exits).
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let mut t: libc::pthread_t = 0;
            libc::pthread_create(&mut t, std::ptr::null(), thread, std::ptr::null_mut());
            for _ in 0..spin {
                std::hint::spin_loop();
            }
            libc::execv(argv[0], argv.as_ptr());
            libc::_exit(127);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

#[test]
fn every_evasion_case_arrives_with_the_true_value() {
    require_root();
    let tmp = tempfile::Builder::new()
        .prefix("outlier-evasion-")
        .tempdir_in("/tmp")
        .unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let secret = root.join("secret");
    std::fs::create_dir(&secret).unwrap();
    let files = [
        "k-dotdot",
        "k-slash",
        "k-rel",
        "k-symlink",
        "k-hard",
        "k-bind",
        "k-binddir",
        "k-uring",
        "k-32",
    ];
    for f in files {
        std::fs::write(secret.join(f), "secret").unwrap();
    }
    let real = |f: &str| secret.join(f);
    let run_dir = root.join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let live = Live::start(&run_dir, &secret);
    let me = std::process::id() as u64;
    let mut failures: Vec<String> = Vec::new();
    let mut passed: Vec<&str> = Vec::new();
    let mut check = |name: &'static str, found: Option<Value>, what: String| match found {
        Some(_) => passed.push(name),
        None => failures.push(format!("{name}: no event with {what}")),
    };

    // ---- path tricks ----
    let read = |p: PathBuf| {
        let _ = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    };
    read(PathBuf::from(format!(
        "{}/secret/../secret/k-dotdot",
        root.display()
    )));
    let f = real("k-dotdot");
    check(
        "dotdot",
        live.find(|e| is_open(e, &f) && u(e, "pid") == me),
        format!("path {}", f.display()),
    );

    read(PathBuf::from(format!(
        "{}//secret///k-slash",
        root.display()
    )));
    let f = real("k-slash");
    check(
        "slashes",
        live.find(|e| is_open(e, &f) && u(e, "pid") == me),
        format!("path {}", f.display()),
    );

    let st = Command::new("/bin/sh")
        .args(["-c", "cd \"$1\" && exec cat k-rel > /dev/null", "sh"])
        .arg(&secret)
        .status()
        .unwrap();
    assert!(st.success());
    let f = real("k-rel");
    check(
        "relative",
        live.find(|e| is_open(e, &f) && s(e, "comm") == "cat"),
        format!("path {}", f.display()),
    );

    std::os::unix::fs::symlink(real("k-symlink"), root.join("innocent-link")).unwrap();
    read(root.join("innocent-link"));
    let f = real("k-symlink");
    check(
        "symlink",
        live.find(|e| is_open(e, &f) && u(e, "pid") == me),
        format!("path {}", f.display()),
    );

    std::fs::hard_link(real("k-hard"), root.join("innocent-hard")).unwrap();
    read(root.join("innocent-hard"));
    let f = real("k-hard");
    check(
        "hard link",
        live.find(|e| is_open(e, &f) && u(e, "pid") == me),
        format!("path {}", f.display()),
    );

    let bound = root.join("innocent-bound");
    std::fs::write(&bound, "").unwrap();
    nix::mount::mount(
        Some(&real("k-bind")),
        &bound,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    read(bound.clone());
    nix::mount::umount(&bound).unwrap();
    let f = real("k-bind");
    check(
        "bind mount of a file",
        live.find(|e| is_open(e, &f) && u(e, "pid") == me),
        format!("path {}", f.display()),
    );

    let bdir = root.join("innocent-dir");
    std::fs::create_dir(&bdir).unwrap();
    nix::mount::mount(
        Some(&secret),
        &bdir,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    read(bdir.join("k-binddir"));
    nix::mount::umount(&bdir).unwrap();
    let f = real("k-binddir");
    check(
        "bind mount of a directory",
        live.find(|e| is_open(e, &f) && u(e, "pid") == me),
        format!("path {}", f.display()),
    );

    // ---- io_uring: open and connect ----
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let uring_port = listener.local_addr().unwrap().port();
    {
        let mut ring = io_uring::IoUring::new(8).unwrap();
        let path = CString::new(format!("{}/secret/../secret/k-uring", root.display())).unwrap();
        let open =
            io_uring::opcode::OpenAt::new(io_uring::types::Fd(libc::AT_FDCWD), path.as_ptr())
                .flags(libc::O_RDONLY)
                .build();
        // SAFETY: `path` outlives the submission (we wait for it below).
        unsafe { ring.submission().push(&open).unwrap() };
        ring.submit_and_wait(1).unwrap();
        let fd = ring.completion().next().unwrap().result();
        assert!(fd >= 0, "io_uring open: {fd}");
        // SAFETY: the fd io_uring opened for us.
        unsafe { libc::close(fd) };

        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: uring_port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let connect = io_uring::opcode::Connect::new(
            io_uring::types::Fd(fd),
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
        .build();
        // SAFETY: `addr` outlives the submission.
        unsafe { ring.submission().push(&connect).unwrap() };
        ring.submit_and_wait(1).unwrap();
        let r = ring.completion().next().unwrap().result();
        assert_eq!(r, 0, "io_uring connect");
        unsafe { libc::close(fd) };
    }
    let f = real("k-uring");
    check(
        "io_uring open",
        live.find(|e| is_open(e, &f) && u(e, "pid") == me),
        format!("path {}", f.display()),
    );
    check(
        "io_uring connect",
        // Nothing else here connects to this port: no syscall tracepoint
        // sees an io_uring connect.
        live.find(|e| is_connect(e, uring_port) && u(e, "pid") == me),
        format!("connect to 127.0.0.1:{uring_port}"),
    );

    // ---- UDP sendto, TCP Fast Open ----
    let udp_peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let udp_port = udp_peer.local_addr().unwrap().port();
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .send_to(b"x", SocketAddrV4::new(Ipv4Addr::LOCALHOST, udp_port))
        .unwrap();
    check(
        "UDP sendto",
        live.find(|e| is_connect(e, udp_port) && s(e, "protocol") == "udp" && u(e, "pid") == me),
        format!("a UDP send to 127.0.0.1:{udp_port}"),
    );

    let tfo = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let tfo_port = tfo.local_addr().unwrap().port();
    {
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: tfo_port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a plain sendto with MSG_FASTOPEN on our own socket.
        let r = unsafe {
            libc::sendto(
                fd,
                b"hello".as_ptr() as *const _,
                5,
                libc::MSG_FASTOPEN,
                &addr as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        assert!(
            r >= 0,
            "TCP Fast Open sendto: {}",
            std::io::Error::last_os_error()
        );
        unsafe { libc::close(fd) };
    }
    check(
        "TCP Fast Open",
        live.find(|e| is_connect(e, tfo_port) && u(e, "pid") == me),
        format!("a Fast Open to 127.0.0.1:{tfo_port}"),
    );

    // ---- creat ----
    let created = root.join("created-by-creat");
    let c = CString::new(created.to_str().unwrap()).unwrap();
    // SAFETY: creat of a path in our temporary directory.
    let fd = unsafe { libc::creat(c.as_ptr(), 0o600) };
    assert!(fd >= 0);
    unsafe { libc::close(fd) };
    check(
        "creat",
        live.find(|e| is_open(e, &created) && u(e, "pid") == me && u(e, "flags") & 0o100 != 0),
        format!("a write open of {}", created.display()),
    );

    // ---- a 32-bit program ----
    let l32 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port32 = l32.local_addr().unwrap().port();
    match build_32bit(&run_dir, &real("k-32"), port32) {
        Ok(bin) => {
            let c = Command::new(&bin).stdout(Stdio::null()).spawn().unwrap();
            let pid = c.id() as u64;
            let _ = c.wait_with_output();
            let f = real("k-32");
            check(
                "32-bit exec",
                live.find(|e| {
                    s(e, "kind") == "exec"
                        && u(e, "pid") == pid
                        && s(e, "exe") == bin.to_str().unwrap()
                }),
                format!("exec of {}", bin.display()),
            );
            check(
                "32-bit open",
                live.find(|e| is_open(e, &f) && u(e, "pid") == pid),
                format!("path {}", f.display()),
            );
            check(
                "32-bit connect",
                live.find(|e| is_connect(e, port32) && u(e, "pid") == pid),
                format!("connect to 127.0.0.1:{port32}"),
            );
        }
        Err(why) => eprintln!("32-bit cases skipped: {why}"),
    }

    // ---- fexecve of a memfd ----
    let marker = format!("evasion-memfd-{}", uuid::Uuid::now_v7().simple());
    let st = Command::new("python3")
        .args([
            "-c",
            "import os, sys\n\
             fd = os.memfd_create('outlier-evasion')\n\
             os.write(fd, open('/bin/true', 'rb').read())\n\
             os.execve(fd, [sys.argv[1]], {})",
        ])
        .arg(&marker)
        .status()
        .unwrap();
    assert!(st.success());
    check(
        "fexecve of a memfd",
        live.find(|e| {
            s(e, "kind") == "exec"
                && argv(e) == [marker.clone()]
                && s(e, "exe").starts_with("/memfd:outlier-evasion")
        }),
        format!("an exec of /memfd:outlier-evasion with argv [{marker}]"),
    );

    // ---- argv rewritten by a sibling thread during the exec ----
    let mut mismatch = Vec::new();
    for round in 0..10 {
        let out = run_dir.join(format!("argv-{round}"));
        let script = exec_with_racing_argv(&out, round);
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        match live.find(|e| s(e, "kind") == "exec" && argv(e).get(2) == Some(&script)) {
            Some(e) if argv(&e).get(3) == Some(&got) => {}
            Some(e) => mismatch.push(format!(
                "round {round}: event {:?}, program got {got:?}",
                argv(&e).get(3)
            )),
            None => mismatch.push(format!("round {round}: no exec event")),
        }
    }
    check(
        "argv rewritten during exec",
        mismatch.is_empty().then_some(Value::Null),
        format!("the argv the program got: {mismatch:?}"),
    );

    // ---- a thread's failing execve racing the real one ----
    let noexec = run_dir.join("not-executable");
    std::fs::File::create(&noexec)
        .unwrap()
        .write_all(b"data")
        .unwrap();
    let marker = format!("evasion-race-{}", uuid::Uuid::now_v7().simple());
    exec_racing_failures(&noexec, &marker);
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    check(
        "failing execve racing the real one",
        live.find(|e| {
            s(e, "kind") == "exec"
                && argv(e).last() == Some(&marker)
                && s(e, "exe") == sh.to_str().unwrap()
        }),
        format!("the exec of {} with {marker}", sh.display()),
    );

    eprintln!("evasion cases passed: {passed:?}");
    assert!(
        failures.is_empty(),
        "evasion cases not captured with the true value:\n{}\n(collector log:\n{})",
        failures.join("\n"),
        live.log_text()
    );
}
