/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Helpers of the HTTP probe: fd -> TCP sock, request/response recognition. */
#ifndef __NETTEL_HTTP_H
#define __NETTEL_HTTP_H

#include "nettel/abi.h"

#define NT_S_IFMT 00170000
#define NT_S_IFSOCK 0140000
#define NT_SOCK_STREAM 1
#define NT_IPPROTO_TCP 6

/* Bytes of a request peeked for the method and a traceparent header. */
#define NT_HTTP_PEEK 512
/* Longest method token recognised (OPTIONS, CONNECT are 7). */
#define NT_HTTP_MAX_TOKEN 12

/**
 * nt_fd_tcp_sock_file() - the TCP sock behind a file descriptor of current
 * @fd: file descriptor
 * @filep: where to store the descriptor's file (may be NULL)
 *
 * Return: the sock, or NULL for anything that is not a TCP socket (the cheap
 * early exit every read/write on the node takes).
 */
static __always_inline struct sock *nt_fd_tcp_sock_file(__u64 fd, struct file **filep)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = 0;
	struct socket *sock;
	struct sock *sk;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return 0;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & NT_S_IFMT) != NT_S_IFSOCK)
		return 0;
	sock = BPF_CORE_READ(f, private_data);
	if (!sock || BPF_CORE_READ(sock, type) != NT_SOCK_STREAM)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != NT_IPPROTO_TCP)
		return 0;
	if (filep)
		*filep = f;
	return sk;
}

/* nt_fd_tcp_sock_file() without the file. */
static __always_inline struct sock *nt_fd_tcp_sock(__u64 fd)
{
	return nt_fd_tcp_sock_file(fd, 0);
}

/*
 * Whether @f has references besides the descriptor being closed: a dup()ed
 * descriptor, or the copy a forked process holds. Its socket lives on.
 */
static __always_inline int nt_file_shared(struct file *f)
{
	if (bpf_core_field_exists(struct file___ref, f_ref)) {
		struct file___ref *fr = (void *)f;

		/* The count minus one: more than one reference is above 0. */
		return BPF_CORE_READ(fr, f_ref.refcnt.counter) > 0;
	}
	return BPF_CORE_READ(f, f_count.counter) > 1;
}

/*
 * Whether @sk is the server end of a connection: a socket accept() returned
 * inherits its listener's backlog (sk_max_ack_backlog, copied when the
 * kernel clones the listener), where a socket that connect()ed has 0. A
 * listener created with backlog 0 is the exception: its connections look
 * like clients and are not traced (README, limits).
 */
static __always_inline int nt_accepted(struct sock *sk)
{
	return sk->sk_max_ack_backlog != 0;
}

/* Whether the @len-byte token @t equals the literal @s (no libc in BPF). */
static __always_inline int nt_tok_eq(const __u8 *t, __u32 len, const char *s, __u32 slen)
{
	__u32 i;

	if (len != slen)
		return 0;
#pragma unroll
	for (i = 0; i < 8; i++) {
		if (i >= slen)
			break;
		if (t[i] != (__u8)s[i])
			return 0;
	}
	return 1;
}

/* Known method tokens; anything else is NT_HTTP_OTHER. */
static __always_inline __u8 nt_method_code(const __u8 *t, __u32 len)
{
#define NT_TOK(s) nt_tok_eq(t, len, s, sizeof(s) - 1)
	if (NT_TOK("GET"))
		return NT_HTTP_GET;
	if (NT_TOK("POST"))
		return NT_HTTP_POST;
	if (NT_TOK("PUT"))
		return NT_HTTP_PUT;
	if (NT_TOK("DELETE"))
		return NT_HTTP_DELETE;
	if (NT_TOK("HEAD"))
		return NT_HTTP_HEAD;
	if (NT_TOK("PATCH"))
		return NT_HTTP_PATCH;
	if (NT_TOK("OPTIONS"))
		return NT_HTTP_OPTIONS;
	if (NT_TOK("CONNECT"))
		return NT_HTTP_CONNECT;
	if (NT_TOK("TRACE"))
		return NT_HTTP_TRACE;
#undef NT_TOK
	return NT_HTTP_OTHER;
}

static __always_inline int nt_hex(__u8 c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

#endif /* __NETTEL_HTTP_H */
