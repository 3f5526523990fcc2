/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Helpers that read a socket's addressing through CO-RE. */
#ifndef __NETTEL_SOCK_H
#define __NETTEL_SOCK_H

#include "nettel/abi.h"

#define NT_AF_INET 2
#define NT_AF_INET6 10

/**
 * nt_read_addrs() - copy a socket's family, addresses and ports
 * @skc: the socket's struct sock_common
 * @family, @saddr, @daddr, @sport, @dport: outputs (addresses zeroed by the caller)
 *
 * Return: the address family.
 */
static __always_inline __u16 nt_read_addrs(const struct sock_common *skc, __u8 *family, __u8 *saddr,
					   __u8 *daddr, __u16 *sport, __u16 *dport)
{
	__u16 fam = BPF_CORE_READ(skc, skc_family);

	*family = (__u8)fam;
	*sport = BPF_CORE_READ(skc, skc_num);
	*dport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	if (fam == NT_AF_INET6) {
		bpf_core_read(saddr, 16, &skc->skc_v6_rcv_saddr);
		bpf_core_read(daddr, 16, &skc->skc_v6_daddr);
	} else {
		bpf_core_read(saddr, 4, &skc->skc_rcv_saddr);
		bpf_core_read(daddr, 4, &skc->skc_daddr);
	}
	return fam;
}

/**
 * nt_load_addrs() - nt_read_addrs() for a trusted BTF pointer
 *
 * Same outputs, but @skc must be a pointer the verifier trusts (a tp_btf
 * argument): its fields are plain loads the JIT emits inline, where
 * nt_read_addrs() makes six bpf_probe_read_kernel() calls.
 */
static __always_inline __u16 nt_load_addrs(const struct sock_common *skc, __u8 *family, __u8 *saddr,
					   __u8 *daddr, __u16 *sport, __u16 *dport)
{
	__u16 fam = skc->skc_family;

	*family = (__u8)fam;
	*sport = skc->skc_num;
	*dport = bpf_ntohs(skc->skc_dport);
	if (fam == NT_AF_INET6) {
		__builtin_memcpy(saddr, &skc->skc_v6_rcv_saddr, 16);
		__builtin_memcpy(daddr, &skc->skc_v6_daddr, 16);
	} else {
		__builtin_memcpy(saddr, &skc->skc_rcv_saddr, 4);
		__builtin_memcpy(daddr, &skc->skc_daddr, 4);
	}
	return fam;
}

/**
 * nt_load_sock_common() - nt_read_sock_common() for a trusted BTF pointer
 *
 * Plain loads instead of bpf_probe_read_kernel() calls (nt_load_addrs()).
 */
static __always_inline void nt_load_sock_common(const struct sock_common *skc,
						struct nt_tcp_retransmit_event *ev)
{
	nt_load_addrs(skc, &ev->family, ev->saddr, ev->daddr, &ev->sport, &ev->dport);
	ev->state = skc->skc_state;
	if (bpf_core_field_exists(struct net, net_cookie))
		ev->netns_cookie = skc->skc_net.net->net_cookie;
}

/**
 * nt_read_sock_common() - copy family, addresses, ports, state and netns
 * cookie of a socket into a retransmit event
 * @skc: the socket's struct sock_common (full socket or request socket)
 * @ev: event to fill; saddr/daddr must be zeroed by the caller
 *
 * IPv4 sockets fill the first 4 address bytes; IPv6 sockets (including
 * v4-mapped peers on dual-stack sockets) fill all 16. Userspace unmaps
 * ::ffff:a.b.c.d.
 */
static __always_inline void nt_read_sock_common(const struct sock_common *skc,
						struct nt_tcp_retransmit_event *ev)
{
	nt_read_addrs(skc, &ev->family, ev->saddr, ev->daddr, &ev->sport, &ev->dport);
	ev->state = BPF_CORE_READ(skc, skc_state);
	/* struct net gained a plain u64 net_cookie in 5.12; older kernels report 0. */
	if (bpf_core_field_exists(struct net, net_cookie))
		ev->netns_cookie = BPF_CORE_READ(skc, skc_net.net, net_cookie);
}

#endif /* __NETTEL_SOCK_H */
