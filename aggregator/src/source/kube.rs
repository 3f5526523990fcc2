// SPDX-License-Identifier: Apache-2.0
//! The Kubernetes watch: Pods and `discovery.k8s.io/v1` EndpointSlices through
//! kube-rs's `watcher` into the [`ClusterIndex`].
//!
//! List/watch semantics come from `kube::runtime::watcher`: it lists, then
//! watches from the list's resourceVersion with bookmarks, resumes from the last
//! resourceVersion after a dropped connection, and re-lists after 410 Gone.
//! Every error is followed by the default exponential backoff (0.8 s doubling
//! with jitter), never a tight retry loop. The end of every (re-)list prunes
//! objects that disappeared meanwhile (pods keep their deletion TTL).
//!
//! During an API outage the index keeps serving what it has; only deleted
//! pods' TTLs run out.
//!
//! The watches deserialize into [`LeanPod`] and [`LeanEndpointSlice`], which
//! keep only what [`pod_info`] and [`slice_info`] read, and list in pages of
//! [`PAGE_SIZE`] (see BENCHMARKS.md, kube-cache).

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{watcher, WatchStreamExt},
    Api, Client, Config,
};
use tracing::{info, warn};

use crate::{
    kube::{
        objects::{LeanEndpointSlice, LeanPod},
        pod_index::{PodInfo, PodState, SliceInfo},
    },
    metrics::{Metrics, ResourceLabels},
    transform::enrich_pod::ClusterIndex,
    Error,
};

/// Objects per list request (kube's default is 500). The watcher holds a
/// whole page, as response text and as objects, while it hands the objects
/// out one by one, so the page bounds the initial list's memory peak; with
/// 10,000 realistic Pods, 100 instead of 500 lowered the aggregator's peak RSS
/// from ~30.5 to ~25.7 MiB. The total bytes listed stay the same, in 5x the
/// requests.
pub const PAGE_SIZE: u32 = 100;

/// Builds a client from `kubeconfig`, or from the in-cluster service account.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, Error> {
    // kube's rustls client needs a process-wide crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| Error::KubeConfig(format!("cannot read kubeconfig {}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::KubeConfig(format!("invalid kubeconfig {}: {e}", path.display())))?
        }
        None => Config::incluster().map_err(|e| Error::KubeConfig(format!("in-cluster config: {e}")))?,
    };
    Client::try_from(config).map_err(|e| Error::KubeConfig(e.to_string()))
}

/// Whether this process runs inside a Kubernetes pod.
pub fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// The watch tasks' shared state.
#[derive(Debug)]
pub struct KubeSource {
    pub index: Arc<ClusterIndex>,
    pub metrics: Arc<Metrics>,
    pods_synced: AtomicBool,
    slices_synced: AtomicBool,
    last_activity: Mutex<Option<Instant>>,
}

impl KubeSource {
    /// A source feeding `index`.
    pub fn new(index: Arc<ClusterIndex>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            index,
            metrics,
            pods_synced: AtomicBool::new(false),
            slices_synced: AtomicBool::new(false),
            last_activity: Mutex::new(None),
        })
    }

    /// Whether both caches completed their initial list.
    pub fn synced(&self) -> bool {
        self.pods_synced.load(Ordering::Acquire) && self.slices_synced.load(Ordering::Acquire)
    }

    /// Starts the Pod and EndpointSlice watches and the housekeeping tick.
    pub fn spawn(self: &Arc<Self>, client: Client) {
        tokio::spawn(Arc::clone(self).watch_pods(Api::all(client.clone())));
        tokio::spawn(Arc::clone(self).watch_slices(Api::all(client)));
        tokio::spawn(Arc::clone(self).housekeeping());
    }

    fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn error(&self, resource: &str, e: &watcher::Error) {
        let c = self.metrics.kube_watch_errors.get_or_create(&ResourceLabels { resource: resource.into() });
        c.inc();
        // Errors are backed off, so this logs at most a few lines a second.
        warn!(resource, error = %e, "Kubernetes watch error; backing off and retrying.");
    }

    async fn watch_pods(self: Arc<Self>, api: Api<LeanPod>) {
        let mut stream =
            watcher(api, watcher::Config::default().page_size(PAGE_SIZE)).default_backoff().boxed();
        let mut relist: HashSet<Arc<str>> = HashSet::new();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            match ev {
                Ok(watcher::Event::Init) => {
                    relist.clear();
                    self.metrics
                        .kube_relists
                        .get_or_create(&ResourceLabels { resource: "pods".into() })
                        .inc();
                }
                Ok(watcher::Event::InitApply(p)) => {
                    if let Some(info) = pod_info(&p) {
                        relist.insert(Arc::clone(&info.uid));
                        self.index.update(|i| i.upsert_pod(info));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    self.index.update(|i| i.retain_pods(&relist, now));
                    relist.clear();
                    if !self.pods_synced.swap(true, Ordering::AcqRel) {
                        info!(pods = self.index.read().pods(), "Pod cache synced.");
                    }
                }
                Ok(watcher::Event::Apply(p)) => {
                    if let Some(info) = pod_info(&p) {
                        self.index.update(|i| i.upsert_pod(info));
                    }
                }
                Ok(watcher::Event::Delete(p)) => {
                    if let Some(uid) = p.metadata.uid.as_deref() {
                        self.index.update(|i| i.delete_pod(uid, now));
                    }
                }
                Err(e) => {
                    self.error("pods", &e);
                    continue;
                }
            }
            self.touch();
        }
    }

    async fn watch_slices(self: Arc<Self>, api: Api<LeanEndpointSlice>) {
        let mut stream =
            watcher(api, watcher::Config::default().page_size(PAGE_SIZE)).default_backoff().boxed();
        let mut relist: HashSet<(Arc<str>, Arc<str>)> = HashSet::new();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init) => {
                    relist.clear();
                    self.metrics
                        .kube_relists
                        .get_or_create(&ResourceLabels { resource: "endpointslices".into() })
                        .inc();
                }
                Ok(watcher::Event::InitApply(s)) => {
                    if let Some(info) = slice_info(&s) {
                        relist.insert((Arc::clone(&info.namespace), Arc::clone(&info.name)));
                        self.index.update(|i| i.upsert_slice(info));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    self.index.update(|i| i.retain_slices(&relist));
                    relist.clear();
                    self.slices_synced.store(true, Ordering::Release);
                }
                Ok(watcher::Event::Apply(s)) => match slice_info(&s) {
                    Some(info) => self.index.update(|i| i.upsert_slice(info)),
                    // A slice that lost its service label no longer maps anything.
                    None => self.remove_slice(&s),
                },
                Ok(watcher::Event::Delete(s)) => self.remove_slice(&s),
                Err(e) => {
                    self.error("endpointslices", &e);
                    continue;
                }
            }
            self.touch();
        }
    }

    fn remove_slice(&self, s: &LeanEndpointSlice) {
        if let (Some(ns), Some(name)) = (s.metadata.namespace.as_deref(), s.metadata.name.as_deref()) {
            self.index.update(|i| i.remove_slice(ns, name));
        }
    }

    /// Expires deleted pods and refreshes the cache gauges, once a second.
    async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let (pods, addresses) = self.index.update(|i| {
                i.expire(now);
                (i.pods(), i.addresses())
            });
            self.metrics.kube_pods.set(pods as i64);
            self.metrics.pods_indexed.set(addresses as i64);
            self.metrics.kube_synced.set(i64::from(self.synced()));
            if let Some(t) = *self.last_activity.lock().unwrap_or_else(|e| e.into_inner()) {
                self.metrics.kube_last_sync_age.set(now.duration_since(t).as_secs_f64());
            }
        }
    }
}

/// What the index keeps of a Pod; `None` for objects without a UID.
pub fn pod_info(p: &LeanPod) -> Option<PodInfo> {
    let md = &p.metadata;
    let uid: Arc<str> = md.uid.as_deref()?.into();
    let status = p.status.as_ref();
    let mut ips: Vec<std::net::IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|v| v.iter().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect())
        .unwrap_or_default();
    if ips.is_empty() {
        ips.extend(
            status.and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse::<std::net::IpAddr>().ok()),
        );
    }
    let state = if md.deletion_timestamp.is_some() {
        PodState::Terminating
    } else {
        match status.and_then(|s| s.phase.as_deref()) {
            Some("Running") => PodState::Running,
            Some("Succeeded" | "Failed") => PodState::Finished,
            _ => PodState::Pending,
        }
    };
    let labels = md.labels.as_ref();
    let app_label = labels
        .and_then(|l| l.get("app.kubernetes.io/name").or_else(|| l.get("app")))
        .map(|v| Arc::from(v.as_str()));
    Some(PodInfo {
        uid,
        name: md.name.as_deref().unwrap_or_default().into(),
        namespace: md.namespace.as_deref().unwrap_or_default().into(),
        ips,
        host_network: p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false),
        state,
        app_label,
    })
}

/// What the index keeps of an EndpointSlice; `None` without a service label.
pub fn slice_info(s: &LeanEndpointSlice) -> Option<SliceInfo> {
    let md = &s.metadata;
    let service = md.labels.as_ref()?.get("kubernetes.io/service-name")?;
    let pod_uids = s
        .endpoints
        .iter()
        .flatten()
        .filter_map(|e| e.target_ref.as_ref())
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .filter_map(|r| r.uid.as_deref().map(Arc::from))
        .collect();
    Some(SliceInfo {
        namespace: md.namespace.as_deref()?.into(),
        name: md.name.as_deref()?.into(),
        service: service.as_str().into(),
        pod_uids,
    })
}
