//! Parsing the eBPF programs' ring-buffer records (layouts in
//! `outlier-collector-common`) from raw bytes, without `unsafe`: every
//! field is read at its `offset_of!` and every length is checked against
//! the record actually received.

use std::mem::offset_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use outlier_collector_common::{
    ARGS_BUF, COMM_LEN, CONNECT_NO_RETVAL, ConnectEvent, EXEC_ARGS_FAULT, EXEC_ARGS_TRUNCATED,
    EXEC_AT, EXEC_FILENAME_TRUNCATED, EXEC_RESOLVED, ExecEvent, Header, KIND_CONNECT, KIND_EXEC,
    KIND_OPEN, OPEN_AT2, OPEN_INODE_MATCH, OPEN_PATH_TRUNCATED, OPEN_SENSITIVE, OpenEvent,
    PATH_CAP,
};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    Kind(u32),
    #[error("{what} claims {claimed} bytes, record holds {have}")]
    Length {
        what: &'static str,
        claimed: usize,
        have: usize,
    },
}

/// The fields every record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader {
    pub tgid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub comm: Vec<u8>,
    pub pcomm: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawExec {
    pub hdr: RawHeader,
    pub retval: i32,
    /// Arguments the process was given (counted up to 1024).
    pub argc: u32,
    /// The arguments copied, raw bytes.
    pub args: Vec<Vec<u8>>,
    pub args_truncated: bool,
    /// Reading argv faulted part-way (non-resident page).
    pub args_fault: bool,
    pub filename: Vec<u8>,
    pub filename_truncated: bool,
    pub execveat: bool,
    /// `filename` is the executable as the kernel resolved it.
    pub resolved: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawConnect {
    pub hdr: RawHeader,
    pub retval: i32,
    pub remote: IpAddr,
    pub port: u16,
    /// SOCK_STREAM (1), SOCK_DGRAM (2), 0 unknown.
    pub sock_type: u16,
    pub local: Option<IpAddr>,
    pub local_port: u16,
    /// Seen before the operation (a datagram's send): `retval` means
    /// nothing.
    pub no_retval: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOpen {
    pub hdr: RawHeader,
    pub retval: i32,
    pub flags: u32,
    pub dfd: i32,
    pub path: Vec<u8>,
    pub path_truncated: bool,
    pub sensitive: bool,
    pub openat2: bool,
    /// Sensitive by identity: (sensitive path index, levels above the
    /// file).
    pub inode_match: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raw {
    Exec(RawExec),
    Connect(RawConnect),
    Open(RawOpen),
}

impl Raw {
    pub fn header(&self) -> &RawHeader {
        match self {
            Raw::Exec(e) => &e.hdr,
            Raw::Connect(c) => &c.hdr,
            Raw::Open(o) => &o.hdr,
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn i32_at(b: &[u8], off: usize) -> i32 {
    u32_at(b, off) as i32
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

/// A NUL-terminated name (task comm) without its padding.
fn cstr(b: &[u8]) -> Vec<u8> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].to_vec()
}

fn need(what: &'static str, claimed: usize, have: usize) -> Result<(), RecordError> {
    if claimed > have {
        Err(RecordError::Length {
            what,
            claimed,
            have,
        })
    } else {
        Ok(())
    }
}

fn header(b: &[u8], base: usize) -> RawHeader {
    let h = |f: usize| base + f;
    RawHeader {
        tgid: u32_at(b, h(offset_of!(Header, tgid))),
        tid: u32_at(b, h(offset_of!(Header, tid))),
        ppid: u32_at(b, h(offset_of!(Header, ppid))),
        uid: u32_at(b, h(offset_of!(Header, uid))),
        gid: u32_at(b, h(offset_of!(Header, gid))),
        ktime_ns: u64_at(b, h(offset_of!(Header, ktime_ns))),
        cgroup_id: u64_at(b, h(offset_of!(Header, cgroup_id))),
        comm: cstr(&b[h(offset_of!(Header, comm))..h(offset_of!(Header, comm)) + COMM_LEN]),
        pcomm: cstr(&b[h(offset_of!(Header, pcomm))..h(offset_of!(Header, pcomm)) + COMM_LEN]),
    }
}

/// Parses one ring-buffer record.
pub fn parse(b: &[u8]) -> Result<Raw, RecordError> {
    if b.len() < size_of::<Header>() {
        return Err(RecordError::Short(b.len()));
    }
    let kind = u32_at(b, offset_of!(Header, kind));
    match kind {
        KIND_EXEC => {
            let fixed = offset_of!(ExecEvent, args);
            need("exec record", fixed, b.len())?;
            let hdr = header(b, offset_of!(ExecEvent, hdr));
            let flags = u32_at(b, offset_of!(ExecEvent, flags));
            let args_len = u32_at(b, offset_of!(ExecEvent, args_len)) as usize;
            let copied = u32_at(b, offset_of!(ExecEvent, args_copied)) as usize;
            let filename_len = u32_at(b, offset_of!(ExecEvent, filename_len)) as usize;
            need("exec args", args_len, ARGS_BUF.min(b.len() - fixed))?;
            need("exec filename", filename_len, PATH_CAP)?;
            let f0 = offset_of!(ExecEvent, filename);
            let filename = b[f0..f0 + filename_len].to_vec();
            let raw_args = &b[fixed..fixed + args_len];
            let mut args: Vec<Vec<u8>> = raw_args.split(|&c| c == 0).map(<[u8]>::to_vec).collect();
            // Each argument is followed by a NUL: the split leaves one
            // empty piece after the last.
            if raw_args.last() == Some(&0) {
                args.pop();
            }
            args.truncate(copied);
            Ok(Raw::Exec(RawExec {
                hdr,
                retval: i32_at(b, offset_of!(ExecEvent, retval)),
                argc: u32_at(b, offset_of!(ExecEvent, argc)),
                args,
                args_truncated: flags & EXEC_ARGS_TRUNCATED != 0,
                args_fault: flags & EXEC_ARGS_FAULT != 0,
                filename,
                filename_truncated: flags & EXEC_FILENAME_TRUNCATED != 0,
                execveat: flags & EXEC_AT != 0,
                resolved: flags & EXEC_RESOLVED != 0,
            }))
        }
        KIND_CONNECT => {
            need("connect record", size_of::<ConnectEvent>(), b.len())?;
            let family = u16_at(b, offset_of!(ConnectEvent, family));
            let addr = |off: usize| -> IpAddr {
                let a = &b[off..off + 16];
                if family == 2 {
                    IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
                } else {
                    let mut x = [0u8; 16];
                    x.copy_from_slice(a);
                    IpAddr::V6(Ipv6Addr::from(x))
                }
            };
            let local = addr(offset_of!(ConnectEvent, local_addr));
            let local_port = u16_at(b, offset_of!(ConnectEvent, local_port));
            let flags = u32_at(b, offset_of!(ConnectEvent, flags));
            Ok(Raw::Connect(RawConnect {
                hdr: header(b, offset_of!(ConnectEvent, hdr)),
                retval: i32_at(b, offset_of!(ConnectEvent, retval)),
                remote: addr(offset_of!(ConnectEvent, addr)),
                port: u16_at(b, offset_of!(ConnectEvent, port)),
                sock_type: u16_at(b, offset_of!(ConnectEvent, sock_type)),
                local: (!local.is_unspecified() || local_port != 0).then_some(local),
                local_port,
                no_retval: flags & CONNECT_NO_RETVAL != 0,
            }))
        }
        KIND_OPEN => {
            let fixed = offset_of!(OpenEvent, path);
            need("open record", fixed, b.len())?;
            let path_len = u32_at(b, offset_of!(OpenEvent, path_len)) as usize;
            need("open path", path_len, PATH_CAP.min(b.len() - fixed))?;
            let pf = u32_at(b, offset_of!(OpenEvent, path_flags));
            Ok(Raw::Open(RawOpen {
                hdr: header(b, offset_of!(OpenEvent, hdr)),
                retval: i32_at(b, offset_of!(OpenEvent, retval)),
                flags: u32_at(b, offset_of!(OpenEvent, flags)),
                dfd: i32_at(b, offset_of!(OpenEvent, dfd)),
                path: b[fixed..fixed + path_len].to_vec(),
                path_truncated: pf & OPEN_PATH_TRUNCATED != 0,
                sensitive: pf & OPEN_SENSITIVE != 0,
                openat2: pf & OPEN_AT2 != 0,
                inode_match: (pf & OPEN_INODE_MATCH != 0).then(|| {
                    (
                        u32_at(b, offset_of!(OpenEvent, match_id)),
                        u32_at(b, offset_of!(OpenEvent, match_depth)),
                    )
                }),
            }))
        }
        k => Err(RecordError::Kind(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(b: &mut [u8], off: usize, v: &[u8]) {
        b[off..off + v.len()].copy_from_slice(v);
    }

    fn hdr(b: &mut [u8], kind: u32) {
        put(b, offset_of!(Header, kind), &kind.to_ne_bytes());
        put(b, offset_of!(Header, tgid), &4242u32.to_ne_bytes());
        put(b, offset_of!(Header, tid), &4243u32.to_ne_bytes());
        put(b, offset_of!(Header, ppid), &1u32.to_ne_bytes());
        put(b, offset_of!(Header, uid), &33u32.to_ne_bytes());
        put(b, offset_of!(Header, ktime_ns), &99u64.to_ne_bytes());
        put(b, offset_of!(Header, comm), b"bash\0\0garbage");
        put(b, offset_of!(Header, pcomm), b"nginx");
    }

    #[test]
    fn exec_records_keep_every_copied_argument_byte_for_byte() {
        let args: &[&[u8]] = &[b"bash", b"-c", b"echo 'a b'", b"", b"\xff\xfe"];
        let mut raw = Vec::new();
        for a in args {
            raw.extend_from_slice(a);
            raw.push(0);
        }
        let fixed = offset_of!(ExecEvent, args);
        let mut b = vec![0u8; fixed + raw.len()];
        hdr(&mut b, KIND_EXEC);
        put(
            &mut b,
            offset_of!(ExecEvent, retval),
            &(-2i32).to_ne_bytes(),
        );
        put(&mut b, offset_of!(ExecEvent, argc), &70u32.to_ne_bytes());
        put(
            &mut b,
            offset_of!(ExecEvent, args_copied),
            &5u32.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(ExecEvent, args_len),
            &(raw.len() as u32).to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(ExecEvent, flags),
            &EXEC_ARGS_TRUNCATED.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(ExecEvent, filename_len),
            &9u32.to_ne_bytes(),
        );
        put(&mut b, offset_of!(ExecEvent, filename), b"/bin/bash");
        put(&mut b, fixed, &raw);
        let Raw::Exec(e) = parse(&b).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(e.args, args.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
        assert_eq!(e.filename, b"/bin/bash");
        assert_eq!((e.retval, e.argc, e.args_truncated), (-2, 70, true));
        assert_eq!(e.hdr.comm, b"bash");
        assert_eq!(e.hdr.pcomm, b"nginx");
        assert_eq!((e.hdr.tgid, e.hdr.tid, e.hdr.uid), (4242, 4243, 33));
    }

    #[test]
    fn lengths_beyond_the_record_are_errors_not_reads() {
        let fixed = offset_of!(ExecEvent, args);
        let mut b = vec![0u8; fixed + 4];
        hdr(&mut b, KIND_EXEC);
        put(
            &mut b,
            offset_of!(ExecEvent, args_len),
            &100u32.to_ne_bytes(),
        );
        assert!(matches!(parse(&b), Err(RecordError::Length { .. })));
        assert_eq!(parse(&[1, 2, 3]), Err(RecordError::Short(3)));
        let mut b = vec![0u8; size_of::<Header>()];
        hdr(&mut b, 77);
        assert_eq!(parse(&b), Err(RecordError::Kind(77)));
        let mut b = vec![0u8; size_of::<Header>() + 2];
        hdr(&mut b, KIND_CONNECT);
        assert!(matches!(parse(&b), Err(RecordError::Length { .. })));
    }

    #[test]
    fn connect_records_give_addresses_in_both_families() {
        let mut b = vec![0u8; size_of::<ConnectEvent>()];
        hdr(&mut b, KIND_CONNECT);
        put(
            &mut b,
            offset_of!(ConnectEvent, family),
            &10u16.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(ConnectEvent, port),
            &4444u16.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(ConnectEvent, sock_type),
            &1u16.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(ConnectEvent, addr),
            &Ipv6Addr::LOCALHOST.octets(),
        );
        let Raw::Connect(c) = parse(&b).unwrap() else {
            panic!()
        };
        assert_eq!(c.remote, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!((c.port, c.sock_type, c.local), (4444, 1, None));

        put(
            &mut b,
            offset_of!(ConnectEvent, family),
            &2u16.to_ne_bytes(),
        );
        put(&mut b, offset_of!(ConnectEvent, addr), &[203, 0, 113, 7]);
        put(&mut b, offset_of!(ConnectEvent, local_addr), &[10, 0, 0, 2]);
        put(
            &mut b,
            offset_of!(ConnectEvent, local_port),
            &51544u16.to_ne_bytes(),
        );
        let Raw::Connect(c) = parse(&b).unwrap() else {
            panic!()
        };
        assert_eq!(c.remote, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(c.local, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(c.local_port, 51544);
    }

    #[test]
    fn open_records_carry_path_and_flags() {
        let path = b"/etc/shadow";
        let fixed = offset_of!(OpenEvent, path);
        let mut b = vec![0u8; fixed + path.len() + 1];
        hdr(&mut b, KIND_OPEN);
        put(&mut b, offset_of!(OpenEvent, retval), &3i32.to_ne_bytes());
        put(
            &mut b,
            offset_of!(OpenEvent, path_len),
            &(path.len() as u32).to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(OpenEvent, path_flags),
            &OPEN_SENSITIVE.to_ne_bytes(),
        );
        put(&mut b, fixed, path);
        let Raw::Open(o) = parse(&b).unwrap() else {
            panic!()
        };
        assert_eq!(o.path, path);
        assert!(o.sensitive && !o.path_truncated);
        assert_eq!(o.retval, 3);
    }
}
