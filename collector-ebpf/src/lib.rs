//! Outlier's kernel programs (execve/execveat, connect, openat/openat2),
//! written with aya-ebpf and built for `bpfel-unknown-none` from
//! `collector/build.rs`.
//!
//! Placeholder: the kernel capture lands with the collector issue. The
//! crate is kept out of the workspace's default members so a plain
//! `cargo build` never compiles it for the host.
#![no_std]
