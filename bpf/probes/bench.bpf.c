// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark event source: one synthetic event per getppid() of one process.
 *
 * Attach point: tracepoint syscalls/sys_enter_getppid. Loaded only by
 * `nettel-loader run --bench-tgid PID`, never in production. The filter
 * makes every other process pay one array lookup and a comparison. Shares the pinned ring buffer
 * and statistics map with the product probes, so it exercises exactly the
 * production pipeline.
 */
#include "vmlinux/vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "maps.h"

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

SEC("tracepoint/syscalls/sys_enter_getppid")
int nt_bench(void *ctx)
{
	struct nt_synthetic_event *ev;
	__u32 zero = 0;
	__u32 *tgid;
	__u64 *seq;

	tgid = bpf_map_lookup_elem(&nt_bench_cfg, &zero);
	if (!tgid || (bpf_get_current_pid_tgid() >> 32) != *tgid)
		return 0;
	ev = nt_reserve(sizeof(*ev));
	if (!ev)
		return 0;
	nt_hdr_init(&ev->hdr, NT_EVENT_SYNTHETIC, sizeof(*ev));
	seq = bpf_map_lookup_elem(&nt_bench_seq, &zero);
	ev->seq = seq ? ++*seq : 0;
	__builtin_memset(ev->_pad, 0, sizeof(ev->_pad));
	nt_submit(ev);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
