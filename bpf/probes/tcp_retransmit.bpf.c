// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * TCP retransmits: one record per retransmitted skb and per retransmitted
 * SYN-ACK.
 *
 * Attach points: tracepoint tcp/tcp_retransmit_skb (data, incl. SYN and
 * tail-loss probes) and tracepoint tcp/tcp_retransmit_synack.
 * Kernel floor: 5.8 (ring buffer, BTF for CO-RE).
 *
 * Everything is read through the socket pointer with CO-RE, never from the
 * tracepoint's own address fields: the context struct of tcp_retransmit_skb
 * changed name and layout in 6.x, but `skaddr` exists in both shapes.
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
	nt_read_sock_common(skc, ev);
	nt_submit(ev);
	return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int nt_tcp_rtx(void *ctx)
{
	const struct sock *sk;
	const struct sk_buff *skb;
	__s32 err = 0;

	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb)) {
		struct trace_event_raw_tcp_retransmit_skb *tp = ctx;

		sk = BPF_CORE_READ(tp, skaddr);
		skb = BPF_CORE_READ(tp, skbaddr);
		if (bpf_core_field_exists(tp->err))
			err = BPF_CORE_READ(tp, err);
	} else {
		struct trace_event_raw_tcp_event_sk_skb *tp = ctx;

		sk = BPF_CORE_READ(tp, skaddr);
		skb = BPF_CORE_READ(tp, skbaddr);
	}
	return nt_emit(sk ? &sk->__sk_common : 0, NT_RTX_DATA, err, nt_skb_pcount(skb));
}

SEC("tracepoint/tcp/tcp_retransmit_synack")
int nt_tcp_rtx_syn(struct trace_event_raw_tcp_retransmit_synack *ctx)
{
	/* The request socket carries the embryonic connection's 4-tuple. */
	const struct request_sock *req = BPF_CORE_READ(ctx, req);

	return nt_emit(req ? &req->__req_common : 0, NT_RTX_SYNACK, 0, 1);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
