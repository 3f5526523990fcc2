// SPDX-License-Identifier: Apache-2.0
//! A test Kubernetes API server for nettel's tests.
//!
//! [`TestApiServer`] serves Pods (`/api/v1/pods`) and `discovery.k8s.io/v1`
//! EndpointSlices over HTTPS on `127.0.0.1`, speaking the real LIST/WATCH
//! protocol (resourceVersions, BOOKMARK events, 410 `Expired` on compacted
//! history) so that the real kube-rs client and `kube::runtime::watcher` can be
//! tested against it. Tests mutate the store directly and inject faults
//! (failures, delays, outages, dropped watches), then read request counters.
//!
//! ```no_run
//! # async fn demo() {
//! use nettel_test_apiserver::{pod_json, TestApiServer};
//! let server = TestApiServer::start().await;
//! server.create(pod_json("web-0", "default", "", &["10.1.0.7"], "Running", &[], false)).unwrap();
//! let client = server.client().await;
//! # let _ = client;
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod error;
mod faults;
mod http;
mod objects;
mod server;
mod store;
mod tls;
mod watch;

pub use api::{Options, TestApiServer};
pub use error::Error;
pub use faults::{KindStats, RequestRecord, Stats};
pub use objects::{endpoint_slice_json, pod_json, reason_for, status_json, SliceEndpoint};
pub use store::Kind;
pub use tls::install_crypto_provider;
