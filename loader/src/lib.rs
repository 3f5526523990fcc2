// SPDX-License-Identifier: Apache-2.0
//! `nettel-loader`: the only privileged process of nettel. It checks the
//! node, loads and attaches the probes, pins their maps, drains the ring
//! buffer and serves the events read-only over a Unix socket.
// `unsafe` is allowed only in `sys`, one justified call per safe wrapper.
#![deny(unsafe_code)]

pub mod caps;
pub mod config;
pub mod conn;
pub mod counters;
mod error;
pub mod hub;
pub mod pin;
pub mod preflight;
pub mod probe;
pub mod server;
pub mod socket;
pub mod source;
#[allow(unsafe_code, reason = "the one place unsafe system calls are wrapped")]
pub mod sys;
pub mod tls;

pub use error::Error;
