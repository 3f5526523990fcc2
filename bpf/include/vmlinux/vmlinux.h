/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Minimal CO-RE kernel type header for nettel's probes.
 *
 * Provenance: hand-written from `bpftool btf dump file /sys/kernel/btf/vmlinux
 * format c` on Linux 6.18 and the tracepoint formats in
 * /sys/kernel/tracing/events/tcp/ (see README.md beside this file). Only the
 * fields the probes read are declared. Every struct carries
 * preserve_access_index, so libbpf/aya relocate each access against the
 * running kernel's BTF: declared offsets here do not need to match any kernel,
 * only field names and types do. Fields living in anonymous unions/structs in
 * the kernel are declared flat; libbpf's member matching descends into
 * anonymous members of the target type.
 */
#ifndef __NETTEL_VMLINUX_H
#define __NETTEL_VMLINUX_H

typedef unsigned char __u8;
typedef short int __s16;
typedef short unsigned int __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long int __s64;
typedef long long unsigned int __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_SK_STORAGE = 24,
	BPF_MAP_TYPE_RINGBUF = 27,
};

/* bpf_ringbuf_submit() flags and bpf_ringbuf_query() selectors (UAPI). */
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
	BPF_RB_RING_SIZE = 1,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

/* Map creation flags (UAPI). */
enum {
	BPF_F_NO_PREALLOC = 1,
	BPF_F_MMAPABLE = 1024,
};

/* bpf_sk_storage_get() flags (UAPI). */
enum {
	BPF_SK_STORAGE_GET_F_CREATE = 1,
};

#ifndef BPF_NO_PRESERVE_ACCESS_INDEX
#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
#endif

struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

/* tcp/tcp_retransmit_skb on kernels >= 6.x (has `err` since 6.12-ish). */
struct trace_event_raw_tcp_retransmit_skb {
	struct trace_entry ent;
	const void *skbaddr;
	const void *skaddr;
	int state;
	int err;
};

/* tcp/tcp_retransmit_skb on older kernels (the class shared with send_reset). */
struct trace_event_raw_tcp_event_sk_skb {
	struct trace_entry ent;
	const void *skbaddr;
	const void *skaddr;
};

/* tcp/tcp_retransmit_synack, every kernel >= 4.15. */
struct trace_event_raw_tcp_retransmit_synack {
	struct trace_entry ent;
	const void *skaddr;
	const void *req;
};

struct sk_buff {
	char cb[48];
};

/* TCP's view of skb->cb (TCP_SKB_CB()); tcp_gso_segs is tcp_skb_pcount(). */
struct tcp_skb_cb {
	__u32 seq;
	__u32 end_seq;
	__u16 tcp_gso_segs;
};

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
};

struct net {
	__u64 net_cookie;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
	__u16 sk_protocol;
	__u32 sk_max_ack_backlog; /* u32 since 5.5 */
};

/* For the HTTP probe: fd -> struct file -> socket -> sock. */
typedef unsigned short umode_t;

struct inode {
	umode_t i_mode;
};

typedef struct {
	__s64 counter;
} atomic64_t;

typedef atomic64_t atomic_long_t;

/* Linux 6.13+: a file's references, held as their count minus one. */
typedef struct {
	atomic64_t refcnt;
} file_ref_t;

struct file {
	struct inode *f_inode;
	void *private_data;
	/* Up to Linux 6.12: the file's references. */
	atomic_long_t f_count;
};

/* struct file of Linux 6.13+ (CO-RE flavor: matched against `file`). */
struct file___ref {
	file_ref_t f_ref;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct task_struct {
	struct files_struct *files;
};

struct socket {
	short type;
	struct sock *sk;
};

struct iovec {
	void *iov_base;
	__u64 iov_len;
};

struct user_msghdr {
	void *msg_name;
	int msg_namelen;
	struct iovec *msg_iov;
	__u64 msg_iovlen;
};

#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long r8;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long ax;
	unsigned long orig_ax;
};
#elif defined(__TARGET_ARCH_arm64)
struct user_pt_regs {
	__u64 regs[31];
};
struct pt_regs {
	struct user_pt_regs user_regs;
	__u64 orig_x0;
	__s32 syscallno;
};
#endif

/* For the HTTP probe's send hook (tcp_sendmsg_locked): the message's user
 * bytes. __iov, ubuf and count live in anonymous unions in the kernel. */
struct iov_iter {
	__u8 iter_type;
	__u64 iov_offset;
	const struct iovec *__iov;
	void *ubuf;
	__u64 count;
};

struct msghdr {
	struct iov_iter msg_iter;
};

struct tcp_sock {
	__u32 write_seq;
	__u32 rcv_nxt;
	__u32 copied_seq;
	__u64 bytes_received;
	__u64 tcp_clock_cache;
};

struct request_sock {
	struct sock_common __req_common;
};

/* For the HTTP probe's cgroup_rmdir hook: a cgroup's id is its kernfs node's
 * (what bpf_get_current_cgroup_id() returns). */
struct kernfs_node {
	__u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

#ifndef BPF_NO_PRESERVE_ACCESS_INDEX
#pragma clang attribute pop
#endif

#endif /* __NETTEL_VMLINUX_H */
