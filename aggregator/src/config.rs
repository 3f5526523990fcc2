// SPDX-License-Identifier: Apache-2.0
//! Command-line configuration (every flag also reads a `NETTEL_*` variable).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, ValueEnum};

use crate::transform::limit_cardinality::SeriesLimits;

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
    /// Most series of all cardinality-limited metrics together, overflow
    /// series included (see README, "Cardinality budget").
    #[arg(long, env = "NETTEL_MAX_SERIES", default_value_t = 50_000)]
    pub max_series: usize,
    /// Most series of one limited metric, its overflow series included; past it
    /// new label sets are counted into the metric's `__overflow__` series.
    #[arg(long, env = "NETTEL_MAX_SERIES_PER_METRIC", default_value_t = 20_000)]
    pub max_series_per_metric: usize,
    /// A series not counted into for this many seconds is removed from /metrics
    /// (a counter that comes back starts from 0: a counter reset).
    #[arg(long, env = "NETTEL_SERIES_TTL_SECS", default_value_t = 600)]
    pub series_ttl_secs: u64,
    /// Log output format.
    #[arg(long, env = "NETTEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// Bounds of the series flags.
pub const MAX_SERIES_RANGE: std::ops::RangeInclusive<usize> = 10..=10_000_000;
/// Bounds of `--series-ttl-secs` (10 s to 7 days).
pub const SERIES_TTL_RANGE: std::ops::RangeInclusive<u64> = 10..=604_800;

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

    /// The validated series limits, reporting every problem at once.
    pub fn series_limits(&self) -> Result<SeriesLimits, crate::Error> {
        let mut problems = Vec::new();
        let (lo, hi) = (MAX_SERIES_RANGE.start(), MAX_SERIES_RANGE.end());
        if !MAX_SERIES_RANGE.contains(&self.max_series) {
            problems.push(format!("--max-series {} must be between {lo} and {hi}", self.max_series));
        }
        if !(2..=self.max_series).contains(&self.max_series_per_metric) {
            problems.push(format!(
                "--max-series-per-metric {} must be between 2 and --max-series ({})",
                self.max_series_per_metric, self.max_series
            ));
        }
        if !SERIES_TTL_RANGE.contains(&self.series_ttl_secs) {
            let (lo, hi) = (SERIES_TTL_RANGE.start(), SERIES_TTL_RANGE.end());
            problems
                .push(format!("--series-ttl-secs {} must be between {lo} and {hi}", self.series_ttl_secs));
        }
        if !problems.is_empty() {
            return Err(crate::Error::Config(problems.join("; ")));
        }
        Ok(SeriesLimits {
            max_series: self.max_series,
            max_per_metric: self.max_series_per_metric,
            ttl: std::time::Duration::from_secs(self.series_ttl_secs),
        })
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

    #[test]
    fn series_limits_are_validated_naming_every_flag() {
        let d = args(&[]).series_limits().unwrap();
        assert_eq!(d, SeriesLimits::default());
        let l = args(&["--max-series", "100", "--max-series-per-metric", "40", "--series-ttl-secs", "60"])
            .series_limits()
            .unwrap();
        assert_eq!((l.max_series, l.max_per_metric, l.ttl.as_secs()), (100, 40, 60));
        let e = args(&["--max-series", "5", "--max-series-per-metric", "1", "--series-ttl-secs", "0"])
            .series_limits()
            .unwrap_err()
            .to_string();
        for flag in ["--max-series 5", "--max-series-per-metric 1", "--series-ttl-secs 0"] {
            assert!(e.contains(flag), "{e}");
        }
        let e = args(&["--max-series", "100", "--max-series-per-metric", "200"])
            .series_limits()
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be between 2 and --max-series (100)"), "{e}");
        assert!(Args::try_parse_from(["a", "--max-series", "-1"]).is_err());
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}
