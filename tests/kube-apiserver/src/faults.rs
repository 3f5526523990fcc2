// SPDX-License-Identifier: Apache-2.0
//! Fault injection (failures, delays, outages, dropped watches) and request counters.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, PoisonError,
    },
    time::Duration,
};

use tokio::sync::watch;

use crate::store::Kind;

/// Fault injection state shared by all connections.
#[derive(Debug)]
pub(crate) struct Faults {
    /// Remaining injected failures and their HTTP status.
    failures: Mutex<(u32, u16)>,
    delay: Mutex<Duration>,
    down: AtomicBool,
    /// Bumped to make every open watch stream abort.
    drops: watch::Sender<u64>,
}

impl Faults {
    pub fn new() -> Self {
        Faults {
            failures: Mutex::new((0, 503)),
            delay: Mutex::new(Duration::ZERO),
            down: AtomicBool::new(false),
            drops: watch::Sender::new(0),
        }
    }

    pub fn set_failures(&self, count: u32, status: u16) {
        *self.failures.lock().unwrap_or_else(PoisonError::into_inner) = (count, status);
    }

    /// Consumes one injected failure, returning its status code.
    pub fn take_failure(&self) -> Option<u16> {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.0 == 0 {
            return None;
        }
        failures.0 -= 1;
        Some(failures.1)
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(PoisonError::into_inner) = delay;
    }

    pub fn delay(&self) -> Duration {
        *self.delay.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.drop_watches();
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    pub fn drop_watches(&self) {
        self.drops.send_modify(|generation| *generation += 1);
    }

    /// A receiver that sees every later `drop_watches`.
    pub fn subscribe_drops(&self) -> watch::Receiver<u64> {
        self.drops.subscribe()
    }
}

/// What the server saw of one API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string (empty when absent).
    pub query: String,
    /// HTTP status code of the response (200 for watches, even those ended by an ERROR event).
    pub status: u16,
}

/// Request counters for one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindStats {
    /// LIST requests answered with 200.
    pub lists: u64,
    /// WATCH requests answered with 200 (including those then ended with a 410 ERROR event).
    pub watches: u64,
    /// The `resourceVersion` query parameter of each such watch, in order (`""` when absent).
    pub watch_resource_versions: Vec<String>,
    /// Watches that got a 410 `Expired` ERROR event.
    pub expired_watches: u64,
}

/// Snapshot of everything the server counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Counters for Pods.
    pub pods: KindStats,
    /// Counters for EndpointSlices.
    pub endpoint_slices: KindStats,
    /// Requests answered with an injected failure (see `set_failures`).
    pub injected_failures: u64,
    /// Connections closed unanswered because the server was down.
    pub refused_connections: u64,
    /// Every request that reached the HTTP layer while the server was up, in order.
    pub requests: Vec<RequestRecord>,
}

impl Stats {
    /// The counters of `kind`.
    pub fn kind(&self, kind: Kind) -> &KindStats {
        match kind {
            Kind::Pod => &self.pods,
            Kind::EndpointSlice => &self.endpoint_slices,
        }
    }

    pub(crate) fn kind_mut(&mut self, kind: Kind) -> &mut KindStats {
        match kind {
            Kind::Pod => &mut self.pods,
            Kind::EndpointSlice => &mut self.endpoint_slices,
        }
    }
}
