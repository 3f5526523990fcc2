// SPDX-License-Identifier: Apache-2.0
//! How kube's watcher recovers: resuming after dropped watches, re-listing after
//! 410 Expired, converging through injected 5xx failures.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::{WatchEvent, WatchParams},
    runtime::{reflector, watcher, WatchStreamExt},
    Api,
};
use nettel_test_apiserver::{endpoint_slice_json, Kind, TestApiServer};

use crate::common::{eventually, is_event, pod, wait_event, watching, within, EventStream};

#[tokio::test]
async fn dropped_watch_resumes_from_last_resource_version() {
    let server = TestApiServer::start().await;
    server.create(pod("a", "10.1.0.1")).unwrap();
    let api: Api<Pod> = Api::all(server.client().await);
    let mut stream: EventStream<Pod> = watcher(api, watcher::Config::default()).default_backoff().boxed();
    wait_event(&mut stream, 5, "InitDone", |e| matches!(e, watcher::Event::InitDone)).await;
    server.create(pod("b", "10.1.0.2")).unwrap();
    wait_event(&mut stream, 5, "Apply b", |e| is_event(e, "Apply", "b")).await;
    let last_seen = server.resource_version();

    server.drop_watches();
    server.create(pod("c", "10.1.0.3")).unwrap();
    let (_, errors) = wait_event(&mut stream, 10, "Apply c", |e| is_event(e, "Apply", "c")).await;
    // kube-client maps the mid-chunk EOF to a quiet end of the watch stream, so the
    // watcher re-watches at once without yielding an error (and without backoff).
    assert_eq!(errors, 0, "a cut watch is not a watcher error");
    let versions = server.watch_resource_versions(Kind::Pod);
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(versions[1], last_seen.to_string(), "resumed from the last seen version");
    assert_eq!(server.list_count(Kind::Pod), 1, "no re-list after a dropped watch");
}

#[tokio::test]
async fn bookmarks_advance_the_resume_version() {
    let server = TestApiServer::start().await;
    let api: Api<Pod> = Api::all(server.client().await);
    let mut stream: EventStream<Pod> = watcher(api, watcher::Config::default()).default_backoff().boxed();
    wait_event(&mut stream, 5, "InitDone", |e| matches!(e, watcher::Event::InitDone)).await;
    // Writes to another kind move the global version; only a bookmark tells the Pod watcher.
    server.create(endpoint_slice_json("s", "default", "svc", &[])).unwrap();
    let slice_rv = server.resource_version();
    // Drive the watcher (bookmarks yield no event) while a bookmark (every 1 s) arrives.
    within(5, "bookmark", async {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1500), stream.next()).await;
    })
    .await;
    server.drop_watches();
    server.create(pod("p", "10.1.0.9")).unwrap();
    wait_event(&mut stream, 10, "Apply p", |e| is_event(e, "Apply", "p")).await;
    let versions = server.watch_resource_versions(Kind::Pod);
    assert_eq!(versions.last().unwrap(), &slice_rv.to_string(), "{versions:?}");
    assert_eq!(server.list_count(Kind::Pod), 1);
}

#[tokio::test]
async fn expired_watch_gets_410_error_event() {
    let server = TestApiServer::start().await;
    server.create(pod("a", "10.1.0.1")).unwrap();
    let old = server.resource_version();
    server.create(pod("b", "10.1.0.2")).unwrap();
    server.compact();
    let api: Api<Pod> = Api::all(server.client().await);
    let mut events =
        within(5, "watch", api.watch(&WatchParams::default(), &old.to_string())).await.unwrap().boxed();
    let first = within(5, "error event", events.next()).await.unwrap().unwrap();
    let WatchEvent::Error(status) = first else { panic!("expected ERROR, got {first:?}") };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert_eq!(status.message, format!("too old resource version: {old} ({})", old + 1));
    assert!(within(5, "stream end", events.next()).await.is_none(), "server closes after the 410");
    assert_eq!(server.stats().pods.expired_watches, 1);
}

#[tokio::test]
async fn compaction_forces_relist_and_reflector_converges() {
    let server = TestApiServer::start().await;
    server.create(pod("a", "10.1.0.1")).unwrap();
    server.create(pod("b", "10.1.0.2")).unwrap();
    let api: Api<Pod> = Api::all(server.client().await);
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let driver = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    let state = || -> BTreeMap<String, String> {
        reader
            .state()
            .iter()
            .map(|p| {
                let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
                (p.metadata.name.clone().unwrap_or_default(), ip)
            })
            .collect()
    };
    eventually(5, "initial sync", || state().len() == 2).await;
    eventually(5, "watch request", || server.watch_count(Kind::Pod) == 1).await;
    let lists_before = server.list_count(Kind::Pod);
    let stale = server.resource_version();

    // No await in between: the open watch cannot forward these before it is cut.
    server.delete(Kind::Pod, "default", "a").unwrap();
    server.update(pod("b", "10.1.0.22")).unwrap();
    server.create(pod("c", "10.1.0.3")).unwrap();
    server.compact();
    server.drop_watches();

    let want: BTreeMap<String, String> =
        [("b", "10.1.0.22"), ("c", "10.1.0.3")].map(|(n, ip)| (n.to_owned(), ip.to_owned())).into();
    eventually(15, "convergence after 410", || state() == want).await;
    // The store converges when the re-list lands; the watch from the new version
    // is opened just after it, so wait for that request before reading the stats.
    let current = server.resource_version().to_string();
    eventually(5, "watch after the re-list", || {
        server.stats().pods.watch_resource_versions.last() == Some(&current)
    })
    .await;
    let stats = server.stats();
    assert!(stats.pods.expired_watches >= 1, "{stats:?}");
    assert!(stats.pods.lists > lists_before, "410 must cause a re-list");
    // First watch from the list, the resumed one from the same (now stale) version
    // that got the 410, and after the re-list one from the current version.
    let versions = &stats.pods.watch_resource_versions;
    assert_eq!(versions[..2], [stale.to_string(), stale.to_string()], "{versions:?}");
    assert_eq!(versions.last(), Some(&server.resource_version().to_string()), "{versions:?}");
    driver.abort();
}

#[tokio::test]
async fn watcher_converges_through_injected_failures() {
    let server = TestApiServer::start().await;
    server.create(pod("a", "10.1.0.1")).unwrap();
    server.set_failures(3, 503);
    let api: Api<Pod> = Api::all(server.client().await);
    let mut stream: EventStream<Pod> = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let (_, errors) = wait_event(&mut stream, 10, "InitApply a", |e| is_event(e, "InitApply", "a")).await;
    // kube 5 clients retry 429/503/504 themselves (Config::default_retry), so the
    // watcher never sees these three failures.
    assert_eq!(errors, 0);
    wait_event(&mut stream, 5, "InitDone", |e| matches!(e, watcher::Event::InitDone)).await;
    server.create(pod("b", "10.1.0.2")).unwrap();
    wait_event(&mut stream, 5, "Apply b", |e| is_event(e, "Apply", "b")).await;
    let stats = server.stats();
    assert_eq!(stats.injected_failures, 3);
    assert_eq!(stats.pods.lists, 1);
    let failed: Vec<_> = stats.requests.iter().filter(|r| r.status == 503).collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed.iter().all(|r| r.query.contains("limit=500")), "the watcher's list: {failed:?}");
}

#[tokio::test]
async fn watcher_backs_off_through_non_retryable_failures() {
    let server = TestApiServer::start().await;
    server.create(pod("a", "10.1.0.1")).unwrap();
    server.set_failures(3, 500);
    let api: Api<Pod> = Api::all(server.client().await);
    let mut stream: EventStream<Pod> = watcher(api, watcher::Config::default()).default_backoff().boxed();
    // 500 is not retried by the client: each failure is a watcher error, followed
    // by the default backoff (0.8 s doubling, jittered), so this takes up to ~11 s.
    let (_, errors) = wait_event(&mut stream, 20, "InitApply a", |e| is_event(e, "InitApply", "a")).await;
    assert_eq!(errors, 3);
    wait_event(&mut stream, 5, "InitDone", |e| matches!(e, watcher::Event::InitDone)).await;
    server.create(pod("b", "10.1.0.2")).unwrap();
    wait_event(&mut stream, 5, "Apply b", |e| is_event(e, "Apply", "b")).await;
    assert_eq!(server.stats().injected_failures, 3);
    assert_eq!(server.list_count(Kind::Pod), 1);
}

#[tokio::test]
async fn failed_rewatch_retries_without_relist() {
    let server = TestApiServer::start().await;
    let api: Api<Pod> = Api::all(server.client().await);
    let mut stream: EventStream<Pod> = watcher(api, watcher::Config::default()).default_backoff().boxed();
    wait_event(&mut stream, 5, "InitDone", |e| matches!(e, watcher::Event::InitDone)).await;
    watching(&mut stream, &server, Kind::Pod, 1).await;
    let last_seen = server.resource_version();
    server.set_failures(2, 500);
    server.drop_watches();
    server.create(pod("x", "10.1.0.8")).unwrap();
    let (_, errors) = wait_event(&mut stream, 20, "Apply x", |e| is_event(e, "Apply", "x")).await;
    assert_eq!(errors, 2, "two failed re-watches (the cut itself is silent)");
    assert_eq!(server.list_count(Kind::Pod), 1);
    assert_eq!(server.watch_resource_versions(Kind::Pod), [last_seen.to_string(), last_seen.to_string()]);
}
