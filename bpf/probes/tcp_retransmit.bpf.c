// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * TCP retransmits: one record per retransmitted skb and per retransmitted
 * SYN-ACK.
 *
 * Attach points: tp_btf tcp_retransmit_skb (data, incl. SYN and tail-loss
 * probes) and tp_btf tcp_retransmit_synack: the tracepoints' arguments as
 * BTF-typed pointers, with no perf event and no trace buffer. A BTF
 * tracepoint has its own per-program recursion guard, so it is not skipped
 * while another task on its CPU runs a bpf() map syscall (a classic
 * tracepoint program is: bpf_prog_active), and attaching it needs no
 * perf_event_open.
 * Kernel floor: 5.8 (ring buffer, BTF for CO-RE; tp_btf since 5.5).
 *
 * One skb can carry several segments (TCP always builds GSO skbs), and the
 * kernel's TcpRetransSegs counter adds tcp_skb_pcount(skb) per retransmit, so
 * each event carries that segment count. Since 6.x the tracepoint also fires
 * for failed attempts (err != 0), which TcpRetransSegs does not count.
 */
#include "vmlinux/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

#include "maps.h"
#include "sock.h"

/* tcp_skb_pcount(skb): TCP_SKB_CB(skb)->tcp_gso_segs, at least 1. */
static __always_inline __u16 nt_skb_pcount(const struct sk_buff *skb)
{
	const struct tcp_skb_cb *cb;
	__u16 segs;

	if (!skb)
		return 1;
	cb = (const void *)skb + bpf_core_field_offset(struct sk_buff, cb);
	segs = BPF_CORE_READ(cb, tcp_gso_segs);
	return segs ? segs : 1;
}

static __always_inline int nt_emit(const struct sock_common *skc, __u8 rtx_kind, __s32 err,
				   __u16 segs)
{
	struct nt_tcp_retransmit_event *ev;

	if (!skc)
		return 0;
	ev = nt_reserve(sizeof(*ev));
	if (!ev)
		return 0;
	__builtin_memset(ev, 0, sizeof(*ev));
	nt_hdr_init(&ev->hdr, NT_EVENT_TCP_RETRANSMIT, sizeof(*ev));
	ev->rtx_kind = rtx_kind;
	ev->err = err;
	ev->segs = segs;
	/* A tp_btf argument: trusted, loaded from directly. */
	nt_load_sock_common(skc, ev);
	nt_submit(ev);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(nt_tcp_rtx, const struct sock *sk, const struct sk_buff *skb)
{
	__s32 err = 0;

	/* The tracepoint's third argument, `int err`, exists exactly when its
	 * event struct has the field (newer kernels); reading ctx[2] without
	 * it is refused by the verifier, and this branch is dead there. */
	if (bpf_core_field_exists(struct trace_event_raw_tcp_retransmit_skb, err))
		err = (__s32)ctx[2];
	return nt_emit(sk ? &sk->__sk_common : 0, NT_RTX_DATA, err, nt_skb_pcount(skb));
}

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(nt_tcp_rtx_syn, const struct sock *sk, const struct request_sock *req)
{
	/* The request socket carries the embryonic connection's 4-tuple. */
	return nt_emit(req ? &req->__req_common : 0, NT_RTX_SYNACK, 0, 1);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
