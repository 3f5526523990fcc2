// SPDX-License-Identifier: Apache-2.0
//! Command-line configuration (every flag also reads a `NETTEL_*` variable).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::Error;

/// nettel's privileged half: loads the BPF probes and streams raw events over a
/// Unix socket to unprivileged aggregators.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Log output format.
    #[arg(long, env = "NETTEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check BTF, kernel version, capabilities, bpffs and tracefs; exit non-zero on any failure.
    Check(CheckArgs),
    /// Load the probes, adopt the pinned ones or attach and pin them, and serve
    /// the event stream. On exit the probes stay attached (pinned), so a
    /// restarted loader loses no event the ring buffer could hold.
    Run(RunArgs),
    /// Detach the probes and remove every link and map the loader pinned under
    /// the pin dir (for uninstalling; a restart needs no cleanup).
    Cleanup(CheckArgs),
}

/// Flags shared by `check` and `cleanup`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// bpffs directory where maps are pinned.
    #[arg(long, env = "NETTEL_PIN_DIR", default_value = "/sys/fs/bpf/nettel")]
    pub pin_dir: PathBuf,
}

/// Flags of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Unix socket the aggregators connect to.
    #[arg(long, env = "NETTEL_LOADER_SOCKET", default_value = "/run/nettel/loader.sock")]
    pub socket: PathBuf,
    /// bpffs directory where maps are pinned.
    #[arg(long, env = "NETTEL_PIN_DIR", default_value = "/sys/fs/bpf/nettel")]
    pub pin_dir: PathBuf,
    /// Group owning the socket (mode 0660); the aggregator's group.
    #[arg(long, env = "NETTEL_SOCKET_GID")]
    pub socket_gid: Option<u32>,
    /// Peer uids allowed to connect (SO_PEERCRED), comma-separated. Root is always allowed.
    #[arg(long, env = "NETTEL_ALLOW_UIDS", value_delimiter = ',', default_value = "10001")]
    pub allow_uid: Vec<u32>,
    /// Peer primary gids allowed to connect, comma-separated (none by default).
    #[arg(long, env = "NETTEL_ALLOW_GIDS", value_delimiter = ',')]
    pub allow_gid: Vec<u32>,
    /// Most simultaneous connections.
    #[arg(long, env = "NETTEL_MAX_CONNECTIONS", default_value_t = 16)]
    pub max_connections: usize,
    /// Milliseconds an admitted peer has to send the HTTP/2 preface and a
    /// complete first request; then its connection is closed and counted.
    #[arg(long, env = "NETTEL_HANDSHAKE_TIMEOUT_MS", default_value_t = 5000)]
    pub handshake_timeout_ms: u64,
    /// Milliseconds a subscriber's stream may take no message (it stopped
    /// reading) before the subscriber is dropped, its connection closed and
    /// counted.
    #[arg(long, env = "NETTEL_STALL_TIMEOUT_MS", default_value_t = 30_000)]
    pub stall_timeout_ms: u64,
    /// Milliseconds a connection may have no request in flight (after its
    /// first) before it is closed and counted; a `StreamEvents` subscription
    /// is in flight for as long as it lasts.
    #[arg(long, env = "NETTEL_IDLE_TIMEOUT_MS", default_value_t = 120_000)]
    pub idle_timeout_ms: u64,
    /// Ring buffer size in bytes: a power of two, at least 4096 (one page).
    /// Unset: the size of the ring already pinned in the pin dir, so that a
    /// loader whose default changed still adopts it, or 4 MiB for a new one
    /// (`pin::DEFAULT_RING_BYTES`). Set: a pinned ring of another size is
    /// refused (it holds unread events).
    #[arg(long, env = "NETTEL_RING_BUFFER_BYTES")]
    pub ring_buffer_bytes: Option<u64>,
    /// Slots of the kernel's HTTP totals table: one per (serving cgroup, local
    /// address, method, status, TLS), 160 bytes each plus two hash entries.
    /// Requests of a key without a slot go to the ring buffer as events and
    /// are counted (`nettel_http_kernel_table_full_total`).
    #[arg(long, env = "NETTEL_HTTP_TABLE_ENTRIES", default_value_t = nettel_bpf::abi::NT_HTTP_TABLE_ENTRIES)]
    pub http_table_entries: u32,
    /// Per-subscriber queue capacity in events; beyond it events are dropped for
    /// that subscriber and counted.
    #[arg(long, env = "NETTEL_SUBSCRIBER_QUEUE_EVENTS", default_value_t = 65536)]
    pub subscriber_queue_events: usize,
    /// Most events per stream message.
    #[arg(long, env = "NETTEL_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,
    /// Idle heartbeat interval in milliseconds.
    #[arg(long, env = "NETTEL_HEARTBEAT_MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Benchmarks only: also attach the benchmark probe, which emits one
    /// synthetic event per getppid() and one retransmit-shaped event per
    /// getpgrp() of this process id. Never set in production.
    #[arg(long, env = "NETTEL_BENCH_TGID")]
    pub bench_tgid: Option<u32>,
    /// Hooks of the HTTP probe: `sendmsg` (sock_recv_length/tcp_sendmsg_locked,
    /// kernel >= 6.16: only socket I/O pays, one user read per response),
    /// `socket` (sock_recv_length/sock_send_length, kernel >= 6.3), `syscall`
    /// (sys_exit: every syscall exit pays, kernels >= 5.8), `auto` (the first of
    /// these the kernel has), or `off` (no HTTP probe: TCP retransmits only).
    #[arg(long, env = "NETTEL_HTTP_HOOK", value_enum, default_value_t = HttpHook::Auto)]
    pub http_hook: HttpHook,
    /// HTTPS through OpenSSL uprobes: `on` starts the TLS attacher thread,
    /// which keeps CAP_SYS_ADMIN and CAP_SYS_PTRACE (see `tls`).
    #[arg(long, env = "NETTEL_TLS", value_enum, default_value_t = Toggle::On)]
    pub tls: Toggle,
    /// Interval between the TLS attacher's scans of /proc, in milliseconds
    /// (how soon a new libssl or OpenSSL executable is instrumented).
    #[arg(long, env = "NETTEL_TLS_SCAN_MS", default_value_t = 2000)]
    pub tls_scan_ms: u64,
    /// Skip nettel's own capability checks (the preflight's CAP_BPF/CAP_PERFMON
    /// check and, with `--tls on`, the TLS attacher's) and let the kernel
    /// decide: a missing capability then fails the first kernel operation that
    /// needs it, and the error names that operation and the capability. For
    /// diagnosing capability issues and for the minimality test
    /// (tests/tests/capabilities.rs); off by default.
    #[arg(long, env = "NETTEL_SKIP_CAPABILITY_CHECK")]
    pub skip_capability_check: bool,
}

/// A feature switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Toggle {
    On,
    Off,
}

/// Hooks of the HTTP probe (see `probe::http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpHook {
    Auto,
    Sendmsg,
    Socket,
    Syscall,
    Off,
}

/// Validated `run` settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `--ring-buffer-bytes`, if set (see `pin::MapSizes::ring_bytes`).
    pub ring_bytes: Option<u32>,
    pub http_table_entries: u32,
    pub queue_batches: usize,
    pub max_batch: usize,
}

impl RunConfig {
    /// The map sizes set at run time.
    pub fn map_sizes(&self) -> crate::pin::MapSizes {
        crate::pin::MapSizes { ring_bytes: self.ring_bytes, http_table_entries: self.http_table_entries }
    }
}

impl RunArgs {
    /// Validates every flag, reporting all problems at once.
    pub fn validate(&self) -> Result<RunConfig, Error> {
        let mut problems = Vec::new();
        let ring_bytes = match self.ring_buffer_bytes {
            Some(r) if crate::pin::valid_ring_bytes(r) => Some(r as u32),
            Some(r) => {
                problems.push(format!(
                    "--ring-buffer-bytes {r} must be a power of two between 4096 and 1073741824"
                ));
                None
            }
            None => None,
        };
        if !(16..=65536).contains(&self.http_table_entries) {
            problems.push(format!(
                "--http-table-entries {} must be between 16 and 65536",
                self.http_table_entries
            ));
        }
        if !(1..=4096).contains(&self.max_batch) {
            problems.push(format!("--max-batch {} must be between 1 and 4096", self.max_batch));
        }
        if self.subscriber_queue_events < self.max_batch || self.subscriber_queue_events > 1 << 24 {
            problems.push(format!(
                "--subscriber-queue-events {} must be between --max-batch and 16777216",
                self.subscriber_queue_events
            ));
        }
        if !(1..=1024).contains(&self.max_connections) {
            problems.push(format!("--max-connections {} must be between 1 and 1024", self.max_connections));
        }
        if !(10..=60_000).contains(&self.heartbeat_ms) {
            problems.push(format!("--heartbeat-ms {} must be between 10 and 60000", self.heartbeat_ms));
        }
        if !(100..=60_000).contains(&self.handshake_timeout_ms) {
            problems.push(format!(
                "--handshake-timeout-ms {} must be between 100 and 60000",
                self.handshake_timeout_ms
            ));
        }
        if !(1000..=600_000).contains(&self.stall_timeout_ms) {
            problems.push(format!(
                "--stall-timeout-ms {} must be between 1000 and 600000",
                self.stall_timeout_ms
            ));
        }
        if !(1000..=3_600_000).contains(&self.idle_timeout_ms) {
            problems
                .push(format!("--idle-timeout-ms {} must be between 1000 and 3600000", self.idle_timeout_ms));
        }
        if !(100..=600_000).contains(&self.tls_scan_ms) {
            problems.push(format!("--tls-scan-ms {} must be between 100 and 600000", self.tls_scan_ms));
        }
        if !problems.is_empty() {
            return Err(Error::Config(problems.join("; ")));
        }
        Ok(RunConfig {
            ring_bytes,
            http_table_entries: self.http_table_entries,
            queue_batches: self.subscriber_queue_events.div_ceil(self.max_batch),
            max_batch: self.max_batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> RunArgs {
        let mut v = vec!["nettel-loader", "run"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Run(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse(&[]).validate().unwrap();
        assert_eq!(c.ring_bytes, None, "unset: the pinned ring's size or pin::DEFAULT_RING_BYTES");
        assert_eq!(c.queue_batches, 256);
    }

    #[test]
    fn the_capability_checks_run_unless_skipped() {
        assert!(!parse(&[]).skip_capability_check);
        assert!(parse(&["--skip-capability-check"]).skip_capability_check);
    }

    #[test]
    fn rejects_bad_ring_sizes_naming_the_flag() {
        for bad in ["1000", "3000000", "2048", "2147483648"] {
            let e = parse(&["--ring-buffer-bytes", bad]).validate().unwrap_err().to_string();
            assert!(e.contains("--ring-buffer-bytes"), "{e}");
        }
        assert_eq!(parse(&["--ring-buffer-bytes", "65536"]).validate().unwrap().ring_bytes, Some(65536));
    }

    #[test]
    fn rejects_http_tables_too_small_or_too_large() {
        for bad in ["0", "15", "65537"] {
            let e = parse(&["--http-table-entries", bad]).validate().unwrap_err().to_string();
            assert!(e.contains("--http-table-entries"), "{e}");
        }
        assert_eq!(parse(&["--http-table-entries", "16"]).validate().unwrap().http_table_entries, 16);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let e = parse(&["--max-batch", "0", "--max-connections", "0"]).validate().unwrap_err().to_string();
        assert!(e.contains("--max-batch") && e.contains("--max-connections"), "{e}");
    }

    #[test]
    fn socket_timeouts_are_bounded() {
        let e =
            parse(&["--handshake-timeout-ms", "0", "--stall-timeout-ms", "999", "--idle-timeout-ms", "999"])
                .validate()
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("--handshake-timeout-ms 0")
                && e.contains("--stall-timeout-ms 999")
                && e.contains("--idle-timeout-ms 999"),
            "{e}"
        );
        assert!(parse(&[
            "--handshake-timeout-ms",
            "100",
            "--stall-timeout-ms",
            "1000",
            "--idle-timeout-ms",
            "1000"
        ])
        .validate()
        .is_ok());
    }
}
