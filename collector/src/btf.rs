//! Just enough of a BTF reader to find struct member offsets in the running
//! kernel (`/sys/kernel/btf/vmlinux`). The eBPF programs are written in Rust,
//! which emits no CO-RE relocations, so the offsets they need (the parent
//! task, a socket's type and local address) are resolved here at start and
//! handed to the programs as read-only globals.
//!
//! Format: <https://docs.kernel.org/bpf/btf.html> — a header, a type
//! section (type ids start at 1) and a string section.

use std::collections::HashMap;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF data (bad magic)")]
    Magic,
    #[error("BTF data truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown BTF kind {kind} (type {id})")]
    Kind { kind: u32, id: u32 },
    #[error("struct {0} not found")]
    NoStruct(String),
    #[error("member {1} of {0} not found")]
    NoMember(String, String),
}

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    /// Offset in bits from the start of the enclosing struct.
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: u32,
    /// Size (struct/union/int) or referenced type (typedef, modifiers).
    size_or_type: u32,
    members: Vec<Member>,
}

/// The parsed types of one BTF blob.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, Vec<u32>>,
}

fn u32_at(d: &[u8], off: usize) -> Result<u32, BtfError> {
    d.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Truncated(off))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> std::io::Result<Result<Self, BtfError>> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")?;
        Ok(Self::parse(&data))
    }

    pub fn parse(d: &[u8]) -> Result<Self, BtfError> {
        if d.len() < 24 || u16::from_le_bytes([d[0], d[1]]) != MAGIC {
            return Err(BtfError::Magic);
        }
        let hdr_len = u32_at(d, 4)? as usize;
        let type_off = u32_at(d, 8)? as usize;
        let type_len = u32_at(d, 12)? as usize;
        let str_off = u32_at(d, 16)? as usize;
        let str_len = u32_at(d, 20)? as usize;
        let types_start = hdr_len + type_off;
        let tsec = d
            .get(types_start..types_start + type_len)
            .ok_or(BtfError::Truncated(types_start + type_len))?;
        let sstart = hdr_len + str_off;
        let strings = d
            .get(sstart..sstart + str_len)
            .ok_or(BtfError::Truncated(sstart + str_len))?
            .to_vec();

        // Type 0 is void.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut off = 0;
        while off < tsec.len() {
            let name = u32_at(tsec, off)?;
            let info = u32_at(tsec, off + 4)?;
            let size_or_type = u32_at(tsec, off + 8)?;
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => off += 4,
                KIND_ARRAY => off += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = off + 12 * i;
                        let raw = u32_at(tsec, m + 8)?;
                        members.push(Member {
                            name: u32_at(tsec, m)?,
                            ty: u32_at(tsec, m + 4)?,
                            // With kind_flag, the top 8 bits are a bitfield size.
                            bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                        });
                    }
                    off += 12 * vlen;
                }
                KIND_ENUM | KIND_FUNC_PROTO => off += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => off += 12 * vlen,
                2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12 | 16
                | KIND_TYPE_TAG => {}
                _ => {
                    return Err(BtfError::Kind {
                        kind,
                        id: types.len() as u32,
                    });
                }
            }
            types.push(Type {
                name,
                kind,
                size_or_type,
                members,
            });
        }
        let mut btf = Self {
            types,
            strings,
            structs_by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT || t.kind == KIND_UNION {
                let name = btf.name(t.name).to_string();
                if !name.is_empty() {
                    btf.structs_by_name.entry(name).or_default().push(id as u32);
                }
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or_default()
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset of `member` in struct `name`, looking into anonymous
    /// struct and union members (as C does).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let ids = self
            .structs_by_name
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))?;
        // A forward-declared duplicate has no members; take the full one.
        for &id in ids {
            if let Some(bits) = self.find(id, member, 0) {
                return Ok(bits / 8);
            }
        }
        Err(BtfError::NoMember(name.to_string(), member.to_string()))
    }

    fn find(&self, id: u32, member: &str, base: u32) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            let mname = self.name(m.name);
            if mname == member {
                return Some(base + m.bit_offset);
            }
            if mname.is_empty() {
                let inner = self.resolve(m.ty);
                let it = self.types.get(inner as usize)?;
                if (it.kind == KIND_STRUCT || it.kind == KIND_UNION)
                    && let Some(o) = self.find(inner, member, base + m.bit_offset)
                {
                    return Some(o);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(Btf::parse(&d), Err(BtfError::Truncated(_))));
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
