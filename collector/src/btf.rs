//! Struct member offsets in the running kernel (`/sys/kernel/btf/vmlinux`).
//! The eBPF programs are written in Rust, which emits no CO-RE
//! relocations, so the offsets they need (the parent task, a socket's type
//! and local address) are resolved here at start and handed to the
//! programs as read-only globals. The BTF itself is read by the `btfparse`
//! crate, which knows every BTF kind and looks into anonymous struct and
//! union members as C does.

use btfparse::{ErrorKind, Offset, Readable, TypeInformation};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF data (bad magic)")]
    Magic,
    #[error("BTF data unreadable: {0}")]
    Invalid(String),
    #[error("struct {0} not found")]
    NoStruct(String),
    #[error("member {1} of {0} not found")]
    NoMember(String, String),
    #[error("member {1} of {0} is a bit field")]
    BitField(String, String),
}

/// BTF data held in memory.
struct Bytes(Vec<u8>);

impl Readable for Bytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match self.0.get(start..start.saturating_add(buffer.len())) {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                ErrorKind::InvalidOffset,
                "read past the end of the BTF data",
            )),
        }
    }
}

/// The types of a BTF blob.
pub struct Btf(TypeInformation);

impl Btf {
    /// The running kernel's BTF; the outer error when it cannot be read.
    pub fn from_sys_fs() -> std::io::Result<Result<Self, BtfError>> {
        let d = std::fs::read("/sys/kernel/btf/vmlinux")?;
        Ok(Self::parse(&d))
    }

    pub fn parse(d: &[u8]) -> Result<Self, BtfError> {
        TypeInformation::new(&Bytes(d.to_vec()))
            .map(Btf)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidMagic => BtfError::Magic,
                _ => BtfError::Invalid(format!("{e:?}")),
            })
    }

    /// Byte offset of `member` in struct `name`, looking into anonymous
    /// struct and union members (as C does).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let id = self
            .0
            .id_of(name)
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))?;
        match self.0.offset_of(id, member) {
            Ok((_, Offset::ByteOffset(o))) => Ok(o),
            Ok((_, Offset::BitOffsetAndSize(..))) => {
                Err(BtfError::BitField(name.to_string(), member.to_string()))
            }
            Err(_) => Err(BtfError::NoMember(name.to_string(), member.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: u16 = 0xeb9f;
    const KIND_INT: u32 = 1;
    const KIND_STRUCT: u32 = 4;
    const KIND_UNION: u32 = 5;
    const KIND_CONST: u32 = 10;

    /// Builds a BTF blob: `struct outer { int a; union { int b; struct { int
    /// c; int d; }; }; }` plus a typedef, to test anonymous-member lookup.
    fn sample() -> Vec<u8> {
        let mut strings = b"\0int\0outer\0a\0b\0c\0d\0".to_vec();
        let off = |s: &str, strings: &[u8]| -> u32 {
            let pat = format!("\0{s}\0");
            strings
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .unwrap() as u32
                + 1
        };
        let (s_int, s_outer, s_a, s_b, s_c, s_d) = (
            off("int", &strings),
            off("outer", &strings),
            off("a", &strings),
            off("b", &strings),
            off("c", &strings),
            off("d", &strings),
        );
        let mut t = Vec::new();
        let ty = |name: u32, kind: u32, vlen: u32, kflag: bool, size: u32, t: &mut Vec<u8>| {
            t.extend_from_slice(&name.to_le_bytes());
            t.extend_from_slice(&((kind << 24) | vlen | (u32::from(kflag) << 31)).to_le_bytes());
            t.extend_from_slice(&size.to_le_bytes());
        };
        let mem = |name: u32, ty: u32, off: u32, t: &mut Vec<u8>| {
            t.extend_from_slice(&name.to_le_bytes());
            t.extend_from_slice(&ty.to_le_bytes());
            t.extend_from_slice(&off.to_le_bytes());
        };
        // 1: int
        ty(s_int, KIND_INT, 0, false, 4, &mut t);
        t.extend_from_slice(&32u32.to_le_bytes());
        // 2: anonymous struct { int c @0; int d @32 }
        ty(0, KIND_STRUCT, 2, false, 8, &mut t);
        mem(s_c, 1, 0, &mut t);
        mem(s_d, 1, 32, &mut t);
        // 3: typedef-free const of 2 (a qualifier between member and struct)
        ty(0, KIND_CONST, 0, false, 2, &mut t);
        // 4: anonymous union { int b; const struct {c, d} }
        ty(0, KIND_UNION, 2, false, 8, &mut t);
        mem(s_b, 1, 0, &mut t);
        mem(0, 3, 0, &mut t);
        // 5: struct outer { int a @0; union @64 } (kind_flag: bitfield sizes in the top byte)
        ty(s_outer, KIND_STRUCT, 2, true, 16, &mut t);
        mem(s_a, 1, 0, &mut t);
        mem(0, 4, 64, &mut t);
        strings.push(0);
        let mut d = Vec::new();
        d.extend_from_slice(&MAGIC.to_le_bytes());
        d.push(1);
        d.push(0);
        d.extend_from_slice(&24u32.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&(t.len() as u32).to_le_bytes());
        d.extend_from_slice(&(t.len() as u32).to_le_bytes());
        d.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        d.extend_from_slice(&t);
        d.extend_from_slice(&strings);
        d
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_structs() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "d").unwrap(), 12);
        assert_eq!(
            btf.member_offset("outer", "zz"),
            Err(BtfError::NoMember("outer".into(), "zz".into()))
        );
        assert!(matches!(
            btf.member_offset("inner", "a"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(matches!(
            Btf::parse(b"hello world, this is not btf"),
            Err(BtfError::Magic)
        ));
        let mut d = sample();
        d.truncate(40);
        assert!(matches!(Btf::parse(&d), Err(BtfError::Invalid(_))));
    }

    #[test]
    fn the_running_kernel_has_what_the_programs_need() {
        let Ok(Ok(btf)) = Btf::from_sys_fs() else {
            // Kernels without BTF run the /proc fallback; nothing to check.
            assert!(!std::path::Path::new("/sys/kernel/btf/vmlinux").exists());
            return;
        };
        for (_, s, m) in outlier_collector_common::OFFSETS {
            let off = btf.member_offset(s, m).unwrap();
            assert!(off < 16 << 10, "{s}.{m} at {off}");
        }
        // tgid follows pid in task_struct (both pid_t).
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        assert_eq!(btf.member_offset("task_struct", "tgid").unwrap(), pid + 4);
        // skc_num follows skc_dport (both 16-bit, in one anonymous struct).
        let dport = btf.member_offset("sock_common", "skc_dport").unwrap();
        assert_eq!(
            btf.member_offset("sock_common", "skc_num").unwrap(),
            dport + 2
        );
    }
}
