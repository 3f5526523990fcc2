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
 */
#include "vmlinux/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "maps.h"
#include "sock.h"

static __always_inline int nt_emit(const struct sock_common *skc, __u8 rtx_kind, __s32 err)
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
	nt_read_sock_common(skc, ev);
	nt_submit(ev);
	return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int nt_tcp_rtx(void *ctx)
{
	const struct sock *sk;
	__s32 err = 0;

	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb)) {
		struct trace_event_raw_tcp_retransmit_skb *tp = ctx;

		sk = BPF_CORE_READ(tp, skaddr);
		if (bpf_core_field_exists(tp->err))
			err = BPF_CORE_READ(tp, err);
	} else {
		struct trace_event_raw_tcp_event_sk_skb *tp = ctx;

		sk = BPF_CORE_READ(tp, skaddr);
	}
	return nt_emit(sk ? &sk->__sk_common : 0, NT_RTX_DATA, err);
}

SEC("tracepoint/tcp/tcp_retransmit_synack")
int nt_tcp_rtx_syn(struct trace_event_raw_tcp_retransmit_synack *ctx)
{
	/* The request socket carries the embryonic connection's 4-tuple. */
	const struct request_sock *req = BPF_CORE_READ(ctx, req);

	return nt_emit(req ? &req->__req_common : 0, NT_RTX_SYNACK, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
