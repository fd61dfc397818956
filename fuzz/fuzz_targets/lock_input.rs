//! Keys, namespaces, owners, metadata and ttls through the public API, on the memory store.
//! The fuzzer picks them; an independent statement of the rules (DESIGN.md section 2) says
//! which must be accepted. Accepted ones are held exclusively, inspected, serialized,
//! restored (also from a `Locks` without the namespace) and released; refused ones are
//! `InvalidInput` naming what was wrong, and leave nothing held.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use cadenas::stores::memory::MemoryStore;
use cadenas::{Error, Locks};
use cadenas_fuzz::block_on;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    namespace: Option<String>,
    key: String,
    /// Repeats the key, to reach past the 255-byte limit.
    key_times: u8,
    owner: Option<String>,
    /// Metadata: a piece and how many times it is repeated (to reach past 64 KiB).
    metadata: Option<(String, u16)>,
    ttl_ms: Option<u64>,
}

fn namespace_ok(ns: &str) -> bool {
    (1..=64).contains(&ns.len())
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

fn run(input: Input) {
    let key = input.key.repeat(usize::from(input.key_times.clamp(1, 40)));
    let metadata = input
        .metadata
        .as_ref()
        .map(|(piece, n)| piece.repeat(usize::from(*n).min(70_000 / piece.len().max(1) + 1)));
    let ttl = input.ttl_ms.map(Duration::from_millis);

    let store = std::sync::Arc::new(MemoryStore::new());
    let mut builder = Locks::builder();
    if let Some(ns) = &input.namespace {
        builder = builder.namespace(ns.clone());
    }
    let locks = match builder.build_arc(store.clone()) {
        Ok(locks) => {
            assert!(
                input.namespace.as_deref().is_none_or(namespace_ok),
                "{input:?}"
            );
            locks
        }
        Err(Error::InvalidInput {
            what: "namespace", ..
        }) => {
            assert!(
                !namespace_ok(input.namespace.as_deref().unwrap()),
                "{input:?}"
            );
            return;
        }
        Err(e) => panic!("{input:?}: {e:?}"),
    };
    let ns_len = input.namespace.as_ref().map_or(0, |ns| ns.len() + 1);
    let key_ok = !key.is_empty() && !key.contains('\0') && key.len() + ns_len <= 255;
    let owner_ok = input
        .owner
        .as_ref()
        .is_none_or(|o| !o.is_empty() && o.len() <= 255 && !o.contains('\0'));
    let metadata_ok = metadata.as_ref().is_none_or(|m| m.len() <= 64 * 1024);
    let ttl_ok =
        ttl.is_none_or(|t| t >= Duration::from_millis(1) && t <= cadenas::duration::MAX_DURATION);

    let mut lock = locks.lock(&key).with_ttl(ttl);
    if let Some(o) = &input.owner {
        lock = lock.with_owner(o.clone());
    }
    if let Some(m) = &metadata {
        lock = lock.with_metadata(m.clone());
    }
    let guard = match block_on(lock.try_acquire()) {
        Ok(g) => {
            assert!(
                key_ok && owner_ok && metadata_ok && ttl_ok,
                "{input:?} was accepted"
            );
            g
        }
        Err(Error::InvalidInput { what, .. }) => {
            let bad = match what {
                "key" => !key_ok,
                "owner" => !owner_ok,
                "metadata" => !metadata_ok,
                "ttl" => !ttl_ok,
                _ => false,
            };
            assert!(bad, "{input:?} refused for its {what}");
            // Nothing is held after a refusal.
            if key_ok {
                assert!(
                    !block_on(locks.lock(&key).is_locked()).unwrap(),
                    "{input:?}"
                );
            }
            return;
        }
        Err(e) => panic!("{input:?}: {e:?}"),
    };
    assert_eq!(guard.key(), key);
    if let Some(o) = &input.owner {
        assert_eq!(guard.owner(), o);
    }
    // A short lease may run out during the checks below: those need one that lasts.
    if ttl.is_some_and(|t| t < Duration::from_secs(60)) {
        guard.leak();
        return;
    }
    // Held exclusively.
    assert!(matches!(
        block_on(locks.lock(&key).try_acquire()),
        Err(Error::AlreadyLocked { .. })
    ));
    let info = block_on(locks.lock(&key).inspect()).unwrap().expect("held");
    assert_eq!(info.owner, guard.owner());
    assert_eq!(info.metadata, metadata);
    let listed = block_on(locks.list(&key)).unwrap();
    assert!(listed.iter().any(|i| i.key == key), "{input:?}: {listed:?}");
    let owner = guard.owner().to_owned();
    let fence = guard.fence();

    // serialize -> restore, from the same factory and from one without the namespace.
    let token = guard.serialize();
    let plain = Locks::builder().build_arc(store.clone()).unwrap();
    let restored = block_on(plain.restore(&token)).unwrap_or_else(|e| panic!("{input:?}: {e}"));
    assert_eq!(
        (restored.key(), restored.owner()),
        (key.as_str(), owner.as_str())
    );
    assert_eq!(restored.fence(), fence);
    restored.leak();
    let restored = block_on(locks.restore(&token)).unwrap();
    assert_eq!(restored.owner(), owner);
    block_on(restored.release()).unwrap();
    assert!(!block_on(locks.lock(&key).is_locked()).unwrap());
    // A released lock's token no longer restores.
    assert!(matches!(
        block_on(locks.restore(&token)),
        Err(Error::NotOwned { .. })
    ));
}

fuzz_target!(|input: Input| run(input));
