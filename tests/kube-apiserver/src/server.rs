// SPDX-License-Identifier: Apache-2.0
//! State shared by all connections, and the TLS accept loop.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use crate::{faults::Faults, http, store::Store, Stats};

/// Everything the request handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// Carries the latest resourceVersion; open watches wake on every change.
    changes: watch::Sender<u64>,
    /// Fault injection switches.
    pub faults: Faults,
    stats: Mutex<Stats>,
    /// The bearer token clients must send.
    pub token: String,
    /// How often open watches that allow bookmarks get a BOOKMARK event.
    pub bookmark_interval: Duration,
}

impl Shared {
    pub fn new(history_limit: usize, token: String, bookmark_interval: Duration) -> Self {
        let store = Store::new(history_limit);
        let changes = watch::Sender::new(store.rv());
        Shared {
            store: Mutex::new(store),
            changes,
            faults: Faults::new(),
            stats: Mutex::new(Stats::default()),
            token,
            bookmark_interval,
        }
    }

    /// Reads the store.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the store, then wakes every open watch.
    pub fn mutate<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let (out, rv) = {
            let mut store = self.store();
            let out = f(&mut store);
            (out, store.rv())
        };
        self.changes.send_replace(rv);
        out
    }

    /// A receiver woken by every later mutation.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The request counters.
    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Accepts connections until the task is aborted; each connection also ends
/// when `shutdown` changes.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<()>,
) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if shared.faults.is_down() {
            shared.stats().refused_connections += 1;
            drop(tcp);
            continue;
        }
        let (acceptor, shared, mut shutdown) = (acceptor.clone(), shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let service = service_fn(move |req| http::handle(shared.clone(), req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}
