//! Names of the keys and channels derived from a lock key, all in the lock key's Cluster slot.
//!
//! The lock key itself is exactly the key the lock layer gives us (Verrou's layout). It holds
//! an exclusive holding as a string (owner, NUL, attempt id), or the holders of a group —
//! readers, or the permit holders of a semaphore — as a sorted set of owners scored by the
//! end of their leases, beside the group record [`group_key`] (see "Semaphores and
//! read-write locks" in the [store's docs](super)). Derived
//! names start with [`DERIVED_PREFIX`] so that one ACL pattern (`~__cadenas:*`) covers them,
//! `list("app:")` never meets them, and they can never be confused with a lock key of the
//! same shape. After the prefix and the kind (`fence`, `state`, `expired`, `group`, `writer`,
//! `released`) comes one of three forms, chosen so that the derived name hashes to the lock
//! key's slot:
//!
//! | lock key | derived name | why |
//! |---|---|---|
//! | has a valid hash tag: `job{42}` | `__cadenas:fence:job{42}` | the first `{…}` is still the key's tag |
//! | no valid tag, no `}`: `app:job` | `__cadenas:fence{app:job}` | the whole key becomes the tag |
//! | no valid tag but a `}`: `a}b`, `{}x` | `__cadenas:fence@{T}a}b` | `T` is a short string hashing to the key's slot |
//!
//! The separator after the kind (`:`, `{`, `@`) tells the forms apart, so two different lock
//! keys never share a derived name.

use std::sync::LazyLock;

/// The start of every derived key and channel name.
pub const DERIVED_PREFIX: &str = "__cadenas:";

/// Number of hash slots in Redis Cluster.
const SLOTS: u16 = 16384;

/// The fence counter of `key` (a string holding an integer; never expires).
pub fn fence_key(key: &str) -> String {
    derived(key, "fence")
}

/// The state of the current holding of `key` (a hash: owner, fence, metadata; expires with
/// the lock).
pub fn state_key(key: &str) -> String {
    derived(key, "state")
}

/// The group record of `key` while readers or permit holders hold it (a hash: the kind,
/// the permit count, and each holder's fence, attempt id and metadata; expires with the
/// lock key's sorted set of holders). See "Groups" in the [Redis store's docs](super).
pub fn group_key(key: &str) -> String {
    derived(key, "group")
}

/// The writer-waiting marker of `key`: a string holding the waiting writer's owner, expiring
/// with the marker's lease. While it lives, other owners' readers find the key held.
pub fn writer_key(key: &str) -> String {
    derived(key, "writer")
}

/// The pub/sub channel on which releases of `key` are announced.
pub fn release_channel(key: &str) -> String {
    derived(key, "released")
}

/// The release channel of `key` when a script cannot name it by itself: for a key with a
/// `}` but no hash tag (the third form in the module docs, which needs the slot table).
pub fn release_channel_arg(key: &str) -> Option<String> {
    (hash_tag(key.as_bytes()).is_none() && key.contains('}')).then(|| release_channel(key))
}

/// The record of a holding that expired and was taken over before any expiry watcher saw it
/// (a hash like the state; kept for [`EXPIRY_GRACE_MS`](super::EXPIRY_GRACE_MS)).
pub fn expired_key(key: &str) -> String {
    derived(key, "expired")
}

/// The lock key a derived name of `kind` was made from (the inverse of the name functions);
/// `None` for any other name.
pub fn lock_key_of<'a>(name: &'a str, kind: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(DERIVED_PREFIX)?.strip_prefix(kind)?;
    if let Some(key) = rest.strip_prefix(':') {
        return hash_tag(key.as_bytes()).is_some().then_some(key);
    }
    if let Some(key) = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        return (!key.contains('}')).then_some(key);
    }
    let tagged = rest.strip_prefix("@{")?;
    let (_, key) = tagged.split_once('}')?;
    (key.contains('}') && hash_tag(key.as_bytes()).is_none()).then_some(key)
}

/// Whether `name` is one of our derived names rather than a lock key.
pub fn is_derived(name: &[u8]) -> bool {
    name.starts_with(DERIVED_PREFIX.as_bytes())
}

fn derived(key: &str, kind: &str) -> String {
    if hash_tag(key.as_bytes()).is_some() {
        format!("{DERIVED_PREFIX}{kind}:{key}")
    } else if !key.contains('}') {
        format!("{DERIVED_PREFIX}{kind}{{{key}}}")
    } else {
        let tag = slot_tag(slot(key.as_bytes()));
        format!("{DERIVED_PREFIX}{kind}@{{{tag}}}{key}")
    }
}

/// The hash tag Redis Cluster uses for `key`: the bytes between the first `{` and the first
/// `}` after it, if that is not empty.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let len = key[open + 1..].iter().position(|&b| b == b'}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

/// The Cluster hash slot of `key`.
pub fn slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) % SLOTS
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster specifies.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// For every slot, the first string in the sequence `0`, `1`, …, `z`, `00`, `01`, … (digits
/// and lowercase letters) that hashes to it. Built once, on first need (about 50,000 CRCs).
static SLOT_TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut tags: Vec<Option<String>> = vec![None; SLOTS as usize];
    let mut missing = SLOTS as usize;
    let mut len = 1;
    while missing > 0 {
        let mut digits = vec![0usize; len];
        'all: loop {
            let candidate: Vec<u8> = digits.iter().map(|&d| ALPHABET[d]).collect();
            let entry = &mut tags[(crc16(&candidate) % SLOTS) as usize];
            if entry.is_none() {
                *entry = Some(String::from_utf8_lossy(&candidate).into_owned());
                missing -= 1;
                if missing == 0 {
                    break 'all;
                }
            }
            // Next candidate of this length, like an odometer.
            let mut i = len;
            loop {
                if i == 0 {
                    break 'all;
                }
                i -= 1;
                digits[i] += 1;
                if digits[i] < ALPHABET.len() {
                    break;
                }
                digits[i] = 0;
            }
        }
        len += 1;
    }
    tags.into_iter().map(Option::unwrap_or_default).collect()
});

/// A short tag (digits and lowercase letters, no braces) whose slot is `slot`.
fn slot_tag(slot: u16) -> &'static str {
    &SLOT_TAGS[usize::from(slot % SLOTS)]
}

/// Escapes the glob characters of `prefix` for `SCAN MATCH`, and appends `*`.
pub fn match_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_cluster_spec() {
        // The test vector of the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        // Slots as `CLUSTER KEYSLOT` reports them.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    }

    #[test]
    fn hash_tags() {
        assert_eq!(hash_tag(b"job{42}"), Some(&b"42"[..]));
        assert_eq!(hash_tag(b"a{b}{c}"), Some(&b"b"[..]));
        assert_eq!(hash_tag(b"{}x"), None);
        assert_eq!(hash_tag(b"x}{"), None);
        assert_eq!(hash_tag(b"plain"), None);
        assert_eq!(hash_tag(b"a{b"), None);
    }

    #[test]
    fn derived_names_share_the_slot_of_the_lock_key() {
        let keys = [
            "plain",
            "app:job",
            "job{42}",
            "a{b}{c}",
            "a}b",
            "}",
            "{}x",
            "x}{y",
            "{}",
            "a{b",
            "{",
            "ünïcødé}",
            "glob*?[x]\\",
        ];
        for key in keys {
            for name in [
                fence_key(key),
                state_key(key),
                group_key(key),
                writer_key(key),
                release_channel(key),
            ] {
                assert_eq!(
                    slot(name.as_bytes()),
                    slot(key.as_bytes()),
                    "{key} -> {name}"
                );
                assert!(is_derived(name.as_bytes()), "{name}");
            }
            assert!(!is_derived(key.as_bytes()));
        }
        assert_eq!(fence_key("app:job"), "__cadenas:fence{app:job}");
        assert_eq!(fence_key("job{42}"), "__cadenas:fence:job{42}");
        assert!(fence_key("a}b").starts_with("__cadenas:fence@{"));
    }

    #[test]
    fn derived_names_never_collide() {
        // `x` and `{x}` would collide under a naive "wrap in braces" rule.
        let keys = ["x", "{x}", "{x}:y", "x}", "{}x", "a}b", "{a}b"];
        let mut seen = std::collections::HashSet::new();
        for key in keys {
            assert!(seen.insert(fence_key(key)), "{key}");
        }
    }

    #[test]
    fn every_slot_has_a_short_tag() {
        for s in 0..SLOTS {
            let tag = slot_tag(s);
            assert!(!tag.is_empty() && tag.len() <= 4, "{s}: {tag:?}");
            assert_eq!(slot(tag.as_bytes()), s);
        }
    }

    #[test]
    fn derived_names_lead_back_to_their_lock_key() {
        for key in ["job{42}", "app:job", "a}b", "{}x", "plain", "ü{}}", "x{y"] {
            for (kind, name) in [
                ("state", state_key(key)),
                ("expired", expired_key(key)),
                ("fence", fence_key(key)),
            ] {
                assert_eq!(lock_key_of(&name, kind), Some(key), "{name}");
            }
        }
        assert_eq!(lock_key_of("__cadenas:state:nokey", "state"), None);
        assert_eq!(lock_key_of("__cadenas:fence{a}", "state"), None);
        assert_eq!(lock_key_of("app:job", "state"), None);
    }

    #[test]
    fn match_patterns_escape_globs() {
        assert_eq!(match_pattern(""), "*");
        assert_eq!(match_pattern("app:"), "app:*");
        assert_eq!(match_pattern("a*b?[c]\\^"), "a\\*b\\?\\[c\\]\\\\\\^*");
    }
}
