/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel/user ABI of nettel: every record the probes write into the ring
 * buffer and every index of the statistics map. This is the ONLY header shared
 * with Rust; `bpf/build.rs` runs bindgen over it (with layout tests) to produce
 * `nettel_bpf::abi`, so the two sides cannot drift.
 *
 * Rules: fixed-width types only, explicit padding, append-only enums, and a
 * bump of NT_ABI_VERSION on any layout change.
 */
#ifndef __NETTEL_ABI_H
#define __NETTEL_ABI_H

#define NT_ABI_VERSION 1

/* Default ring buffer size; the loader overrides it at load time. */
#define NT_RINGBUF_DEFAULT_BYTES (1 << 20)

/* Values for nt_event_hdr.kind. Never renumber; append only. */
enum nt_event_kind {
	NT_EVENT_UNSPEC = 0,
	NT_EVENT_TCP_RETRANSMIT = 1,
	NT_EVENT_SYNTHETIC = 2, /* benchmark probe only (probes/bench.bpf.c) */
	NT_EVENT_HTTP = 3,      /* probes/http.bpf.c */
};

/* Values for nt_http_event.method. Never renumber. */
enum nt_http_method {
	NT_HTTP_OTHER = 0,
	NT_HTTP_GET = 1,
	NT_HTTP_POST = 2,
	NT_HTTP_PUT = 3,
	NT_HTTP_DELETE = 4,
	NT_HTTP_HEAD = 5,
	NT_HTTP_PATCH = 6,
	NT_HTTP_OPTIONS = 7,
	NT_HTTP_CONNECT = 8,
	NT_HTTP_TRACE = 9,
};

/* nt_http_event.flags */
#define NT_HTTP_F_TRACE 1 /* trace_id holds a W3C traceparent trace id */
#define NT_HTTP_F_TLS 2   /* seen through the OpenSSL uprobes (HTTPS) */
#define NT_HTTP_F_COUNTED 4 /* already counted in nt_http_slots: the event is its exemplar only */

/* nt_http_cfg[0], written by the loader at every start (probes/http_tls.h). */
#define NT_HTTP_CFG_TLS 1 /* the OpenSSL uprobes may run: socket hooks track SSL threads */

/* Values for nt_tcp_retransmit_event.rtx_kind. Never renumber. */
enum nt_retransmit_kind {
	NT_RTX_UNSPEC = 0,
	NT_RTX_DATA = 1,   /* tracepoint tcp/tcp_retransmit_skb */
	NT_RTX_SYNACK = 2, /* tracepoint tcp/tcp_retransmit_synack */
};

/* Indices of the per-CPU statistics array `nt_stats`. Never renumber. */
enum nt_stat {
	NT_STAT_SUBMITTED = 0,       /* records committed to the ring buffer */
	NT_STAT_RESERVE_FAILED = 1,  /* bpf_ringbuf_reserve() returned NULL */
	NT_STAT_HTTP_UNMATCHED = 2,  /* HTTP response with no pending request */
	NT_STAT_HTTP_CLOSED = 3,     /* connection closed with requests pending */
	NT_STAT_HTTP_PIPELINE_FULL = 4, /* request dropped: too many pipelined */
	NT_STAT_HTTP_CONN_FULL = 5,  /* request dropped: connection map full */
	NT_STAT_TLS_NO_SOCK = 6,     /* SSL plaintext whose TCP connection is unknown */
	NT_STAT_TLS_CALL_LOST = 7,   /* SSL call return without its entry state */
	NT_STAT_HTTP_TABLE_FULL = 8, /* request sent as an event: no free nt_http_slots slot (not lost) */
	NT_STAT_MAX = 9,             /* array size: a new counter raises it; the loader carries an older, smaller pinned array's counters over (loader/src/pin.rs, GROWABLE) */
};

/*
 * The loader's cursor, one entry of the pinned array `nt_cursor`. Written by
 * the loader only (no program touches it) and kept in bpffs so that a
 * restarted loader continues where the previous one stopped: event sequence
 * numbers stay continuous, and kernel reserve failures that happened while no
 * subscriber was connected are reported to the next one, exactly once.
 */
struct nt_cursor {
	__u64 next_sequence;             /* sequence number of the next event published */
	__u64 reported_reserve_failures; /* NT_STAT_RESERVE_FAILED total already reported */
};

/* Common header of every ring-buffer record. */
struct nt_event_hdr {
	__u16 abi_version; /* NT_ABI_VERSION */
	__u8 kind;         /* enum nt_event_kind */
	__u8 _pad0;
	__u32 len;         /* bytes, including this header */
	__u64 ts_boot_ns;  /* bpf_ktime_get_boot_ns() */
};

/* One retransmitted skb (data) or SYN-ACK, seen from the sending socket. */
struct nt_tcp_retransmit_event {
	struct nt_event_hdr hdr;
	__u8 saddr[16];      /* local address, network byte order; IPv4 in the first 4 bytes */
	__u8 daddr[16];      /* remote address, same encoding */
	__u16 sport;         /* local port, host byte order */
	__u16 dport;         /* remote port, host byte order */
	__u8 family;         /* AF_INET (2) or AF_INET6 (10) of the socket */
	__u8 state;          /* TCP state of the socket (TCP_ESTABLISHED = 1, ...) */
	__u8 rtx_kind;       /* enum nt_retransmit_kind */
	__u8 _pad1;
	__s32 err;           /* kernel's retransmit result where the tracepoint has it, else 0 */
	__u16 segs;          /* TCP segments in the retransmitted skb (tcp_skb_pcount), 1 for SYN-ACK */
	__u16 _pad2;
	__u64 netns_cookie;  /* net->net_cookie of the socket's netns; 0 if unavailable */
};

/*
 * Synthetic event of the benchmark probe: one per getppid() of the benchmark
 * generator. Same size as the retransmit event so throughput figures carry over.
 */
struct nt_synthetic_event {
	struct nt_event_hdr hdr;
	__u64 seq;           /* per-CPU running count, for debugging only */
	__u8 _pad[48];
};

/*
 * One HTTP/1.x request served by a local TCP socket: from the read that
 * carried the request line to the write that carried the status line.
 */
struct nt_http_event {
	struct nt_event_hdr hdr;
	__u8 saddr[16];      /* local (server) address, network byte order */
	__u8 daddr[16];      /* remote (client) address */
	__u16 sport;         /* local port, host byte order */
	__u16 dport;         /* remote port */
	__u8 family;         /* AF_INET or AF_INET6 */
	__u8 method;         /* enum nt_http_method */
	__u16 status;        /* 100..599 */
	__u32 flags;         /* NT_HTTP_F_* */
	__u32 _pad1;
	__u64 duration_ns;   /* request read -> response status line written */
	__u64 cgroup_id;     /* cgroup v2 id of the serving process */
	__u8 trace_id[16];   /* valid with NT_HTTP_F_TRACE */
};

/*
 * HTTP requests counted in the kernel: one slot per (serving cgroup, local
 * address, method, status, TLS) in the pinned, mmap-able array
 * `nt_http_slots`, holding running totals since the slot was claimed
 * (programs only ever add). The loader reads the slots through mmap, with no
 * syscall: a bpf() map read would suspend uprobe and tracepoint programs on
 * its CPU while it runs. A request also goes out as an event when it carries
 * a trace id (with NT_HTTP_F_COUNTED: an exemplar, not counted again) or when
 * no slot is free (without it: counted from the event).
 *
 * A program finds a key's slot in the hash `nt_http_index`; a new key claims
 * a free slot by inserting its index into the hash `nt_http_claims`
 * (BPF_NOEXIST makes the claim atomic), writes the key into it and indexes
 * it. Two CPUs adding the same new key at once may claim two slots for it:
 * a reader sums the slots of a key. A slot whose key family is 0 is free.
 *
 * When a cgroup is removed, its slots are freed (tp_btf/cgroup_rmdir): the
 * index entry goes, the key is zeroed, the generation bumped, the totals
 * zeroed, then the claim deleted, in that order. A reader that reads a key,
 * then the totals, then the key again and finds it unchanged has read totals
 * of that key. cgroup ids are never reused, so a freed key never returns.
 */
#define NT_HTTP_TABLE_ENTRIES 8192 /* the default; the loader sets it (--http-table-entries) */
/* Duration histogram: bucket i counts durations <= NT_HTTP_BOUNDS_NS[i]
 * (ns); the last bucket is +Inf. The same bounds as the aggregator's
 * http_request_duration_seconds (1 ms to 10 s, with 0.05 and 0.1). */
#define NT_HTTP_BUCKETS 14
#define NT_HTTP_BOUNDS_NS_LIST                                                                  \
	1000000ULL, 2500000ULL, 5000000ULL, 10000000ULL, 25000000ULL, 50000000ULL, 100000000ULL, \
		250000000ULL, 500000000ULL, 1000000000ULL, 2500000000ULL, 5000000000ULL,          \
		10000000000ULL

struct nt_http_key {
	__u64 cgroup_id;     /* cgroup v2 id of the serving process */
	__u8 addr[16];       /* local (server) address, network byte order; IPv4 in the first 4 */
	__u8 family;         /* AF_INET or AF_INET6 */
	__u8 method;         /* enum nt_http_method */
	__u16 status;        /* 100..599 */
	__u32 flags;         /* NT_HTTP_F_TLS or 0 */
};

struct nt_http_totals {
	__u64 sum_ns;                    /* sum of durations */
	__u64 buckets[NT_HTTP_BUCKETS];  /* requests per bucket (not cumulative) */
};

/* One element of nt_http_slots: 160 bytes, a multiple of 8, so the mmap'd
 * array has no padding between elements. */
struct nt_http_slot {
	struct nt_http_key key;       /* written when the slot is claimed, zeroed when freed */
	struct nt_http_totals totals; /* atomic adds only; zeroed when freed */
	__u64 generation;             /* bumped when freed: a cached slot index is valid for one */
};

#endif /* __NETTEL_ABI_H */
