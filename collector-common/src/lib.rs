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

/// `ExecEvent::flags`: `filename` is the executable's path walked in the
/// kernel from the file executed (`bprm->file`): no `..`, symlink or fd
/// number left; `/memfd:NAME` for a memfd.
pub const EXEC_RESOLVED: u32 = 16;
/// `ExecEvent::flags`: argv was read from the new program's image once the
/// exec succeeded (`sched_process_exec`): what the program really got, not
/// the caller's memory at syscall entry.
pub const EXEC_ARGV_FROM_IMAGE: u32 = 32;
/// `ExecEvent::flags`: the executable file has no links left (deleted
/// after it was started, or memory-backed: a memfd).
pub const EXEC_DELETED: u32 = 64;

/// `OpenEvent::path_flags`: the path was longer than [`PATH_CAP`].
pub const OPEN_PATH_TRUNCATED: u32 = 1;
/// `OpenEvent::path_flags`: matched a sensitive prefix (a read that was
/// kept because of where it reads).
pub const OPEN_SENSITIVE: u32 = 2;
/// `OpenEvent::path_flags`: from openat2.
pub const OPEN_AT2: u32 = 4;
/// `OpenEvent::path_flags`: `path` was walked in the kernel from the
/// opened file (after the open succeeded): no `..`, `//`, relative path or
/// symlink left.
pub const OPEN_RESOLVED: u32 = 8;
/// `OpenEvent::path_flags`: the opened file's path could not be walked
/// (kept, never dropped; `path` is empty).
pub const OPEN_UNRESOLVED: u32 = 16;
/// `OpenEvent::path_flags`: sensitive by identity: the file's inode, or
/// that of a directory up to three levels above it, is a sensitive path's
/// (`match_id` its index, `match_depth` how far above the file). Through a
/// hard link or a bind mount `path` is the other name; the collector
/// reports the real one.
pub const OPEN_INODE_MATCH: u32 = 32;
/// `OpenEvent::path_flags`: from an io_uring completion.
pub const OPEN_URING: u32 = 64;

/// `ConnectEvent::flags`: a datagram (or a TCP Fast Open) sent to an
/// address by sendto/sendmsg, not a connect.
pub const CONNECT_SENDMSG: u32 = 1;
/// `ConnectEvent::flags`: sent with MSG_FASTOPEN.
pub const CONNECT_FASTOPEN: u32 = 2;
/// `ConnectEvent::flags`: no return value (seen before the operation).
pub const CONNECT_NO_RETVAL: u32 = 4;
/// `ConnectEvent::flags`: the peer was read from the kernel's socket after
/// the connect, not from the caller's memory.
pub const CONNECT_KERNEL_PEER: u32 = 8;
/// `ConnectEvent::flags`: from an io_uring completion.
pub const CONNECT_URING: u32 = 16;

/// Slots of the per-CPU drop counters (`DROPS` map).
pub const DROP_RINGBUF_FULL: u32 = 0;
pub const DROP_READ_FAILED: u32 = 1;
/// A per-thread stash was full or could not be written.
pub const DROP_STASH: u32 = 2;
/// A datagram destination already reported in the last minute (by design:
/// one event per process and destination a minute).
pub const DROP_SENDMSG_REPEAT: u32 = 3;
pub const DROP_SLOTS: u32 = 4;

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
    /// `CONNECT_*` flags.
    pub flags: u32,
    pub _pad: u32,
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
    /// With `OPEN_INODE_MATCH`: the sensitive path's index (in the order
    /// the collector loaded them) and its distance above the file (0 the
    /// file itself, 1 its directory, ...).
    pub match_id: u32,
    pub match_depth: u32,
    pub _pad: u32,
    pub path: [u8; PATH_CAP],
}

/// A sensitive path's identity, the key of the inode map: the kernel's
/// device number of its filesystem (`MKDEV(major, minor)` = major << 20 |
/// minor) and its inode number.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct InodeKey {
    pub dev: u64,
    pub ino: u64,
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

/// The offsets the kernel-resolving programs (`btf` hooks) use besides
/// [`OFFSETS`]: without every one of them the collector stays on the
/// syscall tracepoints.
pub const HOOK_OFFSETS: [(&str, &str, &str); 27] = [
    ("OFF_BPRM_FILE", "linux_binprm", "file"),
    ("OFF_BPRM_ARGC", "linux_binprm", "argc"),
    ("OFF_FILE_F_PATH", "file", "f_path"),
    ("OFF_FILE_F_MODE", "file", "f_mode"),
    ("OFF_FILE_F_FLAGS", "file", "f_flags"),
    ("OFF_PATH_MNT", "path", "mnt"),
    ("OFF_PATH_DENTRY", "path", "dentry"),
    ("OFF_DENTRY_PARENT", "dentry", "d_parent"),
    ("OFF_DENTRY_NAME", "dentry", "d_name"),
    ("OFF_DENTRY_INODE", "dentry", "d_inode"),
    ("OFF_QSTR_LEN", "qstr", "len"),
    ("OFF_QSTR_NAME", "qstr", "name"),
    ("OFF_VFSMOUNT_ROOT", "vfsmount", "mnt_root"),
    ("OFF_MOUNT_MNT", "mount", "mnt"),
    ("OFF_MOUNT_PARENT", "mount", "mnt_parent"),
    ("OFF_MOUNT_MOUNTPOINT", "mount", "mnt_mountpoint"),
    ("OFF_INODE_INO", "inode", "i_ino"),
    ("OFF_INODE_SB", "inode", "i_sb"),
    ("OFF_INODE_NLINK", "inode", "i_nlink"),
    ("OFF_SB_DEV", "super_block", "s_dev"),
    ("OFF_TASK_MM", "task_struct", "mm"),
    ("OFF_MM_ARG_START", "mm_struct", "arg_start"),
    ("OFF_MM_ARG_END", "mm_struct", "arg_end"),
    ("OFF_SK_FAMILY", "sock_common", "skc_family"),
    ("OFF_SK_DADDR", "sock_common", "skc_daddr"),
    ("OFF_SK_DPORT", "sock_common", "skc_dport"),
    ("OFF_SK_V6_DADDR", "sock_common", "skc_v6_daddr"),
];

/// io_uring request offsets: without them io_uring completions are not
/// captured (kernels before 5.1 have none).
pub const URING_OFFSETS: [(&str, &str, &str); 2] = [
    ("OFF_KIOCB_OPCODE", "io_kiocb", "opcode"),
    ("OFF_KIOCB_FILE", "io_kiocb", "file"),
];

/// x86-64: `thread_info` (the first member of `task_struct`) `status`,
/// whose TS_COMPAT bit marks a 32-bit syscall.
pub const COMPAT_OFFSETS: [(&str, &str, &str); 1] =
    [("OFF_THREAD_INFO_STATUS", "thread_info", "status")];
