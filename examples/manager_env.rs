//! Stores from the environment: the same binary on a laptop and in production.
//!
//! ```text
//! cargo run --example manager_env
//! CADENAS_STORE=sqlite://locks.db cargo run --example manager_env --features sqlite
//! CADENAS_STORES='local=memory:,shared=redis://127.0.0.1:6379' CADENAS_DEFAULT_STORE=shared \
//!     cargo run --example manager_env --features redis
//! ```
//!
//! `Manager::from_env` reads `CADENAS_STORES` (`name=url,name=url`) with
//! `CADENAS_DEFAULT_STORE` (default: the first one), or else `CADENAS_STORE` (one URL, named
//! `default`). Without either, this example falls back to an in-process store.

use cadenas::{Locks, Manager};

#[tokio::main]
async fn main() -> cadenas::Result<()> {
    let configured = ["CADENAS_STORES", "CADENAS_STORE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    let manager = if configured {
        Manager::from_env().await?
    } else {
        println!("neither CADENAS_STORES nor CADENAS_STORE is set: using memory:");
        Manager::builder()
            .store("default", Locks::memory())
            .build()?
    };
    for name in manager.names() {
        println!("store {name}: {}", manager.store(name)?.describe());
    }

    // The Locks methods on the manager act on the default store.
    let guard = manager.lock("example-manager:migration").acquire().await?;
    println!(
        "migrating on {} with fence {:?}",
        manager.default_store().describe(),
        guard.fence()
    );
    guard.release().await?;

    manager.disconnect_all().await
}
