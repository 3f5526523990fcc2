/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps shared by every nettel probe: the event ring buffer, the per-CPU
 * statistics array and the loader's cursor. All are pinned by name under the
 * loader's pin dir, so they outlive a loader restart.
 */
#ifndef __NETTEL_MAPS_H
#define __NETTEL_MAPS_H

#include "nettel/abi.h"

/*
 * Ring buffer for every event kind. max_entries is a placeholder: the loader
 * sets the real size (a power-of-two multiple of the page size) at load time.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NT_RINGBUF_DEFAULT_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_events SEC(".maps");

/* Per-CPU counters indexed by enum nt_stat; summed by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NT_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_stats SEC(".maps");

/* The loader's cursor (struct nt_cursor); no program reads or writes it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_cursor);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_cursor SEC(".maps");

/**
 * nt_stat_inc() - add one to a per-CPU statistics slot
 * @idx: enum nt_stat index
 *
 * Per-CPU slots need no atomics: a BPF program runs with migration disabled.
 */
static __always_inline void nt_stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&nt_stats, &idx);

	if (v)
		*v += 1;
}

/**
 * nt_reserve() - reserve a ring-buffer record, counting failures
 * @size: record size in bytes
 *
 * Return: the record, or NULL after counting NT_STAT_RESERVE_FAILED. The
 * ring buffer gives userspace no drop signal, so this counter is the only
 * record of kernel-side loss.
 */
static __always_inline void *nt_reserve(__u32 size)
{
	void *rec = bpf_ringbuf_reserve(&nt_events, size, 0);

	if (!rec)
		nt_stat_inc(NT_STAT_RESERVE_FAILED);
	return rec;
}

/* Unread bytes between consumer wakeups: an eighth of the ring, at most
 * 32 KiB (a power of two either way, as the ring size is). */
#define NT_WAKEUP_MAX_BYTES (32 * 1024)

/**
 * nt_submit() - commit a reserved record and count it
 * @rec: record returned by nt_reserve(), its header filled in
 *
 * Wakeups are batched: a submit wakes the consumer only when its record
 * takes the unread data across a multiple of the wakeup mark
 * (NT_WAKEUP_MAX_BYTES or an eighth of the ring, whichever is less), so a
 * busy ring wakes the loader once per mark's worth of records, and a quiet
 * one not at all: the loader's periodic drain (100 ms) collects those. A
 * wakeup costs the traced workload an inter-processor interrupt (a VM exit
 * on virtual machines) and a context switch of the loader. Waking at every
 * submit above the mark instead would send one per event while the loader
 * is on its way. A crossing missed because another CPU reserved in between
 * is made up at the next multiple, or by the periodic drain.
 */
static __always_inline void nt_submit(void *rec)
{
	/* Ring bytes of this record: 8-byte header, length rounded up to 8. */
	__u64 bytes = ((((struct nt_event_hdr *)rec)->len + 7) & ~7ULL) + 8;
	__u64 avail = bpf_ringbuf_query(&nt_events, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&nt_events, BPF_RB_RING_SIZE);
	__u64 mark = size / 8 < NT_WAKEUP_MAX_BYTES ? size / 8 : NT_WAKEUP_MAX_BYTES;
	__u64 before = avail > bytes ? avail - bytes : 0;
	int wake = mark && (avail & ~(mark - 1)) != (before & ~(mark - 1));

	bpf_ringbuf_submit(rec, wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	nt_stat_inc(NT_STAT_SUBMITTED);
}

static __always_inline void nt_hdr_init(struct nt_event_hdr *hdr, __u8 kind, __u32 len)
{
	hdr->abi_version = NT_ABI_VERSION;
	hdr->kind = kind;
	hdr->_pad0 = 0;
	hdr->len = len;
	hdr->ts_boot_ns = bpf_ktime_get_boot_ns();
}

#endif /* __NETTEL_MAPS_H */
