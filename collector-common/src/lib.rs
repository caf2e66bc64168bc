//! The records the eBPF programs write to the ring buffer, defined once for
//! both sides: the kernel programs (`collector-ebpf`, bpfel target) fill
//! them in place, the collector parses them from the ring buffer's bytes
//! with `offset_of!` on the same definitions.
//!
//! Every record starts with a [`Header`]; its `kind` says which record
//! follows. Records are variable-length: the kernel sends only the used part
//! of the trailing byte array (`args` or `path`), so parsers must use the
//! length fields and never read past the record.
#![no_std]

/// Task name length (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Bytes of argv kept by the kernel side. Each argument is read into a
/// window of this size, so the buffer is twice as long; the collector cuts
/// argv at [`ARGS_CAP`] bytes and flags the cut.
pub const ARGS_CAP: usize = 4096;
pub const ARGS_BUF: usize = 2 * ARGS_CAP;
/// Arguments read one by one; more are counted, not copied.
pub const ARGC_MAX: usize = 64;
/// Arguments counted (not copied) beyond [`ARGC_MAX`].
pub const ARGC_COUNT_MAX: usize = 1024;
/// Bytes of a path (exec filename, open path) kept.
pub const PATH_CAP: usize = 1024;
/// Bytes of a path that take part in prefix matching (LPM trie key size).
pub const PREFIX_CAP: usize = 256;

pub const KIND_EXEC: u32 = 1;
pub const KIND_CONNECT: u32 = 2;
pub const KIND_OPEN: u32 = 3;

/// `ExecEvent::flags`: argv did not fit (more than [`ARGC_MAX`] arguments,
/// an argument longer than [`ARGS_CAP`], or more bytes than the buffer).
pub const EXEC_ARGS_TRUNCATED: u32 = 1;
/// `ExecEvent::flags`: the filename was longer than [`PATH_CAP`].
pub const EXEC_FILENAME_TRUNCATED: u32 = 2;
/// `ExecEvent::flags`: reading argv from user memory failed part-way (a
/// page that was not resident); what was read is kept.
pub const EXEC_ARGS_FAULT: u32 = 4;
/// `ExecEvent::flags`: from execveat (the filename may be relative to a
/// directory fd, or empty with AT_EMPTY_PATH).
pub const EXEC_AT: u32 = 8;

/// `OpenEvent::path_flags`: the path was longer than [`PATH_CAP`].
pub const OPEN_PATH_TRUNCATED: u32 = 1;
/// `OpenEvent::path_flags`: matched a sensitive prefix (a read that was
/// kept because of where it reads).
pub const OPEN_SENSITIVE: u32 = 2;
/// `OpenEvent::path_flags`: from openat2.
pub const OPEN_AT2: u32 = 4;

/// Slots of the per-CPU drop counters (`DROPS` map).
pub const DROP_RINGBUF_FULL: u32 = 0;
pub const DROP_READ_FAILED: u32 = 1;
pub const DROP_SLOTS: u32 = 2;

/// Fields every record starts with, taken when the syscall was entered.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    pub kind: u32,
    /// Process id (thread group id).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Parent's process id (0 when the kernel offsets were unknown).
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub ktime_ns: u64,
    /// cgroup v2 id (the inode number of the cgroup's directory).
    pub cgroup_id: u64,
    /// The task's name when the record was emitted (after a successful
    /// exec: the new program's).
    pub comm: [u8; COMM_LEN],
    /// The parent process's name (its thread group leader's task name).
    pub pcomm: [u8; COMM_LEN],
}

/// An execve/execveat, emitted when the syscall returns.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub hdr: Header,
    /// Syscall return value (0, or -errno when the exec failed).
    pub retval: i32,
    /// Arguments counted (up to [`ARGC_COUNT_MAX`]).
    pub argc: u32,
    /// Arguments copied into `args`.
    pub args_copied: u32,
    /// Bytes used in `args`: each copied argument followed by a NUL.
    pub args_len: u32,
    pub flags: u32,
    pub filename_len: u32,
    pub filename: [u8; PATH_CAP],
    pub args: [u8; ARGS_BUF],
}

/// A connect on an AF_INET/AF_INET6 socket, emitted when it returns.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectEvent {
    pub hdr: Header,
    pub retval: i32,
    pub fd: i32,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// Remote port, host byte order.
    pub port: u16,
    /// Socket type (SOCK_STREAM 1, SOCK_DGRAM 2; 0 unknown).
    pub sock_type: u16,
    /// Local port, host byte order (0 unknown).
    pub local_port: u16,
    /// Remote address: 4 bytes for IPv4, 16 for IPv6, network order.
    pub addr: [u8; 16],
    /// Local address, as `addr` (zero when unknown).
    pub local_addr: [u8; 16],
}

/// An openat/openat2 that passed the kernel-side filter, emitted when it
/// returns.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenEvent {
    pub hdr: Header,
    /// The new fd, or -errno.
    pub retval: i32,
    /// open(2) flags.
    pub flags: u32,
    pub dfd: i32,
    pub path_flags: u32,
    pub path_len: u32,
    pub _pad: u32,
    pub path: [u8; PATH_CAP],
}

/// The kernel structure offsets the programs use: (global variable in the
/// eBPF object, struct, member). The collector resolves them from the
/// running kernel's BTF (`/sys/kernel/btf/vmlinux`) and writes them into the
/// programs' read-only globals before loading, so the programs carry no
/// compile-time kernel layout. `OFFSETS_OK` is set to 1 only when every one
/// was found; otherwise the programs leave ppid, parent comm and socket
/// details at zero and the collector fills what it can from /proc.
pub const OFFSETS: [(&str, &str, &str); 14] = [
    ("OFF_TASK_REAL_PARENT", "task_struct", "real_parent"),
    ("OFF_TASK_GROUP_LEADER", "task_struct", "group_leader"),
    ("OFF_TASK_TGID", "task_struct", "tgid"),
    ("OFF_TASK_COMM", "task_struct", "comm"),
    ("OFF_TASK_FILES", "task_struct", "files"),
    ("OFF_FILES_FDT", "files_struct", "fdt"),
    ("OFF_FDT_FD", "fdtable", "fd"),
    ("OFF_FDT_MAX_FDS", "fdtable", "max_fds"),
    ("OFF_FILE_PRIVATE_DATA", "file", "private_data"),
    ("OFF_SOCKET_TYPE", "socket", "type"),
    ("OFF_SOCKET_SK", "socket", "sk"),
    ("OFF_SK_NUM", "sock_common", "skc_num"),
    ("OFF_SK_RCV_SADDR", "sock_common", "skc_rcv_saddr"),
    ("OFF_SK_V6_RCV_SADDR", "sock_common", "skc_v6_rcv_saddr"),
];
