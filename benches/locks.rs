//! Hot paths: the memory store under the lock API and alone (acquire+release, a conflicting
//! try, extend, inspect), tokens, URL and duration parsing.
//! `cargo bench --bench locks`
#![allow(missing_docs)] // criterion_group! makes an undocumented function

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cadenas::stores::memory::MemoryStore;
use cadenas::{AcquireRequest, Locks, Store};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("memory");
    g.throughput(Throughput::Elements(1));

    // One acquire+release cycle through the lock API, 1,000 distinct keys in turn.
    let locks = Locks::memory();
    let handles: Vec<_> = (0..1000).map(|i| locks.lock(&format!("key-{i}"))).collect();
    let mut i = 0;
    g.bench_function("api acquire+release", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % handles.len();
            let lock = &handles[i];
            async move {
                let guard = lock.acquire().await.unwrap();
                guard.release().await.unwrap();
            }
        })
    });

    // The same cycle on the store alone (no guard, events or retry loop).
    let store = MemoryStore::new();
    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i}")).collect();
    let mut i = 0;
    g.bench_function("store acquire+release", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let (store, key) = (&store, &keys[i]);
            async move {
                let r = AcquireRequest::new(
                    key,
                    "owner-0123456789abcdef",
                    Some(Duration::from_secs(30)),
                );
                black_box(store.try_acquire(r).await.unwrap());
                store.release(key, "owner-0123456789abcdef").await.unwrap();
            }
        })
    });

    // The other store operations, on a held key.
    let held = "held-key";
    rt.block_on(store.try_acquire(AcquireRequest::new(
        held,
        "owner-0123456789abcdef",
        Some(Duration::from_secs(3600)),
    )))
    .unwrap();
    g.bench_function("store try_acquire, held by another", |b| {
        b.to_async(&rt).iter(|| async {
            let r = AcquireRequest::new(held, "someone-else", Some(Duration::from_secs(30)));
            black_box(store.try_acquire(r).await.unwrap())
        })
    });
    g.bench_function("store extend", |b| {
        b.to_async(&rt).iter(|| async {
            let ttl = Some(Duration::from_secs(3600));
            black_box(
                store
                    .extend(held, "owner-0123456789abcdef", ttl)
                    .await
                    .unwrap(),
            )
        })
    });
    g.bench_function("store inspect", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.inspect(held).await.unwrap()) })
    });

    // With 1,000,000 other locks held.
    let full = Arc::new(MemoryStore::new());
    rt.block_on(async {
        for i in 0..1_000_000u32 {
            let key = format!("held-{i}");
            full.try_acquire(AcquireRequest::new(
                &key,
                "01hzyxwvutsrqpnmkjhgfedcba",
                Some(Duration::from_secs(3600)),
            ))
            .await
            .unwrap();
        }
    });
    let locks_full = Locks::builder().build_arc(full.clone()).unwrap();
    let handles: Vec<_> = (0..1000)
        .map(|i| locks_full.lock(&format!("key-{i}")))
        .collect();
    let mut i = 0;
    g.bench_function("api acquire+release, 1M held", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % handles.len();
            let lock = &handles[i];
            async move {
                let guard = lock.acquire().await.unwrap();
                guard.release().await.unwrap();
            }
        })
    });
    g.finish();
}

fn tokens_and_urls(c: &mut Criterion) {
    let rt = runtime();
    let locks = Locks::memory();
    let mut g = c.benchmark_group("parse");
    g.bench_function("serialize+restore token", |b| {
        b.to_async(&rt).iter_batched(
            || (),
            |_| async {
                let token = locks.lock("tok").acquire().await.unwrap().serialize();
                let g = locks.restore(black_box(&token)).await.unwrap();
                g.release().await.unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    // Restore a token and turn the guard back into a token: decoding, the store's ownership
    // check and encoding, without an acquire or a release.
    let token = rt.block_on(async {
        let guard = locks.lock("kept").with_ttl(None).acquire().await.unwrap();
        guard.serialize()
    });
    g.bench_function("restore+serialize token", |b| {
        b.to_async(&rt).iter(|| async {
            let g = locks.restore(black_box(&token)).await.unwrap();
            black_box(g.serialize())
        })
    });
    g.bench_function("store URL", |b| {
        b.iter(|| {
            cadenas::url::StoreUrl::parse(black_box(
                "redis://user:secret@cache.internal:6380/2?namespace=app&ttl=10s",
            ))
            .unwrap()
        })
    });
    g.bench_function("duration", |b| {
        b.iter(|| cadenas::parse_ttl(black_box("1h30m")).unwrap())
    });
    g.finish();
}

criterion_group!(benches, memory, tokens_and_urls);
criterion_main!(benches);
