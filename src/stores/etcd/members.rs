//! The members a store talks to, and failing over between them.
//!
//! The `etcd-client` crate balances requests over its endpoints but keeps sending them to a
//! member that is down (its requests fail with the connection refused). So the store keeps
//! one client per member named in the URL and sends every request to the current one; a
//! request that fails in a way another member may not (unreachable, timed out, no leader
//! there) moves the store on to the next member. The failed request itself is not repeated:
//! it may have been applied, and the lock layer decides about retries (a watchdog's next
//! extend, an acquire's next try).

use std::sync::atomic::{AtomicUsize, Ordering};

use etcd_client::{Client, ConnectOptions};
use tokio::sync::OnceCell;

use super::settings::op_error;
use crate::store::StoreError;

struct Slot {
    endpoint: String,
    client: OnceCell<Client>,
}

/// The cluster's members, by the URL's order.
pub(super) struct Members {
    slots: Vec<Slot>,
    current: AtomicUsize,
    options: Option<ConnectOptions>,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoints: Vec<&str> = self.slots.iter().map(|s| s.endpoint.as_str()).collect();
        f.debug_struct("Members")
            .field("endpoints", &endpoints)
            .finish_non_exhaustive()
    }
}

impl Members {
    /// Members at `endpoints`, connected on first use with `options`.
    pub fn new(endpoints: &[String], options: ConnectOptions) -> Members {
        Members {
            slots: endpoints
                .iter()
                .map(|e| Slot {
                    endpoint: e.clone(),
                    client: OnceCell::new(),
                })
                .collect(),
            current: AtomicUsize::new(0),
            options: Some(options),
        }
    }

    /// The one client given by the caller (it may balance over several members itself).
    pub fn of(client: Client) -> Members {
        Members {
            slots: vec![Slot {
                endpoint: "(the client given)".to_owned(),
                client: OnceCell::new_with(Some(client)),
            }],
            current: AtomicUsize::new(0),
            options: None,
        }
    }

    /// How many members the URL named.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The client of the current member, connecting to it first if need be; when that fails,
    /// the next members in turn.
    pub async fn client(&self) -> Result<Client, StoreError> {
        let n = self.slots.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let at = (start + i) % n;
            let slot = &self.slots[at];
            let connected = slot
                .client
                .get_or_try_init(|| async {
                    let options = self.options.clone();
                    Client::connect([slot.endpoint.as_str()], options).await
                })
                .await;
            match connected {
                Ok(c) => {
                    if i > 0 {
                        self.current.store(at, Ordering::Relaxed);
                    }
                    return Ok(c.clone());
                }
                Err(e) => last = Some(op_error(&format!("connecting to {}", slot.endpoint), e)),
            }
        }
        Err(last.expect("a store has at least one member"))
    }

    /// Moves on to the next member if `e` is a failure another member may not have.
    pub fn failed(&self, e: &StoreError) {
        if e.is_retryable() && self.slots.len() > 1 {
            let now = self.current.load(Ordering::Relaxed);
            let _ = self.current.compare_exchange(
                now,
                (now + 1) % self.slots.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}
