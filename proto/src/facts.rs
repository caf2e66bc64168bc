//! Facts about an event that every crate must read the same way: the class
//! of a remote address, what an open's flags say, the class of a uid. The
//! featurizer (embeddings), the classifier (features) and the indexer all
//! take them from here, so an address cannot be private to one and public
//! to another.

use std::net::IpAddr;

/// What kind of network a remote address is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918 and link-local IPv4 (169.254/16); unique-local (fc00::/7)
    /// and link-local (fe80::/10) IPv6: addresses that do not leave the
    /// site.
    Private,
    /// Everything else.
    Public,
}

impl AddrClass {
    pub fn of(ip: IpAddr) -> AddrClass {
        match ip {
            IpAddr::V4(a) if a.is_loopback() => AddrClass::Loopback,
            IpAddr::V4(a) if a.is_private() || a.is_link_local() => AddrClass::Private,
            IpAddr::V6(a) if a.is_loopback() => AddrClass::Loopback,
            IpAddr::V6(a) => {
                let s0 = a.segments()[0];
                if (s0 & 0xfe00) == 0xfc00 || (s0 & 0xffc0) == 0xfe80 {
                    AddrClass::Private
                } else {
                    AddrClass::Public
                }
            }
            IpAddr::V4(_) => AddrClass::Public,
        }
    }

    /// The class of a textual address; `None` when it is not one.
    pub fn parse(ip: &str) -> Option<AddrClass> {
        ip.parse().ok().map(AddrClass::of)
    }

    pub fn name(self) -> &'static str {
        match self {
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::Public => "public",
        }
    }
}

/// open(2) flags (Linux, every architecture the collector runs on).
pub mod oflags {
    /// The access mode bits: 0 is O_RDONLY.
    pub const O_ACCMODE: u32 = 0o3;
    pub const O_CREAT: u32 = 0o100;
    pub const O_TRUNC: u32 = 0o1000;
    pub const O_APPEND: u32 = 0o2000;
}

/// What an open does to its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    Read,
    /// Opened for writing (write access or append).
    Write,
    /// Created or truncated.
    Create,
}

impl OpenMode {
    pub fn of(flags: u32) -> OpenMode {
        use oflags::*;
        if flags & (O_CREAT | O_TRUNC) != 0 {
            OpenMode::Create
        } else if flags & (O_ACCMODE | O_APPEND) != 0 {
            OpenMode::Write
        } else {
            OpenMode::Read
        }
    }

    /// The open may change the file.
    pub fn writes(self) -> bool {
        self != OpenMode::Read
    }

    pub fn name(self) -> &'static str {
        match self {
            OpenMode::Read => "read",
            OpenMode::Write => "write",
            OpenMode::Create => "create",
        }
    }
}

/// Whose identity a uid is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UidClass {
    Root,
    /// 1–999: service accounts (www-data, postgres).
    System,
    /// 65534.
    Nobody,
    /// Login users.
    User,
}

impl UidClass {
    pub fn of(uid: u32) -> UidClass {
        match uid {
            0 => UidClass::Root,
            1..=999 => UidClass::System,
            65534 => UidClass::Nobody,
            _ => UidClass::User,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            UidClass::Root => "root",
            UidClass::System => "system",
            UidClass::Nobody => "nobody",
            UidClass::User => "user",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_fall_in_their_class() {
        let class = |ip: &str| AddrClass::parse(ip).map(AddrClass::name);
        for (ip, want) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("192.168.0.1", "private"),
            ("172.16.0.1", "private"),
            ("169.254.169.254", "private"),
            ("fd00::1", "private"),
            ("fe80::1", "private"),
            ("203.0.113.7", "public"),
            ("2001:db8::1", "public"),
            ("172.32.0.1", "public"),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
        assert_eq!(class("not-an-ip"), None);
    }

    #[test]
    fn open_flags_read_write_create() {
        use oflags::*;
        assert_eq!(OpenMode::of(0), OpenMode::Read);
        assert_eq!(OpenMode::of(1), OpenMode::Write);
        assert_eq!(OpenMode::of(2), OpenMode::Write);
        assert_eq!(OpenMode::of(O_APPEND | 1), OpenMode::Write);
        assert_eq!(OpenMode::of(O_CREAT | 1), OpenMode::Create);
        assert_eq!(OpenMode::of(O_TRUNC | 1), OpenMode::Create);
        assert!(!OpenMode::of(0o400_000).writes(), "O_CLOEXEC alone reads");
    }

    #[test]
    fn uids_fall_in_their_class() {
        let c = |u| UidClass::of(u).name();
        assert_eq!(
            [c(0), c(33), c(999), c(1000), c(65534), c(70000)],
            ["root", "system", "system", "user", "nobody", "user"]
        );
    }
}
