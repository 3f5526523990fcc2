// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark floor: programs that return at once, on the tracepoints of the
 * HTTP sendmsg hooks (tp_btf sock_recv_length, tcp_sendmsg_locked,
 * inet_sock_set_state). What any BPF program on these tracepoints costs the
 * traced workload before it does any work: the tracepoint's dispatch, the
 * program's entry and its return (on hosts with return-thunk mitigations, a
 * large share). Loaded only by `nettel-http-bench --hooks floor`, never by
 * the loader.
 */
#include "vmlinux/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/sock_recv_length")
int BPF_PROG(nt_floor_recv, struct sock *sk, int ret, int flags)
{
	return 0;
}

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(nt_floor_sendmsg, struct sock *sk, struct msghdr *msg, struct sk_buff *skb, int size_goal)
{
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(nt_floor_state, struct sock *sk, int oldstate, int newstate)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
