// SPDX-License-Identifier: Apache-2.0
//! The public [`TestApiServer`] handle: start, client setup, mutations, faults, counters.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use base64::Engine as _;
use serde_json::Value;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

use crate::{server, server::Shared, tls, Error, Kind, Stats};

/// Settings of a [`TestApiServer`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Interval between BOOKMARK events on watches that allow bookmarks (default 1 s).
    pub bookmark_interval: Duration,
    /// Watch events retained per kind; older versions get 410 Expired (default 1000).
    pub history_limit: usize,
    /// Bearer token clients must present (default `nettel-test-token`).
    pub token: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bookmark_interval: Duration::from_secs(1),
            history_limit: 1000,
            token: "nettel-test-token".to_owned(),
        }
    }
}

/// A running test API server on `https://127.0.0.1:<port>`; stops when dropped.
#[derive(Debug)]
pub struct TestApiServer {
    addr: SocketAddr,
    ca_pem: String,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    _shutdown: watch::Sender<()>,
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TestApiServer {
    /// Starts a server with default [`Options`].
    ///
    /// # Panics
    /// If the certificates cannot be generated or 127.0.0.1:0 cannot be bound.
    pub async fn start() -> TestApiServer {
        Self::try_start(Options::default()).await.expect("start test API server")
    }

    /// Starts a server with the given options. Must run inside a tokio runtime.
    pub async fn try_start(options: Options) -> Result<TestApiServer, Error> {
        let tls = tls::generate()?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options.history_limit, options.token, options.bookmark_interval));
        let (shutdown, shutdown_rx) = watch::channel(());
        let acceptor = TlsAcceptor::from(tls.config);
        let accept = tokio::spawn(server::accept_loop(listener, acceptor, shared.clone(), shutdown_rx));
        Ok(TestApiServer { addr, ca_pem: tls.ca_pem, shared, accept, _shutdown: shutdown })
    }

    /// The listening address (always on 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token the server accepts.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// A kubeconfig (YAML) pointing at this server with the CA and bearer token.
    pub fn kubeconfig_yaml(&self) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: nettel-test\n  cluster:\n    \
             server: {url}\n    certificate-authority-data: {ca}\ncontexts:\n- name: nettel-test\n  \
             context:\n    cluster: nettel-test\n    user: nettel-test\n    namespace: default\n\
             current-context: nettel-test\nusers:\n- name: nettel-test\n  user:\n    token: {token}\n",
            url = self.url(),
            token = self.shared.token,
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `dir/kubeconfig` and returns that path.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(&path, self.kubeconfig_yaml()).expect("write kubeconfig");
        path
    }

    /// A kube client configured from this server's kubeconfig.
    ///
    /// # Panics
    /// If the kubeconfig is rejected by kube (a bug in this crate).
    pub async fn client(&self) -> kube::Client {
        self.try_client().await.expect("kube client for test API server")
    }

    /// Like [`Self::client`], returning errors; installs the ring crypto provider first.
    pub async fn try_client(&self) -> Result<kube::Client, Error> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        tls::install_crypto_provider();
        let kubeconfig =
            Kubeconfig::from_yaml(&self.kubeconfig_yaml()).map_err(|e| Error::Kube(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kube(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))
    }

    /// Stores a new object (its `apiVersion`/`kind` pick the resource) and returns it
    /// as stored: namespace defaulted to `default`, uid, timestamp and resourceVersion set.
    pub fn create(&self, obj: Value) -> Result<Value, Error> {
        self.shared.mutate(|s| s.create(obj))
    }

    /// Replaces an existing object; emits MODIFIED.
    pub fn update(&self, obj: Value) -> Result<Value, Error> {
        self.shared.mutate(|s| s.update(obj))
    }

    /// Deletes an object; emits DELETED.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, Error> {
        self.shared.mutate(|s| s.delete(kind, namespace, name))
    }

    /// The stored object, if any.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store().get(kind, namespace, name)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().rv()
    }

    /// Drops all watch history, like etcd compaction at the current revision: a
    /// watch from any older resourceVersion then gets a 410 `Expired` ERROR event.
    pub fn compact(&self) {
        self.shared.mutate(crate::store::Store::compact);
    }

    /// Cuts every open watch connection abruptly (mid-stream, no terminating chunk).
    pub fn drop_watches(&self) {
        self.shared.faults.drop_watches();
    }

    /// Makes the next `count` requests fail with HTTP `status` and a Status body.
    pub fn set_failures(&self, count: u32, status: u16) {
        self.shared.faults.set_failures(count, status);
    }

    /// Delays every later response (before its headers) by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.faults.set_delay(delay);
    }

    /// While down, new connections are closed unanswered and requests on open
    /// connections close them; going down also drops every open watch.
    pub fn set_down(&self, down: bool) {
        self.shared.faults.set_down(down);
    }

    /// A snapshot of the request counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats().clone()
    }

    /// LIST requests of `kind` answered with 200.
    pub fn list_count(&self, kind: Kind) -> u64 {
        self.shared.stats().kind(kind).lists
    }

    /// WATCH requests of `kind` answered with 200.
    pub fn watch_count(&self, kind: Kind) -> u64 {
        self.shared.stats().kind(kind).watches
    }

    /// The resourceVersion each WATCH of `kind` started from, in order.
    pub fn watch_resource_versions(&self, kind: Kind) -> Vec<String> {
        self.shared.stats().kind(kind).watch_resource_versions.clone()
    }
}
