// SPDX-License-Identifier: Apache-2.0
//! The gRPC contract between `nettel-loader` and any aggregator.
//!
//! Versioned by package: `nettel.telemetry.v1` lives in [`v1`]. See the
//! comments in `telemetry.proto` for the compatibility rules and the sequence
//! and loss-accounting invariants a consumer can rely on.
#![forbid(unsafe_code)]

pub mod codec;

/// The type of the messages' `bytes` fields (addresses, trace ids).
pub use prost::bytes::Bytes;

/// `nettel.telemetry.v1`.
pub mod v1 {
    #![allow(
        missing_docs,
        missing_debug_implementations,
        clippy::all,
        clippy::allow_attributes_without_reason,
        reason = "generated code"
    )]
    tonic::include_proto!("nettel.telemetry.v1");

    /// The event schema version this crate's `v1` types describe. Bump when a
    /// change would make an older consumer misread events.
    ///
    /// 2: HTTP requests come as kernel running totals (`http_totals`), and an
    /// `HttpRequest` event with `exemplar_only` must not be counted.
    pub const SCHEMA_VERSION: u32 = 2;

    /// The HTTP/2 path of `TelemetryService.StreamEvents`, for a client or
    /// server that calls it through tonic's `Grpc` with its own message types
    /// (the loader sends pre-encoded events, the aggregator decodes its own).
    pub const STREAM_EVENTS_PATH: &str = "/nettel.telemetry.v1.TelemetryService/StreamEvents";
}
