// SPDX-License-Identifier: Apache-2.0
//! Serving admitted connections: HTTP/2 limits, the handshake deadline, the
//! closing of a connection whose subscriber stalls, and the counting of every
//! connection or request refused because of what the peer sent.
//!
//! Each connection that [`socket::accept_loop`](crate::socket::accept_loop)
//! admitted is served by hyper's HTTP/2 server on its own task, which ends it
//! early in three cases, each counted in [`Counters`]:
//!
//! - **Handshake deadline** (`handshake_timeouts`): the peer must send the
//!   HTTP/2 preface and a complete first request, one the service answered
//!   without an error status, within `handshake_timeout` of being admitted.
//!   Otherwise the connection is closed, which frees the connection slot a
//!   silent or trickling peer would hold forever.
//! - **Stalled subscriber** (`stalled_connections`): a `StreamEvents`
//!   subscriber on the connection accepted no message for the stall timeout
//!   (`server` decides, and asks through the [`ConnectionHandle`] in the
//!   request's extensions). The whole connection is closed: HTTP/2 flow control
//!   keeps a non-reading peer's data in hyper's send buffers until then.
//! - **Protocol error** (`protocol_errors`): hyper ended the connection with an
//!   HTTP/2 connection error it detected itself: anything but the HTTP/2
//!   preface (garbage, HTTP/1, TLS), a frame over [`MAX_FRAME_BYTES`], a
//!   flow-control violation, a reset or CONTINUATION flood.
//! - **Idle** (`idle_connections`): after its first request, the connection
//!   had no request in flight (no open stream: a `StreamEvents` subscription
//!   is one for as long as it lasts) for the idle timeout. HTTP/2 keepalive
//!   alone would let a peer that answers pings hold its slot forever.
//!
//! Requests answered with an error status before they reach the service (the
//! service itself never answers with one) are counted too, and the connection
//! stays open for them: `requests_too_large` (over
//! [`MAX_DECODE_BYTES`](crate::server::MAX_DECODE_BYTES), `OUT_OF_RANGE`) and
//! `requests_invalid` (unknown method or encoding, an undecodable, truncated
//! or missing message). A request that fails because the peer reset it
//! mid-body or its connection ended is not counted.
//!
//! Other ends are not refusals and are not counted: the peer closing, an I/O
//! error, or hyper's keepalive (a ping every [`KEEPALIVE_INTERVAL`],
//! unanswered for [`KEEPALIVE_TIMEOUT`]).

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    server::conn::http2,
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    sync::{mpsc, watch, Notify},
    task::JoinSet,
};
use tonic::{Code, Status};
use tracing::{debug, warn};

use crate::{
    counters::{self, Counters},
    server::{Server, MAX_STREAMS_PER_CONNECTION},
    socket::GuardedStream,
};

type Req = hyper::Request<Incoming>;

/// Largest HTTP/2 frame payload a peer may send (SETTINGS_MAX_FRAME_SIZE, the
/// protocol's minimum); a larger frame is a protocol error.
pub const MAX_FRAME_BYTES: u32 = 16 * 1024;
/// Largest decoded header list a peer may send (SETTINGS_MAX_HEADER_LIST_SIZE);
/// a larger one is refused for its stream only.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Request bytes a peer may have in flight per stream (HTTP/2 flow control).
/// Requests are at most 16 KiB, so this bounds what a peer can make the loader
/// buffer without slowing any real client.
pub const STREAM_WINDOW_BYTES: u32 = 64 * 1024;
/// Request bytes a peer may have in flight per connection.
pub const CONNECTION_WINDOW_BYTES: u32 = 128 * 1024;
/// HTTP/2 keepalive: a ping after this long without a frame from the peer ...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ... and the connection closed if the ping is not answered within this.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's link to its serving task, in every request's extensions.
#[derive(Debug, Clone, Default)]
pub struct ConnectionHandle(Arc<Signals>);

#[derive(Debug, Default)]
struct Signals {
    /// A request was answered without an error status.
    served: Notify,
    /// A subscriber on the connection stalled.
    stalled: Notify,
    /// The serving task is done with the connection.
    ended: AtomicBool,
    /// Requests in flight: from the service being called until the response
    /// body is done with (dropped).
    in_flight: AtomicUsize,
    /// `in_flight` went back to 0.
    quiet: Notify,
}

/// Counts one request in flight on its connection until dropped.
#[derive(Debug)]
struct InFlight(Arc<Signals>);

impl InFlight {
    fn new(signals: &Arc<Signals>) -> Self {
        signals.in_flight.fetch_add(1, Relaxed);
        Self(Arc::clone(signals))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.0.quiet.notify_one();
        }
    }
}

/// A response body that keeps its request counted in flight until it is
/// dropped (a `StreamEvents` body lives as long as the subscription).
struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl ConnectionHandle {
    /// Asks the serving task to close the connection because a subscriber on
    /// it stalled. Counted once per connection, however many streams ask.
    pub fn close_stalled(&self) {
        self.0.stalled.notify_one();
    }

    /// Accounts one response: a success completes the handshake; a refusal
    /// is counted, unless the request failed because its connection ended.
    fn answered(&self, headers: &hyper::HeaderMap, counters: &Counters) {
        let code = Status::from_header_map(headers).map_or(Code::Ok, |s| s.code());
        match code {
            Code::Ok => self.0.served.notify_one(),
            _ if self.0.ended.load(Relaxed) => debug!(?code, "A request failed with its connection."),
            Code::OutOfRange => {
                if let Some(total) = counters::bump(&counters.requests_too_large) {
                    warn!(total, "Refused a request over the size limit.");
                }
            }
            // Unknown method or encoding; undecodable, truncated or missing
            // message; bad compression flag.
            Code::Unimplemented | Code::Internal | Code::InvalidArgument | Code::ResourceExhausted => {
                if let Some(total) = counters::bump(&counters.requests_invalid) {
                    warn!(total, ?code, "Refused an invalid request.");
                }
            }
            // The request's body failed: the peer reset the stream or the connection broke.
            _ => debug!(?code, "A request ended before it was complete."),
        }
    }
}

/// How long a connection may go without progress.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From admission to the first request answered without an error status.
    pub handshake: Duration,
    /// After that, with no request in flight.
    pub idle: Duration,
}

/// Serves every connection received on `incoming` until `stop` changes (or its
/// sender is gone); then stops taking connections, asks the open ones to shut
/// down gracefully (HTTP/2 GOAWAY; their streams end when the hub closes) and
/// returns once all have closed.
pub async fn serve(
    mut incoming: mpsc::Receiver<GuardedStream>,
    service: Server,
    timeouts: Timeouts,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let mut open = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            stream = incoming.recv() => match stream {
                Some(stream) => {
                    let task = Connection {
                        builder: builder.clone(),
                        service: service.clone(),
                        timeouts,
                        counters: Arc::clone(&counters),
                        stop: stop.clone(),
                    };
                    open.spawn(task.run(stream));
                }
                None => break,
            },
            Some(_) = open.join_next(), if !open.is_empty() => {}
        }
    }
    // The accept loop ends at its next connection; until then, the kernel queues them.
    drop(incoming);
    while open.join_next().await.is_some() {}
}

/// Everything one connection's task needs.
struct Connection {
    builder: http2::Builder<TokioExecutor>,
    service: Server,
    timeouts: Timeouts,
    counters: Arc<Counters>,
    stop: watch::Receiver<bool>,
}

/// Why a connection's serving ended.
#[derive(Debug)]
enum End {
    Served(Result<(), hyper::Error>),
    HandshakeTimeout,
    Stalled,
    Idle,
    /// The loader is stopping and the peer had not completed a request.
    Shutdown,
}

impl Connection {
    async fn run(mut self, stream: GuardedStream) {
        let handle = ConnectionHandle::default();
        let svc = {
            let (handle, counters, service) =
                (handle.clone(), Arc::clone(&self.counters), self.service.clone());
            service_fn(move |mut req: Req| {
                req.extensions_mut().insert(handle.clone());
                let (handle, counters, service) = (handle.clone(), Arc::clone(&counters), service.clone());
                async move {
                    let in_flight = InFlight::new(&handle.0);
                    let response = service.call(req).await;
                    handle.answered(response.headers(), &counters);
                    Ok::<_, Infallible>(response.map(|inner| Tracked { inner, _in_flight: in_flight }))
                }
            })
        };
        let conn = self.builder.serve_connection(TokioIo::new(stream), svc);
        tokio::pin!(conn);
        let deadline = tokio::time::sleep(self.timeouts.handshake);
        tokio::pin!(deadline);
        // Armed whenever no request is in flight after the handshake.
        let idle = tokio::time::sleep(self.timeouts.idle);
        tokio::pin!(idle);
        let mut idle_armed = false;
        let mut awaiting_request = true;
        let mut stopping = *self.stop.borrow_and_update();
        let mut goaway_sent = false;
        let end = loop {
            if stopping && !goaway_sent {
                // A peer that never completed a request has nothing to finish.
                if awaiting_request {
                    break End::Shutdown;
                }
                conn.as_mut().graceful_shutdown();
                goaway_sent = true;
            }
            if !awaiting_request && !idle_armed && handle.0.in_flight.load(Relaxed) == 0 {
                idle.as_mut().reset(tokio::time::Instant::now() + self.timeouts.idle);
                idle_armed = true;
            }
            tokio::select! {
                result = conn.as_mut() => break End::Served(result),
                () = handle.0.served.notified(), if awaiting_request => awaiting_request = false,
                () = &mut deadline, if awaiting_request => break End::HandshakeTimeout,
                () = handle.0.stalled.notified() => break End::Stalled,
                // The last request in flight ended: the idle time starts now.
                () = handle.0.quiet.notified() => idle_armed = false,
                () = &mut idle, if idle_armed => {
                    if handle.0.in_flight.load(Relaxed) == 0 {
                        break End::Idle;
                    }
                    idle_armed = false;
                }
                _ = self.stop.changed(), if !stopping => stopping = true,
            }
        };
        // Requests still in flight fail with the connection; they were not refused.
        handle.0.ended.store(true, Relaxed);
        // Returning drops `conn`: the socket is closed and the connection slot freed.
        self.count(end);
    }

    fn count(&self, end: End) {
        let c = &self.counters;
        match end {
            End::Served(Ok(())) | End::Shutdown => {}
            End::Served(Err(e)) => match protocol_error(&e) {
                Some(h2) => {
                    if let Some(total) = counters::bump(&c.protocol_errors) {
                        warn!(total, error = %h2, "Closed a connection that broke HTTP/2.");
                    }
                }
                None => debug!(error = %e, "Connection ended with an error."),
            },
            End::HandshakeTimeout => {
                if let Some(total) = counters::bump(&c.handshake_timeouts) {
                    warn!(
                        total,
                        timeout_ms = self.timeouts.handshake.as_millis(),
                        "Closed a connection that sent no complete request within the handshake timeout."
                    );
                }
            }
            End::Stalled => {
                if let Some(total) = counters::bump(&c.stalled_connections) {
                    warn!(total, "Closed a connection whose subscriber stopped reading.");
                }
            }
            End::Idle => {
                if let Some(total) = counters::bump(&c.idle_connections) {
                    warn!(
                        total,
                        timeout_ms = self.timeouts.idle.as_millis(),
                        "Closed a connection with no request in flight for the idle timeout."
                    );
                }
            }
        }
    }
}

/// The HTTP/2 connection error hyper ended the connection with, if h2 itself
/// detected it in what the peer sent (as opposed to I/O errors, the peer's own
/// GOAWAY, or keepalive timeouts).
fn protocol_error(e: &hyper::Error) -> Option<&h2::Error> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .filter(|h| h.is_go_away() && h.is_library())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use nettel_proto::v1::{self, telemetry_service_client::TelemetryServiceClient};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::UnixStream,
        task::JoinHandle,
    };

    use super::*;
    use crate::{
        hub::Hub,
        server::LoaderInfo,
        socket::{self, AccessPolicy},
    };

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// A loader's socket and server without probes, as root allows.
    async fn start(dir: &Path, handshake: Duration) -> (Arc<Counters>, watch::Sender<bool>, JoinHandle<()>) {
        start_with(dir, Timeouts { handshake, idle: Duration::from_secs(600) }).await
    }

    async fn start_with(
        dir: &Path,
        timeouts: Timeouts,
    ) -> (Arc<Counters>, watch::Sender<bool>, JoinHandle<()>) {
        let path = dir.join("loader.sock");
        let listener = tokio::net::UnixListener::from_std(socket::bind(&path, None).unwrap()).unwrap();
        let counters = Arc::new(Counters::default());
        let uid = rustix::process::getuid().as_raw();
        let policy = AccessPolicy { allow_uids: vec![uid], allow_gids: vec![], max_connections: 4 };
        let incoming = socket::accept_loop(listener, policy, Arc::clone(&counters));
        let info = LoaderInfo { epoch: 1, heartbeat: Duration::from_secs(1), ..Default::default() };
        let hub = Hub::new(4, Arc::clone(&counters));
        let service =
            crate::server::Service::into_server(hub, Arc::clone(&counters), info, Duration::from_secs(30));
        let (stop, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve(incoming, service, timeouts, Arc::clone(&counters), stop_rx));
        (counters, stop, server)
    }

    /// A gRPC channel on its own connection to the socket at `path`.
    async fn channel(path: &Path) -> tonic::transport::Channel {
        let path = path.to_owned();
        tonic::transport::Endpoint::from_static("http://loader.invalid")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .unwrap()
    }

    /// A gRPC client on its own connection to the socket at `path`.
    async fn client(path: &Path) -> TelemetryServiceClient<tonic::transport::Channel> {
        TelemetryServiceClient::new(channel(path).await)
    }

    /// Everything the server sends until it closes the connection. A close
    /// with our bytes unread reaches us as ECONNRESET after its data.
    async fn read_to_close(s: &mut UnixStream) -> Vec<u8> {
        let mut out = Vec::new();
        match tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
            .await
            .expect("the loader did not close the connection")
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("read: {e}"),
        }
        out
    }

    /// The error code of the first GOAWAY frame in `bytes` (server frames).
    fn goaway_code(mut bytes: &[u8]) -> Option<u32> {
        while bytes.len() >= 9 {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let payload = bytes.get(9..9 + len)?;
            if bytes[3] == 7 {
                return Some(u32::from_be_bytes(payload[4..8].try_into().ok()?));
            }
            bytes = &bytes[9 + len..];
        }
        None
    }

    #[tokio::test]
    async fn silent_peers_are_closed_at_the_handshake_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let (counters, _stop, _) = start(dir.path(), Duration::from_millis(200)).await;
        let mut silent = UnixStream::connect(dir.path().join("loader.sock")).await.unwrap();
        // Preface and SETTINGS, but no request, is not enough either.
        let mut no_request = UnixStream::connect(dir.path().join("loader.sock")).await.unwrap();
        no_request.write_all(PREFACE).await.unwrap();
        no_request.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        read_to_close(&mut silent).await;
        read_to_close(&mut no_request).await;
        assert_eq!(counters.handshake_timeouts.load(Relaxed), 2);
        assert_eq!(counters.protocol_errors.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn stopping_closes_peers_that_never_sent_a_request_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (counters, stop, server) = start(dir.path(), Duration::from_secs(600)).await;
        let mut silent = UnixStream::connect(dir.path().join("loader.sock")).await.unwrap();
        // Admitted (the server's SETTINGS arrive) before the stop.
        let mut settings = [0u8; 9];
        silent.read_exact(&mut settings).await.unwrap();
        stop.send(true).unwrap();
        read_to_close(&mut silent).await;
        tokio::time::timeout(Duration::from_secs(30), server).await.expect("serve returned").unwrap();
        assert_eq!(counters.socket(), v1::SocketCounters::default(), "a shutdown is no refusal");
    }

    #[tokio::test]
    async fn oversized_and_invalid_requests_are_refused_on_a_connection_that_stays_up() {
        let dir = tempfile::tempdir().unwrap();
        let (counters, _stop, _) = start(dir.path(), Duration::from_secs(2)).await;
        let channel = channel(&dir.path().join("loader.sock")).await;
        let mut client = TelemetryServiceClient::new(channel.clone());
        let big = v1::StreamEventsRequest { subscriber_name: "x".repeat(20_000) };
        let e = client.stream_events(big).await.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "{e}");

        // An unknown method, and a message that does not decode as a request.
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let e = grpc
            .unary::<_, v1::GetLoaderStatusResponse, _>(
                tonic::Request::new(v1::GetLoaderStatusRequest {}),
                "/nettel.telemetry.v1.TelemetryService/LoadProgram".parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented, "{e}");
        grpc.ready().await.unwrap();
        let e = grpc
            .server_streaming::<_, v1::StreamEventsResponse, _>(
                // Field 1 as a varint: StreamEventsRequest's field 1 is a string.
                tonic::Request::new(v1::Synthetic { sequence: 7 }),
                "/nettel.telemetry.v1.TelemetryService/StreamEvents".parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e}");

        // Refused requests complete no handshake; a good one does, and the
        // connection outlives the deadline.
        client.get_loader_status(v1::GetLoaderStatusRequest {}).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let status = client.get_loader_status(v1::GetLoaderStatusRequest {}).await.unwrap().into_inner();
        let socket = status.counters.unwrap().socket.unwrap();
        assert_eq!((socket.requests_too_large, socket.requests_invalid), (1, 2));
        assert_eq!(counters.handshake_timeouts.load(Relaxed), 0);
        assert_eq!(counters.protocol_errors.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn connections_with_no_request_in_flight_are_closed_at_the_idle_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let timeouts = Timeouts { handshake: Duration::from_secs(5), idle: Duration::from_millis(500) };
        let (counters, _stop, _) = start_with(dir.path(), timeouts).await;
        let path = dir.path().join("loader.sock");
        // One status request, then nothing: closed after the idle timeout.
        let mut status = client(&path).await;
        status.get_loader_status(v1::GetLoaderStatusRequest {}).await.unwrap();
        // A subscription is a request in flight for as long as it is open.
        let mut subscriber = client(&path).await;
        let stream = subscriber
            .stream_events(v1::StreamEventsRequest { subscriber_name: "idle-test".into() })
            .await
            .unwrap()
            .into_inner();
        // Requests keep a connection busy: one every 50 ms for over a second.
        let mut poller = client(&path).await;
        for _ in 0..25 {
            poller.get_loader_status(v1::GetLoaderStatusRequest {}).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(counters.idle_connections.load(Relaxed), 1, "only the status client's connection");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(counters.idle_connections.load(Relaxed), 2, "the poller's, after its last request");
        // The subscription ends: its connection idles from then on.
        drop(stream);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(counters.idle_connections.load(Relaxed), 3);
        assert_eq!(counters.handshake_timeouts.load(Relaxed), 0);
        assert_eq!(counters.stalled_connections.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn garbage_and_oversized_frames_are_protocol_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (counters, _stop, _) = start(dir.path(), Duration::from_secs(30)).await;
        let mut http1 = UnixStream::connect(dir.path().join("loader.sock")).await.unwrap();
        http1.write_all(b"GET / HTTP/1.1\r\nHost: loader\r\n\r\n").await.unwrap();
        read_to_close(&mut http1).await;
        assert_eq!(counters.protocol_errors.load(Relaxed), 1);

        // A DATA frame header announcing 1 MiB, over the 16 KiB frame limit.
        let mut huge = UnixStream::connect(dir.path().join("loader.sock")).await.unwrap();
        huge.write_all(PREFACE).await.unwrap();
        huge.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        huge.write_all(&[0x10, 0, 0, 0, 0, 0, 0, 0, 1]).await.unwrap();
        let sent = read_to_close(&mut huge).await;
        assert_eq!(goaway_code(&sent), Some(0x6), "GOAWAY(FRAME_SIZE_ERROR) expected: {sent:02x?}");
        assert_eq!(counters.protocol_errors.load(Relaxed), 2);
        assert_eq!(counters.handshake_timeouts.load(Relaxed), 0);
    }
}
