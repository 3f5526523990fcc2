// SPDX-License-Identifier: Apache-2.0
//! nettel's BPF side as seen from Rust: the compiled probe objects, the ABI
//! types generated from `include/nettel/abi.h`, and a checked decoder for
//! ring-buffer records. Only the loader depends on this crate; the aggregator
//! sees the proto contract, never kernel structs.

pub mod abi;
mod decode;
mod error;

pub use decode::{decode, Record, AF_INET, AF_INET6};
pub use error::DecodeError;

/// The `tcp_retransmit` probe object (tracepoints `tcp/tcp_retransmit_skb` and
/// `tcp/tcp_retransmit_synack`). Empty when built with `NETTEL_BPF_STUB=1`.
pub static TCP_RETRANSMIT_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcp_retransmit.bpf.o"));

/// The `http` probe object: sendmsg hooks (`tp_btf/sock_recv_length`,
/// `tcp_sendmsg_locked`, `inet_sock_set_state`, and `cgroup_rmdir` with every
/// set), socket hooks (the same with
/// `sock_send_length` for sends) or syscall hooks
/// (`tp_btf/sys_exit`, `syscalls/sys_enter_close`), and the HTTPS uprobes on
/// OpenSSL's `SSL_read`/`SSL_write` family (`probes/http_tls.h`).
pub static HTTP_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/http.bpf.o"));

/// The benchmark probe object (tracepoint `syscalls/sys_enter_getppid`,
/// filtered to one tgid). Loaded only by `nettel-loader run --bench-tgid`.
pub static BENCH_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench.bpf.o"));

/// The benchmark floor object: programs that return at once on the sendmsg
/// hooks' tracepoints (`probes/floor.bpf.c`). Loaded only by
/// `nettel-http-bench --hooks floor`.
pub static FLOOR_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor.bpf.o"));

/// Names shared with the C side. Keep in step with `lib/maps.h` and the
/// `SEC()` function names in `probes/`.
pub mod names {
    /// Ring buffer map (`lib/maps.h`).
    pub const EVENTS_MAP: &str = "nt_events";
    /// Per-CPU statistics map (`lib/maps.h`).
    pub const STATS_MAP: &str = "nt_stats";
    /// Program on `tcp/tcp_retransmit_skb`.
    pub const PROG_TCP_RTX: &str = "nt_tcp_rtx";
    /// Program on `tcp/tcp_retransmit_synack`.
    pub const PROG_TCP_RTX_SYNACK: &str = "nt_tcp_rtx_syn";
    /// HTTP program on `tp_btf/sys_exit` (syscall hooks).
    pub const PROG_HTTP_EXIT: &str = "nt_http_exit";
    /// HTTP program on `tp_btf/sock_recv_length` (socket hooks).
    pub const PROG_HTTP_RECV: &str = "nt_http_recv";
    /// HTTP program on `tp_btf/sock_send_length` (socket hooks).
    pub const PROG_HTTP_SEND: &str = "nt_http_send";
    /// HTTP program on `tp_btf/tcp_sendmsg_locked` (sendmsg hooks).
    pub const PROG_HTTP_SENDMSG: &str = "nt_http_sendmsg";
    /// HTTP program on `tp_btf/inet_sock_set_state` (socket hooks).
    pub const PROG_HTTP_STATE: &str = "nt_http_state";
    /// HTTP program on `tp_btf/cgroup_rmdir`: frees a removed cgroup's slots
    /// (every hook set).
    pub const PROG_HTTP_RMDIR: &str = "nt_http_rmdir";
    /// HTTP program on `syscalls/sys_enter_close`.
    pub const PROG_HTTP_CLOSE: &str = "nt_http_close";
    /// HTTPS uprobe on `SSL_read` and `SSL_write` (`probes/http_tls.h`).
    pub const PROG_TLS_ENT: &str = "nt_tls_ent";
    /// HTTPS uprobe on `SSL_read_ex` and `SSL_write_ex`.
    pub const PROG_TLS_ENTX: &str = "nt_tls_entx";
    /// HTTPS uprobe on OpenSSL >= 3.2's `ssl_write_internal` (byte count
    /// through its fifth argument).
    pub const PROG_TLS_ENTX5: &str = "nt_tls_entx5";
    /// HTTPS uretprobe on `SSL_read` and `SSL_read_ex`.
    pub const PROG_TLS_RD_RET: &str = "nt_tls_rd_ret";
    /// HTTPS uretprobe on `SSL_write` and `SSL_write_ex`.
    pub const PROG_TLS_WR_RET: &str = "nt_tls_wr_ret";
    /// Benchmark program on `syscalls/sys_enter_getppid` (synthetic events).
    pub const PROG_BENCH: &str = "nt_bench";
    /// Benchmark program on `syscalls/sys_enter_getpgrp` (retransmit-shaped events).
    pub const PROG_BENCH_RTX: &str = "nt_bench_rtx";
    /// The loader's cursor (`struct nt_cursor`, `lib/maps.h`).
    pub const CURSOR_MAP: &str = "nt_cursor";
    /// Array holding the benchmark's target tgid (`probes/bench.bpf.c`).
    pub const BENCH_CFG_MAP: &str = "nt_bench_cfg";
    /// Array holding the HTTP probe's `NT_HTTP_CFG_*` flags (`probes/http_tls.h`).
    pub const HTTP_CFG_MAP: &str = "nt_http_cfg";
    /// Mmap-able array of HTTP request totals (`struct nt_http_slot`, `abi.h`).
    pub const HTTP_SLOTS_MAP: &str = "nt_http_slots";
    /// Hash of HTTP keys to their slot.
    pub const HTTP_INDEX_MAP: &str = "nt_http_index";
    /// Hash of the claimed slots.
    pub const HTTP_CLAIMS_MAP: &str = "nt_http_claims";
    /// Where the next slot claim starts.
    pub const HTTP_HINT_MAP: &str = "nt_http_hint";
    /// The maps that together make the HTTP totals table: replacing one
    /// alone would leave the others pointing at slots that are gone.
    pub const HTTP_TABLE_MAPS: [&str; 4] = [HTTP_SLOTS_MAP, HTTP_INDEX_MAP, HTTP_CLAIMS_MAP, HTTP_HINT_MAP];
    /// LRU hash of HTTP connection state (`struct nt_http_conn`), which
    /// caches each connection's last slot.
    pub const HTTP_CONNS_MAP: &str = "nt_http_conns";
    /// The same state in socket storage, for the socket hooks.
    pub const HTTP_SK_CONNS_MAP: &str = "nt_http_sk_conns";
    /// The HTTP table's maps with one entry per slot (`--http-table-entries`).
    pub const HTTP_TABLE_SIZED_MAPS: [&str; 3] = [HTTP_SLOTS_MAP, HTTP_INDEX_MAP, HTTP_CLAIMS_MAP];
}

/// Upper bounds (ns) of the HTTP duration buckets of `struct nt_http_totals`,
/// the last bucket being `+Inf`: `NT_HTTP_BOUNDS_NS_LIST` of `abi.h` (a unit
/// test keeps the two equal; bindgen does not translate list macros).
pub const HTTP_BOUNDS_NS: [u64; abi::NT_HTTP_BUCKETS as usize - 1] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

#[cfg(test)]
mod tests;
