// SPDX-License-Identifier: Apache-2.0
//! Raw bytes on an admitted connection to the loader's socket, after the
//! HTTP/2 client preface (first input byte non-zero) or instead of it (zero):
//! HTTP/2 frames of any shape, garbage, HTTP/1, TLS. The loader's connection
//! server (`conn::serve`: hyper/h2 with nettel's limits, and the gRPC service
//! behind it) must not panic, and must keep serving: every input ends with a
//! fresh connection that must get the server's SETTINGS frame.
#![no_main]

use std::{
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use libfuzzer_sys::fuzz_target;
use nettel_loader::{
    conn::{self, Timeouts},
    counters::Counters,
    hub::Hub,
    server::{LoaderInfo, Service},
    socket::{self, AccessPolicy},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    runtime::Runtime,
    sync::watch,
    task::JoinHandle,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct Loader {
    rt: Runtime,
    path: PathBuf,
    server: JoinHandle<()>,
    _stop: watch::Sender<bool>,
}

/// A loader's socket and connection server without probes, started once.
fn loader() -> &'static Loader {
    static L: OnceLock<Loader> = OnceLock::new();
    L.get_or_init(|| {
        // libFuzzer's main is not Rust's: writes to a socket the server has
        // closed must fail with EPIPE, not kill the process with SIGPIPE.
        // SAFETY: SIG_IGN for SIGPIPE installs no handler code; called once,
        // before any thread of this process writes to a socket.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = std::env::temp_dir().join(format!("nettel-fuzz-conn-{}", std::process::id()));
        let path = dir.join("loader.sock");
        let uid = std::fs::metadata("/proc/self").expect("/proc/self").uid();
        let (server, stop) = rt.block_on(async {
            let listener = tokio::net::UnixListener::from_std(socket::bind(&path, None).unwrap()).unwrap();
            let counters = Arc::new(Counters::default());
            let policy = AccessPolicy { allow_uids: vec![uid], allow_gids: vec![], max_connections: 256 };
            let incoming = socket::accept_loop(listener, policy, Arc::clone(&counters));
            let info = LoaderInfo {
                epoch: 1,
                kernel_release: String::new(),
                btf_available: false,
                probes: vec![],
                pinned_maps: vec![],
                ring_buffer_bytes: 0,
                heartbeat: Duration::from_secs(1),
            };
            let hub = Hub::new(4, Arc::clone(&counters));
            let service = Service::into_server(hub, Arc::clone(&counters), info, Duration::from_secs(5));
            let (stop, stop_rx) = watch::channel(false);
            let timeouts = Timeouts { handshake: Duration::from_millis(500), idle: Duration::from_secs(1) };
            (tokio::spawn(conn::serve(incoming, service, timeouts, counters, stop_rx)), stop)
        });
        Loader { rt, path, server, _stop: stop }
    })
}

fuzz_target!(|data: &[u8]| {
    let l = loader();
    l.rt.block_on(async {
        let mut s = UnixStream::connect(&l.path).await.expect("connect");
        let body = match data.split_first() {
            Some((0, rest)) => rest,
            Some((_, rest)) => {
                let _ = s.write_all(PREFACE).await;
                rest
            }
            None => data,
        };
        let _ = s.write_all(body).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink)).await;

        // Still serving: a new connection gets the server's SETTINGS frame.
        let mut probe = UnixStream::connect(&l.path).await.expect("connect after the input");
        let mut header = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(5), probe.read_exact(&mut header))
            .await
            .expect("the loader sent nothing on a new connection")
            .expect("the loader closed a new connection");
        assert_eq!(header[3], 4, "the first frame is SETTINGS: {header:02x?}");
    });
    assert!(!l.server.is_finished(), "the loader stopped serving");
});
