// SPDX-License-Identifier: Apache-2.0
//! `nettel-aggregator`: the unprivileged half of nettel. Consumes the loader's
//! event stream ([`source`]), attributes and counts events ([`transform`]) and
//! serves Prometheus metrics ([`sink`]). It never sees kernel structs: its only
//! contract with the loader is `nettel-proto`.
#![forbid(unsafe_code)]

pub mod config;
mod error;
pub mod kube;
pub mod metrics;
pub mod sink;
pub mod source;
pub mod transform;

pub use error::Error;
