//! Keys, namespaces and owners: validated, never truncated.

use rand::RngCore;

use crate::error::{Error, Result};

/// The longest key accepted, in bytes, namespace included (Verrou's `varchar(255)`).
pub const MAX_KEY_BYTES: usize = 255;
/// The longest owner accepted, in bytes.
pub const MAX_OWNER_BYTES: usize = 255;
/// The largest metadata accepted, in bytes.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// The longest namespace accepted, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 64;

/// Checks a key: non-empty UTF-8, no NUL, at most [`MAX_KEY_BYTES`] with the namespace.
pub(crate) fn check_key(key: &str, namespace: Option<&str>) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("key", "the key is empty; name the lock"));
    }
    if key.contains('\0') {
        return Err(Error::invalid(
            "key",
            format!("{key:?} contains a NUL character, which stores cannot keep"),
        ));
    }
    let total = key.len() + namespace.map_or(0, |ns| ns.len() + 1);
    if total > MAX_KEY_BYTES {
        return Err(Error::invalid(
            "key",
            format!(
                "'{}…' is {total} bytes{}; the limit is {MAX_KEY_BYTES} (hash long names first)",
                prefix_chars(key, 40),
                if namespace.is_some() { " with its namespace" } else { "" }
            ),
        ));
    }
    Ok(())
}

fn prefix_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The key as stored: `namespace:key`, or `key` without a namespace.
pub(crate) fn stored_key(key: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => {
            let mut s = String::with_capacity(ns.len() + 1 + key.len());
            s.push_str(ns);
            s.push(':');
            s.push_str(key);
            s
        }
        None => key.to_owned(),
    }
}

/// Checks a namespace: 1 to 64 ASCII letters, digits, `_`, `-`, `.` or `:`.
pub(crate) fn check_namespace(ns: &str) -> Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= MAX_NAMESPACE_BYTES
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "namespace",
            format!(
                "{ns:?} is not a namespace: use 1 to {MAX_NAMESPACE_BYTES} ASCII letters, digits, '_', '-', '.' or ':'"
            ),
        ))
    }
}

/// Checks an owner chosen by the caller.
pub(crate) fn check_owner(owner: &str) -> Result<()> {
    if owner.is_empty() || owner.len() > MAX_OWNER_BYTES || owner.contains('\0') {
        return Err(Error::invalid(
            "owner",
            format!("{owner:?} is not an owner: use 1 to {MAX_OWNER_BYTES} bytes without NUL"),
        ));
    }
    Ok(())
}

/// Checks metadata size.
pub(crate) fn check_metadata(metadata: &str) -> Result<()> {
    if metadata.len() > MAX_METADATA_BYTES {
        return Err(Error::invalid(
            "metadata",
            format!(
                "{} bytes is over the limit of {MAX_METADATA_BYTES} bytes",
                metadata.len()
            ),
        ));
    }
    Ok(())
}

const BASE32: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A fresh owner id: 128 bits from the operating system's CSPRNG (through `rand`'s
/// thread-local generator, reseeded from the OS), written as 26 Crockford base32 characters.
///
/// ```
/// let a = cadenas::new_owner();
/// assert_eq!(a.len(), 26);
/// assert_ne!(a, cadenas::new_owner());
/// ```
pub fn new_owner() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut n = u128::from_be_bytes(bytes);
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = BASE32[(n & 31) as usize];
        n >>= 5;
    }
    out.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check_key("a", None).is_ok());
        assert!(check_key("", None).is_err());
        assert!(check_key("a\0b", None).is_err());
        assert!(check_key(&"k".repeat(255), None).is_ok());
        assert!(check_key(&"k".repeat(256), None).is_err());
        assert!(check_key(&"k".repeat(250), Some("app")).is_ok());
        assert!(check_key(&"k".repeat(252), Some("app")).is_err());
        // Multi-byte characters count in bytes, and the message never splits a character.
        let err = check_key(&"é".repeat(200), None).unwrap_err().to_string();
        assert!(err.contains("400 bytes"), "{err}");
        assert_eq!(stored_key("k", Some("app")), "app:k");
        assert_eq!(stored_key("k", None), "k");
    }

    #[test]
    fn namespaces_and_owners() {
        assert!(check_namespace("app.v2:jobs").is_ok());
        for bad in ["", "a b", "a'b", &"n".repeat(65), "é"] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
        assert!(check_owner("me").is_ok());
        assert!(check_owner("").is_err());
        assert!(check_owner(&"o".repeat(256)).is_err());
    }

    #[test]
    fn owners_are_unique_base32() {
        let owners: std::collections::HashSet<_> = (0..10_000).map(|_| new_owner()).collect();
        assert_eq!(owners.len(), 10_000);
        assert!(owners
            .iter()
            .all(|o| o.len() == 26 && o.bytes().all(|b| BASE32.contains(&b))));
    }
}
