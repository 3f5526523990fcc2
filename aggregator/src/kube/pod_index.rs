// SPDX-License-Identifier: Apache-2.0
//! The pod index: IP -> pod, built from Pod and EndpointSlice objects.
//!
//! Rules (each has a unit test below):
//! * Every pod IP is indexed (`status.podIPs`, dual stack). hostNetwork pods
//!   are not: their IP is the node's, and traffic to it gets node-level labels.
//! * When several pods claim one IP (IP reuse while a pod terminates), the
//!   live one wins: Running > Pending > terminating > Succeeded/Failed >
//!   deleted. Among equals, the most recently updated wins.
//! * A deleted pod stays resolvable for `ttl` (default 30 s) so late events
//!   are still attributed, unless a live pod has taken its IP.
//! * `service` is the Service that selects the pod, from EndpointSlices
//!   (`kubernetes.io/service-name` label, endpoints' `targetRef` pod UIDs);
//!   with several Services the alphabetically first is used. Only when no
//!   Service selects the pod does the label `app.kubernetes.io/name`, then
//!   `app`, stand in; otherwise it is empty.
//! * Only the fields above are stored, never whole objects.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::transform::enrich_pod::{normalize, PodMeta};

/// Lifecycle state of a pod, in attribution precedence order (highest last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodState {
    Deleted,
    Finished,
    Terminating,
    Pending,
    Running,
}

/// What the index keeps of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    pub state: PodState,
    /// `app.kubernetes.io/name`, else `app`: the fallback service name.
    pub app_label: Option<Arc<str>>,
}

/// What the index keeps of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub service: Arc<str>,
    pub pod_uids: Vec<Arc<str>>,
}

#[derive(Debug)]
struct Entry {
    info: PodInfo,
    /// Monotonic update counter, for tie-breaking.
    updated: u64,
    deleted_at: Option<Instant>,
}

/// The index. Not internally synchronised; wrap it in a lock to share.
#[derive(Debug)]
pub struct PodIndex {
    ttl: Duration,
    pods: HashMap<Arc<str>, Entry>,
    by_ip: HashMap<IpAddr, Vec<Arc<str>>>,
    slices: HashMap<(Arc<str>, Arc<str>), SliceInfo>,
    /// Pod UID -> Service name -> number of slices of that Service selecting the pod.
    services: HashMap<Arc<str>, BTreeMap<Arc<str>, u32>>,
    clock: u64,
    generation: u64,
}

impl PodIndex {
    /// An empty index keeping deleted pods for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            pods: HashMap::new(),
            by_ip: HashMap::new(),
            slices: HashMap::new(),
            services: HashMap::new(),
            clock: 0,
            generation: 0,
        }
    }

    /// Changes whenever a lookup result may have changed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Pods held (including deleted ones within their TTL).
    pub fn pods(&self) -> usize {
        self.pods.len()
    }

    /// Addresses indexed.
    pub fn addresses(&self) -> usize {
        self.by_ip.len()
    }

    /// Adds or replaces a pod.
    pub fn upsert_pod(&mut self, mut info: PodInfo) {
        for ip in &mut info.ips {
            *ip = normalize(*ip);
        }
        self.unindex(&info.uid);
        self.clock += 1;
        if !info.host_network {
            for ip in &info.ips {
                self.by_ip.entry(*ip).or_default().push(Arc::clone(&info.uid));
            }
        }
        let uid = Arc::clone(&info.uid);
        self.pods.insert(uid, Entry { info, updated: self.clock, deleted_at: None });
        self.generation += 1;
    }

    /// Marks a pod deleted at `now`; it resolves until `now + ttl`.
    pub fn delete_pod(&mut self, uid: &str, now: Instant) {
        if let Some(e) = self.pods.get_mut(uid) {
            e.info.state = PodState::Deleted;
            e.deleted_at = Some(now);
            self.generation += 1;
        }
    }

    /// Deletes (with TTL) every pod not in `live`: the end of a re-list.
    pub fn retain_pods(&mut self, live: &std::collections::HashSet<Arc<str>>, now: Instant) {
        let gone: Vec<Arc<str>> = self
            .pods
            .iter()
            .filter(|(uid, e)| e.deleted_at.is_none() && !live.contains(*uid))
            .map(|(uid, _)| Arc::clone(uid))
            .collect();
        for uid in gone {
            self.delete_pod(&uid, now);
        }
    }

    /// Drops deleted pods whose TTL has passed.
    pub fn expire(&mut self, now: Instant) {
        let expired: Vec<Arc<str>> = self
            .pods
            .iter()
            .filter(|(_, e)| e.deleted_at.is_some_and(|d| now.duration_since(d) >= self.ttl))
            .map(|(uid, _)| Arc::clone(uid))
            .collect();
        for uid in &expired {
            self.unindex(uid);
            self.pods.remove(uid);
        }
        if !expired.is_empty() {
            self.generation += 1;
        }
    }

    /// Adds or replaces an EndpointSlice.
    pub fn upsert_slice(&mut self, slice: SliceInfo) {
        let key = (Arc::clone(&slice.namespace), Arc::clone(&slice.name));
        self.remove_slice(&key.0, &key.1);
        for uid in &slice.pod_uids {
            *self
                .services
                .entry(Arc::clone(uid))
                .or_default()
                .entry(Arc::clone(&slice.service))
                .or_default() += 1;
        }
        self.slices.insert(key, slice);
        self.generation += 1;
    }

    /// Removes an EndpointSlice.
    pub fn remove_slice(&mut self, namespace: &str, name: &str) {
        let key: (Arc<str>, Arc<str>) = (namespace.into(), name.into());
        let Some(old) = self.slices.remove(&key) else { return };
        // Reference counts: another slice of the same Service may still select the pod.
        for uid in &old.pod_uids {
            if let Some(by_service) = self.services.get_mut(uid) {
                if let Some(n) = by_service.get_mut(&old.service) {
                    *n -= 1;
                    if *n == 0 {
                        by_service.remove(&old.service);
                    }
                }
                if by_service.is_empty() {
                    self.services.remove(uid);
                }
            }
        }
        self.generation += 1;
    }

    /// Removes every slice not in `live` (namespace, name): the end of a re-list.
    pub fn retain_slices(&mut self, live: &std::collections::HashSet<(Arc<str>, Arc<str>)>) {
        let gone: Vec<(Arc<str>, Arc<str>)> =
            self.slices.keys().filter(|k| !live.contains(*k)).cloned().collect();
        for (ns, name) in gone {
            self.remove_slice(&ns, &name);
        }
    }

    /// The pod owning `addr` at `now`, with its labels.
    pub fn lookup(&self, addr: IpAddr, now: Instant) -> Option<PodMeta> {
        let uids = self.by_ip.get(&normalize(addr))?;
        let best = uids
            .iter()
            .filter_map(|uid| self.pods.get(uid))
            .filter(|e| e.deleted_at.is_none_or(|d| now.duration_since(d) < self.ttl))
            .max_by_key(|e| (e.info.state, e.updated))?;
        Some(self.meta(&best.info))
    }

    /// The pod with `uid`, if held (for cgroup attribution).
    pub fn lookup_uid(&self, uid: &str, now: Instant) -> Option<PodMeta> {
        let e = self.pods.get(uid)?;
        if e.deleted_at.is_some_and(|d| now.duration_since(d) >= self.ttl) {
            return None;
        }
        Some(self.meta(&e.info))
    }

    fn meta(&self, p: &PodInfo) -> PodMeta {
        let service = self
            .services
            .get(&p.uid)
            .and_then(|s| s.keys().next().cloned())
            .or_else(|| p.app_label.clone())
            .unwrap_or_else(|| Arc::from(""));
        PodMeta { name: Arc::clone(&p.name), namespace: Arc::clone(&p.namespace), service }
    }

    fn unindex(&mut self, uid: &str) {
        let Some(old) = self.pods.get(uid) else { return };
        for ip in &old.info.ips {
            if let Some(v) = self.by_ip.get_mut(ip) {
                v.retain(|u| &**u != uid);
                if v.is_empty() {
                    self.by_ip.remove(ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
