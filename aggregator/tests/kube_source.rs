// SPDX-License-Identifier: Apache-2.0
//! The aggregator's Kubernetes watch against the test API server, with the real
//! kube-rs client: convergence, resume after dropped connections, re-list on
//! 410 Gone, serving from cache through an outage, IP reuse.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use nettel_aggregator::{
    kube::pod_index::PodIndex,
    metrics::{Metrics, ResourceLabels},
    source::kube::{client, KubeSource},
    transform::enrich_pod::ClusterIndex,
};
use nettel_test_apiserver::{endpoint_slice_json, pod_json, Kind, SliceEndpoint, TestApiServer};
use serde_json::Value;

struct Setup {
    server: TestApiServer,
    index: Arc<ClusterIndex>,
    source: Arc<KubeSource>,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
}

/// Starts the server with `objects`, and a source watching it through a kubeconfig file.
async fn setup(objects: Vec<Value>, ttl: Duration) -> Setup {
    let server = TestApiServer::start().await;
    for o in objects {
        server.create(o).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let client = client(Some(&kubeconfig)).await.expect("client from kubeconfig");
    let metrics = Arc::new(Metrics::default());
    let index = Arc::new(ClusterIndex::new(PodIndex::new(ttl)));
    let source = KubeSource::new(Arc::clone(&index), Arc::clone(&metrics));
    source.spawn(client);
    let s = Setup { server, index, source, metrics, _dir: dir };
    eventually("initial sync", || s.source.synced()).await;
    s
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn who(s: &Setup, ip: &str) -> Option<(String, String, String)> {
    let ip: IpAddr = ip.parse().unwrap();
    s.index
        .read()
        .lookup(ip, Instant::now())
        .map(|m| (m.name.to_string(), m.namespace.to_string(), m.service.to_string()))
}

fn pod(name: &str, uid: &str, ip: &str, phase: &str) -> Value {
    pod_json(name, "shop", uid, &[ip], phase, &[("app", "fallback-app")], false)
}

fn slice(name: &str, service: &str, pods: &[(&str, &str, &str)]) -> Value {
    let eps: Vec<SliceEndpoint<'_>> = pods
        .iter()
        .map(|(pod_name, pod_uid, address)| SliceEndpoint {
            pod_name,
            pod_namespace: "shop",
            pod_uid,
            address,
        })
        .collect();
    endpoint_slice_json(name, "shop", service, &eps)
}

fn relists(m: &Metrics, resource: &str) -> u64 {
    m.kube_relists.get_or_create(&ResourceLabels { resource: resource.into() }).get()
}

#[tokio::test]
async fn converges_with_services_from_endpoint_slices_and_label_fallback() {
    let s = setup(
        vec![
            pod("web-0", "u-web-0", "10.1.0.10", "Running"),
            pod("batch-0", "u-batch-0", "10.1.0.11", "Running"),
            pod_json("dual", "shop", "u-dual", &["10.1.0.12", "fd00:1::12"], "Running", &[], false),
            pod_json("node-agent", "kube-system", "u-host", &["192.0.2.50"], "Running", &[], true),
            slice("web-x1", "web", &[("web-0", "u-web-0", "10.1.0.10")]),
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        who(&s, "10.1.0.10"),
        Some(("web-0".into(), "shop".into(), "web".into())),
        "Service from slice"
    );
    assert_eq!(who(&s, "10.1.0.11").unwrap().2, "fallback-app", "no Service selects it: app label");
    assert_eq!(who(&s, "fd00:1::12").unwrap().0, "dual");
    assert_eq!(who(&s, "::ffff:10.1.0.12").unwrap().0, "dual");
    assert_eq!(who(&s, "192.0.2.50"), None, "hostNetwork pods are not indexed by IP");

    // Live changes flow through the watch.
    s.server.create(slice("batch-x1", "batch", &[("batch-0", "u-batch-0", "10.1.0.11")])).unwrap();
    eventually("service of batch-0", || who(&s, "10.1.0.11").is_some_and(|w| w.2 == "batch")).await;
    s.server.delete(Kind::EndpointSlice, "shop", "batch-x1").unwrap();
    eventually("fallback again", || who(&s, "10.1.0.11").is_some_and(|w| w.2 == "fallback-app")).await;
}

#[tokio::test]
async fn ip_reuse_and_deletion_ttl_through_the_api() {
    let s = setup(vec![pod("old", "u-old", "10.1.0.20", "Running")], Duration::from_secs(2)).await;
    // The old pod starts terminating (deletionTimestamp) and a new pod gets its IP.
    let mut terminating = pod("old", "u-old", "10.1.0.20", "Running");
    terminating["metadata"]["deletionTimestamp"] = Value::from("2026-11-25T00:00:00Z");
    s.server.update(terminating).unwrap();
    s.server.create(pod("new", "u-new", "10.1.0.20", "Pending")).unwrap();
    eventually("the new pod to win the IP", || who(&s, "10.1.0.20").is_some_and(|w| w.0 == "new")).await;

    // A deleted pod stays resolvable for the TTL, then is forgotten.
    s.server.create(pod("gone", "u-gone", "10.1.0.21", "Running")).unwrap();
    eventually("gone indexed", || who(&s, "10.1.0.21").is_some()).await;
    s.server.delete(Kind::Pod, "shop", "gone").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(who(&s, "10.1.0.21").unwrap().0, "gone", "within the TTL");
    eventually("TTL expiry", || who(&s, "10.1.0.21").is_none()).await;
}

#[tokio::test]
async fn dropped_watches_resume_and_410_relists_and_converges() {
    let s = setup(vec![pod("a", "u-a", "10.1.0.30", "Running")], Duration::from_secs(30)).await;
    eventually("both watches open", || {
        s.server.watch_count(Kind::Pod) >= 1 && s.server.watch_count(Kind::EndpointSlice) >= 1
    })
    .await;

    // A dropped connection: resume from the last resourceVersion, no re-list.
    s.server.drop_watches();
    s.server.create(pod("b", "u-b", "10.1.0.31", "Running")).unwrap();
    eventually("b", || who(&s, "10.1.0.31").is_some()).await;
    assert_eq!(s.server.list_count(Kind::Pod), 1, "no re-list after a dropped watch");
    let rvs = s.server.watch_resource_versions(Kind::Pod);
    assert!(rvs.len() >= 2 && rvs[1] != "0" && !rvs[1].is_empty(), "resumed from a resourceVersion: {rvs:?}");

    // Changes the watch never sees, then history compacted: 410 -> re-list.
    eventually("watch reopened", || s.server.watch_count(Kind::Pod) >= 2).await;
    s.server.delete(Kind::Pod, "shop", "a").unwrap();
    s.server.create(pod("c", "u-c", "10.1.0.32", "Running")).unwrap();
    s.server.compact();
    s.server.drop_watches();
    eventually("re-list after 410", || relists(&s.metrics, "pods") >= 2).await;
    eventually("c after re-list", || who(&s, "10.1.0.32").is_some()).await;
    assert_eq!(who(&s, "10.1.0.30").unwrap().0, "a", "pruned by the re-list but still within its TTL");
    assert!(s.server.list_count(Kind::Pod) >= 2);
}

#[tokio::test]
async fn api_outage_keeps_serving_the_cache_and_converges_after() {
    let s = setup(vec![pod("a", "u-a", "10.1.0.40", "Running")], Duration::from_secs(30)).await;
    s.server.set_down(true);
    s.server.create(pod("b", "u-b", "10.1.0.41", "Running")).unwrap();
    // Down for a while: lookups keep answering from the cache, errors are counted.
    for _ in 0..20 {
        assert_eq!(who(&s, "10.1.0.40").unwrap().0, "a");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let errors =
        |r: &str| s.metrics.kube_watch_errors.get_or_create(&ResourceLabels { resource: r.into() }).get();
    eventually("watch errors counted", || errors("pods") > 0).await;
    let during = errors("pods");
    assert!(during < 20, "backoff, not a tight loop: {during} errors in ~2 s");
    s.server.set_down(false);
    eventually("b after the outage", || who(&s, "10.1.0.41").is_some()).await;
    assert_eq!(who(&s, "10.1.0.40").unwrap().0, "a");
}
