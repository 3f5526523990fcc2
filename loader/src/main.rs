// SPDX-License-Identifier: Apache-2.0
//! `nettel-loader` entry point: parse flags, init logging, dispatch.
#![forbid(unsafe_code)]

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use nettel_loader::{
    caps,
    config::{Cli, Command, LogFormat, RunArgs, RunConfig, Toggle},
    conn,
    counters::Counters,
    hub::Hub,
    pin, preflight, probe,
    server::{self, LoaderInfo},
    socket::{self, AccessPolicy},
    source::ringbuf::{self, DrainConfig},
    sys, tls, Error,
};
use nettel_proto::v1;
use tokio::sync::watch;
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Check(a) => return check(&a.pin_dir),
        Command::Cleanup(a) => cleanup(&a.pin_dir),
        Command::Run(a) => run(a),
    };
    match result {
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

fn pin_root(pin_dir: &Path) -> &Path {
    // The nearest existing ancestor: the bpffs mount itself, or what should be one.
    pin_dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"))
}

fn check(pin_dir: &Path) -> ExitCode {
    let report = preflight::run(pin_root(pin_dir), preflight::CapabilityCheck::Enforce);
    print!("{report}");
    if report.all_pass() {
        println!("nettel-loader check: all checks passed");
        ExitCode::SUCCESS
    } else {
        println!("nettel-loader check: some checks failed; see the fixes above");
        ExitCode::FAILURE
    }
}

/// Removes every pinned link (detaching its program) and map.
fn cleanup(pin_dir: &Path) -> anyhow::Result<()> {
    for p in pin::cleanup(pin_dir)? {
        println!("removed {}", p.display());
    }
    Ok(())
}

/// Mounts bpffs and tracefs where the preflight report found them missing.
fn mount_missing(report: &preflight::Report, pin_dir: &Path) -> Result<(), Error> {
    if report.needs_fix("bpffs") {
        let target = pin_dir.parent().unwrap_or(Path::new("/sys/fs/bpf")).to_owned();
        sys::mount_pseudo("bpf", &target).map_err(|source| Error::Mount {
            fstype: "bpf",
            target: target.clone(),
            source,
        })?;
        info!(target = %target.display(), "Mounted bpffs.");
    }
    if report.needs_fix("tracefs") {
        let target = Path::new(preflight::TRACEFS).to_owned();
        sys::mount_pseudo("tracefs", &target).map_err(|source| Error::Mount {
            fstype: "tracefs",
            target: target.clone(),
            source,
        })?;
        info!(target = %target.display(), "Mounted tracefs.");
    }
    Ok(())
}

/// Everything `run` sets up while privileged, before any other thread exists.
struct Prepared {
    cfg: RunConfig,
    probes: probe::Probes,
    events: nettel_loader::sys::RingReader,
    listener: std::os::unix::net::UnixListener,
    /// The TLS attacher thread (`--tls on`) and what it publishes.
    tls: (Option<tls::Attacher>, Arc<tls::Shared>),
}

/// `run`: the privileged steps on the main thread, then the capability drop,
/// then the runtime. Capability sets are per thread, so dropping them before
/// the tokio runtime starts leaves no thread holding any.
///
/// The runtime has one thread. The drain publishes a batch and the gRPC
/// stream encodes and writes it; on one thread that hand-off is a task switch,
/// where on a worker pool it was a futex wake of another thread per batch
/// (4,200 context switches a second at 250k events/s). The loader's CPU per
/// event fell by a third at 250k-500k events/s (BENCHMARKS.md, "pipeline").
fn run(args: RunArgs) -> anyhow::Result<()> {
    let prepared = prepare(&args)?;
    let dropped = caps::drop_after_attach().map_err(Error::DropCapabilities)?;
    info!(
        before = ?caps::names(dropped.before),
        kept = ?caps::names(dropped.kept),
        "Dropped capabilities after attach."
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?
        .block_on(serve(args, prepared))
}

fn prepare(args: &RunArgs) -> Result<Prepared, Error> {
    let cfg = args.validate()?;
    let capability_check = if args.skip_capability_check {
        warn!("Capability checks skipped (--skip-capability-check): the kernel decides.");
        preflight::CapabilityCheck::Skip
    } else {
        preflight::CapabilityCheck::Enforce
    };
    let report = preflight::run(pin_root(&args.pin_dir), capability_check);
    if !report.runnable() {
        return Err(Error::Preflight(report.failures()));
    }
    mount_missing(&report, &args.pin_dir).map_err(Error::with_capability_hint)?;
    let (mut probes, events) =
        probe::load(&args.pin_dir, cfg.map_sizes(), args.bench_tgid, args.http_hook, args.tls == Toggle::On)
            .map_err(Error::with_capability_hint)?;
    for a in &probes.attached {
        info!(program = a.name, attach_point = a.attach_point, origin = a.origin.as_str(), "Probe running.");
    }
    let shared = Arc::new(tls::Shared::default());
    let attacher = match (args.tls, &probes.http) {
        (Toggle::On, Some(http)) => {
            let tls_cfg = tls::Config {
                scan: Duration::from_millis(args.tls_scan_ms),
                proc_root: "/proc".into(),
                capability_check,
            };
            Some(
                tls::Attacher::start(Arc::clone(http), tls_cfg, Arc::clone(&shared))
                    .map_err(Error::with_capability_hint)?,
            )
        }
        (Toggle::On, None) => {
            warn!("HTTPS needs the HTTP probe, which --http-hook off disables; TLS is off.");
            None
        }
        (Toggle::Off, _) => None,
    };
    if attacher.is_some() {
        probes.track_tls_programs();
    }
    let listener = socket::bind(&args.socket, args.socket_gid)?;
    Ok(Prepared { cfg, probes, events, listener, tls: (attacher, shared) })
}

async fn serve(args: RunArgs, prepared: Prepared) -> anyhow::Result<()> {
    let Prepared { cfg, mut probes, events, listener, tls: (attacher, tls_shared) } = prepared;
    let counters = Arc::new(Counters { tls: tls_shared, ..Counters::default() });
    let cursor = ringbuf::resume(&probes, &counters);
    let hub = Hub::new(cfg.queue_batches, Arc::clone(&counters));
    let heartbeat = Duration::from_millis(args.heartbeat_ms);
    let info = LoaderInfo {
        epoch: rand::random(),
        kernel_release: sys::kernel_release(),
        btf_available: Path::new(preflight::VMLINUX_BTF).exists(),
        probes: probes
            .attached
            .iter()
            .map(|a| v1::ProbeStatus {
                name: a.name.into(),
                attach_point: a.attach_point.into(),
                attached: true,
                origin: a.origin.as_str().into(),
            })
            .collect(),
        pinned_maps: probes
            .pinned
            .iter()
            .map(|(n, p)| v1::PinnedMap { name: (*n).into(), path: p.display().to_string() })
            .collect(),
        ring_buffer_bytes: probes.ring_bytes.into(),
        heartbeat,
    };

    let mut allow_uids = args.allow_uid.clone();
    allow_uids.push(0);
    let policy = AccessPolicy {
        allow_uids,
        allow_gids: args.allow_gid.clone(),
        max_connections: args.max_connections,
    };
    let listener = tokio::net::UnixListener::from_std(listener).map_err(|source| Error::Socket {
        path: args.socket.clone(),
        what: "cannot register with the runtime",
        source,
    })?;
    info!(socket = %args.socket.display(), epoch = format_args!("{:016x}", info.epoch), "Serving the event stream.");
    let incoming = socket::accept_loop(listener, policy, Arc::clone(&counters));

    let (stop_tx, stop_rx) = watch::channel(false);
    let stall_timeout = Duration::from_millis(args.stall_timeout_ms);
    let service = server::Service::into_server(Arc::clone(&hub), Arc::clone(&counters), info, stall_timeout);
    let server = tokio::spawn(conn::serve(
        incoming,
        service,
        conn::Timeouts {
            handshake: Duration::from_millis(args.handshake_timeout_ms),
            idle: Duration::from_millis(args.idle_timeout_ms),
        },
        Arc::clone(&counters),
        stop_rx.clone(),
    ));
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("Shutting down.");
        let _ = stop_tx.send(true);
    });

    let drain_cfg = DrainConfig { max_batch: cfg.max_batch, heartbeat };
    let drained =
        ringbuf::drain(&mut probes, cursor, events, hub, Arc::clone(&counters), drain_cfg, stop_rx).await;
    if let Err(e) = &drained {
        error!(error = %e, "Ring-buffer drain failed.");
    }
    if tokio::time::timeout(Duration::from_secs(5), server).await.is_err() {
        warn!("gRPC server did not stop within 5 s.");
    }
    socket::remove(&args.socket);
    if let Some(a) = attacher {
        a.stop();
    }
    drop(probes);
    info!(
        pin_dir = %args.pin_dir.display(),
        "Exiting; the probes stay attached through their pinned links and keep filling the ring buffer \
         for the next loader (`nettel-loader cleanup` detaches them)."
    );
    Ok(drained?)
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
