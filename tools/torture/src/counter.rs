//! The protected resource: a counter per key in a file, guarded by fences (Kleppmann's
//! pattern), that workers read, work on, and write back.
//!
//! The file is a journal of fixed-size records (JSON padded to [`RECORD`] bytes); the last
//! record is the current state: the value, the highest fence registered and who registered
//! it. Every step holds an exclusive lock on the file (`flock`, released by the kernel when a
//! holder dies) and appends one record in one `write`, so a worker killed at any moment
//! leaves a consistent journal.
//!
//! 1. **register** (after acquiring the lock): refused if the counter already saw a fence
//!    at least as high as ours; else our fence becomes the highest and we read the value.
//! 2. the work, outside the file lock (this is where faults land);
//! 3. **commit**: refused if someone registered since (the highest fence is no longer ours);
//!    else the value we read plus one is written.
//!
//! Every store hands out fences; a section without one (which the checker reports as a
//! violation) is accepted at both steps, so that an overlap still shows as a lost update.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The size of one journal record, newline included.
pub const RECORD: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A registration.
    R,
    /// A commit.
    C,
}

/// One journal record: the step and the state after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    pub owner: String,
    pub fence: Option<u64>,
    /// The counter after this step.
    pub value: u64,
    /// The highest fence registered so far.
    pub highest: Option<u64>,
    /// The owner of the latest registration.
    pub holder: String,
    /// When (`now_ns`), taken under the file lock.
    pub t: u64,
    pub worker: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// Registered; the value read.
    Ok(u64),
    Rejected {
        highest: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Ok,
    Rejected { highest: Option<u64> },
}

/// One key's counter file.
#[derive(Debug)]
pub struct Counter {
    file: File,
    worker: u32,
}

impl Counter {
    pub fn open(path: &Path, worker: u32) -> Result<Counter> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening counter {}", path.display()))?;
        Ok(Counter { file, worker })
    }

    /// Step 1. `fence` is `None` on unfenced stores.
    pub fn register(&mut self, owner: &str, fence: Option<u64>) -> Result<Register> {
        self.locked(|file, worker| {
            let state = last(file)?;
            let value = state.as_ref().map_or(0, |s| s.value);
            let highest = state.as_ref().and_then(|s| s.highest);
            if let (Some(mine), Some(h)) = (fence, highest) {
                if mine <= h {
                    return Ok(Register::Rejected { highest: h });
                }
            }
            append(
                file,
                &Entry {
                    kind: Kind::R,
                    owner: owner.to_owned(),
                    fence,
                    value,
                    highest: fence.or(highest),
                    holder: owner.to_owned(),
                    t: crate::record::now_ns(),
                    worker,
                },
            )?;
            Ok(Register::Ok(value))
        })
    }

    /// Step 3: writes `read + 1` unless someone registered after us (fenced stores only).
    pub fn commit(&mut self, owner: &str, fence: Option<u64>, read: u64) -> Result<Commit> {
        self.locked(|file, worker| {
            let Some(state) = last(file)? else {
                bail!("commit without a registration: the counter file is empty");
            };
            if fence.is_some() && state.holder != owner {
                return Ok(Commit::Rejected {
                    highest: state.highest,
                });
            }
            append(
                file,
                &Entry {
                    kind: Kind::C,
                    owner: owner.to_owned(),
                    fence,
                    value: read + 1,
                    highest: state.highest,
                    holder: state.holder,
                    t: crate::record::now_ns(),
                    worker,
                },
            )?;
            Ok(Commit::Ok)
        })
    }

    fn locked<T>(&mut self, f: impl FnOnce(&mut File, u32) -> Result<T>) -> Result<T> {
        self.file.lock().context("locking the counter file")?;
        let result = f(&mut self.file, self.worker);
        self.file.unlock().context("unlocking the counter file")?;
        result
    }
}

fn last(file: &mut File) -> Result<Option<Entry>> {
    let len = file.metadata()?.len();
    if len % RECORD as u64 != 0 {
        bail!("the counter journal has a torn record (length {len} is not a multiple of {RECORD})");
    }
    if len == 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; RECORD];
    file.seek(SeekFrom::Start(len - RECORD as u64))?;
    file.read_exact(&mut buf)?;
    Ok(Some(parse(&buf)?))
}

fn append(file: &mut File, entry: &Entry) -> Result<()> {
    let mut line = serde_json::to_string(entry)?;
    if line.len() >= RECORD {
        bail!("a counter record is longer than {RECORD} bytes: {line}");
    }
    line.extend(std::iter::repeat_n(' ', RECORD - 1 - line.len()));
    line.push('\n');
    file.write_all(line.as_bytes())?;
    Ok(())
}

fn parse(buf: &[u8]) -> Result<Entry> {
    let text = std::str::from_utf8(buf).context("a counter record is not UTF-8")?;
    serde_json::from_str(text.trim_end()).with_context(|| format!("bad counter record: {text}"))
}

/// Every record of a counter journal, in order.
pub fn read_journal(path: &Path) -> Result<Vec<Entry>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if bytes.len() % RECORD != 0 {
        bail!("{} has a torn record", path.display());
    }
    bytes.chunks(RECORD).map(parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_guard_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.journal");
        let mut c = Counter::open(&path, 1).unwrap();
        assert_eq!(c.register("a", Some(5)).unwrap(), Register::Ok(0));
        // b registers a higher fence while a works: a's commit is refused.
        assert_eq!(c.register("b", Some(6)).unwrap(), Register::Ok(0));
        assert_eq!(
            c.commit("a", Some(5), 0).unwrap(),
            Commit::Rejected { highest: Some(6) }
        );
        assert_eq!(c.commit("b", Some(6), 0).unwrap(), Commit::Ok);
        // A stale fence (or a repeated one) cannot register.
        assert_eq!(
            c.register("a", Some(5)).unwrap(),
            Register::Rejected { highest: 6 }
        );
        assert_eq!(
            c.register("c", Some(6)).unwrap(),
            Register::Rejected { highest: 6 }
        );
        let journal = read_journal(&path).unwrap();
        assert_eq!(journal.len(), 3);
        assert_eq!(journal.last().unwrap().value, 1);
    }

    #[test]
    fn without_fences_overlaps_lose_updates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.journal");
        let mut c = Counter::open(&path, 1).unwrap();
        let a = match c.register("a", None).unwrap() {
            Register::Ok(v) => v,
            r => panic!("{r:?}"),
        };
        let b = match c.register("b", None).unwrap() {
            Register::Ok(v) => v,
            r => panic!("{r:?}"),
        };
        assert_eq!(c.commit("a", None, a).unwrap(), Commit::Ok);
        assert_eq!(c.commit("b", None, b).unwrap(), Commit::Ok);
        // Two commits, value 1: one update lost, as an overlap must show.
        assert_eq!(read_journal(&path).unwrap().last().unwrap().value, 1);
    }
}
