// SPDX-License-Identifier: Apache-2.0
//! The gRPC client of the loader's Unix socket: connects, consumes the event
//! stream, and reconnects with jittered exponential backoff forever.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use nettel_proto::{codec::SliceCodec, v1};
use tokio::net::UnixStream;
use tonic::{
    codegen::GrpcMethod,
    transport::{Endpoint, Uri},
    IntoRequest,
};
use tracing::{error, info, warn};

use super::{message::StreamMessage, tracker::Tracker};
use crate::{
    metrics::{Metrics, ReasonLabels},
    transform::aggregate::Aggregator,
    Error,
};

/// Largest stream message accepted from the loader.
pub const MAX_DECODE_BYTES: usize = 8 * 1024 * 1024;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct LoaderSource {
    pub socket: PathBuf,
    pub subscriber_name: String,
    pub reconnect_max: Duration,
}

impl LoaderSource {
    /// Consumes the loader's stream into `agg` until the process ends.
    pub async fn run(self, agg: Arc<Mutex<Aggregator>>, metrics: Arc<Metrics>) {
        let mut tracker = Tracker::default();
        let mut backoff = Duration::from_millis(100);
        loop {
            let reason = match self.stream_once(&agg, &mut tracker, &metrics, &mut backoff).await {
                Ok(()) => "ended",
                Err(Error::Connect { source, .. }) => {
                    warn!(socket = %self.socket.display(), error = %source, "Cannot reach the loader; retrying.");
                    "connect_failed"
                }
                Err(e @ Error::SchemaTooNew { got, want }) => {
                    // Nothing of this stream was counted; retry slowly in case
                    // the loader is rolled back. /readyz stays not ready.
                    error!(loader_schema = got, aggregator_schema = want, error = %e, "Refused the loader's event stream.");
                    backoff = self.reconnect_max;
                    "schema_too_new"
                }
                Err(e) => {
                    warn!(error = %e, "Event stream failed; reconnecting.");
                    "stream_error"
                }
            };
            metrics.loader_connected.set(0);
            metrics.stream_disconnects.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
            // Full jitter: sleep uniformly in [backoff/2, backoff].
            let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
            tokio::time::sleep(jittered).await;
            backoff = (backoff * 2).min(self.reconnect_max);
        }
    }

    async fn stream_once(
        &self,
        agg: &Mutex<Aggregator>,
        tracker: &mut Tracker,
        metrics: &Metrics,
        backoff: &mut Duration,
    ) -> Result<(), Error> {
        let path = self.socket.clone();
        // The URI is ignored: every connection goes to the Unix socket.
        let channel = Endpoint::from_static("http://loader.invalid")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|source| Error::Connect { path: self.socket.clone(), source })?;
        // The generated client's call, decoding into the aggregator's own
        // event type (source::message) rather than `v1::Event`.
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_DECODE_BYTES);
        grpc.ready().await.map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
        let mut request =
            v1::StreamEventsRequest { subscriber_name: self.subscriber_name.clone() }.into_request();
        request
            .extensions_mut()
            .insert(GrpcMethod::new("nettel.telemetry.v1.TelemetryService", "StreamEvents"));
        let mut stream = grpc
            .server_streaming(
                request,
                v1::STREAM_EVENTS_PATH.parse().expect("a valid path"),
                SliceCodec::<v1::StreamEventsRequest, StreamMessage>::default(),
            )
            .await?
            .into_inner();
        tracker.stream_started();
        let mut first = true;
        while let Some(msg) = stream.message().await? {
            tracker.observe(&msg, metrics)?;
            if first {
                // Only a stream that delivered a valid message counts as connected.
                first = false;
                *backoff = Duration::from_millis(100);
                metrics.stream_connects.inc();
                metrics.loader_connected.set(1);
                info!(socket = %self.socket.display(), epoch = format_args!("{:016x}", msg.head.epoch), "Connected to the loader.");
            }
            let mut agg = agg.lock().unwrap_or_else(|e| e.into_inner());
            agg.apply_batch(&msg.events, Instant::now());
            let head = &msg.head;
            if !head.http_totals.is_empty() || head.http_totals_complete {
                agg.apply_http_totals(
                    &head.http_totals,
                    &head.http_bucket_bounds_ns,
                    head.http_totals_complete,
                    Instant::now(),
                );
            }
        }
        Ok(())
    }
}
