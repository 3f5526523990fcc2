// SPDX-License-Identifier: Apache-2.0
//! Kubernetes attribution end to end: netns "pods" whose IPs the test API
//! server assigns to Pods, the aggregator (uid 65534) watching it through a
//! kubeconfig, real retransmits; then the pod is deleted and its IP given to a
//! new pod, and new retransmits must name the new pod.

use std::{os::unix::fs::PermissionsExt, time::Duration};

use nettel_integration::{
    kernel::retrans_segs,
    metrics::{http_get, sum},
    netns::PodPair,
    process::{scratch_dir, Aggregator, Loader},
    require_kernel,
    traffic::{assert_counted, finish, run_client, start_server, RTX},
    wait_for,
};
use nettel_test_apiserver::{endpoint_slice_json, pod_json, Kind, SliceEndpoint, TestApiServer};

const NOBODY: u32 = 65534;

fn upload(pods: &PodPair, bytes: &str) {
    let addr = format!("{}:8080", pods.b_v4);
    let server = start_server(&pods.b, &["sink", &addr, "1"]);
    run_client(&pods.a, &["send", &addr, bytes]);
    finish(server);
}

#[test]
fn retransmits_name_the_pod_namespace_and_service_from_the_api_and_follow_ip_reuse() {
    if !require_kernel("retransmits_name_the_pod_namespace_and_service_from_the_api_and_follow_ip_reuse") {
        return;
    }
    let pods = PodPair::new(5);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(TestApiServer::start());
    let uid_old = "0d6c1c9e-1111-4a4a-8b8b-000000000001";
    api.create(pod_json(
        "checkout-0",
        "shop",
        uid_old,
        &[&pods.b_v4],
        "Running",
        &[("app", "checkout")],
        false,
    ))
    .unwrap();
    api.create(endpoint_slice_json(
        "checkout-abc12",
        "shop",
        "checkout",
        &[SliceEndpoint {
            pod_name: "checkout-0",
            pod_namespace: "shop",
            pod_uid: uid_old,
            address: &pods.b_v4,
        }],
    ))
    .unwrap();
    let dir = scratch_dir("kube");
    let kubeconfig = api.kubeconfig(&dir);
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();

    let loader = Loader::start(NOBODY, &[NOBODY], &[]);
    let mut agg = Aggregator::start_with(
        &loader.socket,
        &["--kubeconfig".into(), kubeconfig.display().to_string(), "--pod-ttl-secs".into(), "30".into()],
        NOBODY,
        NOBODY,
    );
    // Ready means: loader stream open and both caches synced.
    agg.wait_connected();
    assert_eq!(sum(&agg.scrape(), "nettel_kube_synced", &[]), 1);
    pods.drop_inbound(&pods.b, 0.05, &["--dport", "8080"]);

    let old = [
        ("pod", "checkout-0"),
        ("namespace", "shop"),
        ("service", "checkout"),
        ("dest_port", "8080"),
        ("kind", "data"),
    ];
    let before = sum(&agg.scrape(), RTX, &old);
    let k = retrans_segs(&pods.a);
    upload(&pods, "12000000");
    assert_counted(&agg, &old, before, retrans_segs(&pods.a) - k, "retransmits to checkout-0");

    // The pod is deleted and its IP reassigned to a new pod of another Service.
    api.delete(Kind::EndpointSlice, "shop", "checkout-abc12").unwrap();
    api.delete(Kind::Pod, "shop", "checkout-0").unwrap();
    api.create(pod_json(
        "payments-7f9c",
        "billing",
        "0d6c1c9e-2222-4a4a-8b8b-000000000002",
        &[&pods.b_v4],
        "Running",
        &[("app.kubernetes.io/name", "payments")],
        false,
    ))
    .unwrap();
    let new =
        [("pod", "payments-7f9c"), ("namespace", "billing"), ("service", "payments"), ("dest_port", "8080")];
    // Wait for the watch to deliver the change (the aggregator drops its series cache on it).
    wait_for(Duration::from_secs(10), "the new pod in the cache", || {
        let (_, body) = http_get(agg.port, "/metrics", None).ok()?;
        (sum(&body, "nettel_kube_pods", &[]) == 2).then_some(())
    });
    let old_total = sum(&agg.scrape(), RTX, &old);
    let before = sum(&agg.scrape(), RTX, &new);
    let k = retrans_segs(&pods.a);
    upload(&pods, "12000000");
    assert_counted(
        &agg,
        &new,
        before,
        retrans_segs(&pods.a) - k,
        "retransmits to payments-7f9c after IP reuse",
    );
    assert_eq!(sum(&agg.scrape(), RTX, &old), old_total, "nothing more for the deleted pod");
    drop(api);
}
