//! Capture from the kernel's own objects (the collector's `btf` hooks,
//! chosen on kernels with BTF; the plain syscall tracepoints in `main.rs`
//! are the fallback). What the kernel resolved is read after it resolved
//! it, so no path trick, symlink, fd or racing thread changes what is
//! reported:
//!
//! - exec: `tp_btf/sched_process_exec` (every exec path: execve, execveat,
//!   fexecve of a memfd, 32-bit, binfmt scripts) with the executable from
//!   `bprm->file` (its path walked in the kernel's dentry and mount tree;
//!   unlinked or memory-backed files flagged) and argv read from the new
//!   image (no other thread of the caller survives an exec).
//! - open: at syscall exit (open, openat, openat2, creat), in io_uring
//!   completions and in 32-bit syscalls, the new fd's `struct file`. A read
//!   is sensitive by the file's identity (its inode, or its directories'
//!   up to three levels, against the sensitive paths' identities the
//!   collector loads and refreshes): no path trick, hard link or bind
//!   mount changes it, and ordinary reads cost no path walk. Kept opens
//!   get their path walked in the kernel (no `..`, `//`, relative path or
//!   symlink left). Failed opens report the path the caller asked for.
//! - connect: the peer the kernel's socket holds after the connect (not
//!   the caller's memory), also for io_uring and 32-bit connects.
//! - datagrams: sendto/sendmsg naming a destination (UDP, TCP Fast Open),
//!   once a minute per process and destination (`main.rs`).
//!
//! Security hooks (BPF LSM) and fentry would see opens before they happen;
//! they need BPF trampolines, which not every kernel allows
//! (docs/collector.md).

use core::mem::offset_of;
use core::ptr;

use aya_ebpf::Global;
use aya_ebpf::helpers::generated::{
    bpf_probe_read_kernel as probe_read_kernel_raw, bpf_probe_read_user as probe_read_user_raw,
};
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use aya_ebpf::macros::{btf_tracepoint, map, tracepoint};
use aya_ebpf::maps::{HashMap, PerCpuArray};
use aya_ebpf::programs::{BtfTracePointContext, TracePointContext};
use outlier_collector_common::*;

use crate::{
    AF_INET, AF_INET6, ARG0, EINPROGRESS, EXEC_SCRATCH, EXECS, FlagsAt, KEY_SCRATCH, O_CREAT,
    O_RDWR, O_TRUNC, O_WRONLY, OFF_FILE_PRIVATE_DATA, OFF_SOCKET_SK, OPEN_SCRATCH, SELF_TGID,
    SENSITIVE, connect_enter, connect_exit, fd_file, fill_header, keep_open, kread_u64, open_enter,
    open_exit, send, sock_details, tgid,
};

/// 1 when the collector chose these programs.
#[unsafe(no_mangle)]
pub static HOOKS: Global<u32> = Global::new(0);
/// 1 when io_uring completions are captured (their offsets were found).
#[unsafe(no_mangle)]
static URING: Global<u32> = Global::new(0);

macro_rules! offsets {
    ($($name:ident),* $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            static $name: Global<u32> = Global::new(0);
        )*
    };
}

offsets!(
    OFF_BPRM_FILE,
    OFF_BPRM_ARGC,
    OFF_FILE_F_PATH,
    OFF_FILE_F_MODE,
    OFF_FILE_F_FLAGS,
    OFF_PATH_MNT,
    OFF_PATH_DENTRY,
    OFF_DENTRY_PARENT,
    OFF_DENTRY_NAME,
    OFF_DENTRY_INODE,
    OFF_QSTR_LEN,
    OFF_QSTR_NAME,
    OFF_VFSMOUNT_ROOT,
    OFF_MOUNT_MNT,
    OFF_MOUNT_PARENT,
    OFF_MOUNT_MOUNTPOINT,
    OFF_INODE_INO,
    OFF_INODE_SB,
    OFF_INODE_NLINK,
    OFF_SB_DEV,
    OFF_TASK_MM,
    OFF_MM_ARG_START,
    OFF_MM_ARG_END,
    OFF_SK_FAMILY,
    OFF_SK_DADDR,
    OFF_SK_DPORT,
    OFF_SK_V6_DADDR,
    OFF_THREAD_INFO_STATUS,
    OFF_KIOCB_OPCODE,
    OFF_KIOCB_FILE,
);

const FMODE_WRITE: u32 = 0x2;
/// x86 `thread_info.status`: in a 32-bit syscall.
const TS_COMPAT: u32 = 0x2;
const IORING_OP_CONNECT: u8 = 16;
const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_OPENAT2: u8 = 28;

/// Path components walked (deeper paths are cut at the top and flagged).
const DEPTH: usize = 32;

/// A path walk: component names leaf first, then the path built.
#[repr(C)]
pub struct Walk {
    /// Components found. Kept here, not in a local: read back from map
    /// memory it is an unknown to the verifier, which then checks each
    /// loop once instead of once per possible count.
    n: u32,
    _pad: u32,
    names: [u64; DEPTH],
    lens: [u32; DEPTH],
    /// `PATH_CAP` plus one name, so every name's copy stays in bounds.
    buf: [u8; PATH_CAP + 256],
}

#[map]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// Sensitive paths' identities (filled by the collector) → their index.
#[map]
static SENSITIVE_INODES: HashMap<InodeKey, u32> = HashMap::with_max_entries(4096, 0);

#[inline(always)]
fn off(g: &Global<u32>) -> u64 {
    u64::from(g.load())
}

#[inline(always)]
unsafe fn kread_u32(addr: u64) -> u32 {
    if addr < 4096 {
        return 0;
    }
    unsafe { bpf_probe_read_kernel(addr as *const u32).unwrap_or(0) }
}

/// What a path walk found besides the path.
struct Walked {
    len: usize,
    truncated: bool,
    /// The file's inode has no links left (unlinked, or a memfd).
    deleted: bool,
}

/// Walks `file`'s path in the kernel's dentry and mount tree, as `d_path`
/// does, into `w.buf` (NUL-terminated). Relative to the root of the
/// task's mount namespace.
#[inline(always)]
unsafe fn walk_file(file: u64, w: *mut Walk) -> Option<Walked> {
    unsafe {
        if file == 0 {
            return None;
        }
        let fpath = file + off(&OFF_FILE_F_PATH);
        let first = kread_u64(fpath, OFF_PATH_DENTRY.load());
        let mut vfsmnt = kread_u64(fpath, OFF_PATH_MNT.load());
        if first == 0 || vfsmnt == 0 {
            return None;
        }
        let mut mnt = vfsmnt - off(&OFF_MOUNT_MNT);
        let mut dentry = first;
        let mut truncated = false;
        ptr::write_volatile(ptr::addr_of_mut!((*w).n), 0);
        let mut i = 0;
        while i < DEPTH + 8 {
            i += 1;
            let n = ptr::read_volatile(ptr::addr_of!((*w).n)) as usize;
            let root = kread_u64(vfsmnt, OFF_VFSMOUNT_ROOT.load());
            let parent = kread_u64(dentry, OFF_DENTRY_PARENT.load());
            if dentry == root || dentry == parent {
                if dentry != root {
                    // A pseudo file (memfd, pipe) or a disconnected
                    // dentry: its own name is all there is.
                    if n < DEPTH {
                        let q = dentry + off(&OFF_DENTRY_NAME);
                        (*w).names[n & (DEPTH - 1)] = kread_u64(q, OFF_QSTR_NAME.load());
                        (*w).lens[n & (DEPTH - 1)] = kread_u32(q + off(&OFF_QSTR_LEN));
                        ptr::write_volatile(ptr::addr_of_mut!((*w).n), n as u32 + 1);
                    }
                    break;
                }
                let up = kread_u64(mnt, OFF_MOUNT_PARENT.load());
                if up == mnt || up == 0 {
                    break;
                }
                dentry = kread_u64(mnt, OFF_MOUNT_MOUNTPOINT.load());
                mnt = up;
                vfsmnt = mnt + off(&OFF_MOUNT_MNT);
                continue;
            }
            if n >= DEPTH {
                truncated = true;
                break;
            }
            let q = dentry + off(&OFF_DENTRY_NAME);
            (*w).names[n & (DEPTH - 1)] = kread_u64(q, OFF_QSTR_NAME.load());
            (*w).lens[n & (DEPTH - 1)] = kread_u32(q + off(&OFF_QSTR_LEN));
            ptr::write_volatile(ptr::addr_of_mut!((*w).n), n as u32 + 1);
            dentry = parent;
        }
        let n = ptr::read_volatile(ptr::addr_of!((*w).n)) as usize;
        // Root first.
        let mut at: usize = 0;
        let mut j = 0;
        while j < DEPTH {
            if j >= n {
                break;
            }
            let k = (n - 1 - j) & (DEPTH - 1);
            let len = (*w).lens[k] as usize & 255;
            let dst = at & (PATH_CAP - 1);
            (*w).buf[dst] = b'/';
            let dst = (at + 1) & (PATH_CAP - 1);
            if len > 0 {
                let r = probe_read_kernel_raw(
                    (*w).buf.as_mut_ptr().add(dst) as *mut _,
                    len as u32,
                    (*w).names[k] as *const _,
                );
                if r != 0 {
                    return None;
                }
            }
            at = at + 1 + len;
            if at >= PATH_CAP - 1 {
                truncated = true;
                at = PATH_CAP - 1;
                break;
            }
            j += 1;
        }
        if n == 0 {
            (*w).buf[0] = b'/';
            at = 1;
        }
        (*w).buf[at & (PATH_CAP - 1)] = 0;
        let inode = kread_u64(first, OFF_DENTRY_INODE.load());
        let nlink = kread_u32(inode + off(&OFF_INODE_NLINK));
        Some(Walked {
            len: at,
            truncated,
            deleted: inode != 0 && nlink == 0,
        })
    }
}

// ---- exec ---------------------------------------------------------------------

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct
/// linux_binprm *bprm)`: after a successful exec, in the new program.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn outlier_exec_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = unsafe { exec_btf(&ctx) };
    0
}

#[inline(always)]
unsafe fn exec_btf(ctx: &BtfTracePointContext) -> Result<(), i32> {
    if tgid() == SELF_TGID.load() {
        return Ok(());
    }
    let old: i32 = ctx.arg(1);
    let bprm: u64 = ctx.arg(2);
    // The syscall's record (kept for a failure) is not needed.
    let _ = EXECS.remove(&(old as u32));
    let ev = EXEC_SCRATCH.get_ptr_mut(0).ok_or(0)?;
    let w = WALK.get_ptr_mut(0).ok_or(0)?;
    unsafe {
        fill_header(ptr::addr_of_mut!((*ev).hdr), KIND_EXEC);
        (*ev).retval = 0;
        (*ev).flags = EXEC_ARGV_FROM_IMAGE;
        (*ev).args_len = 0;
        (*ev).filename_len = 0;
        let argc = kread_u32(bprm + off(&OFF_BPRM_ARGC));
        (*ev).argc = argc;
        (*ev).args_copied = if argc < ARGC_MAX as u32 {
            argc
        } else {
            ARGC_MAX as u32
        };
        if argc > ARGC_MAX as u32 {
            (*ev).flags |= EXEC_ARGS_TRUNCATED;
        }
        let file = kread_u64(bprm, OFF_BPRM_FILE.load());
        if let Some(r) = walk_file(file, w) {
            let _ = bpf_probe_read_kernel_buf((*w).buf.as_ptr(), &mut (*ev).filename);
            (*ev).filename_len = (r.len & (PATH_CAP - 1)) as u32;
            (*ev).flags |= EXEC_RESOLVED
                | if r.truncated {
                    EXEC_FILENAME_TRUNCATED
                } else {
                    0
                }
                | if r.deleted { EXEC_DELETED } else { 0 };
        }
        // argv as the new program has it: its stack's argument area.
        let task = bpf_get_current_task();
        let mm = kread_u64(task, OFF_TASK_MM.load());
        let start = kread_u64(mm, OFF_MM_ARG_START.load());
        let end = kread_u64(mm, OFF_MM_ARG_END.load());
        if start != 0 && end > start {
            let mut n = end - start;
            if n > (ARGS_BUF - 1) as u64 {
                n = (ARGS_BUF - 1) as u64;
                (*ev).flags |= EXEC_ARGS_TRUNCATED;
            }
            let r = probe_read_user_raw(
                (*ev).args.as_mut_ptr() as *mut _,
                n as u32,
                start as *const _,
            );
            if r == 0 {
                (*ev).args_len = n as u32;
            } else {
                (*ev).flags |= EXEC_ARGS_FAULT;
            }
        }
        let len = offset_of!(ExecEvent, args) + ((*ev).args_len as usize & (ARGS_BUF - 1));
        send(ev, len);
    }
    Ok(())
}

// ---- open ------------------------------------------------------------------------

/// The identity of the inode behind `dentry`.
#[inline(always)]
unsafe fn inode_key(dentry: u64) -> Option<InodeKey> {
    unsafe {
        let inode = kread_u64(dentry, OFF_DENTRY_INODE.load());
        if inode == 0 {
            return None;
        }
        let ino = kread_u64(inode, OFF_INODE_INO.load());
        let sb = kread_u64(inode, OFF_INODE_SB.load());
        if sb == 0 {
            return None;
        }
        Some(InodeKey {
            dev: u64::from(kread_u32(sb + off(&OFF_SB_DEV))),
            ino,
        })
    }
}

/// An open that succeeded with `fd`: its file as the kernel resolved it,
/// kept if it is sensitive (by path or identity) or a write outside the
/// quiet paths.
#[inline(always)]
pub unsafe fn resolved_open(fd: i32, flags: u32, path_flags: u32) {
    unsafe {
        let file = fd_file(fd);
        if file != 0 {
            let _ = open_file(file, flags, path_flags, fd);
        }
    }
}

#[inline(always)]
unsafe fn open_file(file: u64, flags: u32, path_flags: u32, fd: i32) -> Result<(), i32> {
    unsafe {
        let mode = kread_u32(file + off(&OFF_FILE_F_MODE));
        let write = mode & FMODE_WRITE != 0 || flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC) != 0;
        // The file's identity, and its parents' up to three levels: a hard
        // link or a bind mount gives a sensitive file another path.
        let dentry = kread_u64(file + off(&OFF_FILE_F_PATH), OFF_PATH_DENTRY.load());
        let mut matched: Option<(u32, u32)> = None;
        let mut d = dentry;
        let mut depth = 0u32;
        while depth < 4 && d != 0 {
            if let Some(k) = inode_key(d)
                && let Some(id) = SENSITIVE_INODES.get(&k)
            {
                matched = Some((*id, depth));
                break;
            }
            let parent = kread_u64(d, OFF_DENTRY_PARENT.load());
            if parent == d {
                break;
            }
            d = parent;
            depth += 1;
        }
        if !write && matched.is_none() {
            // A read matters only when sensitive, and sensitivity is the
            // file's identity: no path walk for the many ordinary reads.
            return Ok(());
        }
        let ev = OPEN_SCRATCH.get_ptr_mut(0).ok_or(0)?;
        let key = KEY_SCRATCH.get_ptr_mut(0).ok_or(0)?;
        let w = WALK.get_ptr_mut(0).ok_or(0)?;
        let mut pf = path_flags | OPEN_RESOLVED;
        let mut len = 0usize;
        let mut sensitive = matched.is_some();
        match walk_file(file, w) {
            Some(r) => {
                len = r.len & (PATH_CAP - 1);
                if r.truncated {
                    pf |= OPEN_PATH_TRUNCATED;
                }
                let _ = bpf_probe_read_kernel_buf(
                    (*w).buf.as_ptr(),
                    &mut *ptr::addr_of_mut!((*key).data),
                );
                let bits = (if len < PREFIX_CAP { len } else { PREFIX_CAP } * 8) as u32;
                ptr::write_unaligned(ptr::addr_of_mut!((*key).prefix_len), bits);
                if SENSITIVE.get(&*key).is_some() {
                    sensitive = true;
                }
            }
            None => {
                pf |= OPEN_UNRESOLVED;
                (*w).buf[0] = 0;
            }
        }
        // What cannot be walked is kept, never dropped.
        let unresolved = pf & OPEN_UNRESOLVED != 0;
        if !keep_open(sensitive || (write && unresolved), write, key) {
            return Ok(());
        }
        fill_header(ptr::addr_of_mut!((*ev).hdr), KIND_OPEN);
        let _ = bpf_probe_read_kernel_buf((*w).buf.as_ptr(), &mut (*ev).path);
        (*ev).retval = fd;
        (*ev).flags = if flags != 0 {
            flags
        } else {
            kread_u32(file + off(&OFF_FILE_F_FLAGS))
        };
        (*ev).dfd = 0;
        if let Some((id, depth)) = matched {
            pf |= OPEN_INODE_MATCH;
            (*ev).match_id = id;
            (*ev).match_depth = depth;
        } else {
            (*ev).match_id = 0;
            (*ev).match_depth = 0;
        }
        (*ev).path_flags = pf | if sensitive { OPEN_SENSITIVE } else { 0 };
        (*ev).path_len = len as u32;
        send(ev, offset_of!(OpenEvent, path) + len + 1);
    }
    Ok(())
}

// ---- connect -----------------------------------------------------------------------

/// After a connect succeeded (or is in progress): the peer as the kernel's
/// socket holds it, instead of what the caller's memory said at entry.
#[inline(always)]
pub unsafe fn kernel_peer(ev: *mut ConnectEvent) {
    unsafe {
        let sock = kread_u64(fd_file((*ev).fd), OFF_FILE_PRIVATE_DATA.load());
        peer_of(&mut *ev, sock);
    }
}

#[inline(always)]
unsafe fn peer_of(ev: &mut ConnectEvent, sock: u64) {
    unsafe {
        let sk = kread_u64(sock, OFF_SOCKET_SK.load());
        if sk == 0 {
            return;
        }
        let family = bpf_probe_read_kernel((sk + off(&OFF_SK_FAMILY)) as *const u16).unwrap_or(0);
        if family != AF_INET && family != AF_INET6 {
            return;
        }
        let port = bpf_probe_read_kernel((sk + off(&OFF_SK_DPORT)) as *const u16).unwrap_or(0);
        if port == 0 {
            return;
        }
        ev.family = family;
        ev.port = u16::from_be(port);
        ev.addr = [0; 16];
        if family == AF_INET {
            let a: [u8; 4] = bpf_probe_read_kernel((sk + off(&OFF_SK_DADDR)) as *const [u8; 4])
                .unwrap_or([0; 4]);
            ev.addr[..4].copy_from_slice(&a);
        } else {
            ev.addr = bpf_probe_read_kernel((sk + off(&OFF_SK_V6_DADDR)) as *const [u8; 16])
                .unwrap_or([0; 16]);
        }
        ev.flags |= CONNECT_KERNEL_PEER;
    }
}

// ---- io_uring ------------------------------------------------------------------------

/// `io_uring/io_uring_complete`: `req` at 16, `res` at 32. Opens and
/// connects submitted through io_uring never pass the syscall
/// tracepoints; their completion names the request.
#[tracepoint]
pub fn outlier_uring_complete(ctx: TracePointContext) -> u32 {
    let _ = unsafe { uring_complete(&ctx) };
    0
}

#[inline(always)]
unsafe fn uring_complete(ctx: &TracePointContext) -> Result<(), i32> {
    if URING.load() != 1 || tgid() == SELF_TGID.load() {
        return Ok(());
    }
    unsafe {
        let req = ctx.read_at::<u64>(16)?;
        let res = ctx.read_at::<i32>(32)?;
        let opcode: u8 = bpf_probe_read_kernel((req + off(&OFF_KIOCB_OPCODE)) as *const u8)?;
        match opcode {
            IORING_OP_OPENAT | IORING_OP_OPENAT2 if res >= 0 => {
                let file = fd_file(res);
                if file != 0 {
                    let _ = open_file(file, 0, OPEN_URING, res);
                }
            }
            IORING_OP_CONNECT => {
                let file = kread_u64(req, OFF_KIOCB_FILE.load());
                let sock = kread_u64(file, OFF_FILE_PRIVATE_DATA.load());
                let mut ev: ConnectEvent = core::mem::zeroed();
                peer_of(&mut ev, sock);
                if ev.port == 0 {
                    // Failed before the socket had a peer: nothing true to say.
                    return Ok(());
                }
                fill_header(&mut ev.hdr, KIND_CONNECT);
                ev.fd = -1;
                ev.retval = res;
                ev.flags |= CONNECT_URING;
                sock_details(&mut ev, sock, res == 0 || res == -EINPROGRESS);
                send(&ev, core::mem::size_of::<ConnectEvent>());
            }
            _ => {}
        }
    }
    Ok(())
}

// ---- 32-bit syscalls ------------------------------------------------------------------------

/// In a 32-bit (compat) syscall: the x86-64 syscall tracepoints skip those.
#[inline(always)]
unsafe fn in_compat() -> bool {
    // thread_info is the first member of task_struct.
    unsafe { kread_u32(bpf_get_current_task() + off(&OFF_THREAD_INFO_STATUS)) & TS_COMPAT != 0 }
}

/// The syscall number of a `raw_syscalls` record (`id` at 8), for 32-bit
/// syscalls only.
#[inline(always)]
fn compat_id(ctx: &TracePointContext) -> Option<u64> {
    if unsafe { !in_compat() } {
        return None;
    }
    unsafe { ctx.read_at::<u64>(8) }.ok()
}

/// i386 syscall numbers.
const NR32_OPEN: u64 = 5;
const NR32_CREAT: u64 = 8;
const NR32_OPENAT: u64 = 295;
const NR32_CONNECT: u64 = 362;
const NR32_OPENAT2: u64 = 437;

/// `raw_syscalls/sys_enter`, 32-bit syscalls only: `id` at 8, the
/// arguments from 16 as in the syscall tracepoints.
#[tracepoint]
pub fn outlier_compat_enter(ctx: TracePointContext) -> u32 {
    let Some(id) = compat_id(&ctx) else {
        return 0;
    };
    let _ = unsafe {
        match id {
            NR32_OPEN => open_enter(&ctx, ARG0, FlagsAt::Arg(ARG0 + 8), 0),
            NR32_OPENAT => open_enter(&ctx, ARG0 + 8, FlagsAt::Arg(ARG0 + 16), 0),
            NR32_OPENAT2 => open_enter(&ctx, ARG0 + 8, FlagsAt::How(ARG0 + 16), OPEN_AT2),
            NR32_CREAT => open_enter(&ctx, ARG0, FlagsAt::Const(O_CREAT | O_WRONLY | O_TRUNC), 0),
            NR32_CONNECT => connect_enter(&ctx),
            _ => Ok(()),
        }
    };
    0
}

/// `raw_syscalls/sys_exit`, 32-bit syscalls only: the return value at 16.
#[tracepoint]
pub fn outlier_compat_exit(ctx: TracePointContext) -> u32 {
    let Some(id) = compat_id(&ctx) else {
        return 0;
    };
    let _ = unsafe {
        match id {
            NR32_OPEN | NR32_OPENAT | NR32_OPENAT2 | NR32_CREAT => open_exit(&ctx),
            NR32_CONNECT => connect_exit(&ctx),
            _ => Ok(()),
        }
    };
    0
}
