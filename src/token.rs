//! Tokens: a held lock written as a string, to finish its work in another process
//! (`cadenas acquire` prints one; `cadenas release TOKEN` takes it).
//!
//! Format: `cadenas1.` + base64url(JSON) + `.` + CRC-32 of the JSON in hex. The checksum
//! catches edited or truncated tokens; it is not a signature. A token carries no store URL
//! and no password; whoever holds it can release the lock, so treat it like the owner id.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::guard::Guard;
use crate::store::LockKind;

const PREFIX: &str = "cadenas1.";

/// The content of a token. `pub` only so that the fuzz targets can reach it through
/// `cadenas::fuzzing` (built with `--cfg fuzzing`); the module is private otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    /// The key, without namespace.
    #[serde(rename = "k")]
    pub key: String,
    /// The namespace of the `Locks` that took it.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The owner id.
    #[serde(rename = "o")]
    pub owner: String,
    /// The fence of the acquisition, if the store gives one.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
    /// The lock's ttl in ms (`None` = never expires).
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The semaphore's permit count, for a permit holding.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub permits: Option<u32>,
    /// A shared (reader) holding.
    #[serde(rename = "s", default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// The lock's ttl (`ttl_ms` as a duration), filled in by `decode`.
    #[serde(skip)]
    pub ttl: Option<Duration>,
}

impl Token {
    pub(crate) fn of(guard: &Guard) -> Token {
        let lock = guard.lock();
        Token {
            key: lock.key().to_owned(),
            namespace: lock.locks.namespace().map(str::to_owned),
            owner: lock.owner().to_owned(),
            fence: guard.fence(),
            ttl_ms: lock.ttl().map(|t| t.as_millis() as u64),
            permits: match lock.kind() {
                LockKind::Permits(n) => Some(n),
                _ => None,
            },
            shared: lock.kind() == LockKind::Shared,
            ttl: lock.ttl(),
        }
    }

    /// How the token's holding shares its key.
    pub fn kind(&self) -> LockKind {
        match (self.permits, self.shared) {
            (Some(n), _) => LockKind::Permits(n),
            (None, true) => LockKind::Shared,
            (None, false) => LockKind::Exclusive,
        }
    }

    /// The token text: `cadenas1.` + base64url(JSON) + `.` + CRC-32 in hex.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a token always serializes");
        format!(
            "{PREFIX}{}.{:08x}",
            URL_SAFE_NO_PAD.encode(&json),
            crc32fast::hash(&json)
        )
    }

    /// Reads a token, checking its checksum and every field (key, namespace, owner, ttl).
    pub fn decode(text: &str) -> Result<Token> {
        let bad = |why: &str| {
            Error::invalid(
                "token",
                format!(
                    "{why}; pass the whole token printed by `cadenas acquire` or Guard::serialize"
                ),
            )
        };
        let body = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("this is not a cadenas token (it should start with 'cadenas1.')"))?;
        let (data, sum) = body
            .rsplit_once('.')
            .ok_or_else(|| bad("the token is incomplete"))?;
        let json = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| bad("the token is damaged (not base64)"))?;
        let expected =
            u32::from_str_radix(sum, 16).map_err(|_| bad("the token's checksum is damaged"))?;
        if sum.len() != 8 || crc32fast::hash(&json) != expected {
            return Err(bad("the token was edited or truncated (checksum mismatch)"));
        }
        let mut t: Token =
            serde_json::from_slice(&json).map_err(|_| bad("the token's content is damaged"))?;
        crate::key::check_key(&t.key, t.namespace.as_deref())?;
        if let Some(ns) = &t.namespace {
            crate::key::check_namespace(ns)?;
        }
        crate::key::check_owner(&t.owner)?;
        t.ttl = t.ttl_ms.map(Duration::from_millis);
        crate::duration::check_ttl(t.ttl)?;
        match t.permits {
            Some(n) if t.shared || n == 0 || n > crate::MAX_PERMITS => {
                return Err(bad("the token's permit count is damaged"))
            }
            _ => {}
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Token {
        Token {
            key: "invoice:42".into(),
            namespace: Some("billing".into()),
            owner: "01hzy".into(),
            fence: Some(7),
            ttl_ms: Some(30_000),
            permits: None,
            shared: false,
            ttl: Some(Duration::from_secs(30)),
        }
    }

    #[test]
    fn kinds_round_trip() {
        for (permits, shared) in [(Some(3), false), (None, true)] {
            let t = Token {
                permits,
                shared,
                ..sample()
            };
            assert_eq!(Token::decode(&t.encode()).unwrap(), t);
        }
        let bad = Token {
            permits: Some(0),
            ..sample()
        };
        assert!(Token::decode(&bad.encode()).is_err());
    }

    #[test]
    fn round_trip() {
        let t = sample();
        assert_eq!(Token::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn bad_tokens_are_typed_errors() {
        let good = sample().encode();
        let mut edited = good.clone().into_bytes();
        let i = PREFIX.len() + 3;
        edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).unwrap();
        let truncated = &good[..good.len() - 3];
        for bad in [
            "",
            "hello",
            "cadenas1.",
            "cadenas1.!!!.00000000",
            edited.as_str(),
            truncated,
            "cadenas2.abc.00000000",
        ] {
            match Token::decode(bad) {
                Err(Error::InvalidInput { what: "token", .. }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn a_well_formed_token_with_a_bad_key_is_rejected() {
        let mut t = sample();
        t.key = String::new();
        assert!(matches!(
            Token::decode(&t.encode()),
            Err(Error::InvalidInput { what: "key", .. })
        ));
    }
}
