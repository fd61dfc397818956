//! The core the three SQL stores ([`sqlite`](super::sqlite), [`postgres`](super::postgres),
//! [`mysql`](super::mysql)) share; each dialect keeps only what its database does differently.
//!
//! - [`options`]: the `table` option, URL splitting and pool options of the server stores,
//!   and the place of the locking [`Mode`](options::Mode);
//! - [`pool`]: building a server store's pool (a direct probe first, then a lazy pool);
//! - [`rows`]: a row of the lock table into a [`LockInfo`](crate::LockInfo), a ttl into the
//!   table's milliseconds;
//! - [`group`]: keys held by readers or permits: the group's row and its holders;
//! - [`lease`]: the lease-row operations alike in every server dialect;
//! - [`errors`]: driver errors into [`StoreError`](crate::StoreError) kinds, and the one
//!   [`SchemaError`](errors::SchemaError) of table setup;
//! - [`schema`]: the columns every lock table needs (Verrou's) and what a table lacks;
//! - [`session`]: session mode, the servers' own locks on held connections;
//! - [`store`]: the [`Store`](crate::Store) impl of the server stores, over their locking
//!   mode.
//!
//! Every dialect folder has the same files: `mod.rs` (the store type, `from_url`, `from_pool`
//! and the [`Store`](crate::Store) impl as thin calls), `statements.rs` (all its SQL text),
//! `schema.rs` (creating and checking the table) and `errors.rs` (its error codes); the server
//! stores add `lease.rs`, the operations on the lease row, beside which another locking mode
//! can sit.

pub(crate) mod errors;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) mod group;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) mod lease;
pub(crate) mod options;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) mod pool;
pub(crate) mod rows;
pub(crate) mod schema;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) mod session;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) mod store;

use crate::error::{Error, Result};

/// The default table, shared with Verrou's layout.
pub(crate) const DEFAULT_TABLE: &str = "cadenas_locks";

/// Validates a SQL table or schema name: an identifier of 1 to 63 ASCII letters, digits and
/// `_`, not starting with a digit. Checked before any SQL is sent, so a name can be written
/// into statement text (quoted) without escaping.
pub(crate) fn check_identifier(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{what} {name:?} is not a valid identifier: use 1 to 63 ASCII letters, digits and '_', not starting with a digit"
        )))
    }
}

/// A name derived from the (validated, ASCII) table name with `suffix`, cut so that the
/// result stays within `max` bytes. Two long table names sharing a prefix may share the
/// derived object, which is harmless for counters that only ever grow.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn derived_name(table: &str, suffix: &str, max: usize) -> String {
    let keep = max.saturating_sub(suffix.len()).min(table.len());
    format!("{}{}", &table[..keep], suffix)
}

/// A 64-bit FNV-1a hash, for short stable names derived from long ones.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A `LIKE` pattern matching strings that start with `prefix`, with `escape` as the escape
/// character (`ESCAPE '!'` in the SQL).
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn like_prefix(prefix: &str, escape: char) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if c == escape || c == '%' || c == '_' {
            p.push(escape);
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(check_identifier("table", "verrou").is_ok());
        assert!(check_identifier("table", "cadenas_locks_2").is_ok());
        for bad in ["", "1abc", "a-b", "a;drop", "a b", "\"x\"", &"t".repeat(64)] {
            assert!(check_identifier("table", bad).is_err(), "{bad}");
        }
    }

    #[cfg(any(feature = "postgres", feature = "mysql"))]
    #[test]
    fn like_escaping() {
        assert_eq!(like_prefix("", '!'), "%");
        assert_eq!(like_prefix("a%b_c!\\", '!'), "a!%b!_c!!\\%");
        assert_eq!(like_prefix("ключ:", '!'), "ключ:%");
    }

    #[cfg(any(feature = "postgres", feature = "mysql"))]
    #[test]
    fn derived_names_fit() {
        assert_eq!(derived_name("t", "_fences", 63), "t_fences");
        let long = "x".repeat(63);
        let d = derived_name(&long, "_fences", 63);
        assert_eq!(d.len(), 63);
        assert!(d.ends_with("_fences"));
    }
}
