// SPDX-License-Identifier: Apache-2.0
//! Two mitigations of security/threat-model.md run for real:
//!
//! * T2 "read another process's HTTP payloads through nettel": POST requests
//!   whose path, query string, one header and body carry distinctive strings are
//!   served by a netns pod while an independent subscriber reads the loader's
//!   event stream as encoded bytes (each message exactly as the loader wrote
//!   it). The requests are in the stream (method, status, the traceparent trace
//!   id); none of the strings is in any message or in the loader's log. Both
//!   HTTP hooks (`--http-hook sendmsg`, `socket` and `syscall`).
//! * T3 "replace the loader's socket": the DaemonSet mounts the socket's
//!   `emptyDir` read-only into the aggregator. Here the loader's socket
//!   directory, world-writable like an `emptyDir`, is bind-mounted read-only in
//!   a private mount namespace; the real aggregator, run there as uid 65534,
//!   connects and streams, while that uid cannot unlink, rename or bind over the
//!   socket (EROFS, EADDRINUSE) nor bind a new socket beside it (EROFS), which it
//!   can in a read-write view of the same directory.
//!
//! Network namespaces: id 60.

use std::{
    fs,
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use nettel_integration::{
    metrics::sum,
    netns::{exec, PodPair},
    process::{scratch_dir, Aggregator, Loader},
    require_kernel,
    traffic::start_server,
};
use nettel_proto::v1;
use prost::{bytes::Buf, Message};
use rustix::{
    io::Errno,
    mount::{mount_bind, mount_change, mount_remount, MountFlags, MountPropagationFlags},
    thread::{self as rthread, UnshareFlags},
};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

const NOBODY: u32 = 65534;

/// A child process killed on drop, also when an assertion fails.
#[derive(Debug)]
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the requests carry in their URL, a header and the body. None of it may
/// leave the kernel. (Matched case-insensitively.)
const SECRETS: &[&str] = &[
    "secret-path-7f3a",
    "token=qz81c0ffee",
    "X-Nettel-Secret",
    "hdr-value-5e7a9b",
    "body-9d2f-launch-codes",
];

/// The traceparent trace id: hex of the 16 ASCII bytes `ctl-7f3a-traceid`.
/// The loader ships these bytes (the trace id is the one thing taken from a
/// header), so finding them in the stream shows the search sees header-derived
/// bytes where the loader puts them.
const TRACE_ID: &str = "63746c2d376633612d74726163656964";
const TRACE_TEXT: &[u8] = b"ctl-7f3a-traceid";

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// A gRPC codec for `StreamEvents` that hands every response message over as
/// the bytes the loader encoded, undecoded (so nothing the test's schema does
/// not know is dropped before the search).
#[derive(Debug, Clone, Copy)]
struct RawCodec;

#[derive(Debug)]
struct RequestEncoder;

#[derive(Debug)]
struct RawDecoder;

impl Encoder for RequestEncoder {
    type Item = v1::StreamEventsRequest;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = v1::StreamEventsRequest;
    type Decode = Vec<u8>;
    type Encoder = RequestEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// The HTTP requests served by `server` (address bytes, port) in one stream message.
fn http_events(raw: &[u8], server: ([u8; 4], u32)) -> Vec<v1::HttpRequest> {
    let msg = v1::StreamEventsResponse::decode(raw).expect("a stream message decodes");
    msg.events
        .into_iter()
        .filter_map(|e| match e.kind {
            Some(v1::event::Kind::HttpRequest(h)) => Some(h),
            _ => None,
        })
        .filter(|h| h.local_addr[..] == server.0 && h.local_port == server.1)
        .collect()
}

/// Subscribes to the loader at `socket` and returns every stream message as
/// encoded bytes, from the first (signalled on `subscribed`) until one second
/// after `want` requests to `server` were seen, or 30 s.
fn raw_stream(
    socket: PathBuf,
    server: ([u8; 4], u32),
    want: usize,
    subscribed: mpsc::Sender<()>,
) -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let channel = nettel_integration::process::loader_channel(socket).await;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("channel ready");
        let path = http::uri::PathAndQuery::from_static("/nettel.telemetry.v1.TelemetryService/StreamEvents");
        let request = v1::StreamEventsRequest { subscriber_name: "payload-check".into() };
        let mut stream = grpc
            .server_streaming(tonic::Request::new(request), path, RawCodec)
            .await
            .expect("StreamEvents")
            .into_inner();
        let (mut out, mut seen, mut until) = (Vec::new(), 0, Instant::now() + Duration::from_secs(30));
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            let Ok(msg) = tokio::time::timeout(left, stream.message()).await else { break };
            let raw = msg.expect("stream error").expect("stream ended");
            if out.is_empty() {
                let _ = subscribed.send(());
            }
            let before = seen;
            seen += http_events(&raw, server).len();
            if before < want && seen >= want {
                until = Instant::now() + Duration::from_secs(1);
            }
            out.push(raw);
        }
        out
    })
}

#[test]
fn urls_headers_and_bodies_never_reach_the_event_stream() {
    if !require_kernel("urls_headers_and_bodies_never_reach_the_event_stream") {
        return;
    }
    assert!(contains_ignore_case(b"..X-NETTEL-secret..", b"x-nettel-SECRET"));
    assert!(!contains_ignore_case(b"secret-path-7f3", b"secret-path-7f3a"));
    assert_eq!(hex(TRACE_ID), TRACE_TEXT);

    let pods = PodPair::new(60);
    let addr = format!("{}:8080", pods.b_v4);
    let server_ip: [u8; 4] = pods.b_v4.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let url = format!("http://{addr}/secret-path-7f3a?token=qz81c0ffee");
    let _server = Killed(start_server(&pods.b, &["http", &addr]));
    for hook in ["sendmsg", "socket", "syscall"] {
        let loader = Loader::start(NOBODY, &[NOBODY], &["--http-hook", hook, "--heartbeat-ms", "100"]);
        let (tx, rx) = mpsc::channel();
        let socket = loader.socket.clone();
        let reader = std::thread::spawn(move || raw_stream(socket, (server_ip, 8080), 3, tx));
        rx.recv_timeout(Duration::from_secs(10)).expect("a first stream message within 10 s");

        // Three POSTs on one keep-alive connection, each with everything in one
        // request of under 512 bytes: all of it inside the probe's peek window.
        let out = exec(&pods.a, "curl")
            .args(["-s", "--max-time", "10", "-w", "%{http_code} %{size_request} %{size_upload}\n"])
            .args(["-H", "X-Nettel-Secret: hdr-value-5e7a9b"])
            .args(["-H", &format!("traceparent: 00-{TRACE_ID}-00f067aa0ba902b7-01")])
            .args(["--data", "body-9d2f-launch-codes"])
            // curl pairs each `-o` with one URL.
            .args([&url, "-o", "/dev/null", &url, "-o", "/dev/null", &url, "-o", "/dev/null"])
            .output()
            .unwrap();
        assert!(out.status.success(), "curl: {out:?}");
        let sizes = String::from_utf8(out.stdout).unwrap();
        assert_eq!(sizes.lines().count(), 3, "{sizes}");
        for line in sizes.lines() {
            let f: Vec<u64> = line.split(' ').map(|n| n.parse().unwrap()).collect();
            assert_eq!(f[0], 404, "{sizes}");
            assert!(f[2] > 0 && f[1] + f[2] <= 512, "request larger than the peek window: {sizes}");
        }

        let raws = reader.join().expect("stream reader");
        let log = loader.proc.log();
        for s in SECRETS {
            let hits = raws.iter().filter(|r| contains_ignore_case(r, s.as_bytes())).count();
            assert_eq!(hits, 0, "{hook}: `{s}` is in {hits} of {} stream messages", raws.len());
            assert!(
                !contains_ignore_case(log.as_bytes(), s.as_bytes()),
                "{hook}: `{s}` in the loader log:\n{log}"
            );
        }
        // The requests themselves are in the stream, with what may leave the kernel.
        let requests: Vec<_> = raws.iter().flat_map(|r| http_events(r, (server_ip, 8080))).collect();
        assert_eq!(requests.len(), 3, "{hook}: the stream carried {requests:?}");
        for r in &requests {
            assert_eq!((r.method(), r.status), (v1::HttpMethod::Post, 404), "{hook}: {r:?}");
            assert_eq!(r.trace_id, hex(TRACE_ID), "{hook}: {r:?}");
        }
        assert!(
            raws.iter().any(|r| contains_ignore_case(r, TRACE_TEXT)),
            "{hook}: the search did not find the trace id bytes the loader ships"
        );
        eprintln!(
            "{hook}: 3 requests in {} stream messages ({} bytes), no payload bytes",
            raws.len(),
            raws.concat().len()
        );
    }
}

/// What uid 65534 got from each operation on the read-only and read-write views.
#[derive(Debug)]
struct Attempts {
    connect: std::io::Result<()>,
    unlink: std::io::Result<()>,
    rename: std::io::Result<()>,
    bind_over: std::io::Result<()>,
    bind_beside: std::io::Result<()>,
    bind_beside_rw: std::io::Result<()>,
    capabilities: rthread::CapabilitySets,
}

fn errno(r: &std::io::Result<()>) -> Option<Errno> {
    r.as_ref().err().and_then(std::io::Error::raw_os_error).map(Errno::from_raw_os_error)
}

/// On the calling thread (which must not be shared with other work): a
/// private mount namespace holding `ro`, a read-only bind mount of `dir`, and
/// `rw`, a read-write one, as the kubelet mounts an `emptyDir` into two
/// containers.
fn private_views(dir: &Path, ro: &Path, rw: &Path) {
    // SAFETY: FS and NEWNS only; FILES (the flag that can make descriptors
    // invalid on other threads) is not unshared. This thread gets its own root,
    // cwd and umask, and its own copy of the mount table.
    unsafe { rthread::unshare_unsafe(UnshareFlags::FS | UnshareFlags::NEWNS) }.expect("unshare(FS|NEWNS)");
    // As `unshare -m`: nothing mounted here propagates back to the host.
    mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC).expect("make / private");
    mount_bind(dir, ro).expect("bind mount (ro view)");
    mount_remount(ro, MountFlags::BIND | MountFlags::RDONLY, "").expect("remount the view read-only");
    mount_bind(dir, rw).expect("bind mount (rw view)");
}

/// Becomes uid/gid 65534 with no supplementary group, on this thread only;
/// leaving uid 0 clears every capability.
fn become_nobody() {
    let (uid, gid) = (rustix::process::Uid::from_raw(NOBODY), rustix::process::Gid::from_raw(NOBODY));
    rthread::set_thread_groups(&[]).expect("setgroups");
    rthread::set_thread_res_gid(gid, gid, gid).expect("setresgid");
    rthread::set_thread_res_uid(uid, uid, uid).expect("setresuid");
}

#[test]
fn the_aggregators_read_only_socket_dir_connects_but_cannot_replace_the_socket() {
    if !require_kernel("the_aggregators_read_only_socket_dir_connects_but_cannot_replace_the_socket") {
        return;
    }
    let loader = Loader::start(NOBODY, &[NOBODY], &[]);
    let dir = loader.socket.parent().unwrap().to_owned();
    // An emptyDir is mode 0777: only the read-only mount keeps the aggregator's
    // uid from replacing the socket.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let inode = fs::metadata(&loader.socket).unwrap().ino();
    let name = loader.socket.file_name().unwrap().to_owned();
    let views = scratch_dir("socket-views");
    let (ro, rw) = (views.join("ro"), views.join("rw"));
    fs::create_dir(&ro).unwrap();
    fs::create_dir(&rw).unwrap();

    let (mut agg, tried) = std::thread::spawn(move || {
        private_views(&dir, &ro, &rw);
        // The aggregator, started from this thread, lives in this namespace and
        // reaches the loader only through the read-only view.
        let mut agg = Aggregator::start(&ro.join(&name), None, NOBODY, NOBODY);
        agg.wait_connected();
        become_nobody();
        let target = ro.join(&name);
        let bind = |p: PathBuf| UnixListener::bind(p).map(drop);
        let tried = Attempts {
            connect: UnixStream::connect(&target).map(drop),
            unlink: fs::remove_file(&target),
            rename: fs::rename(&target, ro.join("moved.sock")),
            bind_over: bind(target.clone()),
            bind_beside: bind(ro.join("evil.sock")),
            bind_beside_rw: bind(rw.join("evil.sock")).and_then(|()| fs::remove_file(rw.join("evil.sock"))),
            capabilities: rthread::capabilities(None).expect("capget"),
        };
        (agg, tried)
    })
    .join()
    .expect("the thread in the private mount namespace");

    assert!(tried.capabilities.effective.is_empty() && tried.capabilities.permitted.is_empty(), "{tried:?}");
    assert!(tried.connect.is_ok(), "{tried:?}");
    assert_eq!(errno(&tried.unlink), Some(Errno::ROFS), "unlink: {tried:?}");
    assert_eq!(errno(&tried.rename), Some(Errno::ROFS), "rename: {tried:?}");
    // The name is taken and cannot be freed: bind(2) reports EADDRINUSE.
    assert_eq!(errno(&tried.bind_over), Some(Errno::ADDRINUSE), "bind over: {tried:?}");
    assert_eq!(errno(&tried.bind_beside), Some(Errno::ROFS), "bind beside: {tried:?}");
    // The directory's mode lets the same uid create a socket in it: only the
    // mount stops it.
    assert!(tried.bind_beside_rw.is_ok(), "bind in the read-write view: {tried:?}");

    // The loader's socket is untouched and the aggregator still streams through the view.
    assert_eq!(fs::metadata(&loader.socket).unwrap().ino(), inode, "the socket was replaced");
    let counters = loader.status().counters.unwrap();
    assert_eq!(counters.subscribers_connected, 1, "{counters:?}");
    agg.wait_connected();
    let text = agg.scrape();
    assert_eq!(sum(&text, "nettel_stream_connects_total", &[]), 1, "{text}");
    assert_eq!(sum(&text, "nettel_loader_connected", &[]), 1, "{text}");
    assert!(agg.proc.running(), "aggregator exited:\n{}", agg.proc.log());
}
