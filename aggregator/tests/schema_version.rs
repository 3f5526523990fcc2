// SPDX-License-Identifier: Apache-2.0
//! A loader writing a newer event schema, end to end over a Unix socket: a
//! fake loader (an in-process tonic server) streams `schema_version` 2 and the
//! real `LoaderSource` must refuse it without counting anything, stay not
//! ready, and say so in its metrics. No kernel needed.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt};
use http::{Method, StatusCode};
use nettel_aggregator::{
    metrics::{KindLabels, Metrics, ReasonLabels},
    sink::prometheus::{respond, Endpoint},
    source::loader::LoaderSource,
    transform::{
        aggregate::Aggregator,
        enrich_pod::{Resolver, StaticPods},
        fold_port::PortFolder,
    },
};
use nettel_proto::v1::{
    self,
    telemetry_service_server::{TelemetryService, TelemetryServiceServer},
};
use tonic::{Request, Response, Status};

/// A loader that sends `messages` on every stream, then keeps it open.
struct FakeLoader {
    messages: Vec<v1::StreamEventsResponse>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TelemetryService for FakeLoader {
    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        _: Request<v1::StreamEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let msgs = futures::stream::iter(self.messages.clone().into_iter().map(Ok));
        Ok(Response::new(Box::pin(msgs.chain(futures::stream::pending()))))
    }

    async fn get_loader_status(
        &self,
        _: Request<v1::GetLoaderStatusRequest>,
    ) -> Result<Response<v1::GetLoaderStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// This aggregator's schema, and the next one (which it must refuse).
const CURRENT: u32 = v1::SCHEMA_VERSION;
const NEWER: u32 = v1::SCHEMA_VERSION + 1;

fn message(schema_version: u32, first: u64, n: usize) -> v1::StreamEventsResponse {
    let ev = v1::Event {
        timestamp_boot_ns: 1,
        kind: Some(v1::event::Kind::TcpRetransmit(v1::TcpRetransmit {
            remote_addr: vec![10, 0, 0, 1].into(),
            remote_port: 80,
            kind: v1::RetransmitKind::Data as i32,
            segments: 1,
            ..Default::default()
        })),
    };
    v1::StreamEventsResponse {
        epoch: 42,
        message_sequence: first,
        first_event_sequence: first,
        events: vec![ev; n],
        loss: Some(v1::LossReport::default()),
        schema_version,
        probe_counters: None,
        socket_counters: None,
        ..Default::default()
    }
}

/// Serves `messages` on a fresh socket and runs the real source against it
/// until `done` holds (or 10 s pass); returns the metrics and readiness.
async fn run_against(
    messages: Vec<v1::StreamEventsResponse>,
    reconnect_max: Duration,
    done: impl Fn(&Metrics) -> bool,
) -> (Arc<Metrics>, StatusCode) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("loader.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TelemetryServiceServer::new(FakeLoader { messages }))
            .serve_with_incoming(incoming),
    );
    let metrics = Arc::new(Metrics::default());
    let pods = Resolver::Static(Arc::new(StaticPods::default()));
    let agg = Aggregator::new(Arc::clone(&metrics), pods, PortFolder::new(32768));
    let source = LoaderSource { socket, subscriber_name: "test".into(), reconnect_max };
    let client = tokio::spawn(source.run(Arc::new(Mutex::new(agg)), Arc::clone(&metrics)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(&metrics) {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let endpoint =
        Endpoint { registry: metrics.register(), metrics: Arc::clone(&metrics), require_kube_sync: false };
    let ready = respond(&endpoint, &Method::GET, "/readyz", None).status();
    client.abort();
    server.abort();
    (metrics, ready)
}

fn received(m: &Metrics) -> u64 {
    m.events_received.get_or_create(&KindLabels { kind: "tcp_retransmit".into() }).get()
}

fn disconnects(m: &Metrics, reason: &str) -> u64 {
    m.stream_disconnects.get_or_create(&ReasonLabels { reason: reason.into() }).get()
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_nothing_is_counted() {
    // Two refusals prove it keeps retrying and keeps refusing.
    let (m, ready) =
        run_against(vec![message(NEWER, 1, 5)], Duration::from_millis(200), |m| m.schema_mismatch.get() >= 2)
            .await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(received(&m), 0, "no event of a newer schema's stream is counted");
    assert_eq!(m.loader_connected.get(), 0);
    assert_eq!(m.stream_connects.get(), 0);
    assert_eq!(m.loader_schema_version.get(), i64::from(NEWER));
    assert!(disconnects(&m, "schema_too_new") >= 2);
    let text = nettel_aggregator::sink::text_format::encode(
        &m.register(),
        &m,
        nettel_aggregator::sink::text_format::Format::OpenMetrics,
    )
    .unwrap();
    assert!(text.contains("# TYPE node_tcp_retransmits counter"), "{text}");
    assert!(!text.contains("node_tcp_retransmits_total{"), "{text}");
}

#[tokio::test]
async fn a_schema_change_mid_stream_stops_counting_that_stream() {
    // This aggregator's schema first (counted), then a newer one (refused
    // with everything after it). The reconnect waits at least 2.5 s, long after the checks below.
    let msgs = vec![message(CURRENT, 1, 3), message(NEWER, 4, 5), message(CURRENT, 9, 7)];
    let (m, ready) = run_against(msgs, Duration::from_secs(5), |m| m.schema_mismatch.get() >= 1).await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(m.stream_connects.get(), 1, "the first message connected the stream");
    assert_eq!(received(&m), 3, "only the message before the change is counted");
    assert_eq!(disconnects(&m, "schema_too_new"), 1);
    assert_eq!(m.loader_connected.get(), 0);
}
