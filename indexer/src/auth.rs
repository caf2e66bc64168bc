//! Who may call the gRPC services, and for which orgs.
//!
//! Every call carries `authorization: Bearer <token>`. The tokens file maps
//! the SHA-256 of each token (the token itself is never stored) to an
//! identity and the orgs it may read (`"*"`: every org). A call without a
//! known token is UNAUTHENTICATED; a call naming an org its identity may
//! not read is PERMISSION_DENIED — on every RPC, before anything is read.
//! Tokens travel only over TLS; without TLS the services run only with
//! `auth.insecure = true` on a loopback address (the test stack).
//!
//! ```toml
//! [[identity]]
//! name = "soc-acme"
//! token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! orgs = ["acme"]
//! ```

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::metadata::MetadataMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    identity: Vec<IdentityEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityEntry {
    name: String,
    token_sha256: String,
    orgs: Vec<String>,
    /// May give feedback (teach or unteach baselines) on its orgs' events.
    #[serde(default)]
    feedback: bool,
}

/// A caller the tokens file knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    /// Orgs it may read; `None`: every org.
    orgs: Option<Vec<String>>,
    /// May give feedback on its orgs' events.
    pub feedback: bool,
}

impl Identity {
    /// The orgs it may read; `None`: every org.
    pub fn orgs(&self) -> Option<&[String]> {
        self.orgs.as_deref()
    }

    pub fn may_read(&self, org: &str) -> bool {
        self.orgs
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == org))
    }
}

/// The services' access rules: no checks at all (insecure loopback), or
/// tokens to identities.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    /// `None`: authentication is off (`auth.insecure`).
    tokens: Option<HashMap<[u8; 32], Identity>>,
}

impl Authorizer {
    /// No authentication (only for `auth.insecure` on loopback).
    pub fn insecure() -> Self {
        Self { tokens: None }
    }

    /// Reads a tokens file; the error names the file and the entry.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("auth.tokens_file {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("auth.tokens_file {}: {e}", path.display()))
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut tokens = HashMap::new();
        for (i, e) in file.identity.into_iter().enumerate() {
            let at = format!("identity {} ({:?})", i + 1, e.name);
            let digest: [u8; 32] = hex::decode(e.token_sha256.trim())
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| format!("{at}: token_sha256 is not 64 hex digits"))?;
            if e.orgs.is_empty() {
                return Err(format!("{at}: orgs is empty (use [\"*\"] for every org)"));
            }
            let orgs = if e.orgs.iter().any(|o| o == "*") {
                None
            } else {
                Some(e.orgs)
            };
            if tokens
                .insert(
                    digest,
                    Identity {
                        name: e.name,
                        orgs,
                        feedback: e.feedback,
                    },
                )
                .is_some()
            {
                return Err(format!("{at}: the same token is listed twice"));
            }
        }
        if tokens.is_empty() {
            return Err("no [[identity]] entries".into());
        }
        Ok(Self {
            tokens: Some(tokens),
        })
    }

    /// Whether authentication is on (off only with `auth.insecure`).
    pub fn enabled(&self) -> bool {
        self.tokens.is_some()
    }

    /// The identity a token stands for (`None`: unknown, or authentication
    /// is off).
    pub fn identify(&self, token: &str) -> Option<Identity> {
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        self.tokens.as_ref()?.get(&digest).cloned()
    }

    /// The caller's identity, checked against `org`.
    pub fn authorize(&self, md: &MetadataMap, org: &str) -> Result<Option<Identity>, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let token = md
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let id = tokens
            .get(&digest)
            .ok_or_else(|| Status::unauthenticated("unknown token"))?;
        if !id.may_read(org) {
            tracing::warn!(identity = %id.name, org, "call for an org the identity may not read");
            return Err(Status::permission_denied(format!(
                "{} may not read org {org:?}",
                id.name
            )));
        }
        Ok(Some(id.clone()))
    }
}

/// The SHA-256 of a token, as the tokens file lists it.
impl Authorizer {
    /// Authorizes feedback on `org`'s events: the identity must read the
    /// org and be allowed feedback. Returns who gives it (the audited
    /// actor); without authentication (`auth.insecure`), `unauthenticated`.
    pub fn authorize_feedback(&self, md: &MetadataMap, org: &str) -> Result<String, Status> {
        match self.authorize(md, org)? {
            None => Ok("unauthenticated".into()),
            Some(id) if id.feedback => Ok(id.name),
            Some(id) => {
                tracing::warn!(identity = %id.name, org, "feedback from an identity not allowed it");
                Err(Status::permission_denied(format!(
                    "{} may not give feedback (feedback = true in the tokens file)",
                    id.name
                )))
            }
        }
    }
}

pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(token: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(t) = token {
            m.insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        m
    }

    fn rules() -> Authorizer {
        Authorizer::from_toml(&format!(
            "[[identity]]\nname = \"acme-soc\"\ntoken_sha256 = \"{}\"\norgs = [\"acme\"]\n\
             [[identity]]\nname = \"admin\"\ntoken_sha256 = \"{}\"\norgs = [\"*\"]\n",
            token_sha256("t-acme"),
            token_sha256("t-admin")
        ))
        .unwrap()
    }

    #[test]
    fn only_identities_allowed_feedback_give_it_and_only_on_their_orgs() {
        let a = Authorizer::from_toml(&format!(
            "[[identity]]\nname = \"reader\"\ntoken_sha256 = \"{}\"\norgs = [\"acme\"]\n\
             [[identity]]\nname = \"alice\"\ntoken_sha256 = \"{}\"\norgs = [\"acme\"]\nfeedback = true\n",
            token_sha256("t-reader"),
            token_sha256("t-alice")
        ))
        .unwrap();
        assert_eq!(
            a.authorize_feedback(&md(Some("t-alice")), "acme").unwrap(),
            "alice"
        );
        let e = a
            .authorize_feedback(&md(Some("t-reader")), "acme")
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = a
            .authorize_feedback(&md(Some("t-alice")), "globex")
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = a.authorize_feedback(&md(None), "acme").unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_token_reads_only_its_orgs() {
        let a = rules();
        let id = a.authorize(&md(Some("t-acme")), "acme").unwrap().unwrap();
        assert_eq!(id.name, "acme-soc");
        let e = a.authorize(&md(Some("t-acme")), "globex").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(a.authorize(&md(Some("t-admin")), "globex").is_ok());
    }

    #[test]
    fn missing_or_unknown_tokens_are_unauthenticated() {
        let a = rules();
        for m in [md(None), md(Some("nope")), md(Some(""))] {
            let e = a.authorize(&m, "acme").unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
        }
        assert!(Authorizer::insecure().authorize(&md(None), "x").is_ok());
    }

    #[test]
    fn bad_files_name_the_entry() {
        let e = Authorizer::from_toml(
            "[[identity]]\nname = \"x\"\ntoken_sha256 = \"abc\"\norgs = [\"a\"]\n",
        )
        .unwrap_err();
        assert!(
            e.contains("identity 1") && e.contains("token_sha256"),
            "{e}"
        );
        let e = Authorizer::from_toml(&format!(
            "[[identity]]\nname = \"x\"\ntoken_sha256 = \"{}\"\norgs = []\n",
            token_sha256("t")
        ))
        .unwrap_err();
        assert!(e.contains("orgs is empty"), "{e}");
        assert!(Authorizer::from_toml("").is_err());
    }
}
