// SPDX-License-Identifier: Apache-2.0
//! WATCH streams: newline-delimited JSON events after a resourceVersion, periodic
//! BOOKMARKs, a 410 `Expired` ERROR event for versions older than the retained
//! history, and abrupt termination on `drop_watches`.

use std::{collections::HashMap, io, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::{body::Frame, header, Response};
use serde_json::Value;
use tokio::{
    sync::{mpsc, watch},
    time::{interval_at, Instant, MissedTickBehavior},
};

use crate::{
    http::{status_response, Body},
    objects::{bookmark_json, status_json, watch_event_json},
    server::Shared,
    store::{Kind, Since},
};

/// Server-side watch timeout when the client sends no `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Starts a watch of `kind` (in `ns` if given) and returns its streaming response.
pub(crate) fn start(
    shared: Arc<Shared>,
    kind: Kind,
    ns: Option<String>,
    params: &HashMap<String, String>,
) -> Response<Body> {
    let rv_param = params.get("resourceVersion").cloned().unwrap_or_default();
    let start = match rv_param.as_str() {
        "" | "0" => None,
        rv => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => return status_response(400, &format!("invalid resourceVersion {rv:?}")),
        },
    };
    let flag = |name: &str| matches!(params.get(name).map(String::as_str), Some("true" | "1"));
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    {
        let mut stats = shared.stats();
        let stats = stats.kind_mut(kind);
        stats.watches += 1;
        stats.watch_resource_versions.push(rv_param);
    }
    let (tx, mut rx) = mpsc::channel(64);
    let task = WatchTask {
        drops: shared.faults.subscribe_drops(),
        changes: shared.subscribe_changes(),
        bookmarks: flag("allowWatchBookmarks"),
        shared,
        kind,
        ns,
        tx,
    };
    tokio::spawn(task.run(start, timeout));
    let body = StreamBody::new(futures::stream::poll_fn(move |cx| rx.poll_recv(cx))).boxed();
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

/// What woke a watch.
enum Wake {
    Dropped,
    Closed,
    Changed,
    Bookmark,
}

/// One open watch, feeding its response body through `tx`.
struct WatchTask {
    shared: Arc<Shared>,
    kind: Kind,
    ns: Option<String>,
    bookmarks: bool,
    drops: watch::Receiver<u64>,
    changes: watch::Receiver<u64>,
    tx: mpsc::Sender<io::Result<Frame<Bytes>>>,
}

impl WatchTask {
    /// Sends one event line; false once the client has gone.
    async fn send(&self, event: &Value) -> bool {
        let line = format!("{event}\n");
        self.tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_ok()
    }

    /// Ends the body with an error, which makes hyper cut the connection mid-stream.
    async fn abort(&self) {
        let err = io::Error::new(io::ErrorKind::ConnectionReset, "watch dropped by test");
        let _ = self.tx.send(Err(err)).await;
    }

    async fn run(mut self, start: Option<u64>, timeout: Duration) {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let period = self.shared.bookmark_interval.max(Duration::from_millis(1));
        let mut ticker = interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let mut last = match start {
            Some(rv) => rv,
            None => {
                // No version (or "0"): synthetic ADDED events for the current state.
                self.changes.borrow_and_update();
                let (items, rv) = self.shared.store().list(self.kind, self.ns.as_deref());
                for obj in &items {
                    if !self.send(&watch_event_json("ADDED", obj)).await {
                        return;
                    }
                }
                rv
            }
        };
        loop {
            if self.drops.has_changed().unwrap_or(true) {
                return self.abort().await;
            }
            self.changes.borrow_and_update();
            let since = self.shared.store().events_since(self.kind, self.ns.as_deref(), last);
            match since {
                Since::Expired { oldest } => {
                    self.shared.stats().kind_mut(self.kind).expired_watches += 1;
                    let message = format!("too old resource version: {last} ({oldest})");
                    let status = status_json(410, "Expired", &message);
                    self.send(&watch_event_json("ERROR", &status)).await;
                    return;
                }
                Since::Events(events, rv) => {
                    for event in &events {
                        if !self.send(&watch_event_json(event.event_type, &event.object)).await {
                            return;
                        }
                    }
                    last = last.max(rv);
                }
            }
            let wake = tokio::select! {
                biased;
                _ = self.drops.changed() => Wake::Dropped,
                () = self.tx.closed() => Wake::Closed,
                () = &mut deadline => Wake::Closed,
                res = self.changes.changed() => if res.is_ok() { Wake::Changed } else { Wake::Closed },
                _ = ticker.tick(), if self.bookmarks => Wake::Bookmark,
            };
            match wake {
                Wake::Dropped => return self.abort().await,
                Wake::Closed => return,
                Wake::Changed => {}
                Wake::Bookmark => {
                    if !self.send(&bookmark_json(self.kind, last)).await {
                        return;
                    }
                }
            }
        }
    }
}
