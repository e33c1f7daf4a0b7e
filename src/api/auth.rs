//! API keys: configured as SHA-256 hashes (never the keys themselves), compared in constant time,
//! each with a scope.
//!
//! A request sends its key as `Authorization: Bearer <key>` or `X-API-Key: <key>`. `read` keys may
//! call the query endpoints; `admin` keys may also read `/metrics` and call `POST /api/v1/refresh`.
//! `cloudlake api-key` makes a new random key and prints the config entry holding its hash.

use axum::http::HeaderMap;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The query endpoints only.
    Read,
    /// Everything, `/metrics` and `POST /api/v1/refresh` included.
    Admin,
}

/// One configured key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Who holds it (shown in metrics and logs instead of the key).
    pub name: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// What it may do.
    pub scope: Scope,
}

/// The keys a server accepts, hashes decoded.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: Vec<(String, [u8; 32], Scope)>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No key sent (401).
    Missing,
    /// A key no entry matches (401).
    Unknown,
    /// A valid key without the needed scope (403).
    Forbidden {
        /// The key's name.
        name: String,
    },
}

impl Keys {
    /// Decodes the configured hashes; names the entry whose hash is not 64 hex digits.
    pub fn new(config: &[ApiKey]) -> Result<Keys, String> {
        let mut keys = Vec::with_capacity(config.len());
        for k in config {
            let bytes = decode_hex(&k.sha256)
                .ok_or_else(|| format!("[[api.keys]] {:?}: sha256 must be 64 hex digits", k.name))?;
            keys.push((k.name.clone(), bytes, k.scope));
        }
        Ok(Keys { keys })
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the request's key against every configured hash (all compared, in constant time)
    /// and the scope `need`; returns the key's name.
    pub fn check(&self, headers: &HeaderMap, need: Scope) -> Result<String, Denied> {
        let sent = presented_key(headers).ok_or(Denied::Missing)?;
        let digest: [u8; 32] = Sha256::digest(sent.as_bytes()).into();
        let mut found: Option<&(String, [u8; 32], Scope)> = None;
        for entry in &self.keys {
            if bool::from(entry.1.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        let (name, _, scope) = found.ok_or(Denied::Unknown)?;
        if need == Scope::Admin && *scope != Scope::Admin {
            return Err(Denied::Forbidden { name: name.clone() });
        }
        Ok(name.clone())
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(key) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(key.trim()).filter(|k| !k.is_empty());
        }
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty())
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// Hex SHA-256 of `key`: what goes in the config.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random key: 32 bytes from the OS, URL-safe base64, prefixed `cl_`.
pub fn new_key() -> String {
    use rand::TryRngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).expect("the OS random source is available");
    format!("cl_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn keys_are_matched_by_hash_and_scoped() {
        let (read, admin) = (new_key(), new_key());
        assert_ne!(read, admin);
        let keys = Keys::new(&[
            ApiKey { name: "dash".into(), sha256: hash_key(&read), scope: Scope::Read },
            ApiKey { name: "ops".into(), sha256: hash_key(&admin).to_uppercase(), scope: Scope::Admin },
        ])
        .unwrap();
        let bearer = format!("Bearer {read}");
        assert_eq!(keys.check(&headers(&[("authorization", &bearer)]), Scope::Read), Ok("dash".into()));
        assert_eq!(
            keys.check(&headers(&[("authorization", &bearer)]), Scope::Admin),
            Err(Denied::Forbidden { name: "dash".into() })
        );
        assert_eq!(keys.check(&headers(&[("x-api-key", &admin)]), Scope::Admin), Ok("ops".into()));
        assert_eq!(keys.check(&headers(&[("x-api-key", "cl_wrong")]), Scope::Read), Err(Denied::Unknown));
        assert_eq!(keys.check(&headers(&[]), Scope::Read), Err(Denied::Missing));
        assert_eq!(keys.check(&headers(&[("authorization", "Bearer ")]), Scope::Read), Err(Denied::Missing));
        assert!(Keys::new(&[ApiKey { name: "x".into(), sha256: "abc".into(), scope: Scope::Read }]).is_err());
    }
}
