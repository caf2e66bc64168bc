//! A start-up location written is a high-precision indicator for the
//! decision, unless a lineage that installs software or provisions
//! accounts writes it.

use std::sync::Arc;

use outlier_classifier::{Classifier, Limits, high_precision, load_checked};
use outlier_proto::v1::{Event, Exec, Open, event::Detail};

fn classifier() -> Classifier {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/classifier.json");
    let model = load_checked(&std::fs::read_to_string(path).unwrap()).expect("shipped model");
    Classifier::new(Arc::new(model), Limits::default())
}

fn event(pid: u32, ppid: u32, comm: &str, parent: &str, ts: u64, detail: Detail) -> Event {
    Event {
        org: "o".into(),
        workload: "w".into(),
        host: "h".into(),
        ts_ns: ts,
        pid,
        ppid,
        comm: comm.into(),
        parent_comm: parent.into(),
        exe: format!("/usr/bin/{comm}"),
        detail: Some(detail),
        ..Event::default()
    }
}

fn exec(pid: u32, ppid: u32, argv: &[&str], parent: &str, ts: u64) -> Event {
    let detail = Detail::Exec(Exec {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        ..Exec::default()
    });
    event(pid, ppid, argv[0], parent, ts, detail)
}

fn open(pid: u32, ppid: u32, comm: &str, path: &str, flags: u32, ts: u64) -> Event {
    let detail = Detail::Open(Open {
        path: path.into(),
        flags,
        ..Open::default()
    });
    event(pid, ppid, comm, "", ts, detail)
}

const WRITE: u32 = 0o1101; // O_WRONLY | O_CREAT | O_TRUNC
const SEC: u64 = 1_000_000_000;

#[test]
fn writing_a_start_up_location_is_high_precision() {
    let mut c = classifier();
    let mut at = |e: Event| {
        let (f, _) = c.classify(&e);
        high_precision(&f)
    };
    // A shell of an SSH session writes a unit, a cron file, a root
    // start-up file: each is how a foothold survives a restart.
    at(exec(100, 1, &["bash"], "sshd", SEC));
    for (i, path) in [
        "/etc/systemd/system/net-helper.service",
        "/etc/cron.d/upd",
        "/var/spool/cron/crontabs/root",
        "/root/.bashrc",
        "/etc/profile.d/z.sh",
        "/etc/rc3.d/S99x",
        "/etc/pam.d/common-auth",
        "/etc/rc.d/rc.local",
        "/etc/bashrc",
        "/home/dev/.profile",
        "/var/lib/postgresql/.bash_profile",
        "/home/dev/.config/systemd/user/sync.service",
        "/etc/modprobe.d/blacklist.conf",
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            at(open(100, 1, "bash", path, WRITE, (2 + i as u64) * SEC)),
            Some("startup_location_written"),
            "{path}"
        );
    }
    // Reading one, or writing elsewhere, is not.
    assert_eq!(at(open(100, 1, "bash", "/root/.bashrc", 0, 20 * SEC)), None);
    assert_eq!(
        at(open(100, 1, "bash", "/etc/cron.log", WRITE, 21 * SEC)),
        None
    );
    assert_eq!(
        at(open(100, 1, "bash", "/home/u/.bashrc~", WRITE, 22 * SEC)),
        None
    );
    assert_eq!(
        at(open(
            100,
            1,
            "atd",
            "/var/spool/cron/atspool/=1",
            WRITE,
            23 * SEC
        )),
        None
    );
    // Nothing runs an editor's swap or probe files, a container image's
    // layers or the skeleton of new homes.
    for (i, path) in [
        "/etc/cron.d/.upd.swp",
        "/etc/pam.d/4913",
        "/var/spool/at/spool/a0001",
        "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/7/fs/root/.bashrc",
        "/etc/skel/.bashrc",
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            at(open(100, 1, "bash", path, WRITE, (24 + i as u64) * SEC)),
            None,
            "{path}"
        );
    }
    // A package being installed: dpkg, and a maintainer script it runs.
    at(exec(
        200,
        1,
        &["apt-get", "install", "-y", "nginx"],
        "bash",
        30 * SEC,
    ));
    at(exec(
        201,
        200,
        &["dpkg", "--unpack", "x.deb"],
        "apt-get",
        31 * SEC,
    ));
    assert_eq!(
        at(open(
            201,
            200,
            "dpkg",
            "/lib/systemd/system/nginx.service.dpkg-new",
            WRITE,
            32 * SEC
        )),
        None
    );
    at(exec(
        202,
        201,
        &["sh", "/var/lib/dpkg/info/x.postinst"],
        "dpkg",
        33 * SEC,
    ));
    at(exec(
        203,
        202,
        &["cp", "/tmp/x", "/etc/cron.d/x"],
        "sh",
        34 * SEC,
    ));
    assert_eq!(
        at(open(203, 202, "cp", "/etc/cron.d/x", WRITE, 35 * SEC)),
        None
    );
    // dnf runs in Python: its opens carry the interpreter's name; its exec
    // said what it is.
    let mut dnf = exec(400, 1, &["dnf", "install", "-y", "x"], "bash", 36 * SEC);
    dnf.exe = "/usr/bin/dnf".into();
    at(dnf);
    let mut write = open(
        400,
        1,
        "dnf",
        "/usr/lib/systemd/system/x.service",
        WRITE,
        37 * SEC,
    );
    write.exe = "/usr/bin/python3.9".into();
    assert_eq!(at(write), None);
    // A home made for a new account.
    at(exec(401, 100, &["useradd", "-m", "bob"], "bash", 38 * SEC));
    assert_eq!(
        at(open(
            401,
            100,
            "useradd",
            "/home/bob/.bashrc",
            WRITE,
            39 * SEC
        )),
        None
    );
    // A shell copied to /tmp under a package manager's name is not one.
    let mut fake = exec(402, 100, &["dpkg"], "bash", 39 * SEC + 1);
    fake.exe = "/tmp/dpkg".into();
    at(fake);
    let mut write = open(402, 100, "dpkg", "/etc/cron.d/x", WRITE, 39 * SEC + 2);
    write.exe = "/tmp/dpkg".into();
    assert_eq!(at(write), Some("startup_location_written"));
    // A language package's install hook is not a system package.
    at(exec(300, 1, &["npm", "install"], "bash", 40 * SEC));
    at(exec(
        301,
        300,
        &["sh", "-c", "node postinstall.js"],
        "npm",
        41 * SEC,
    ));
    assert_eq!(
        at(open(301, 300, "sh", "/root/.bashrc", WRITE, 42 * SEC)),
        Some("startup_location_written")
    );
}
