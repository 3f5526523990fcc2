// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark event sources of one process: a synthetic event per getppid()
 * (a sequence number the aggregator only counts), and a retransmit-shaped
 * event per getpgrp() (the record the retransmit probe writes, which the
 * loader and aggregator decode, convert and count into
 * node_tcp_retransmits_total like a real one).
 *
 * Attach points: tracepoints syscalls/sys_enter_getppid and
 * syscalls/sys_enter_getpgrp. Loaded only by `nettel-loader run --bench-tgid
 * PID`, never in production. The filter makes every other process pay one
 * array lookup and a comparison. Shares the pinned ring buffer and
 * statistics map with the product probes, so it exercises exactly the
 * production pipeline.
 */
#include "vmlinux/vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "sock.h"

/*
 * Distinct remote endpoints of the retransmit-shaped events: a node with a
 * few hundred troubled peers on NT_BENCH_PORTS service ports (the
 * aggregator's handle cache holds one entry per peer, its series are one per
 * port), well under the default series limit.
 */
#define NT_BENCH_PEERS 256
#define NT_BENCH_PORTS 8
#define NT_BENCH_PORT0 8000

/*
 * The traced tgid, written by the loader into slot 0. A map rather than a
 * load-time constant: the attached program outlives the loader (its link is
 * pinned), and a restarted loader re-targets it without reattaching.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_bench_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_bench_seq SEC(".maps");

/* The next per-CPU sequence number when the current task is the traced
 * process, else 0 (nothing to emit). */
static __always_inline __u64 nt_bench_next(void)
{
	__u32 zero = 0;
	__u32 *tgid;
	__u64 *seq;

	tgid = bpf_map_lookup_elem(&nt_bench_cfg, &zero);
	if (!tgid || (bpf_get_current_pid_tgid() >> 32) != *tgid)
		return 0;
	seq = bpf_map_lookup_elem(&nt_bench_seq, &zero);
	return seq ? ++*seq : 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int nt_bench(void *ctx)
{
	struct nt_synthetic_event *ev;
	__u64 seq = nt_bench_next();

	if (!seq)
		return 0;
	ev = nt_reserve(sizeof(*ev));
	if (!ev)
		return 0;
	nt_hdr_init(&ev->hdr, NT_EVENT_SYNTHETIC, sizeof(*ev));
	ev->seq = seq;
	__builtin_memset(ev->_pad, 0, sizeof(ev->_pad));
	nt_submit(ev);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpgrp")
int nt_bench_rtx(void *ctx)
{
	struct nt_tcp_retransmit_event *ev;
	__u64 seq = nt_bench_next();
	__u32 peer = (__u32)(seq % NT_BENCH_PEERS);

	if (!seq)
		return 0;
	ev = nt_reserve(sizeof(*ev));
	if (!ev)
		return 0;
	__builtin_memset(ev, 0, sizeof(*ev));
	nt_hdr_init(&ev->hdr, NT_EVENT_TCP_RETRANSMIT, sizeof(*ev));
	/* 10.0.0.1:<40000 + peer> -> 10.200.0.<peer>:<8000 + peer % 8>. */
	ev->saddr[0] = 10;
	ev->saddr[3] = 1;
	ev->daddr[0] = 10;
	ev->daddr[1] = 200;
	ev->daddr[3] = peer;
	ev->sport = 40000 + peer;
	ev->dport = NT_BENCH_PORT0 + peer % NT_BENCH_PORTS;
	ev->family = NT_AF_INET;
	ev->state = 1; /* TCP_ESTABLISHED */
	ev->rtx_kind = NT_RTX_DATA;
	ev->segs = 1;
	nt_submit(ev);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
