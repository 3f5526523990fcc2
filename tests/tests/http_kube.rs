// SPDX-License-Identifier: Apache-2.0
//! HTTP requests attributed to their pod by the serving process's cgroup:
//! the server runs in a kubelet-named cgroup of a hostNetwork pod, whose
//! address cannot name it, and the aggregator resolves the kernel's cgroup id
//! to the pod UID and the UID to the pod from the (test) API server. A second
//! server outside any pod cgroup stays unattributed.

use std::{fs, os::unix::fs::PermissionsExt};

use nettel_aggregator::kube::cgroup::default_root;
use nettel_integration::{
    cgroup::CgroupTree,
    metrics::sum,
    netns::PodPair,
    process::{bin, scratch_dir, Aggregator, Loader},
    require_kernel,
    servers::{curl, start},
    wait_for,
};
use nettel_test_apiserver::{pod_json, TestApiServer};

const NOBODY: u32 = 65534;
const HIST: &str = "http_request_duration_seconds_count";

#[test]
fn http_requests_are_attributed_by_cgroup_to_a_host_network_pod() {
    if !require_kernel("http_requests_are_attributed_by_cgroup_to_a_host_network_pod") {
        return;
    }
    let pods = PodPair::new(11);
    let uid = "6a1f0c2e-5b3d-4c7e-9f10-1a2b3c4d5e6f";
    let root = default_root().join(format!("nettel-http-{}", std::process::id()));
    let tree = CgroupTree(root.clone());
    let container = root
        .join("kubepods.slice/kubepods-burstable.slice")
        .join(format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_")))
        .join("cri-containerd-7e57.scope");
    fs::create_dir_all(&container).expect("create cgroups (cgroup v2 mounted?)");

    // The API knows the pod only as hostNetwork on the node's address.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(TestApiServer::start());
    api.create(pod_json("ingress-0", "edge", uid, &["192.0.2.10"], "Running", &[("app", "ingress")], true))
        .unwrap();
    let dir = scratch_dir("http-kube");
    let kubeconfig = api.kubeconfig(&dir);
    fs::set_permissions(&kubeconfig, fs::Permissions::from_mode(0o644)).unwrap();

    let loader = Loader::start(NOBODY, &[NOBODY], &[]);
    let mut agg = Aggregator::start_with(
        &loader.socket,
        &["--kubeconfig".into(), kubeconfig.display().to_string()],
        NOBODY,
        NOBODY,
    );
    agg.wait_connected();

    let traffic = bin("nettel-traffic").display().to_string();
    let in_pod = start(&pods.b, &traffic, &["http".into(), format!("{}:8080", pods.b_v4)]);
    fs::write(container.join("cgroup.procs"), in_pod.0.id().to_string()).unwrap();
    let outside = start(&pods.a, &traffic, &["http".into(), format!("{}:8080", pods.a_v4)]);

    let to_pod = format!("http://{}:8080", pods.b_v4);
    let to_outside = format!("http://{}:8080", pods.a_v4);
    curl(&pods.a, &[&format!("{to_pod}/ok"), &format!("{to_pod}/ok"), &format!("{to_pod}/missing")]);
    curl(&pods.b, &[&format!("{to_outside}/fail")]);

    let named = [("pod", "ingress-0"), ("namespace", "edge"), ("service", "ingress")];
    let text = wait_for(std::time::Duration::from_secs(10), "3 requests named ingress-0", || {
        let text = agg.scrape();
        (sum(&text, HIST, &named) >= 3).then_some(text)
    });
    let of = |labels: &[(&str, &str)]| sum(&text, HIST, labels);
    assert_eq!(of(&[&named[..], &[("method", "GET"), ("status", "200")]].concat()), 2);
    assert_eq!(of(&[&named[..], &[("method", "GET"), ("status", "404")]].concat()), 1);
    assert_eq!(of(&named), 3, "nothing else is attributed to the pod");
    // The server outside any pod cgroup (and on no pod's address) is node-level.
    let node_level = wait_for(std::time::Duration::from_secs(10), "the node-level 500", || {
        let text = agg.scrape();
        let n = sum(&text, HIST, &[("pod", ""), ("status", "500")]);
        (n >= 1).then_some(n)
    });
    assert_eq!(node_level, 1);

    drop(in_pod);
    drop(outside);
    drop(agg);
    drop(tree);
    assert!(!root.exists(), "test cgroups left behind");
}
