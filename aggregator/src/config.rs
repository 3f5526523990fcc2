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
    /// Kubernetes attribution: `auto` watches the API server when running in a
    /// cluster (KUBERNETES_SERVICE_HOST set) or given --kubeconfig; `on` requires it;
    /// `off` uses --pods-file or node-level labels.
    #[arg(long, env = "NETTEL_KUBE", value_enum, default_value_t = KubeMode::Auto)]
    pub kube: KubeMode,
    /// Kubeconfig for running outside a cluster (default: in-cluster config).
    #[arg(long, env = "NETTEL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// How long a deleted pod stays resolvable, in seconds (late events).
    #[arg(long, env = "NETTEL_POD_TTL_SECS", default_value_t = 30)]
    pub pod_ttl_secs: u64,
    /// Log output format.
    #[arg(long, env = "NETTEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// Kubernetes attribution mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KubeMode {
    Auto,
    On,
    Off,
}

impl Args {
    /// Whether to watch the API server, after validating the combination of flags.
    pub fn use_kube(&self, in_cluster: bool) -> Result<bool, crate::Error> {
        let kube = match self.kube {
            KubeMode::On => true,
            KubeMode::Off => false,
            KubeMode::Auto => in_cluster || self.kubeconfig.is_some(),
        };
        if kube && self.pods_file.is_some() {
            return Err(crate::Error::Config(
                "--pods-file cannot be combined with Kubernetes attribution; pass --kube=off to use the file"
                    .into(),
            ));
        }
        if !kube && self.kubeconfig.is_some() {
            return Err(crate::Error::Config("--kubeconfig given with --kube=off".into()));
        }
        if !(1..=3600).contains(&self.pod_ttl_secs) {
            return Err(crate::Error::Config(format!(
                "--pod-ttl-secs {} must be between 1 and 3600",
                self.pod_ttl_secs
            )));
        }
        Ok(kube)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("nettel-aggregator").chain(extra.iter().copied())).unwrap()
    }

    #[test]
    fn kube_mode_resolution() {
        assert!(!args(&[]).use_kube(false).unwrap(), "auto outside a cluster");
        assert!(args(&[]).use_kube(true).unwrap(), "auto inside a cluster");
        assert!(args(&["--kubeconfig", "/k"]).use_kube(false).unwrap());
        assert!(args(&["--kube", "on"]).use_kube(false).unwrap());
        assert!(!args(&["--kube", "off", "--pods-file", "/p"]).use_kube(true).unwrap());
        let e = args(&["--pods-file", "/p"]).use_kube(true).unwrap_err().to_string();
        assert!(e.contains("--kube=off"), "{e}");
        assert!(args(&["--kube", "off", "--kubeconfig", "/k"]).use_kube(false).is_err());
        assert!(args(&["--pod-ttl-secs", "0"]).use_kube(false).is_err());
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}
