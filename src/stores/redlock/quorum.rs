//! Asking every node at once and counting the answers.
//!
//! Every node gets its request in parallel, each bounded by the per-node timeout; a node that
//! does not answer in time counts as failed. Answers are collected until the outcome is
//! decided — a quorum said yes, or too many said no for a quorum to be possible — so that
//! one slow or stopped node never delays an operation the others already decided.
//! Requests the caller stops waiting for are either finished in the background (release,
//! extend, …) or given back (acquire): see `acquire.rs`.

use std::future::Future;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::store::{Acquire, Holder, LockInfo, StoreError, StoreErrorKind};

/// One node's answer; `None` in a gathered list when the outcome was decided without it.
pub(crate) type Answer<T> = Option<Result<T, StoreError>>;

/// `fut`, failing with a `Transient` error after `timeout`.
pub(crate) async fn timed<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(answer) => answer,
        Err(_) => Err(StoreError::new(
            StoreErrorKind::Transient,
            format!("no answer within {}", crate::format_duration(timeout)),
        )),
    }
}

/// Awaits `futs` (one per node, in node order) until `decided` says enough is known or all
/// answered. Unanswered nodes are `None`.
pub(crate) async fn gather<T, Fut>(
    futs: Vec<Fut>,
    mut decided: impl FnMut(&[Answer<T>]) -> bool,
) -> Vec<Answer<T>>
where
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut answers: Vec<Answer<T>> = futs.iter().map(|_| None).collect();
    let mut pending: FuturesUnordered<_> = futs
        .into_iter()
        .enumerate()
        .map(|(i, fut)| async move { (i, fut.await) })
        .collect();
    while let Some((i, answer)) = pending.next().await {
        answers[i] = Some(answer);
        if decided(&answers) {
            break;
        }
    }
    answers
}

/// Yes, no, failed and not (yet) answered, out of the nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub yes: usize,
    pub no: usize,
    pub failed: usize,
    pub pending: usize,
}

impl Tally {
    pub fn of<T>(answers: &[Answer<T>], is_yes: impl Fn(&T) -> bool) -> Tally {
        let mut t = Tally::default();
        for answer in answers {
            match answer {
                None => t.pending += 1,
                Some(Err(_)) => t.failed += 1,
                Some(Ok(v)) if is_yes(v) => t.yes += 1,
                Some(Ok(_)) => t.no += 1,
            }
        }
        t
    }

    /// Whether the outcome is known: a quorum said yes, or a quorum of yes is impossible.
    pub fn decided(&self, quorum: usize) -> bool {
        self.yes >= quorum || self.yes + self.failed + self.pending < quorum
    }
}

/// What a quorum operation came to.
pub(crate) enum Outcome {
    /// A quorum said yes.
    Yes,
    /// A quorum of yes is impossible even counting every failed node as yes.
    No,
    /// Too many nodes failed to tell.
    Unknown,
}

pub(crate) fn outcome(t: Tally, quorum: usize) -> Outcome {
    if t.yes >= quorum {
        Outcome::Yes
    } else if t.yes + t.failed + t.pending >= quorum {
        Outcome::Unknown
    } else {
        Outcome::No
    }
}

/// The error for an operation whose outcome too many failed nodes left unknown, naming
/// each failed node and why. Its kind: `Rejected` if a node refused, `Unavailable` if every
/// failed node was unreachable, else `Transient`.
pub(crate) fn failure<T>(
    names: &[String],
    answers: &[Answer<T>],
    quorum: usize,
    what: &str,
) -> StoreError {
    let mut kinds = Vec::new();
    let mut parts = Vec::new();
    let mut answered = 0;
    for (name, answer) in names.iter().zip(answers) {
        match answer {
            Some(Ok(_)) => answered += 1,
            Some(Err(e)) => {
                kinds.push(e.kind);
                parts.push(format!("{name} ({})", e.message));
            }
            None => {
                kinds.push(StoreErrorKind::Transient);
                parts.push(format!("{name} (no answer)"));
            }
        }
    }
    let kind = if kinds.contains(&StoreErrorKind::Rejected) {
        StoreErrorKind::Rejected
    } else if !kinds.is_empty() && kinds.iter().all(|k| *k == StoreErrorKind::Unavailable) {
        StoreErrorKind::Unavailable
    } else {
        StoreErrorKind::Transient
    };
    StoreError::new(
        kind,
        format!(
            "redlock: {what}: {answered} of {} nodes answered, a quorum is {quorum}; failed: {}",
            names.len(),
            parts.join(", ")
        ),
    )
}

/// Of the values `v` (one per node that has one; `None` = no expiry), the one at which
/// fewer than `quorum` of them are left: the `quorum`-th largest. `None` counts as largest.
pub(crate) fn quorum_remaining(
    mut values: Vec<Option<Duration>>,
    quorum: usize,
) -> Option<Duration> {
    // Largest first, `None` (never expires) before everything.
    values.sort_by(|a, b| match (a, b) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(x),
    });
    values
        .get(quorum.saturating_sub(1))
        .copied()
        .unwrap_or(Some(Duration::ZERO))
}

/// The most frequent item (the first seen among equals), with its count.
pub(crate) fn most_common<'a, T: PartialEq + 'a>(
    items: impl IntoIterator<Item = &'a T>,
) -> Option<(&'a T, usize)> {
    let mut counts: Vec<(&T, usize)> = Vec::new();
    for item in items {
        match counts.iter_mut().find(|(seen, _)| *seen == item) {
            Some((_, n)) => *n += 1,
            None => counts.push((item, 1)),
        }
    }
    let mut best: Option<(&T, usize)> = None;
    for (item, n) in counts {
        if best.is_none_or(|(_, m)| n > m) {
            best = Some((item, n));
        }
    }
    best
}

/// Who most nodes said holds the lock, and the least time any of them gave it.
pub(crate) fn holder(answers: &[Answer<Acquire>]) -> Holder {
    let held: Vec<&Holder> = answers
        .iter()
        .filter_map(|a| match a {
            Some(Ok(Acquire::Held(h))) => Some(h),
            _ => None,
        })
        .collect();
    let Some((owner, _)) = most_common(held.iter().map(|h| &h.owner)) else {
        return Holder::default();
    };
    let remaining = held
        .iter()
        .filter(|h| &h.owner == owner)
        .filter_map(|h| h.remaining)
        .min();
    Holder {
        owner: owner.clone(),
        remaining,
    }
}

/// The lock a quorum of `infos` (one per node that holds something) agrees on; with its
/// fence only if the store hands fences out (`fences`).
pub(crate) fn quorum_view(
    key: &str,
    infos: &[&LockInfo],
    quorum: usize,
    fences: bool,
) -> Option<LockInfo> {
    let (owner, votes) = most_common(infos.iter().map(|i| &i.owner))?;
    if votes < quorum {
        return None;
    }
    let mine: Vec<&&LockInfo> = infos.iter().filter(|i| &i.owner == owner).collect();
    let remaining = quorum_remaining(mine.iter().map(|i| i.remaining).collect(), quorum);
    let metadata = most_common(mine.iter().map(|i| &i.metadata)).and_then(|(m, _)| m.clone());
    // The lease's fence, which the Redlock acquire wrote into each node's record (`0`
    // until then: not known yet).
    let fence = mine
        .iter()
        .filter_map(|i| i.fence)
        .filter(|f| fences && *f > 0)
        .max();
    Some(LockInfo::new(
        key,
        owner.clone(),
        remaining,
        fence,
        metadata,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn tallies_and_outcomes() {
        let answers: Vec<Answer<bool>> = vec![
            Some(Ok(true)),
            Some(Ok(false)),
            Some(Err(StoreError::new(StoreErrorKind::Unavailable, "down"))),
            None,
            Some(Ok(true)),
        ];
        let t = Tally::of(&answers, |v| *v);
        assert_eq!(
            t,
            Tally {
                yes: 2,
                no: 1,
                failed: 1,
                pending: 1
            }
        );
        assert!(!t.decided(3));
        assert!(matches!(outcome(t, 3), Outcome::Unknown));
        assert!(matches!(
            outcome(
                Tally {
                    yes: 3,
                    ..Tally::default()
                },
                3
            ),
            Outcome::Yes
        ));
        let no = Tally {
            yes: 1,
            no: 3,
            failed: 1,
            pending: 0,
        };
        assert!(no.decided(3));
        assert!(matches!(outcome(no, 3), Outcome::No));
        let names: Vec<String> = (1..=5).map(|i| format!("n{i}:1")).collect();
        let e = failure(&names, &answers, 3, "acquire");
        assert!(e.message.contains("n3:1 (down)"), "{}", e.message);
        assert!(e.message.contains("n4:1 (no answer)"), "{}", e.message);
        assert_eq!(e.kind, StoreErrorKind::Transient);
    }

    #[test]
    fn quorum_remaining_is_the_quorum_th_largest() {
        assert_eq!(
            quorum_remaining(vec![ms(10), ms(30), ms(20), ms(5)], 3),
            ms(10)
        );
        assert_eq!(quorum_remaining(vec![None, ms(30), None], 2), None);
        assert_eq!(quorum_remaining(vec![ms(1)], 3), ms(0));
    }

    #[test]
    fn most_common_prefers_the_first_among_equals() {
        assert_eq!(most_common(&["a", "b", "b", "a"]), Some((&"a", 2)));
        assert_eq!(most_common(&["a", "b", "b"]), Some((&"b", 2)));
        assert_eq!(most_common::<&str>(&[]), None);
    }
}
