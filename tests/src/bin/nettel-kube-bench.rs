// SPDX-License-Identifier: Apache-2.0
//! Memory of the aggregator's Kubernetes cache: serves N realistic Pods (with
//! managedFields and container specs, as `kubectl get -o json` prints them)
//! and N/5 EndpointSlices from the test API server, starts the release
//! aggregator (uid 65534) against it, waits for the sync, and reports RSS;
//! then churns 10% of the pods and reports again.
//!
//! ```text
//! sudo target/release/nettel-kube-bench [PODS]      # default 10000
//! ```

use std::{os::unix::fs::PermissionsExt, os::unix::process::CommandExt, process::Command, time::Duration};

use nettel_integration::metrics::{http_get, sum};
use nettel_test_apiserver::{endpoint_slice_json, pod_json, Kind, SliceEndpoint, TestApiServer};
use serde_json::{json, Value};

fn realistic_pod(i: usize) -> (Value, String, String, String) {
    let ns = format!("team-{}", i % 200);
    let name = format!("svc{}-{:05}-7d9f8c6b5-x{}", i / 5, i, i % 97);
    let uid = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
    let ip = format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256);
    let mut p = pod_json(
        &name,
        &ns,
        &uid,
        &[&ip],
        "Running",
        &[("app", &format!("svc{}", i / 5)), ("pod-template-hash", "7d9f8c6b5")],
        false,
    );
    p["metadata"]["managedFields"] = json!([{
        "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": "2026-11-25T00:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}}, "f:ownerReferences": {}},
                     "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:env": {}, "f:resources": {}}}}}
    }]);
    p["spec"] = json!({
        "nodeName": "node-1", "serviceAccountName": "default", "restartPolicy": "Always",
        "containers": [{
            "name": "app", "image": format!("registry.example/svc{}:1.2.3", i / 5),
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "env": (0..8).map(|k| json!({"name": format!("ENV_{k}"), "value": "x".repeat(24)})).collect::<Vec<_>>(),
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
        }]
    });
    (p, ns, name, uid)
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

fn main() {
    let usage = "usage: nettel-kube-bench [PODS] (default 10000)";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = match args.as_slice() {
        [] => 10_000,
        [h] if h == "--help" || h == "-h" => {
            println!("{usage}");
            return;
        }
        [pods] => pods.parse().unwrap_or_else(|_| {
            eprintln!("PODS: `{pods}` is not a number\n{usage}");
            std::process::exit(2)
        }),
        _ => {
            eprintln!("one argument at most\n{usage}");
            std::process::exit(2)
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(TestApiServer::start());
    let mut pods = Vec::with_capacity(n);
    let bytes: usize = (0..n)
        .map(|i| {
            let (p, ns, name, uid) = realistic_pod(i);
            let len = p.to_string().len();
            let ip = p["status"]["podIP"].as_str().unwrap().to_owned();
            api.create(p).unwrap();
            pods.push((ns, name, uid, ip));
            len
        })
        .sum();
    for (k, chunk) in pods.chunks(5).enumerate() {
        let eps: Vec<SliceEndpoint<'_>> = chunk
            .iter()
            .map(|(ns, name, uid, ip)| SliceEndpoint {
                pod_name: name,
                pod_namespace: ns,
                pod_uid: uid,
                address: ip,
            })
            .collect();
        api.create(endpoint_slice_json(&format!("svc{k}-abcde"), &chunk[0].0, &format!("svc{k}"), &eps))
            .unwrap();
    }
    let dir = nettel_integration::process::scratch_dir("kube-bench");
    let kubeconfig = api.kubeconfig(&dir);
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();

    let bin = std::env::current_exe().unwrap().parent().unwrap().join("nettel-aggregator");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut agg = Command::new(bin)
        .args(["--loader-socket", "/nonexistent/loader.sock", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .uid(65534)
        .gid(65534)
        .stderr(std::fs::File::create(dir.join("aggregator.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = agg.id();
    let wait_pods = |want: u64| {
        for _ in 0..600 {
            if let Ok((_, body)) = http_get(port, "/metrics", None) {
                if sum(&body, "nettel_kube_synced", &[]) == 1 && sum(&body, "nettel_kube_pods", &[]) == want {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("aggregator did not sync {want} pods; log in {}", dir.display());
    };
    wait_pods(n as u64);
    std::thread::sleep(Duration::from_secs(2));
    println!("pods: {n} ({} MiB of Pod JSON served), endpointslices: {}", bytes / (1 << 20), n.div_ceil(5));
    println!(
        "after sync:  VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        status_kib(pid, "VmRSS:") as f64 / 1024.0,
        status_kib(pid, "VmHWM:") as f64 / 1024.0
    );

    // Churn 10%: delete and recreate (new UIDs); deleted pods age out after the TTL (30 s).
    for (i, (ns, name, _, _)) in pods.iter().enumerate().take(n / 10) {
        api.delete(Kind::Pod, ns, name).unwrap();
        let (mut p, ..) = realistic_pod(i);
        p["metadata"]["uid"] = Value::from(format!("{:08x}-1111-4000-8000-{:012x}", i, i));
        api.create(p).unwrap();
    }
    wait_pods((n + n / 10) as u64);
    wait_pods(n as u64); // after the 30 s TTL the deleted ones are gone
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "after churn: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        status_kib(pid, "VmRSS:") as f64 / 1024.0,
        status_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    let _ = agg.kill();
    let _ = agg.wait();
}
