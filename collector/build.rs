//! Builds the eBPF programs (`collector-ebpf`) for `bpfel-unknown-none` and
//! puts the object in OUT_DIR, where `src/ebpf.rs` embeds it.
//!
//! The kernel side needs `-Z build-std=core`, so it is built with Debian's
//! rustc (which ships its core sources: packages rustc-web, rust-web-src)
//! and bpf-linker built against the same LLVM (`scripts/ebpf-toolchain`
//! installs both). The nested cargo runs with a cleaned environment: the
//! outer build's RUSTC, RUSTFLAGS and target dir must not leak into it.
//!
//! Without the toolchain the collector is still built, with an empty object:
//! it then runs the /proc fallback and says so. `OUTLIER_REQUIRE_EBPF=1`
//! (set by `scripts/test` and the stack) makes a missing toolchain an error
//! instead; `OUTLIER_SKIP_EBPF=1` skips the kernel build on purpose.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const OBJECT: &str = "outlier-collector-ebpf";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let ebpf = manifest.join("../collector-ebpf");
    let common = manifest.join("../collector-common");
    for p in [
        ebpf.join("src"),
        ebpf.join("Cargo.toml"),
        ebpf.join("Cargo.lock"),
        common.join("src"),
        common.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    for v in [
        "OUTLIER_REQUIRE_EBPF",
        "OUTLIER_SKIP_EBPF",
        "OUTLIER_EBPF_RUSTC",
        "OUTLIER_EBPF_CARGO",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let require = env::var("OUTLIER_REQUIRE_EBPF").is_ok_and(|v| v == "1");
    let dest = out.join(OBJECT);

    if env::var("OUTLIER_SKIP_EBPF").is_ok_and(|v| v == "1") {
        stub(&dest, "OUTLIER_SKIP_EBPF=1");
        return;
    }
    match build(&ebpf, &out) {
        Ok(object) => {
            std::fs::copy(&object, &dest).expect("copy the eBPF object into OUT_DIR");
            println!("cargo:rustc-cfg=outlier_ebpf");
        }
        Err(why) if !require => stub(&dest, &why),
        Err(why) => panic!(
            "the eBPF programs could not be built: {why}\n\
             install the toolchain with scripts/ebpf-toolchain, or unset OUTLIER_REQUIRE_EBPF"
        ),
    }
    println!("cargo:rustc-check-cfg=cfg(outlier_ebpf)");
}

fn stub(dest: &Path, why: &str) {
    println!(
        "cargo:warning=collector built without eBPF programs ({why}); it will use the /proc fallback"
    );
    std::fs::write(dest, []).expect("write the empty eBPF stub");
    println!("cargo:rustc-check-cfg=cfg(outlier_ebpf)");
}

fn home_bin(name: &str) -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let p = home.join("bin").join(name);
    p.exists().then_some(p)
}

fn build(ebpf: &Path, out: &Path) -> Result<PathBuf, String> {
    let rustc = env::var_os("OUTLIER_EBPF_RUSTC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/rustc"));
    let cargo = env::var_os("OUTLIER_EBPF_CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/cargo"));
    if !rustc.exists() || !cargo.exists() {
        return Err(format!(
            "{} or {} not found (Debian packages rustc-web, rust-web-src)",
            rustc.display(),
            cargo.display()
        ));
    }
    let linker = home_bin("bpf-linker").ok_or("bpf-linker not installed")?;
    let target_dir = out.join("ebpf-target");
    let mut path = env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = linker.parent() {
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(env::split_paths(&path));
        path = env::join_paths(dirs).map_err(|e| e.to_string())?;
    }
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(ebpf).env_clear();
    for keep in ["HOME", "CARGO_HOME", "TMPDIR", "LANG"] {
        if let Some(v) = env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.env("PATH", path)
        .env("RUSTC", &rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                "--cfg=bpf_target_arch=\"x86_64\"",
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
                &format!("-Clinker={}", linker.display()),
            ]
            .join("\x1f"),
        )
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
            "-Zbuild-std=core",
            "--bins",
            "--target-dir",
        ])
        .arg(&target_dir);
    let output = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", cargo.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stderr
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            println!("cargo:warning={line}");
        }
        return Err(format!(
            "cargo build of collector-ebpf failed ({})",
            output.status
        ));
    }
    let object = target_dir.join("bpfel-unknown-none/release").join(OBJECT);
    if !object.exists() {
        return Err(format!("{} missing after the build", object.display()));
    }
    Ok(object)
}
