// SPDX-License-Identifier: Apache-2.0
//! cgroup id -> pod resolution on real cgroups: kubelet-style cgroups created
//! in the cgroup v2 hierarchy, a real process moved into a container cgroup.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    process::Command,
    time::{Duration, Instant},
};

use nettel_aggregator::kube::cgroup::{default_root, CgroupResolver};
use nettel_integration::{cgroup::CgroupTree, require_kernel};

#[test]
fn resolves_a_process_cgroup_to_its_pod_uid() {
    if !require_kernel("resolves_a_process_cgroup_to_its_pod_uid") {
        return;
    }
    let uid = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    let root = default_root().join(format!("nettel-test-{}", std::process::id()));
    let tree = CgroupTree(root.clone());
    let pod = root
        .join("kubepods.slice/kubepods-burstable.slice")
        .join(format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_")));
    let container = pod.join("cri-containerd-4b1d.scope");
    fs::create_dir_all(&container).expect("create cgroups (cgroup v2 mounted?)");
    // cgroupfs-driver layout too.
    let uid2 = "9b2c7c1e-2d3f-4e5a-8b6c-7d8e9fa0b1c2";
    let pod2 = root.join("kubepods/besteffort").join(format!("pod{uid2}")).join("0123456789abcdef");
    fs::create_dir_all(&pod2).unwrap();

    // A real process in the container cgroup.
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    fs::write(container.join("cgroup.procs"), child.id().to_string()).unwrap();
    let own = fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
    let rel =
        own.lines().find_map(|l| l.strip_prefix("0::")).expect("cgroup v2 line").trim_start_matches('/');
    let process_cgroup_id = fs::metadata(default_root().join(rel)).unwrap().ino();
    assert_eq!(process_cgroup_id, fs::metadata(&container).unwrap().ino());

    let mut r = CgroupResolver::new(root.clone(), Duration::from_secs(1));
    let now = Instant::now();
    let stats = r.scan(now);
    assert_eq!(stats.pod_cgroups, 2, "{stats:?}");
    assert_eq!(r.pod_uid(process_cgroup_id, now).as_deref(), Some(uid));
    assert_eq!(r.pod_uid(fs::metadata(&pod2).unwrap().ino(), now).as_deref(), Some(uid2));
    assert_eq!(r.pod_uid(fs::metadata(&root).unwrap().ino(), now), None, "non-pod cgroups stay unresolved");

    let _ = child.kill();
    let _ = child.wait();
    drop(tree);
    assert!(!root.exists(), "test cgroups left behind");
}
