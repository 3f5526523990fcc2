// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark references on the tracepoints of the HTTP sendmsg hooks (tp_btf
 * sock_recv_length, tcp_sendmsg_locked, inet_sock_set_state). Loaded only by
 * `nettel-http-bench --hooks floor` or `--hooks bound`, never by the loader.
 *
 * floor: programs that return at once. What any BPF program on these
 * tracepoints costs the traced workload before it does any work: the
 * tracepoint's dispatch, the program's entry and its return (on hosts with
 * return-thunk mitigations, a large share).
 *
 * bound: the floor plus the two user-memory reads no HTTP probe on these
 * hooks can do without: on the server end of a TCP connection, the first
 * bytes of each read (the request line and headers, for the method and a
 * traceparent: up to NT_HTTP_PEEK bytes, as http.bpf.c peeks) through the
 * syscall's saved registers, and the first 12 bytes of each send (the status
 * line). Nothing else: no clock, no connection state, no parse, so a probe
 * that counts requests cannot cost less. Where the bound already misses an
 * overhead target, no implementation on these hooks meets it on that host.
 */
#include "vmlinux/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "http.h"

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

struct nt_bound_buf {
	__u8 buf[NT_HTTP_PEEK];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_bound_buf);
} nt_bound_peek SEC(".maps");

/* The server end of a TCP connection, as http.bpf.c tells it. */
static __always_inline int nt_bound_server(struct sock *sk)
{
	return sk->sk_protocol == NT_IPPROTO_TCP && sk->sk_type == NT_SOCK_STREAM && nt_accepted(sk);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(nt_bound_recv, struct sock *sk, int ret, int flags)
{
	struct nt_bound_buf *pk;
	struct pt_regs *regs;
	__u32 zero = 0, n;
	void *ubuf;

	if (ret <= 0 || (flags & 2 /* MSG_PEEK */) || !nt_bound_server(sk))
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
#if defined(__TARGET_ARCH_x86)
	ubuf = (void *)regs->si;
#elif defined(__TARGET_ARCH_arm64)
	ubuf = (void *)regs->user_regs.regs[1];
#endif
	pk = bpf_map_lookup_elem(&nt_bound_peek, &zero);
	if (!pk)
		return 0;
	n = ret > NT_HTTP_PEEK ? NT_HTTP_PEEK : (__u32)ret;
	/* Hide what clang knows of n, so that the verifier sees the bound. */
	asm volatile("" : "+r"(n));
	if (n > NT_HTTP_PEEK)
		return 0;
	bpf_probe_read_user(pk->buf, n, ubuf);
	return 0;
}

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(nt_bound_sendmsg, struct sock *sk, struct msghdr *msg, struct sk_buff *skb, int size_goal)
{
	struct iov_iter *it = &msg->msg_iter;
	__u8 line[12];
	__u64 base;

	if (!nt_bound_server(sk) || it->count < sizeof(line))
		return 0;
	if (it->iter_type == 0 /* ITER_UBUF */)
		base = (__u64)it->ubuf;
	else if (it->iter_type == 1 /* ITER_IOVEC */)
		base = (__u64)it->__iov->iov_base;
	else
		return 0;
	bpf_probe_read_user(line, sizeof(line), (void *)(base + it->iov_offset));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
