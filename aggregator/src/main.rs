// SPDX-License-Identifier: Apache-2.0
//! `nettel-aggregator` entry point.
#![forbid(unsafe_code)]

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Parser;
use nettel_aggregator::{
    config::{Args, LogFormat},
    kube::pod_index::PodIndex,
    metrics::Metrics,
    sink::prometheus::{self, Endpoint},
    source::{
        kube::{self, KubeSource},
        loader::LoaderSource,
    },
    transform::{
        aggregate::{self, Aggregator},
        enrich_pod::{ClusterIndex, Resolver, StaticPods},
        fold_port::PortFolder,
    },
    Error,
};
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "Failed to start the tokio runtime.");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Plain => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let uid = rustix::process::geteuid().as_raw();
    if uid == 0 {
        if !args.allow_root {
            return Err(Error::RunningAsRoot.into());
        }
        warn!("Running as root because --allow-root was given; the aggregator needs no privileges.");
    }
    let limits = args.series_limits()?;
    let metrics = Arc::new(Metrics::default());
    let use_kube = args.use_kube(kube::in_cluster())?;
    let pods = if use_kube {
        let client = kube::client(args.kubeconfig.as_deref()).await?;
        let index = Arc::new(ClusterIndex::new(PodIndex::new(Duration::from_secs(args.pod_ttl_secs))));
        KubeSource::new(Arc::clone(&index), Arc::clone(&metrics)).spawn(client);
        info!(ttl_secs = args.pod_ttl_secs, "Watching Pods and EndpointSlices.");
        Resolver::Cluster(index)
    } else {
        let pods = match &args.pods_file {
            Some(p) => {
                let idx = StaticPods::from_file(p)?;
                info!(path = %p.display(), addresses = idx.len(), "Loaded the pods file.");
                idx
            }
            None => {
                info!("No pods file and no Kubernetes: every address gets node-level labels.");
                StaticPods::default()
            }
        };
        metrics.pods_indexed.set(pods.len() as i64);
        Resolver::Static(Arc::new(pods))
    };
    let registry = metrics.register();
    let listener = prometheus::bind(args.listen).await?;
    let mut agg = Aggregator::new(Arc::clone(&metrics), pods, PortFolder::new(args.ephemeral_port_floor))
        .with_limits(limits);
    info!(
        max_series = limits.max_series,
        max_series_per_metric = limits.max_per_metric,
        series_ttl_secs = limits.ttl.as_secs(),
        "Series budget set."
    );
    if use_kube {
        // L7 events come from a process: attribute them by its cgroup first.
        let root = nettel_aggregator::kube::cgroup::default_root();
        info!(root = %root.display(), "Attributing HTTP requests by cgroup.");
        agg = agg
            .with_cgroups(nettel_aggregator::kube::cgroup::CgroupResolver::new(root, Duration::from_secs(5)));
    }
    let source = LoaderSource {
        socket: args.loader_socket.clone(),
        subscriber_name: args.subscriber_name.clone(),
        reconnect_max: Duration::from_millis(args.reconnect_max_ms.max(100)),
    };
    let endpoint =
        Arc::new(Endpoint { registry, metrics: Arc::clone(&metrics), require_kube_sync: use_kube });
    let agg = Arc::new(Mutex::new(agg));
    tokio::spawn(aggregate::run_expiry(Arc::clone(&agg), aggregate::expiry_period(limits.ttl)));
    tokio::spawn(source.run(agg, Arc::clone(&metrics)));
    tokio::select! {
        () = prometheus::serve(listener, endpoint) => {}
        () = wait_for_signal() => info!("Shutting down."),
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
