//! Outlier's kernel programs. Syscall tracepoints capture execve/execveat,
//! connect (IPv4 and IPv6) and openat/openat2/open:
//!
//! - on entry, the arguments are copied from user memory into a per-thread
//!   stash (an LRU hash map, so a syscall that never returns cannot leak);
//! - on return, the stashed record gets the return value (and, for exec,
//!   the new program's name) and is sent to user space through one ring
//!   buffer, only as long as its variable part needs.
//!
//! openat is filtered here so a busy host does not flood user space: opens
//! for writing are kept unless their path is under a quiet prefix (`QUIET`,
//! e.g. /dev/null, /proc), reads only when their path is under a sensitive
//! prefix (`SENSITIVE`: credentials, ssh keys, cron, sudoers). Both are LPM
//! tries filled by the collector.
//!
//! On kernels with BPF LSM and BTF the collector attaches the programs of
//! `hooks.rs` instead (security hooks, resolved paths); these syscall
//! tracepoints are the fallback, and the exec ones stay attached to report
//! failed execs.
//!
//! Kernel structure offsets (parent task, socket details) are not compiled
//! in: the collector reads them from the running kernel's BTF and sets the
//! `OFF_*` read-only globals before loading.
#![no_std]
#![no_main]

use core::mem::{offset_of, size_of};
use core::ptr;

use aya_ebpf::Global;
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel,
    bpf_probe_read_kernel_buf, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
};
use aya_ebpf::macros::{map, tracepoint};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{LpmTrie, LruHashMap, PerCpuArray, RingBuf};
use aya_ebpf::programs::TracePointContext;
use outlier_collector_common::*;

mod hooks;

// ---- maps -----------------------------------------------------------------

/// Records to user space.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Exec records between entry and return, by thread: a sibling thread's
/// exec cannot replace or remove another's. A successful exec by a
/// non-leader thread returns as the leader: `sched_process_exec` moves its
/// record to that id.
#[map]
static EXECS: LruHashMap<u32, ExecEvent> = LruHashMap::with_max_entries(4096, 0);
/// Open and connect records between entry and return, by thread.
#[map]
static OPENS: LruHashMap<u64, OpenEvent> = LruHashMap::with_max_entries(8192, 0);
/// Opens whose path was not readable at entry (its page not yet faulted
/// in, as for a string in a freshly exec'd program's read-only data): read
/// again at exit, when the kernel has copied it and the page is present.
#[map]
static OPEN_RETRY: LruHashMap<u64, PendingOpen> = LruHashMap::with_max_entries(8192, 0);

const AT_FDCWD: i32 = -100;

/// What an open's exit needs to read its path again.
#[derive(Clone, Copy)]
#[repr(C)]
struct PendingOpen {
    filename: u64,
    flags: u32,
    dfd: i32,
    path_flags: u32,
    _pad: u32,
}
#[map]
static CONNECTS: LruHashMap<u64, ConnectEvent> = LruHashMap::with_max_entries(8192, 0);

/// Scratch space: records are far larger than the 512-byte stack.
#[map]
static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
static OPEN_SCRATCH: PerCpuArray<OpenEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
static KEY_SCRATCH: PerCpuArray<Key<[u8; PREFIX_CAP]>> = PerCpuArray::with_max_entries(1, 0);

/// Path prefixes whose reads are captured.
#[map]
static SENSITIVE: LpmTrie<[u8; PREFIX_CAP], u8> = LpmTrie::with_max_entries(1024, 0);
/// Path prefixes whose writes are not captured.
#[map]
static QUIET: LpmTrie<[u8; PREFIX_CAP], u8> = LpmTrie::with_max_entries(1024, 0);

/// Per-CPU counters of records lost in the kernel (`DROP_*` slots).
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);

// ---- settings (read-only globals set by the collector) ---------------------

/// The collector's own process: its spool writes and Kafka connections are
/// not captured (they would feed back into themselves).
#[unsafe(no_mangle)]
static SELF_TGID: Global<u32> = Global::new(0);
/// 1: capture opens for writing (outside `QUIET`); 0: only sensitive paths.
#[unsafe(no_mangle)]
static OPEN_WRITES: Global<u32> = Global::new(1);
/// 1 when every `OFF_*` below was resolved from the kernel's BTF.
#[unsafe(no_mangle)]
static OFFSETS_OK: Global<u32> = Global::new(0);

#[unsafe(no_mangle)]
static OFF_TASK_REAL_PARENT: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_TASK_GROUP_LEADER: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_TASK_TGID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_TASK_COMM: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_TASK_FILES: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_FILES_FDT: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_FDT_FD: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_FDT_MAX_FDS: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_FILE_PRIVATE_DATA: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_SOCKET_TYPE: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_SOCKET_SK: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_SK_NUM: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_SK_RCV_SADDR: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_SK_V6_RCV_SADDR: Global<u32> = Global::new(0);

// ---- constants ----------------------------------------------------------------

/// Syscall tracepoint records: arguments start at byte 16, 8 bytes each;
/// the exit records hold the return value at 16.
const ARG0: usize = 16;
const RET: usize = 16;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EINPROGRESS: i32 = 115;
const ENOENT: i64 = 2;

const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;

// ---- helpers -----------------------------------------------------------------

#[inline(always)]
fn tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
fn count_drop(slot: u32) {
    if let Some(c) = DROPS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot: no other program writes it concurrently.
        unsafe { *c += 1 };
    }
}

/// Reads a kernel pointer-sized value at `base + off`.
#[inline(always)]
unsafe fn kread_u64(base: u64, off: u32) -> u64 {
    if base == 0 {
        return 0;
    }
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const u64).unwrap_or(0) }
}

/// Fills the header of a record with the current task's identity.
#[inline(always)]
unsafe fn fill_header(h: *mut Header, kind: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    unsafe {
        (*h).kind = kind;
        (*h).tgid = (pid_tgid >> 32) as u32;
        (*h).tid = pid_tgid as u32;
        (*h).uid = uid_gid as u32;
        (*h).gid = (uid_gid >> 32) as u32;
        (*h).ktime_ns = bpf_ktime_get_ns();
        (*h).cgroup_id = bpf_get_current_cgroup_id();
        (*h).comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
        (*h).ppid = 0;
        (*h).pcomm = [0; COMM_LEN];
        if OFFSETS_OK.load() == 1 {
            let task = bpf_get_current_task();
            let parent = kread_u64(task, OFF_TASK_REAL_PARENT.load());
            if parent != 0 {
                let p = parent as *const u8;
                (*h).ppid =
                    bpf_probe_read_kernel(p.add(OFF_TASK_TGID.load() as usize) as *const u32)
                        .unwrap_or(0);
                // The process's name, not that of the thread that forked.
                let leader = kread_u64(parent, OFF_TASK_GROUP_LEADER.load());
                let named = if leader != 0 { leader } else { parent } as *const u8;
                let _ = bpf_probe_read_kernel_buf(
                    named.add(OFF_TASK_COMM.load() as usize),
                    &mut (*h).pcomm,
                );
            }
        }
    }
}

/// Sends the first `len` bytes of a stashed record (bounded by `T`).
#[inline(always)]
unsafe fn send<T>(rec: *const T, len: usize) {
    if len > size_of::<T>() {
        return;
    }
    let bytes = unsafe { core::slice::from_raw_parts(rec as *const u8, len) };
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        count_drop(DROP_RINGBUF_FULL);
    }
}

// ---- exec --------------------------------------------------------------------

#[tracepoint]
pub fn outlier_execve(ctx: TracePointContext) -> u32 {
    let _ = unsafe { exec_enter(&ctx, ARG0, ARG0 + 8, 0) };
    0
}

#[tracepoint]
pub fn outlier_execveat(ctx: TracePointContext) -> u32 {
    let _ = unsafe { exec_enter(&ctx, ARG0 + 8, ARG0 + 16, EXEC_AT) };
    0
}

#[inline(always)]
unsafe fn exec_enter(
    ctx: &TracePointContext,
    filename_at: usize,
    argv_at: usize,
    flags: u32,
) -> Result<(), i32> {
    if tgid() == SELF_TGID.load() {
        return Ok(());
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let ev = EXEC_SCRATCH.get_ptr_mut(0).ok_or(0)?;
    unsafe {
        fill_header(ptr::addr_of_mut!((*ev).hdr), KIND_EXEC);
        (*ev).retval = 0;
        (*ev).flags = flags;
        (*ev).argc = 0;
        (*ev).args_copied = 0;
        (*ev).args_len = 0;
        (*ev).filename_len = 0;
        let filename = ctx.read_at::<u64>(filename_at)? as *const u8;
        if let Ok(s) = bpf_probe_read_user_str_bytes(filename, &mut (*ev).filename) {
            let n = s.len();
            (*ev).filename_len = n as u32;
            if n >= PATH_CAP - 1 {
                (*ev).flags |= EXEC_FILENAME_TRUNCATED;
            }
        }
        let argv = ctx.read_at::<u64>(argv_at)? as *const u64;
        read_args(ev, argv);
        if EXECS.insert(tid, &*ev, 0).is_err() {
            count_drop(DROP_STASH);
        }
    }
    Ok(())
}

/// Copies argv (NUL-separated) into the record: at most `ARGC_MAX`
/// arguments, each into a window of `ARGS_CAP` bytes starting where the
/// previous one ended (the buffer is twice that, so every window fits).
/// Arguments beyond what is copied are counted.
#[inline(always)]
unsafe fn read_args(ev: *mut ExecEvent, argv: *const u64) {
    let mut off: usize = 0;
    let mut i: usize = 0;
    let mut more = false;
    while i < ARGC_MAX {
        let p = match unsafe { bpf_probe_read_user(argv.add(i)) } {
            Ok(p) => p,
            Err(_) => {
                unsafe { (*ev).flags |= EXEC_ARGS_FAULT };
                break;
            }
        };
        if p == 0 {
            break;
        }
        if off >= ARGS_CAP {
            more = true;
            break;
        }
        let base = off & (ARGS_CAP - 1);
        let dst =
            unsafe { core::slice::from_raw_parts_mut((*ev).args.as_mut_ptr().add(base), ARGS_CAP) };
        match unsafe { bpf_probe_read_user_str_bytes(p as *const u8, dst) } {
            Ok(s) => {
                let n = s.len();
                if n >= ARGS_CAP - 1 {
                    unsafe { (*ev).flags |= EXEC_ARGS_TRUNCATED };
                }
                if let Some(b) = unsafe { (*ev).args.get_mut(base + n) } {
                    *b = 0;
                }
                off = base + n + 1;
            }
            Err(_) => {
                unsafe { (*ev).flags |= EXEC_ARGS_FAULT };
                break;
            }
        }
        i += 1;
    }
    unsafe {
        (*ev).args_copied = i as u32;
        (*ev).args_len = off as u32;
    }
    let mut argc = i;
    if i == ARGC_MAX {
        // Is there a 65th argument?
        if let Ok(p) = unsafe { bpf_probe_read_user(argv.add(i)) }
            && p != 0
        {
            more = true;
        }
    }
    if more {
        unsafe { (*ev).flags |= EXEC_ARGS_TRUNCATED };
        // Count the rest without copying them.
        while argc < ARGC_COUNT_MAX {
            match unsafe { bpf_probe_read_user(argv.add(argc)) } {
                Ok(p) if p != 0 => argc += 1,
                _ => break,
            }
        }
    }
    unsafe { (*ev).argc = argc as u32 };
}

#[tracepoint]
pub fn outlier_exec_exit(ctx: TracePointContext) -> u32 {
    let _ = unsafe { exec_exit(&ctx) };
    0
}

#[inline(always)]
unsafe fn exec_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let ev = EXECS.get_ptr_mut(tid).ok_or(0)?;
    unsafe {
        let ret = ctx.read_at::<i64>(RET)?;
        if ret == -ENOENT || (ret == 0 && hooks::HOOKS.load() == 1) {
            // A PATH search trying directories (execvp, env): not an
            // execution, and on a busy host most failed execs are these.
            // With the hooks, `sched_process_exec` reported the success.
            let _ = EXECS.remove(tid);
            return Ok(());
        }
        (*ev).retval = ret as i32;
        if ret == 0 {
            // The new program's name and credentials.
            (*ev).hdr.comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
            let uid_gid = bpf_get_current_uid_gid();
            (*ev).hdr.uid = uid_gid as u32;
            (*ev).hdr.gid = (uid_gid >> 32) as u32;
        }
        let len = offset_of!(ExecEvent, args) + ((*ev).args_len as usize & (ARGS_BUF - 1));
        send(ev, len);
        let _ = EXECS.remove(tid);
    }
    Ok(())
}

/// `sched/sched_process_exec` (syscall tracepoints only): a non-leader
/// thread that execs returns as the leader, so its record moves to that
/// thread id (`old_pid` at 16 in the record).
#[tracepoint]
pub fn outlier_sched_exec(ctx: TracePointContext) -> u32 {
    let Ok(old) = (unsafe { ctx.read_at::<i32>(16) }) else {
        return 0;
    };
    let old = old as u32;
    let tid = bpf_get_current_pid_tgid() as u32;
    if old != tid
        && let Some(e) = EXECS.get_ptr(&old)
    {
        if unsafe { EXECS.insert(&tid, &*e, 0) }.is_err() {
            count_drop(DROP_STASH);
        }
        let _ = EXECS.remove(&old);
    }
    0
}

// ---- open --------------------------------------------------------------------

#[tracepoint]
pub fn outlier_openat(ctx: TracePointContext) -> u32 {
    // openat(dfd, filename, flags, mode)
    let _ = unsafe { open_enter(&ctx, ARG0 + 8, FlagsAt::Arg(ARG0 + 16), 0) };
    0
}

#[tracepoint]
pub fn outlier_openat2(ctx: TracePointContext) -> u32 {
    // openat2(dfd, filename, struct open_how *how, size)
    let _ = unsafe { open_enter(&ctx, ARG0 + 8, FlagsAt::How(ARG0 + 16), OPEN_AT2) };
    0
}

#[tracepoint]
pub fn outlier_creat(ctx: TracePointContext) -> u32 {
    // creat(filename, mode) = open(filename, O_CREAT | O_WRONLY | O_TRUNC, mode)
    let flags = FlagsAt::Const(O_CREAT | O_WRONLY | O_TRUNC);
    let _ = unsafe { open_enter(&ctx, ARG0, flags, 0) };
    0
}

#[tracepoint]
pub fn outlier_open(ctx: TracePointContext) -> u32 {
    // open(filename, flags, mode)
    let _ = unsafe { open_enter(&ctx, ARG0, FlagsAt::Arg(ARG0 + 8), 0) };
    0
}

enum FlagsAt {
    /// The flags are this syscall argument.
    Arg(usize),
    /// Implied by the syscall (creat).
    Const(u32),
    /// This argument points at a `struct open_how` (flags first).
    How(usize),
}

#[inline(always)]
unsafe fn open_enter(
    ctx: &TracePointContext,
    filename_at: usize,
    flags_at: FlagsAt,
    path_flags: u32,
) -> Result<(), i32> {
    if tgid() == SELF_TGID.load() {
        return Ok(());
    }
    let flags = unsafe {
        match flags_at {
            FlagsAt::Arg(at) => ctx.read_at::<u64>(at)? as u32,
            FlagsAt::Const(f) => f,
            FlagsAt::How(at) => {
                let how = ctx.read_at::<u64>(at)? as *const u64;
                bpf_probe_read_user(how)? as u32
            }
        }
    };
    let filename = unsafe { ctx.read_at::<u64>(filename_at)? };
    // open(2) has no directory fd: relative to the working directory.
    let dfd = if filename_at == ARG0 {
        AT_FDCWD
    } else {
        unsafe { ctx.read_at::<u64>(ARG0).unwrap_or(0) as i32 }
    };
    let p = PendingOpen {
        filename,
        flags,
        dfd,
        path_flags,
        _pad: 0,
    };
    if hooks::HOOKS.load() == 1 {
        // Resolved from the kernel's file at exit; the path the caller
        // gave is read only if the open fails.
        if OPEN_RETRY
            .insert(bpf_get_current_pid_tgid(), &p, 0)
            .is_err()
        {
            count_drop(DROP_STASH);
        }
        return Ok(());
    }
    unsafe { open_record(&p, true) }
}

/// Reads an open's path, applies the filter, and stashes the record for
/// the exit hook. At entry (`retry`), an unreadable path is left for the
/// exit hook to read again; at exit it is counted as lost.
#[inline(always)]
unsafe fn open_record(p: &PendingOpen, retry: bool) -> Result<(), i32> {
    let flags = p.flags;
    let write = flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC) != 0;
    let ev = OPEN_SCRATCH.get_ptr_mut(0).ok_or(0)?;
    let key = KEY_SCRATCH.get_ptr_mut(0).ok_or(0)?;
    unsafe {
        let filename = p.filename as *const u8;
        let n = match bpf_probe_read_user_str_bytes(filename, &mut (*ev).path) {
            Ok(s) => s.len(),
            Err(_) => {
                if retry {
                    OPEN_RETRY.insert(bpf_get_current_pid_tgid(), p, 0)?;
                } else {
                    count_drop(DROP_READ_FAILED);
                }
                return Ok(());
            }
        };
        // The trie key: the path's first PREFIX_CAP bytes.
        let _ =
            bpf_probe_read_kernel_buf((*ev).path.as_ptr(), &mut *ptr::addr_of_mut!((*key).data));
        let bits = (if n < PREFIX_CAP { n } else { PREFIX_CAP } * 8) as u32;
        ptr::write_unaligned(ptr::addr_of_mut!((*key).prefix_len), bits);
        let sensitive = SENSITIVE.get(&*key).is_some();
        if !keep_open(sensitive, write, key) {
            return Ok(());
        }
        fill_header(ptr::addr_of_mut!((*ev).hdr), KIND_OPEN);
        (*ev).retval = 0;
        (*ev).flags = flags;
        (*ev).dfd = p.dfd;
        (*ev).path_flags = p.path_flags
            | if sensitive { OPEN_SENSITIVE } else { 0 }
            | if n >= PATH_CAP - 1 {
                OPEN_PATH_TRUNCATED
            } else {
                0
            };
        (*ev).path_len = n as u32;
        OPENS.insert(bpf_get_current_pid_tgid(), &*ev, 0)?;
    }
    Ok(())
}

#[tracepoint]
pub fn outlier_open_exit(ctx: TracePointContext) -> u32 {
    let _ = unsafe { open_exit(&ctx) };
    0
}

#[inline(always)]
unsafe fn open_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let id = bpf_get_current_pid_tgid();
    if hooks::HOOKS.load() == 1 {
        let Some(p) = (unsafe { OPEN_RETRY.get(&id) }).copied() else {
            return Ok(());
        };
        let _ = OPEN_RETRY.remove(&id);
        let ret = unsafe { ctx.read_at::<i64>(RET)? };
        if ret >= 0 {
            unsafe { hooks::resolved_open(ret as i32, p.flags, p.path_flags) };
            return Ok(());
        }
        // Failed: what the caller asked for, if it matters.
        let _ = unsafe { open_record(&p, false) };
    } else if let Some(p) = unsafe { OPEN_RETRY.get(&id) } {
        let p = *p;
        let _ = OPEN_RETRY.remove(&id);
        let _ = unsafe { open_record(&p, false) };
    }
    let ev = OPENS.get_ptr_mut(id).ok_or(0)?;
    unsafe {
        (*ev).retval = ctx.read_at::<i64>(RET)? as i32;
        let len = offset_of!(OpenEvent, path) + ((*ev).path_len as usize & (PATH_CAP - 1)) + 1;
        send(ev, len);
        let _ = OPENS.remove(id);
    }
    Ok(())
}

// ---- connect -----------------------------------------------------------------

#[tracepoint]
pub fn outlier_connect(ctx: TracePointContext) -> u32 {
    let _ = unsafe { connect_enter(&ctx) };
    0
}

/// Reads a caller's sockaddr (family, port, address) into `ev`; false when
/// it is not AF_INET/AF_INET6.
#[inline(always)]
unsafe fn user_sockaddr(ev: &mut ConnectEvent, sa: *const u8) -> Result<bool, i32> {
    unsafe {
        let family: u16 = bpf_probe_read_user(sa as *const u16)?;
        if family != AF_INET && family != AF_INET6 {
            return Ok(false);
        }
        ev.family = family;
        ev.port = u16::from_be(bpf_probe_read_user(sa.add(2) as *const u16)?);
        if family == AF_INET {
            let a: [u8; 4] = bpf_probe_read_user(sa.add(4) as *const [u8; 4])?;
            ev.addr[..4].copy_from_slice(&a);
        } else {
            ev.addr = bpf_probe_read_user(sa.add(8) as *const [u8; 16])?;
        }
        Ok(true)
    }
}

/// The in-kernel open filter: sensitive opens are kept, writes unless
/// quiet (with `OPEN_WRITES`), other reads not. `key` holds the path's
/// prefix-trie key.
#[inline(always)]
unsafe fn keep_open(sensitive: bool, write: bool, key: *const Key<[u8; PREFIX_CAP]>) -> bool {
    sensitive || (write && OPEN_WRITES.load() == 1 && unsafe { QUIET.get(&*key) }.is_none())
}

/// When each (process, destination) of a datagram was last reported.
#[map]
static SENT: LruHashMap<SendKey, u64> = LruHashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct SendKey {
    tgid: u32,
    family: u16,
    port: u16,
    addr: [u8; 16],
}

/// One datagram event per process and destination per this long.
const SEND_REPEAT_NS: u64 = 60_000_000_000;
const MSG_FASTOPEN: u64 = 0x2000_0000;

#[tracepoint]
pub fn outlier_sendto(ctx: TracePointContext) -> u32 {
    // sendto(fd, buff, len, flags, addr, addr_len)
    let _ = unsafe {
        match ctx.read_at::<u64>(ARG0 + 32) {
            Ok(addr) => send_to(&ctx, addr, ARG0 + 24),
            Err(e) => Err(e as i32),
        }
    };
    0
}

#[tracepoint]
pub fn outlier_sendmsg(ctx: TracePointContext) -> u32 {
    // sendmsg(fd, struct user_msghdr *msg, flags): msg_name first
    let _ = unsafe {
        match ctx.read_at::<u64>(ARG0 + 8) {
            Ok(msg) => match bpf_probe_read_user(msg as *const u64) {
                Ok(name) => send_to(&ctx, name, ARG0 + 16),
                Err(e) => Err(e as i32),
            },
            Err(e) => Err(e as i32),
        }
    };
    0
}

/// A send that names its destination (UDP, TCP Fast Open): reported like
/// a connect, without a result, once a minute per process and destination.
#[inline(always)]
unsafe fn send_to(ctx: &TracePointContext, sa: u64, flags_at: usize) -> Result<(), i32> {
    let me = tgid();
    if sa == 0 || me == SELF_TGID.load() {
        return Ok(());
    }
    unsafe {
        let mut ev: ConnectEvent = core::mem::zeroed();
        if !user_sockaddr(&mut ev, sa as *const u8)? {
            return Ok(());
        }
        let k = SendKey {
            tgid: me,
            family: ev.family,
            port: ev.port,
            addr: ev.addr,
        };
        let now = bpf_ktime_get_ns();
        if let Some(last) = SENT.get(&k)
            && now.wrapping_sub(*last) < SEND_REPEAT_NS
        {
            count_drop(DROP_SENDMSG_REPEAT);
            return Ok(());
        }
        let _ = SENT.insert(&k, &now, 0);
        fill_header(&mut ev.hdr, KIND_CONNECT);
        ev.fd = ctx.read_at::<u64>(ARG0)? as i32;
        let flags = ctx.read_at::<u64>(flags_at).unwrap_or(0);
        ev.flags = CONNECT_SENDMSG
            | CONNECT_NO_RETVAL
            | if flags & MSG_FASTOPEN != 0 {
                CONNECT_FASTOPEN
            } else {
                0
            };
        if OFFSETS_OK.load() == 1 {
            socket_details(&mut ev);
        }
        send(&ev, size_of::<ConnectEvent>());
    }
    Ok(())
}

#[inline(always)]
unsafe fn connect_enter(ctx: &TracePointContext) -> Result<(), i32> {
    if tgid() == SELF_TGID.load() {
        return Ok(());
    }
    unsafe {
        // connect(fd, uservaddr, addrlen)
        let fd = ctx.read_at::<u64>(ARG0)? as i32;
        let sa = ctx.read_at::<u64>(ARG0 + 8)? as *const u8;
        let mut ev: ConnectEvent = core::mem::zeroed();
        if !user_sockaddr(&mut ev, sa)? {
            return Ok(());
        }
        fill_header(&mut ev.hdr, KIND_CONNECT);
        ev.fd = fd;
        CONNECTS.insert(bpf_get_current_pid_tgid(), &ev, 0)?;
    }
    Ok(())
}

#[tracepoint]
pub fn outlier_connect_exit(ctx: TracePointContext) -> u32 {
    let _ = unsafe { connect_exit(&ctx) };
    0
}

#[inline(always)]
unsafe fn connect_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let id = bpf_get_current_pid_tgid();
    let ev = CONNECTS.get_ptr_mut(id).ok_or(0)?;
    unsafe {
        let ret = ctx.read_at::<i64>(RET)? as i32;
        (*ev).retval = ret;
        if OFFSETS_OK.load() == 1 && (ret == 0 || ret == -EINPROGRESS) {
            socket_details(ev);
            if hooks::HOOKS.load() == 1 {
                hooks::kernel_peer(ev);
            }
        }
        send(ev, size_of::<ConnectEvent>());
        let _ = CONNECTS.remove(id);
    }
    Ok(())
}

/// The socket behind the connect's fd: its type and, once connected (or
/// connecting), the local address and port the kernel chose.
#[inline(always)]
unsafe fn socket_details(ev: *mut ConnectEvent) {
    unsafe {
        let fd = (*ev).fd;
        if fd < 0 {
            return;
        }
        let sock = kread_u64(fd_file(fd), OFF_FILE_PRIVATE_DATA.load());
        sock_details(&mut *ev, sock, true);
    }
}

/// The current task's open file behind `fd` (0 when there is none).
#[inline(always)]
unsafe fn fd_file(fd: i32) -> u64 {
    if fd < 0 {
        return 0;
    }
    unsafe {
        let task = bpf_get_current_task();
        let files = kread_u64(task, OFF_TASK_FILES.load());
        let fdt = kread_u64(files, OFF_FILES_FDT.load());
        if fdt == 0 {
            return 0;
        }
        let max_fds: u32 =
            bpf_probe_read_kernel((fdt + u64::from(OFF_FDT_MAX_FDS.load())) as *const u32)
                .unwrap_or(0);
        if fd as u32 >= max_fds {
            return 0;
        }
        let fds = kread_u64(fdt, OFF_FDT_FD.load());
        if fds == 0 {
            return 0;
        }
        bpf_probe_read_kernel((fds + 8 * fd as u64) as *const u64).unwrap_or(0)
    }
}

/// A socket's type and, with `local`, its local address and port.
#[inline(always)]
unsafe fn sock_details(ev: &mut ConnectEvent, sock: u64, local: bool) {
    unsafe {
        if sock == 0 {
            return;
        }
        ev.sock_type =
            bpf_probe_read_kernel((sock + u64::from(OFF_SOCKET_TYPE.load())) as *const u16)
                .unwrap_or(0);
        let sk = kread_u64(sock, OFF_SOCKET_SK.load());
        if sk == 0 || !local {
            return;
        }
        ev.local_port =
            bpf_probe_read_kernel((sk + u64::from(OFF_SK_NUM.load())) as *const u16).unwrap_or(0);
        if ev.family == AF_INET {
            let a: [u8; 4] =
                bpf_probe_read_kernel((sk + u64::from(OFF_SK_RCV_SADDR.load())) as *const [u8; 4])
                    .unwrap_or([0; 4]);
            ev.local_addr[..4].copy_from_slice(&a);
        } else {
            ev.local_addr = bpf_probe_read_kernel(
                (sk + u64::from(OFF_SK_V6_RCV_SADDR.load())) as *const [u8; 16],
            )
            .unwrap_or([0; 16]);
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
