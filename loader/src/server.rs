// SPDX-License-Identifier: Apache-2.0
//! The read-only gRPC service: `StreamEvents` and `GetLoaderStatus`.

use std::{pin::Pin, sync::Arc, time::Duration};

use nettel_proto::v1::{
    self,
    telemetry_service_server::{TelemetryService, TelemetryServiceServer},
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::{conn::ConnectionHandle, counters::Counters, hub::Hub};

/// Largest request the loader decodes (requests are tiny; anything big is hostile).
pub const MAX_DECODE_BYTES: usize = 16 * 1024;
/// Largest response message the loader encodes.
pub const MAX_ENCODE_BYTES: usize = 4 * 1024 * 1024;
/// Most concurrent HTTP/2 streams per connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 4;

/// Static facts for the status RPC, fixed at start.
#[derive(Debug, Clone)]
pub struct LoaderInfo {
    pub epoch: u64,
    pub kernel_release: String,
    pub btf_available: bool,
    pub probes: Vec<v1::ProbeStatus>,
    pub pinned_maps: Vec<v1::PinnedMap>,
    pub ring_buffer_bytes: u64,
    pub heartbeat: Duration,
}

/// The service implementation.
#[derive(Debug)]
pub struct Service {
    hub: Arc<Hub>,
    counters: Arc<Counters>,
    info: LoaderInfo,
    stall_timeout: Duration,
}

impl Service {
    /// Wraps the service with the loader's message-size limits. A subscriber
    /// that accepts no message for `stall_timeout` is dropped (see
    /// [`Service::stream_events`]).
    pub fn into_server(
        hub: Arc<Hub>,
        counters: Arc<Counters>,
        info: LoaderInfo,
        stall_timeout: Duration,
    ) -> TelemetryServiceServer<Self> {
        TelemetryServiceServer::new(Self { hub, counters, info, stall_timeout })
            .max_decoding_message_size(MAX_DECODE_BYTES)
            .max_encoding_message_size(MAX_ENCODE_BYTES)
    }
}

/// The subscriber name as logged: at most 64 characters, control characters
/// (which could forge log lines) replaced by `?`.
pub fn subscriber_label(name: &str) -> String {
    name.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect()
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TelemetryService for Service {
    type StreamEventsStream = EventStream;

    /// Subscribes to the hub and forwards its deliveries as stream messages.
    ///
    /// A subscriber that stops reading stalls HTTP/2 flow control; its stream
    /// then takes no more messages, and its hub queue fills (drops counted, as
    /// for any slow subscriber). When a message waits `stall_timeout` to be
    /// taken, the subscriber is dropped and its connection closed through the
    /// [`ConnectionHandle`] (counted in `stalled_connections`), which frees the
    /// connection's buffers and its slot.
    async fn stream_events(
        &self,
        request: Request<v1::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let connection = request.extensions().get::<ConnectionHandle>().cloned();
        let name = subscriber_label(&request.into_inner().subscriber_name);
        let stall_timeout = self.stall_timeout;
        let mut sub = self.hub.subscribe();
        let epoch = self.info.epoch;
        let baseline = (
            sub.reserve_failures_baseline,
            self.counters.decode_errors.load(std::sync::atomic::Ordering::Relaxed),
        );
        info!(subscriber = %name, id = sub.id, "Subscriber attached.");
        // Small: backpressure from the client lands in the hub queue, where it is counted.
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let (mut last_kernel, mut last_decode) = baseline;
            let mut message_sequence = 0u64;
            loop {
                // A subscriber that disconnected is unregistered at once, so the
                // drain stops feeding a queue nobody reads (and, with no
                // subscriber left, leaves events in the ring).
                let mut d = tokio::select! {
                    d = sub.rx.recv() => match d { Some(d) => d, None => break },
                    () = tx.closed() => break,
                };
                message_sequence += 1;
                let events = d.take_events();
                let b = &d.batch;
                let msg = v1::StreamEventsResponse {
                    epoch,
                    message_sequence,
                    first_event_sequence: b.first_sequence,
                    events,
                    loss: Some(v1::LossReport {
                        kernel_reserve_failures: b.kernel_reserve_failures_total.saturating_sub(last_kernel),
                        subscriber_queue_drops: d.dropped_before,
                        decode_errors: b.decode_errors_total.saturating_sub(last_decode),
                        kernel_reserve_failures_total: b.kernel_reserve_failures_total,
                        subscriber_queue_drops_total: d.dropped_total,
                        decode_errors_total: b.decode_errors_total,
                    }),
                    schema_version: v1::SCHEMA_VERSION,
                    probe_counters: Some(b.probe),
                    socket_counters: Some(b.socket),
                    http_bucket_bounds_ns: if b.http_totals.is_empty() {
                        Vec::new()
                    } else {
                        nettel_bpf::HTTP_BOUNDS_NS.to_vec()
                    },
                    http_totals: b.http_totals.clone(),
                    http_totals_complete: b.http_totals_complete,
                    program_runs: b.program_runs.clone(),
                    ring_buffer: Some(b.ring),
                };
                last_kernel = last_kernel.max(b.kernel_reserve_failures_total);
                last_decode = last_decode.max(b.decode_errors_total);
                match tokio::time::timeout(stall_timeout, tx.send(Ok(msg))).await {
                    Ok(Ok(())) => {}
                    // The stream is gone.
                    Ok(Err(_)) => break,
                    Err(_) => {
                        warn!(
                            subscriber = %name,
                            id = sub.id,
                            stall_timeout_ms = stall_timeout.as_millis(),
                            "Subscriber took no message within the stall timeout; closing its connection."
                        );
                        if let Some(c) = &connection {
                            c.close_stalled();
                        }
                        break;
                    }
                }
            }
            let orphaned = sub.close();
            info!(subscriber = %name, id = sub.id, orphaned, "Subscriber detached.");
        });
        Ok(Response::new(Box::pin(Outbox { rx, hub: Arc::clone(&self.hub) })))
    }

    async fn get_loader_status(
        &self,
        _request: Request<v1::GetLoaderStatusRequest>,
    ) -> Result<Response<v1::GetLoaderStatusResponse>, Status> {
        let i = &self.info;
        Ok(Response::new(v1::GetLoaderStatusResponse {
            loader_version: env!("CARGO_PKG_VERSION").to_owned(),
            schema_version: v1::SCHEMA_VERSION,
            epoch: i.epoch,
            kernel_release: i.kernel_release.clone(),
            btf_available: i.btf_available,
            probes: i.probes.clone(),
            pinned_maps: i.pinned_maps.clone(),
            ring_buffer_bytes: i.ring_buffer_bytes,
            counters: Some(self.counters.to_proto()),
            heartbeat_interval_ms: i.heartbeat.as_millis().try_into().unwrap_or(u32::MAX),
            uninstrumented_tls: self.counters.tls.uninstrumented(),
        }))
    }
}

/// The response stream of one subscriber: the last two messages between its
/// hub queue and the transport. When the stream is dropped (the connection
/// broke), the events still in it are counted as queue drops and reported to
/// the next subscriber, like the ones left in the hub queue. Only what the
/// transport already took (one message being written, the socket buffers) is
/// lost with the connection.
struct Outbox {
    rx: mpsc::Receiver<Result<v1::StreamEventsResponse, Status>>,
    hub: Arc<Hub>,
}

impl Stream for Outbox {
    type Item = Result<v1::StreamEventsResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.rx.close();
        let (mut events, mut unreported) = (0, 0);
        while let Ok(Ok(msg)) = self.rx.try_recv() {
            events += msg.events.len() as u64;
            unreported += msg.loss.map_or(0, |l| l.subscriber_queue_drops);
        }
        self.hub.orphan(events, unreported);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriber_names_are_cut_and_cannot_forge_log_lines() {
        assert_eq!(subscriber_label("agg-1"), "agg-1");
        assert_eq!(subscriber_label("a\nINFO forged\u{1b}[31m"), "a?INFO forged?[31m");
        assert_eq!(subscriber_label(&"é".repeat(100)).chars().count(), 64);
    }
}
