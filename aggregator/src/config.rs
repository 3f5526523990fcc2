// SPDX-License-Identifier: Apache-2.0
//! Command-line configuration (every flag also reads a `NETTEL_*` variable).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, ValueEnum};

/// nettel's unprivileged half: consumes the loader's event stream, attributes
/// addresses to pods and serves Prometheus metrics.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Args {
    /// The loader's Unix socket.
    #[arg(long, env = "NETTEL_LOADER_SOCKET", default_value = "/run/nettel/loader.sock")]
    pub loader_socket: PathBuf,
    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, env = "NETTEL_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,
    /// Static IP -> pod/namespace/service map (JSON, see README). Without it and
    /// without Kubernetes, every address gets node-level (empty) pod labels.
    #[arg(long, env = "NETTEL_PODS_FILE")]
    pub pods_file: Option<PathBuf>,
    /// Destination ports at or above this are folded into `dest_port="ephemeral"`.
    #[arg(long, env = "NETTEL_EPHEMERAL_PORT_FLOOR", default_value_t = 32768)]
    pub ephemeral_port_floor: u16,
    /// Allow running as uid 0 (not recommended; the aggregator needs no privileges).
    #[arg(long, env = "NETTEL_ALLOW_ROOT")]
    pub allow_root: bool,
    /// Name sent to the loader to identify this subscriber in its logs.
    #[arg(long, env = "NETTEL_SUBSCRIBER_NAME", default_value = "nettel-aggregator")]
    pub subscriber_name: String,
    /// Longest wait between reconnect attempts, in milliseconds.
    #[arg(long, env = "NETTEL_RECONNECT_MAX_MS", default_value_t = 5000)]
    pub reconnect_max_ms: u64,
    /// Log output format.
    #[arg(long, env = "NETTEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}
