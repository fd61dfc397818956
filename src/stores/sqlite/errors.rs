//! Where the database is (from the URL), and what a driver error means for people.

use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

use crate::error::{Error, Result};
use crate::store::{StoreError, StoreErrorKind};

/// The database a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// `sqlite::memory:`: private to the store.
    Memory,
    /// A file, relative to the working directory unless absolute.
    File(PathBuf),
}

impl Target {
    /// Reads the database from a `sqlite:` URL: `sqlite://PATH` (`sqlite:///abs/path`),
    /// `sqlite:PATH`, `sqlite::memory:`. The path is percent-decoded.
    pub fn from_url(url: &url::Url) -> Result<Target> {
        if !url.username().is_empty() || url.password().is_some() || url.port().is_some() {
            return Err(Error::config(
                "a sqlite URL takes a file path, not a user, password or port; \
                 write sqlite://path/to/locks.db or sqlite:///absolute/path/locks.db",
            ));
        }
        let raw = format!("{}{}", url.host_str().unwrap_or(""), url.path());
        let path = percent_decode_str(&raw).decode_utf8().map_err(|_| {
            Error::config(format!(
                "the path in sqlite URL '{raw}' is not UTF-8 once percent-decoded"
            ))
        })?;
        match &*path {
            "" | "/" => Err(Error::config(
                "the sqlite URL names no database file; write sqlite://path/to/locks.db, \
                 or sqlite::memory: for a private in-memory store",
            )),
            ":memory:" => Ok(Target::Memory),
            p => Ok(Target::File(PathBuf::from(p))),
        }
    }

    /// The store as users see it: `sqlite://path/to/locks.db` or `sqlite::memory:`.
    pub fn describe(&self) -> String {
        match self {
            Target::Memory => "sqlite::memory:".to_owned(),
            Target::File(path) => format!("sqlite://{}", path.display()),
        }
    }
}

/// Maps a driver error to a [`StoreError`] that says what happened and what to do. `path` is
/// the database file, when the store has one, to name it and diagnose failures to open it;
/// `describe` names the store otherwise. (The lock layer adds the store and key in front.)
pub(super) fn map_error(error: sqlx::Error, describe: &str, path: Option<&Path>) -> StoreError {
    use StoreErrorKind::*;
    let name = path.map_or_else(|| describe.to_owned(), |p| format!("'{}'", p.display()));
    let (kind, message) = match &error {
        sqlx::Error::Database(db) => {
            let code = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .unwrap_or_default();
            let what = db.message();
            match code & 0xff {
                // SQLITE_BUSY, SQLITE_LOCKED
                5 | 6 => (
                    Transient,
                    format!(
                        "{name} stayed locked by another connection past the busy timeout \
                         ({what}); retry"
                    ),
                ),
                // SQLITE_CANTOPEN
                14 => (Unavailable, cannot_open(&name, path, what)),
                // SQLITE_NOTADB
                26 => (
                    Rejected,
                    format!(
                        "{name} is not a SQLite database ({what}); point the URL at another \
                         file, or move this one away"
                    ),
                ),
                // SQLITE_CORRUPT
                11 => (
                    Rejected,
                    format!("{name} is corrupt ({what}); move it away and start afresh"),
                ),
                // SQLITE_READONLY, SQLITE_PERM, SQLITE_AUTH
                8 | 3 | 23 => (
                    Unavailable,
                    format!(
                        "{name} cannot be written ({what}); check the permissions of the \
                         file, its -wal and -shm files, and its directory"
                    ),
                ),
                // SQLITE_IOERR, SQLITE_FULL
                10 | 13 => (
                    Unavailable,
                    format!("disk error on {name} ({what}); check free space and the disk"),
                ),
                // SQLITE_ERROR and the rest: usually SQL that no longer fits the table.
                _ => (
                    Rejected,
                    format!(
                        "{name} refused a statement ({what}); was the lock table changed by \
                         another program?"
                    ),
                ),
            }
        }
        sqlx::Error::PoolTimedOut => (
            Transient,
            format!("every connection to {name} stayed busy; retry"),
        ),
        sqlx::Error::PoolClosed => (
            Unavailable,
            format!("{name} is closed (the store was closed or disconnected)"),
        ),
        sqlx::Error::Io(e) => (Unavailable, format!("{name}: {e}")),
        other => (Unavailable, format!("{name}: {other}")),
    };
    StoreError::new(kind, message).with_source(error)
}

/// Explains why a database file could not be opened, looking at the path.
fn cannot_open(name: &str, path: Option<&Path>, what: &str) -> String {
    let Some(path) = path else {
        return format!("cannot open {name} ({what})");
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The nearest ancestor that exists tells what is wrong.
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => break,
        }
    }
    if existing.exists() && !existing.is_dir() {
        format!(
            "cannot open {name}: '{}' is a file, not a directory; choose a path in a directory",
            existing.display()
        )
    } else if !dir.exists() {
        format!(
            "cannot open {name}: directory '{}' does not exist; create it first (mkdir -p)",
            dir.display()
        )
    } else if path.is_dir() {
        format!(
            "cannot open {name}: it is a directory; name a file in it, e.g. {}/locks.db",
            path.display()
        )
    } else {
        format!(
            "cannot open or create {name} ({what}); check that directory '{}' and the file \
             are writable",
            dir.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> Result<Target> {
        Target::from_url(&url::Url::parse(text).map_err(|e| Error::config(e.to_string()))?)
    }

    #[test]
    fn paths_from_urls() {
        let file = |p: &str| Target::File(PathBuf::from(p));
        assert_eq!(target("sqlite://locks.db").unwrap(), file("locks.db"));
        assert_eq!(
            target("sqlite://a/b/locks.db").unwrap(),
            file("a/b/locks.db")
        );
        assert_eq!(target("sqlite:///tmp/x.db").unwrap(), file("/tmp/x.db"));
        assert_eq!(target("sqlite:locks.db").unwrap(), file("locks.db"));
        assert_eq!(target("sqlite:my%20dir/l.db").unwrap(), file("my dir/l.db"));
        assert_eq!(target("sqlite::memory:").unwrap(), Target::Memory);
        assert!(target("sqlite://").is_err());
        assert!(target("sqlite:").is_err());
        assert!(target("sqlite://u:pw@host/x.db").is_err());
        assert_eq!(file("a/l.db").describe(), "sqlite://a/l.db");
        assert_eq!(file("/t/l.db").describe(), "sqlite:///t/l.db");
        assert_eq!(Target::Memory.describe(), "sqlite::memory:");
    }
}
