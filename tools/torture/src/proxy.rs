//! A TCP proxy between the workers and a store, inside the orchestrator: it can drop every
//! connection at once or delay all traffic for a while.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Debug, Default)]
struct Shared {
    /// Added to every chunk in either direction, in microseconds.
    delay_us: AtomicU64,
    conns: Mutex<Vec<AbortHandle>>,
}

/// One proxy: listens on 127.0.0.1 (or the host side of a worker's veth pair), forwards to
/// `upstream`.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: AbortHandle,
}

impl Proxy {
    /// A proxy listening on `bind` (a free port).
    pub async fn start_on(bind: std::net::Ipv4Addr, upstream: &str) -> Result<Proxy> {
        let listener = TcpListener::bind((bind, 0))
            .await
            .with_context(|| format!("binding a proxy on {bind}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let upstream = upstream.to_owned();
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let (s2, upstream) = (s.clone(), upstream.clone());
                let task = tokio::spawn(async move {
                    // A store that is down (a restart) refuses: the client sees a closed
                    // connection, as it would without the proxy.
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = pump(cr, sw, &s2) => {}
                        _ = pump(sr, cw, &s2) => {}
                    }
                });
                let mut conns = s.conns.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(task.abort_handle());
            }
        })
        .abort_handle();
        Ok(Proxy {
            addr,
            shared,
            accept,
        })
    }

    /// Closes every open connection; returns how many.
    pub fn drop_all(&self) -> usize {
        let conns = std::mem::take(&mut *self.shared.conns.lock().unwrap());
        let live = conns.iter().filter(|c| !c.is_finished()).count();
        for c in conns {
            c.abort();
        }
        live
    }

    /// Delays every chunk of traffic by `delay` (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_all();
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = shared.delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
