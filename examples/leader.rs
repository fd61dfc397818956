//! A scheduler that runs only while it leads: two candidates, one election.
//!
//! ```text
//! cargo run --example leader
//! CADENAS_STORE=redis://127.0.0.1:6379 cargo run --example leader --features redis
//! ```
//!
//! Each candidate campaigns, runs its jobs while it leads, and stops the moment its
//! leadership is lost (here: an operator takes the lock away, as `cadenas release --force
//! scheduler` would). Every job carries the term, and the job queue refuses a term lower than
//! the highest it has seen: that check, not the lost signal, is what keeps a paused former
//! leader from running a job twice. An observer prints each change of the election.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cadenas::{Election, LeaderChange, Locks};

/// The protected resource: accepts a job only with a term at least the highest seen.
#[derive(Default)]
struct JobQueue {
    highest_term: AtomicU64,
}

impl JobQueue {
    fn run(&self, term: u64, job: u32) -> Result<(), String> {
        let seen = self.highest_term.fetch_max(term, Ordering::SeqCst);
        if term < seen {
            return Err(format!("job {job} refused: term {term} < {seen}"));
        }
        Ok(())
    }
}

/// Campaigns, schedules while leading, steps down after `jobs` jobs or when lost.
async fn scheduler(election: Election, queue: Arc<JobQueue>, jobs: u32) -> cadenas::Result<()> {
    let leadership = election.campaign().await?;
    let term = leadership.term();
    println!("{} leads, term {term}", election.candidate());
    let mut done = 0;
    let lost = leadership.lost_signal();
    while done < jobs {
        tokio::select! {
            e = lost.wait() => {
                println!("{} stops scheduling: {e}", election.candidate());
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                match queue.run(term, done) {
                    Ok(()) => done += 1,
                    Err(refused) => println!("{refused}"),
                }
            }
        }
    }
    println!("{} resigns after {done} jobs", election.candidate());
    leadership.resign().await
}

#[tokio::main]
async fn main() -> cadenas::Result<()> {
    let url = std::env::var("CADENAS_STORE").unwrap_or_else(|_| "memory:".into());
    let locks = Locks::builder()
        .namespace("example-leader")
        .ttl(Some(Duration::from_secs(2)))
        .connect(&url)
        .await?;
    let queue = Arc::new(JobQueue::default());
    let elect = |who: &str| {
        locks
            .election("scheduler", who)
            .with_value(format!("{who}:8080"))
    };

    // Anyone can follow the election; this one prints until the election is over.
    let mut changes = elect("observer").observe();
    let watcher = tokio::spawn(async move {
        while let Ok(change) = changes.next().await {
            match change {
                LeaderChange::Elected(l) => println!(
                    "  observed: {} elected, term {:?}, at {:?}",
                    l.candidate, l.term, l.value
                ),
                LeaderChange::Proclaimed(l) => println!("  observed: value {:?}", l.value),
                LeaderChange::Vacant => println!("  observed: no leader"),
                _ => {}
            }
        }
    });

    // a leads first, does three jobs and resigns; b, waiting, takes over at once.
    let a = tokio::spawn(scheduler(elect("scheduler-a"), queue.clone(), 3));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = tokio::spawn(scheduler(elect("scheduler-b"), queue.clone(), 1_000));
    a.await.expect("scheduler a")?;

    // An operator takes the lock from b: b learns it is lost and stops.
    tokio::time::sleep(Duration::from_millis(400)).await;
    locks.lock("scheduler").force_release().await?;
    b.await.expect("scheduler b")?;

    tokio::time::sleep(Duration::from_millis(100)).await;
    watcher.abort();
    Ok(())
}
