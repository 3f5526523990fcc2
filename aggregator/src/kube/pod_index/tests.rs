// SPDX-License-Identifier: Apache-2.0
use std::{collections::HashSet, time::Duration};

use super::*;

fn pod(uid: &str, name: &str, ips: &[&str], state: PodState) -> PodInfo {
    PodInfo {
        uid: uid.into(),
        name: name.into(),
        namespace: "shop".into(),
        ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        host_network: false,
        state,
        app_label: None,
    }
}

fn name(idx: &PodIndex, ip: &str, now: Instant) -> Option<String> {
    idx.lookup(ip.parse().unwrap(), now).map(|m| m.name.to_string())
}

#[test]
fn ip_reuse_prefers_the_live_pod_whatever_the_event_order() {
    let now = Instant::now();
    for order in [[0, 1], [1, 0]] {
        let mut idx = PodIndex::new(Duration::from_secs(30));
        let pods = [
            pod("u-old", "old", &["10.0.0.5"], PodState::Terminating),
            pod("u-new", "new", &["10.0.0.5"], PodState::Running),
        ];
        for i in order {
            idx.upsert_pod(pods[i].clone());
        }
        assert_eq!(name(&idx, "10.0.0.5", now).as_deref(), Some("new"), "order {order:?}");
    }
    // Finished pods lose to pending ones; a deleted one loses to everything.
    let mut idx = PodIndex::new(Duration::from_secs(30));
    idx.upsert_pod(pod("a", "done", &["10.0.0.6"], PodState::Finished));
    idx.upsert_pod(pod("b", "starting", &["10.0.0.6"], PodState::Pending));
    assert_eq!(name(&idx, "10.0.0.6", now).as_deref(), Some("starting"));
    idx.delete_pod("b", now);
    assert_eq!(name(&idx, "10.0.0.6", now).as_deref(), Some("done"));
}

#[test]
fn deleted_pods_resolve_until_their_ttl() {
    let t0 = Instant::now();
    let mut idx = PodIndex::new(Duration::from_secs(30));
    idx.upsert_pod(pod("u1", "web-0", &["10.0.0.7"], PodState::Running));
    idx.delete_pod("u1", t0);
    assert_eq!(name(&idx, "10.0.0.7", t0 + Duration::from_secs(29)).as_deref(), Some("web-0"));
    assert_eq!(name(&idx, "10.0.0.7", t0 + Duration::from_secs(30)), None);
    idx.expire(t0 + Duration::from_secs(31));
    assert_eq!((idx.pods(), idx.addresses()), (0, 0), "expired pods are dropped from memory");
    // A new pod reusing the IP wins over a tombstone immediately.
    idx.upsert_pod(pod("u2", "web-0-old", &["10.0.0.8"], PodState::Running));
    idx.delete_pod("u2", t0);
    idx.upsert_pod(pod("u3", "web-1", &["10.0.0.8"], PodState::Pending));
    assert_eq!(name(&idx, "10.0.0.8", t0).as_deref(), Some("web-1"));
}

#[test]
fn dual_stack_and_v4_mapped() {
    let now = Instant::now();
    let mut idx = PodIndex::new(Duration::from_secs(30));
    idx.upsert_pod(pod("u1", "web-0", &["10.0.0.9", "fd00::9"], PodState::Running));
    assert_eq!(name(&idx, "10.0.0.9", now).as_deref(), Some("web-0"));
    assert_eq!(name(&idx, "fd00::9", now).as_deref(), Some("web-0"));
    assert_eq!(name(&idx, "::ffff:10.0.0.9", now).as_deref(), Some("web-0"));
    // Changing IPs unindexes the old ones.
    idx.upsert_pod(pod("u1", "web-0", &["10.0.0.10"], PodState::Running));
    assert_eq!(name(&idx, "10.0.0.9", now), None);
    assert_eq!(name(&idx, "10.0.0.10", now).as_deref(), Some("web-0"));
}

#[test]
fn host_network_pods_are_not_indexed_by_ip() {
    let now = Instant::now();
    let mut idx = PodIndex::new(Duration::from_secs(30));
    let mut p = pod("u1", "node-exporter", &["192.168.1.10"], PodState::Running);
    p.host_network = true;
    idx.upsert_pod(p);
    assert_eq!(name(&idx, "192.168.1.10", now), None);
    assert_eq!(idx.lookup_uid("u1", now).unwrap().name.as_ref(), "node-exporter", "still resolvable by uid");
}

#[test]
fn service_comes_from_endpoint_slices_before_labels() {
    let now = Instant::now();
    let mut idx = PodIndex::new(Duration::from_secs(30));
    let mut p = pod("u1", "web-0", &["10.0.0.11"], PodState::Running);
    p.app_label = Some("web-app".into());
    idx.upsert_pod(p);
    let svc = |m: Option<PodMeta>| m.unwrap().service.to_string();
    assert_eq!(svc(idx.lookup("10.0.0.11".parse().unwrap(), now)), "web-app", "label fallback");
    let slice = |name: &str, service: &str| SliceInfo {
        namespace: "shop".into(),
        name: name.into(),
        service: service.into(),
        pod_uids: vec!["u1".into()],
    };
    idx.upsert_slice(slice("web-abc", "web"));
    idx.upsert_slice(slice("web-def", "web"));
    idx.upsert_slice(slice("zz-admin-1", "zz-admin"));
    assert_eq!(svc(idx.lookup("10.0.0.11".parse().unwrap(), now)), "web", "first Service by name");
    idx.remove_slice("shop", "web-abc");
    assert_eq!(svc(idx.lookup("10.0.0.11".parse().unwrap(), now)), "web", "another slice of `web` remains");
    idx.retain_slices(&HashSet::from([("shop".into(), "zz-admin-1".into())]));
    assert_eq!(svc(idx.lookup("10.0.0.11".parse().unwrap(), now)), "zz-admin");
    idx.remove_slice("shop", "zz-admin-1");
    assert_eq!(svc(idx.lookup("10.0.0.11".parse().unwrap(), now)), "web-app");
}

#[test]
fn relist_deletes_missing_pods_with_ttl_and_generation_moves() {
    let now = Instant::now();
    let mut idx = PodIndex::new(Duration::from_secs(30));
    idx.upsert_pod(pod("u1", "a", &["10.0.0.12"], PodState::Running));
    idx.upsert_pod(pod("u2", "b", &["10.0.0.13"], PodState::Running));
    let g = idx.generation();
    idx.retain_pods(&HashSet::from([Arc::from("u1")]), now);
    assert!(idx.generation() > g);
    assert_eq!(name(&idx, "10.0.0.13", now).as_deref(), Some("b"), "within TTL");
    assert_eq!(name(&idx, "10.0.0.13", now + Duration::from_secs(31)), None);
}
