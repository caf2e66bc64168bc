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

/// Encodes an (org, workload) pair as a storage name made only of
/// `[a-z0-9_]`: `wl_<hex(org)>_<hex(workload)>`. Hex digits never contain
/// `_`, so the encoding is injective: two different pairs never share a name,
/// and no input can produce a path separator, a dot or a quote.
pub fn storage_name(org: &str, workload: &str) -> String {
    format!("wl_{}_{}", hex::encode(org), hex::encode(workload))
}

/// Encodes an org as a storage name made only of `[a-z0-9_]`: `org_<hex>`.
pub fn org_storage_name(org: &str) -> String {
    format!("org_{}", hex::encode(org))
}

/// Inverse of [`storage_name`]; `None` for a name it did not produce.
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
