// SPDX-License-Identifier: Apache-2.0
use std::net::IpAddr;

use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};
use serde_json::{json, Value};

use super::*;
use crate::{
    kube::pod_index::{PodInfo, PodState, SliceInfo},
    source::kube::{pod_info, slice_info},
};

/// A Pod as `kubectl get pod -o json` prints it on a dual-stack cluster:
/// managedFields, annotations, owner references, a full container spec and
/// container statuses; hostNetwork and being deleted.
fn realistic_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-11-20T10:00:00Z",
                "prometheus.io/scrape": "true"
            },
            "creationTimestamp": "2026-11-25T08:12:01Z",
            "deletionGracePeriodSeconds": 30,
            "deletionTimestamp": "2026-11-29T09:00:30Z",
            "finalizers": ["example.com/drain"],
            "generateName": "checkout-7d9f8c6b5-",
            "labels": {
                "app": "checkout-legacy",
                "app.kubernetes.io/name": "checkout",
                "app.kubernetes.io/part-of": "shop",
                "pod-template-hash": "7d9f8c6b5"
            },
            "managedFields": [
                {
                    "apiVersion": "v1", "fieldsType": "FieldsV1", "manager": "kube-controller-manager",
                    "operation": "Update", "time": "2026-11-25T08:12:01Z",
                    "fieldsV1": {
                        "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
                                       "f:ownerReferences": {".": {}, "k:{\"uid\":\"5f0c\"}": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:env": {}, "f:image": {}}}}
                    }
                },
                {
                    "apiVersion": "v1", "fieldsType": "FieldsV1", "manager": "kubelet", "operation": "Update",
                    "subresource": "status", "time": "2026-11-25T08:12:09Z",
                    "fieldsV1": {"f:status": {"f:conditions": {}, "f:podIP": {}, "f:podIPs": {".": {}}}}
                }
            ],
            "name": "checkout-7d9f8c6b5-x2k4q",
            "namespace": "shop",
            "ownerReferences": [{
                "apiVersion": "apps/v1", "blockOwnerDeletion": true, "controller": true, "kind": "ReplicaSet",
                "name": "checkout-7d9f8c6b5", "uid": "5f0c2a9e-1111-4a7b-8c9d-0e1f2a3b4c5d"
            }],
            "resourceVersion": "918273",
            "uid": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
        },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.example/checkout:1.2.3",
                "args": ["--port=8080"],
                "env": [
                    {"name": "LOG_LEVEL", "value": "info"},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}}
                ],
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                "volumeMounts": [{"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": "kube-api-access", "readOnly": true}]
            }],
            "dnsPolicy": "ClusterFirstWithHostNet",
            "hostNetwork": true,
            "nodeName": "node-1",
            "restartPolicy": "Always",
            "serviceAccountName": "default",
            "tolerations": [{"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300}],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]
        },
        "status": {
            "conditions": [
                {"lastProbeTime": null, "lastTransitionTime": "2026-11-25T08:12:09Z", "status": "True", "type": "Ready"}
            ],
            "containerStatuses": [{
                "containerID": "containerd://0123abcd", "image": "registry.example/checkout:1.2.3",
                "imageID": "registry.example/checkout@sha256:00", "lastState": {}, "name": "app", "ready": true,
                "restartCount": 0, "started": true, "state": {"running": {"startedAt": "2026-11-25T08:12:08Z"}}
            }],
            "hostIP": "192.0.2.10",
            "hostIPs": [{"ip": "192.0.2.10"}, {"ip": "2001:db8::10"}],
            "phase": "Running",
            "podIP": "192.0.2.10",
            "podIPs": [{"ip": "192.0.2.10"}, {"ip": "2001:db8::10"}],
            "qosClass": "Burstable",
            "startTime": "2026-11-25T08:12:01Z"
        }
    })
}

fn lean(v: &Value) -> LeanPod {
    serde_json::from_str(&v.to_string()).expect("lean pod")
}

#[test]
fn realistic_pod_keeps_what_the_index_reads_and_nothing_else() {
    let p = lean(&realistic_pod());
    let md = &p.metadata;
    assert_eq!(md.name.as_deref(), Some("checkout-7d9f8c6b5-x2k4q"));
    assert_eq!(md.namespace.as_deref(), Some("shop"));
    assert_eq!(md.uid.as_deref(), Some("1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"));
    assert_eq!(md.resource_version.as_deref(), Some("918273"));
    assert!(md.deletion_timestamp.is_some());
    let labels = md.labels.as_ref().unwrap();
    assert_eq!(labels.len(), 2, "only the app labels are kept: {labels:?}");
    assert_eq!(labels["app.kubernetes.io/name"], "checkout");
    assert_eq!(labels["app"], "checkout-legacy");
    assert_eq!(md.annotations, None);
    assert_eq!(md.managed_fields, None);
    assert_eq!(md.owner_references, None);
    assert_eq!(md.finalizers, None);
    assert_eq!(md.creation_timestamp, None);

    let ips: Vec<IpAddr> = vec!["192.0.2.10".parse().unwrap(), "2001:db8::10".parse().unwrap()];
    assert_eq!(
        pod_info(&p),
        Some(PodInfo {
            uid: "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d".into(),
            name: "checkout-7d9f8c6b5-x2k4q".into(),
            namespace: "shop".into(),
            ips,
            host_network: true,
            state: PodState::Terminating,
            app_label: Some("checkout".into()),
        })
    );
}

#[test]
fn pod_info_of_variants() {
    // podIP only (single-stack, older API servers), the `app` label, Succeeded.
    let mut v = realistic_pod();
    v["metadata"].as_object_mut().unwrap().remove("deletionTimestamp");
    v["metadata"]["labels"] = json!({"app": "legacy", "tier": "web"});
    v["spec"]["hostNetwork"] = json!(false);
    v["status"]["phase"] = json!("Succeeded");
    v["status"].as_object_mut().unwrap().remove("podIPs");
    let info = pod_info(&lean(&v)).unwrap();
    assert_eq!(info.ips, vec!["192.0.2.10".parse::<IpAddr>().unwrap()]);
    assert_eq!((info.host_network, info.state), (false, PodState::Finished));
    assert_eq!(info.app_label.as_deref(), Some("legacy"));

    // A pending pod: no status IPs, no spec, labels null.
    let v = json!({"metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": null}, "status": {"phase": "Pending"}});
    let info = pod_info(&lean(&v)).unwrap();
    assert_eq!(
        (info.ips.len(), info.host_network, info.state, info.app_label),
        (0, false, PodState::Pending, None)
    );

    // No UID: not indexed.
    assert_eq!(pod_info(&lean(&json!({"metadata": {"name": "p"}}))), None);
    assert_eq!(pod_info(&lean(&json!({"metadata": null, "spec": null, "status": null}))), None);
}

/// The lean type reads every field `pod_info` uses as `k8s-openapi`'s Pod does.
#[test]
fn agrees_with_k8s_openapi_pod() {
    let mut variants = vec![realistic_pod()];
    let mut v = realistic_pod();
    v["metadata"]["deletionTimestamp"] = Value::Null;
    v["metadata"]["labels"] = json!({"app": "only-app"});
    v["status"]["podIPs"] = json!([{"ip": "10.0.0.1"}, {}, {"ip": null}, {"ip": "not-an-ip"}]);
    variants.push(v);
    let mut v = realistic_pod();
    v.as_object_mut().unwrap().remove("status");
    v.as_object_mut().unwrap().remove("apiVersion");
    v.as_object_mut().unwrap().remove("kind");
    v["spec"].as_object_mut().unwrap().remove("hostNetwork");
    variants.push(v);
    variants.push(json!({}));

    for v in &variants {
        let full: Pod = serde_json::from_str(&v.to_string()).unwrap();
        let lean = lean(v);
        let (fm, lm) = (&full.metadata, &lean.metadata);
        assert_eq!((&fm.name, &fm.namespace, &fm.uid), (&lm.name, &lm.namespace, &lm.uid), "{v}");
        assert_eq!(fm.resource_version, lm.resource_version);
        assert_eq!(fm.deletion_timestamp, lm.deletion_timestamp);
        for k in POD_LABELS {
            assert_eq!(
                fm.labels.as_ref().and_then(|l| l.get(*k)),
                lm.labels.as_ref().and_then(|l| l.get(*k))
            );
        }
        assert_eq!(
            full.spec.as_ref().and_then(|s| s.host_network),
            lean.spec.as_ref().and_then(|s| s.host_network)
        );
        let (fs, ls) = (full.status.as_ref(), lean.status.as_ref());
        assert_eq!(fs.and_then(|s| s.phase.clone()), ls.and_then(|s| s.phase.clone()));
        assert_eq!(fs.and_then(|s| s.pod_ip.clone()), ls.and_then(|s| s.pod_ip.clone()));
        assert_eq!(
            fs.and_then(|s| s.pod_ips.as_ref()).map(|v| v.iter().map(|i| i.ip.clone()).collect::<Vec<_>>()),
            ls.and_then(|s| s.pod_ips.as_ref())
                .map(|v| v.iter().map(|i| i.ip.clone().unwrap_or_default()).collect::<Vec<_>>())
        );
    }
}

#[test]
fn rejects_what_k8s_openapi_rejects() {
    let mut wrong_kind = realistic_pod();
    wrong_kind["kind"] = json!("Service");
    let mut wrong_version = realistic_pod();
    wrong_version["apiVersion"] = json!("v2");
    let mut label_not_a_string = realistic_pod();
    label_not_a_string["metadata"]["labels"]["tier"] = json!(3);
    let mut uid_not_a_string = realistic_pod();
    uid_not_a_string["metadata"]["uid"] = json!(7);
    for v in [wrong_kind, wrong_version, label_not_a_string, uid_not_a_string] {
        assert!(serde_json::from_str::<Pod>(&v.to_string()).is_err());
        assert!(serde_json::from_str::<LeanPod>(&v.to_string()).is_err());
    }
}

/// Through kube's own list and watch-event types, from the JSON text as the
/// client parses it.
#[test]
fn list_pages_and_watch_events() {
    use ::kube::{
        core::{ObjectList, WatchEvent},
        Resource as _,
    };

    assert_eq!(LeanPod::url_path(&(), None), "/api/v1/pods");
    assert_eq!(LeanPod::kind(&()), "Pod");
    assert_eq!(LeanPod::api_version(&()), "v1");

    // A list omits each item's kind and apiVersion.
    let mut item = realistic_pod();
    item.as_object_mut().unwrap().remove("kind");
    item.as_object_mut().unwrap().remove("apiVersion");
    let page = json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "918300", "continue": "abc"},
        "items": [item, realistic_pod()]
    })
    .to_string();
    let list: ObjectList<LeanPod> = serde_json::from_str(&page).unwrap();
    assert_eq!(list.metadata.resource_version.as_deref(), Some("918300"));
    assert_eq!(list.items.len(), 2);
    assert!(list.items.iter().all(|p| pod_info(p).is_some_and(|i| i.ips.len() == 2)));

    for (ty, deleted) in [("ADDED", false), ("MODIFIED", false), ("DELETED", true)] {
        let line = json!({"type": ty, "object": realistic_pod()}).to_string();
        match serde_json::from_str::<WatchEvent<LeanPod>>(&line).unwrap() {
            WatchEvent::Added(p) | WatchEvent::Modified(p) if !deleted => {
                assert_eq!(p.metadata.resource_version.as_deref(), Some("918273"));
            }
            WatchEvent::Deleted(p) if deleted => {
                assert_eq!(p.metadata.uid.as_deref(), Some("1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"));
            }
            other => panic!("{ty}: {other:?}"),
        }
    }
    let bookmark = json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "9"}}});
    assert!(matches!(
        serde_json::from_str::<WatchEvent<LeanPod>>(&bookmark.to_string()).unwrap(),
        WatchEvent::Bookmark(b) if b.metadata.resource_version == "9"
    ));
}

/// An EndpointSlice as the EndpointSlice controller writes it.
fn realistic_slice() -> Value {
    let endpoint = |i: u32, kind: &str| {
        json!({
            "addresses": [format!("10.1.0.{i}")],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": "node-1",
            "targetRef": {"kind": kind, "name": format!("checkout-{i}"), "namespace": "shop", "uid": format!("uid-{i}")},
            "zone": "zone-a"
        })
    };
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "addressType": "IPv4",
        "metadata": {
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-11-25T08:12:09Z"},
            "generateName": "checkout-",
            "generation": 4,
            "labels": {
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": "checkout"
            },
            "managedFields": [{"apiVersion": "discovery.k8s.io/v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:endpoints": {}},
                               "manager": "kube-controller-manager", "operation": "Update", "time": "2026-11-25T08:12:09Z"}],
            "name": "checkout-abcde",
            "namespace": "shop",
            "ownerReferences": [{"apiVersion": "v1", "blockOwnerDeletion": true, "controller": true, "kind": "Service",
                                 "name": "checkout", "uid": "svc-uid"}],
            "resourceVersion": "918280",
            "uid": "slice-uid"
        },
        "endpoints": [endpoint(1, "Pod"), endpoint(2, "Pod"), endpoint(3, "Node"), {"addresses": ["10.1.0.9"]}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

#[test]
fn realistic_slice_keeps_what_the_index_reads() {
    let s: LeanEndpointSlice = serde_json::from_str(&realistic_slice().to_string()).unwrap();
    assert_eq!(s.metadata.resource_version.as_deref(), Some("918280"));
    assert_eq!(s.metadata.labels.as_ref().map(|l| l.len()), Some(1));
    assert_eq!((s.metadata.annotations.as_ref(), s.metadata.managed_fields.as_ref()), (None, None));
    assert_eq!(
        slice_info(&s),
        Some(SliceInfo {
            namespace: "shop".into(),
            name: "checkout-abcde".into(),
            service: "checkout".into(),
            pod_uids: vec!["uid-1".into(), "uid-2".into()],
        })
    );

    // The same targets as k8s-openapi's EndpointSlice reads them.
    for v in [realistic_slice(), json!({"metadata": {"name": "x"}, "endpoints": null}), json!({})] {
        let full: EndpointSlice = serde_json::from_str(&v.to_string()).unwrap();
        let lean: LeanEndpointSlice = serde_json::from_str(&v.to_string()).unwrap();
        let refs_full: Option<Vec<_>> =
            full.endpoints.map(|e| e.into_iter().map(|e| e.target_ref.map(|r| (r.kind, r.uid))).collect());
        let refs_lean: Option<Vec<_>> =
            lean.endpoints.map(|e| e.into_iter().map(|e| e.target_ref.map(|r| (r.kind, r.uid))).collect());
        assert_eq!(refs_full, refs_lean);
        let svc = |m: &ObjectMeta| m.labels.as_ref().and_then(|l| l.get(SLICE_LABELS[0]).cloned());
        assert_eq!(svc(&full.metadata), svc(&lean.metadata));
        assert_eq!(
            (full.metadata.name, full.metadata.namespace),
            (lean.metadata.name, lean.metadata.namespace)
        );
    }

    // Without the service label, no SliceInfo; a Pod is not an EndpointSlice.
    let mut v = realistic_slice();
    v["metadata"]["labels"] = json!({"endpointslice.kubernetes.io/managed-by": "x"});
    assert_eq!(slice_info(&serde_json::from_str(&v.to_string()).unwrap()), None);
    assert!(serde_json::from_str::<LeanEndpointSlice>(&realistic_pod().to_string()).is_err());
    assert_eq!(
        <LeanEndpointSlice as ::kube::Resource>::url_path(&(), None),
        "/apis/discovery.k8s.io/v1/endpointslices"
    );
}
