// SPDX-License-Identifier: Apache-2.0
//! Address -> pod attribution: the [`Resolver`] the aggregator asks, backed
//! either by the Kubernetes watch ([`crate::kube::pod_index`]) or by a static
//! pods file (`--pods-file`), for running without a cluster:
//!
//! ```json
//! { "pods": [ { "name": "web-0", "namespace": "shop", "service": "web",
//!               "ips": ["10.0.0.12", "fd00::12"] } ] }
//! ```
//!
//! Addresses not in the index are attributed to the node: `pod`, `namespace`
//! and `service` are empty strings (the cAdvisor convention for non-pod
//! series), and the lookup is counted as unresolved.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    path::Path,
    sync::Arc,
};

use serde::Deserialize;

use crate::Error;

/// Largest pods file accepted.
pub const MAX_PODS_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Longest label value accepted from the pods file (Kubernetes names are <= 253).
pub const MAX_LABEL_LEN: usize = 253;

/// Labels of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PodMeta {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub service: Arc<str>,
}

/// Where attribution comes from.
#[derive(Debug, Clone)]
pub enum Resolver {
    /// A static pods file (or nothing: every address is node-level).
    Static(Arc<StaticPods>),
    /// The Kubernetes watch.
    Cluster(Arc<ClusterIndex>),
}

impl Resolver {
    /// The pod owning `addr`, if any.
    pub fn lookup(&self, addr: IpAddr) -> Option<PodMeta> {
        match self {
            Self::Static(s) => s.lookup(addr).cloned(),
            Self::Cluster(c) => c.read().lookup(addr, std::time::Instant::now()),
        }
    }

    /// The pod with UID `uid` (Kubernetes mode only: a pods file has no UIDs).
    pub fn lookup_uid(&self, uid: &str) -> Option<PodMeta> {
        match self {
            Self::Static(_) => None,
            Self::Cluster(c) => c.read().lookup_uid(uid, std::time::Instant::now()),
        }
    }

    /// Changes whenever a lookup result may have changed; callers caching
    /// results must drop them when it moves.
    pub fn generation(&self) -> u64 {
        match self {
            Self::Static(_) => 0,
            Self::Cluster(c) => c.generation.load(std::sync::atomic::Ordering::Acquire),
        }
    }
}

/// The Kubernetes-backed index shared between the watch tasks (writers) and
/// the aggregator (reader, on cache misses only).
#[derive(Debug)]
pub struct ClusterIndex {
    index: std::sync::RwLock<crate::kube::pod_index::PodIndex>,
    generation: std::sync::atomic::AtomicU64,
}

impl ClusterIndex {
    /// Wraps `index`.
    pub fn new(index: crate::kube::pod_index::PodIndex) -> Self {
        Self { index: std::sync::RwLock::new(index), generation: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Read access.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, crate::kube::pod_index::PodIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` and publishes the index's new generation.
    pub fn update<T>(&self, f: impl FnOnce(&mut crate::kube::pod_index::PodIndex) -> T) -> T {
        let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut idx);
        self.generation.store(idx.generation(), std::sync::atomic::Ordering::Release);
        out
    }
}

/// IP -> pod index from a pods file.
#[derive(Debug, Default, Clone)]
pub struct StaticPods {
    by_ip: HashMap<IpAddr, PodMeta>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PodsFile {
    pods: Vec<PodEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PodEntry {
    name: String,
    namespace: String,
    #[serde(default)]
    service: String,
    ips: Vec<String>,
}

impl StaticPods {
    /// Loads and validates a pods file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let read_err = |source| Error::PodsFileRead { path: path.to_owned(), source };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_PODS_FILE_BYTES {
            return Err(Error::PodsFileInvalid {
                path: path.to_owned(),
                reason: format!("{len} bytes is larger than the {MAX_PODS_FILE_BYTES}-byte limit"),
            });
        }
        let text = std::fs::read(path).map_err(read_err)?;
        Self::parse(&text).map_err(|reason| Error::PodsFileInvalid { path: path.to_owned(), reason })
    }

    /// Parses pods-file JSON; the error names the offending entry.
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let file: PodsFile = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let mut by_ip = HashMap::new();
        for (i, p) in file.pods.into_iter().enumerate() {
            let at = format!("pods[{i}] (`{}/{}`)", p.namespace, p.name);
            for (field, v, required) in
                [("name", &p.name, true), ("namespace", &p.namespace, true), ("service", &p.service, false)]
            {
                if required && v.is_empty() {
                    return Err(format!("{at}: `{field}` is empty"));
                }
                if v.len() > MAX_LABEL_LEN || v.chars().any(char::is_control) {
                    return Err(format!(
                        "{at}: `{field}` is longer than {MAX_LABEL_LEN} bytes or has control characters"
                    ));
                }
            }
            if p.ips.is_empty() {
                return Err(format!("{at}: `ips` is empty"));
            }
            let meta =
                PodMeta { name: p.name.into(), namespace: p.namespace.into(), service: p.service.into() };
            for ip in &p.ips {
                let addr: IpAddr = ip.parse().map_err(|_| format!("{at}: `{ip}` is not an IP address"))?;
                let addr = normalize(addr);
                if let Some(prev) = by_ip.insert(addr, meta.clone()) {
                    return Err(format!(
                        "{at}: IP {addr} is already assigned to `{}/{}`",
                        prev.namespace, prev.name
                    ));
                }
            }
        }
        Ok(Self { by_ip })
    }

    /// The pod owning `addr`, if any.
    pub fn lookup(&self, addr: IpAddr) -> Option<&PodMeta> {
        self.by_ip.get(&normalize(addr))
    }

    /// Number of indexed addresses.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// Turns v4-mapped IPv6 (`::ffff:a.b.c.d`, as dual-stack sockets report IPv4
/// peers) into plain IPv4, so one pod IP matches both socket families.
pub fn normalize(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Decodes a proto address (4 or 16 bytes, network order).
pub fn addr_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"pods":[
        {"name":"web-0","namespace":"shop","service":"web","ips":["10.0.0.2","fd00::2"]},
        {"name":"db-0","namespace":"shop","ips":["10.0.0.3"]}]}"#;

    #[test]
    fn resolves_v4_v6_and_v4_mapped() {
        let idx = StaticPods::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(idx.len(), 3);
        let web = idx.lookup("10.0.0.2".parse().unwrap()).unwrap();
        assert_eq!((&*web.name, &*web.namespace, &*web.service), ("web-0", "shop", "web"));
        assert_eq!(idx.lookup("fd00::2".parse().unwrap()).unwrap().name.as_ref(), "web-0");
        assert_eq!(idx.lookup("::ffff:10.0.0.3".parse().unwrap()).unwrap().name.as_ref(), "db-0");
        assert_eq!(idx.lookup("10.9.9.9".parse().unwrap()), None);
    }

    #[test]
    fn rejects_bad_files_naming_the_entry() {
        let cases = [
            (
                r#"{"pods":[{"name":"a","namespace":"n","ips":["10.0.0.300"]}]}"#,
                "pods[0] (`n/a`): `10.0.0.300` is not an IP",
            ),
            (r#"{"pods":[{"name":"","namespace":"n","ips":["10.0.0.1"]}]}"#, "`name` is empty"),
            (r#"{"pods":[{"name":"a","namespace":"n","ips":[]}]}"#, "`ips` is empty"),
            (
                r#"{"pods":[{"name":"a","namespace":"n","ips":["10.0.0.1"]},{"name":"b","namespace":"n","ips":["::ffff:10.0.0.1"]}]}"#,
                "pods[1] (`n/b`): IP 10.0.0.1 is already assigned to `n/a`",
            ),
            (
                r#"{"pods":[{"name":"a","namespace":"n","ips":["10.0.0.1"],"extra":1}]}"#,
                "unknown field `extra`",
            ),
            (r#"{"pods":[{"name":"a\u0007","namespace":"n","ips":["10.0.0.1"]}]}"#, "control characters"),
            ("not json", "expected"),
        ];
        for (input, want) in cases {
            let e = StaticPods::parse(input.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{input}: got `{e}`, want `{want}`");
        }
    }

    #[test]
    fn rejects_invalid_utf8_and_hostile_shapes() {
        let cases: [(&[u8], &str); 6] = [
            (
                b"{\"pods\":[{\"name\":\"a\xff\",\"namespace\":\"n\",\"ips\":[\"10.0.0.1\"]}]}",
                "invalid unicode",
            ),
            (b"\xef\xbb\xbf{\"pods\":[]}", "expected value"),
            (b"", "EOF"),
            (b"{\"pods\":[{\"name\":\"a\",\"namespace\":\"n\",\"ips\":[\"10.0.0.1\\u0000\"]}]}", "not an IP"),
            (b"{\"pods\":{}}", "invalid type"),
            (b"{\"pods\":[{\"name\":\"\\ud800\",\"namespace\":\"n\",\"ips\":[\"10.0.0.1\"]}]}", "hex escape"),
        ];
        for (input, want) in cases {
            let e = StaticPods::parse(input).unwrap_err();
            assert!(e.contains(want), "{}: got `{e}`, want `{want}`", String::from_utf8_lossy(input));
        }
        let long = "x".repeat(MAX_LABEL_LEN + 1);
        let e = StaticPods::parse(
            format!(r#"{{"pods":[{{"name":"{long}","namespace":"n","ips":["10.0.0.1"]}}]}}"#).as_bytes(),
        )
        .unwrap_err();
        assert!(e.contains("longer than 253 bytes"), "{e}");
    }

    #[test]
    fn decodes_addresses() {
        assert_eq!(addr_from_bytes(&[10, 0, 0, 1]), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(addr_from_bytes(&[0; 16]), Some("::".parse().unwrap()));
        assert_eq!(addr_from_bytes(&[1, 2, 3]), None);
    }
}
