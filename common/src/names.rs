//! Validation and safe encoding of org and workload names.
//!
//! Org and workload strings come from hosts and files we do not control, and
//! end up in LanceDB table names, file paths and Kafka keys. They are limited
//! in length and encoded (never spliced) wherever they name storage.

use thiserror::Error;

/// Longest org or workload name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} bytes long, more than the limit of {MAX_NAME_LEN}")]
    TooLong { field: &'static str, len: usize },
    #[error("{field} contains a control character")]
    Control { field: &'static str },
}

/// Checks an org, workload or host name: non-empty, at most
/// [`MAX_NAME_LEN`] bytes, no control characters. Any other character,
/// including `/`, `.` and quotes, is allowed: storage names are encoded.
pub fn validate(field: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { field });
    }
    if value.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            field,
            len: value.len(),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(NameError::Control { field });
    }
    Ok(())
}

/// Longest storage name produced: LanceDB refuses table names over 128
/// characters, and a name is also a directory on the object store.
pub const MAX_STORAGE_NAME_LEN: usize = 128;

/// Encodes an (org, workload) pair as a storage name made only of
/// `[a-z0-9_]` and at most [`MAX_STORAGE_NAME_LEN`] long:
/// `wl_<hex(org)>_<hex(workload)>` when that fits, else
/// `wh_<sha256(org, workload)>`. Hex digits never contain `_`, the two
/// prefixes differ and the hash is over length-prefixed fields, so the
/// encoding is injective in practice: two pairs never share a name (a
/// hostile org cannot pick a name that lands in another org's table), and
/// no input produces a path separator, a dot or a quote.
pub fn storage_name(org: &str, workload: &str) -> String {
    let plain = format!("wl_{}_{}", hex::encode(org), hex::encode(workload));
    if plain.len() <= MAX_STORAGE_NAME_LEN {
        plain
    } else {
        format!("wh_{}", digest(&[org, workload]))
    }
}

/// Encodes an org as a storage name made only of `[a-z0-9_]`: `org_<hex>`,
/// or `orh_<sha256>` when that would be longer than
/// [`MAX_STORAGE_NAME_LEN`].
pub fn org_storage_name(org: &str) -> String {
    let plain = format!("org_{}", hex::encode(org));
    if plain.len() <= MAX_STORAGE_NAME_LEN {
        plain
    } else {
        format!("orh_{}", digest(&[org]))
    }
}

/// SHA-256 over length-prefixed fields, hex.
fn digest(fields: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in fields {
        h.update((f.len() as u64).to_le_bytes());
        h.update(f.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A workload's stable 64-bit id: the first eight bytes of SHA-256 of
/// its name. Within one org, two workloads share an id with odds of about
/// n²/2⁶⁵ (3·10⁻⁸ at a million workloads); a host that forged a collision
/// would only reach a baseline its own org's credential can already write.
pub fn workload_id(workload: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(workload.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    i64::from_le_bytes(b)
}

/// The storage name of one of an org's baseline shards: `bs_<hex org>_<shard>`
/// (shard in hex), or `bh_<sha256 of org>_<shard>` when that would be
/// longer than [`MAX_STORAGE_NAME_LEN`]. Only `[a-z0-9_]`; distinct from
/// [`storage_name`]'s per-workload names (`wl_`, `wh_`) of earlier
/// versions.
pub fn shard_storage_name(org: &str, shard: u32) -> String {
    let plain = format!("bs_{}_{shard:x}", hex::encode(org));
    if plain.len() <= MAX_STORAGE_NAME_LEN {
        plain
    } else {
        format!("bh_{}_{shard:x}", digest(&[org]))
    }
}

/// Inverse of [`storage_name`] for the plain form; `None` for a hashed
/// name or one it did not produce.
pub fn parse_storage_name(name: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix("wl_")?;
    let (org, workload) = rest.split_once('_')?;
    let org = String::from_utf8(hex::decode(org).ok()?).ok()?;
    let workload = String::from_utf8(hex::decode(workload).ok()?).ok()?;
    Some((org, workload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_names_are_safe_and_round_trip() {
        for (org, wl) in [
            ("acme", "web"),
            ("a_b", "c"),
            ("a", "b_c"),
            ("../../etc", "passwd"),
            ("o'; DROP TABLE x; --", "w\"q"),
            ("ünïcødé", "工作负载"),
        ] {
            let name = storage_name(org, wl);
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert_eq!(
                parse_storage_name(&name),
                Some((org.to_string(), wl.to_string()))
            );
        }
        // Pairs that would collide under naive joining stay distinct.
        assert_ne!(storage_name("a_b", "c"), storage_name("a", "b_c"));
        assert_ne!(storage_name("ab", "c"), storage_name("a", "bc"));
    }

    #[test]
    fn long_names_get_short_distinct_storage_names() {
        let safe = |n: &str| {
            n.len() <= MAX_STORAGE_NAME_LEN
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        let long = "o".repeat(MAX_NAME_LEN);
        let a = storage_name(&long, &"w".repeat(MAX_NAME_LEN));
        let b = storage_name(&long, &"w".repeat(MAX_NAME_LEN - 1));
        let c = storage_name(&"o".repeat(MAX_NAME_LEN - 1), &"w".repeat(MAX_NAME_LEN));
        assert!(safe(&a) && safe(&b) && safe(&c), "{a} {b} {c}");
        assert!(a.starts_with("wh_"));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
        // Moving a character across the boundary changes the name.
        assert_ne!(
            storage_name(&format!("{long}x"), "y"),
            storage_name(&long, "xy")
        );
        assert_eq!(parse_storage_name(&a), None);
        // Short names keep the readable, reversible form (existing tables).
        assert_eq!(storage_name("acme", "web"), "wl_61636d65_776562");
        let o = org_storage_name(&long);
        assert!(safe(&o) && o.starts_with("orh_"), "{o}");
        assert_ne!(o, org_storage_name(&"o".repeat(MAX_NAME_LEN - 1)));
        assert_eq!(org_storage_name("acme"), "org_61636d65");
        assert_eq!(shard_storage_name("acme", 10), "bs_61636d65_a");
        let s = shard_storage_name(&long, 63);
        assert!(s.starts_with("bh_") && s.ends_with("_3f") && s.len() <= MAX_STORAGE_NAME_LEN);
        assert_ne!(s, shard_storage_name(&"o".repeat(MAX_NAME_LEN - 1), 63));
        assert_ne!(workload_id("web"), workload_id("web "));
        assert_eq!(workload_id("web"), workload_id("web"));
    }

    proptest::proptest! {
        #[test]
        fn every_valid_pair_gets_a_safe_storage_name(org in "\\PC{1,128}", wl in "\\PC{1,128}") {
            let n = storage_name(&org, &wl);
            proptest::prop_assert!(n.len() <= MAX_STORAGE_NAME_LEN, "{}", n);
            proptest::prop_assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(validate("org", ""), Err(NameError::Empty { field: "org" }));
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            validate("workload", &long),
            Err(NameError::TooLong {
                field: "workload",
                ..
            })
        ));
        assert_eq!(
            validate("host", "a\nb"),
            Err(NameError::Control { field: "host" })
        );
        assert!(validate("org", "acme/prod.eu").is_ok());
    }
}
