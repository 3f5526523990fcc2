// SPDX-License-Identifier: Apache-2.0
//! Helpers shared by the kube client tests: bounded waits and watcher stream draining.

use std::{fmt::Debug, future::Future, time::Duration};

use futures::{stream::BoxStream, StreamExt};
use kube::runtime::watcher;
use nettel_test_apiserver::{pod_json, Kind, TestApiServer};
use serde_json::Value;

/// A boxed watcher stream, as produced by `watcher(..).default_backoff().boxed()`.
pub type EventStream<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// Awaits `fut`, failing the test after `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s waiting for {what}"),
    }
}

/// Polls `check` every 20 ms until it holds, failing the test after `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    within(secs, what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Polls the watcher (which only makes requests while polled) until the server
/// has accepted `n` watches of `kind`, for at most 5 s. Events read meanwhile are
/// dropped, so call this when none are expected.
///
/// The watcher emits `InitDone` before it sends its WATCH request, so a test that
/// cuts watches right after `InitDone` must wait for the watch to exist first.
pub async fn watching<K>(stream: &mut EventStream<K>, server: &TestApiServer, kind: Kind, n: u64) {
    within(5, "watch request", async {
        while server.watch_count(kind) < n {
            let _ = tokio::time::timeout(Duration::from_millis(20), stream.next()).await;
        }
    })
    .await;
}

/// Reads the watcher stream until `pred` accepts an event, for at most `secs` seconds.
/// Returns the event and the number of stream errors seen on the way.
pub async fn wait_event<K: Debug>(
    stream: &mut EventStream<K>,
    secs: u64,
    what: &str,
    mut pred: impl FnMut(&watcher::Event<K>) -> bool,
) -> (watcher::Event<K>, usize) {
    within(secs, what, async {
        let mut errors = 0;
        loop {
            match stream.next().await {
                Some(Ok(event)) if pred(&event) => return (event, errors),
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    eprintln!("watcher error (expected in fault tests): {err}");
                    errors += 1;
                }
                None => panic!("watcher stream ended while waiting for {what}"),
            }
        }
    })
    .await
}

/// True when `event` is an `Apply`/`InitApply`/`Delete` of an object named `name`.
pub fn is_event<K: kube::Resource>(event: &watcher::Event<K>, kind: &str, name: &str) -> bool {
    let (k, obj) = match event {
        watcher::Event::Apply(obj) => ("Apply", obj),
        watcher::Event::InitApply(obj) => ("InitApply", obj),
        watcher::Event::Delete(obj) => ("Delete", obj),
        _ => return false,
    };
    k == kind && obj.meta().name.as_deref() == Some(name)
}

/// A running Pod in `default` with one IPv4 address.
pub fn pod(name: &str, ip: &str) -> Value {
    pod_json(name, "default", "", &[ip], "Running", &[("app", "demo")], false)
}
