// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * HTTP/1.x server-side requests: method, status, latency, W3C trace id.
 *
 * Attach points: tp_btf/sys_exit (the read/write syscall family, one program
 * for all of them, so nothing runs at syscall entry) and tracepoint
 * syscalls/sys_enter_close. Kernel floor: 5.8 (tp_btf, ring buffer).
 *
 * A read on a TCP socket whose first bytes are a request line
 * (`TOKEN SP target SP HTTP/1.x`) starts a request; the next write on that
 * socket starting with `HTTP/1.x NNN` (NNN >= 200) ends the oldest pending
 * one (FIFO, so pipelined requests on separate reads are timed correctly).
 * Only the first NT_HTTP_PEEK bytes are read, only for the method, the status
 * and a traceparent header; no URL or body leaves the kernel.
 *
 * Everything else (non-sockets, UDP, non-HTTP TCP) exits after at most a few
 * kernel reads. Limits: one request per read() is recognised; a connection
 * whose process exits without close() keeps its entry until LRU eviction.
 */
#include "vmlinux/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

#include "maps.h"
#include "sock.h"
#include "http.h"

/* Connections tracked at once (kernel-side bound of the probe's state). */
#define NT_HTTP_CONNS 65536
/* Pending requests per connection (power of two). */
#define NT_HTTP_PIPELINE 4

#if defined(__TARGET_ARCH_x86)
#define NT_NR_READ 0
#define NT_NR_WRITE 1
#define NT_NR_READV 19
#define NT_NR_WRITEV 20
#define NT_NR_SENDTO 44
#define NT_NR_RECVFROM 45
#define NT_NR_SENDMSG 46
#define NT_NR_RECVMSG 47
#elif defined(__TARGET_ARCH_arm64)
#define NT_NR_READ 63
#define NT_NR_WRITE 64
#define NT_NR_READV 65
#define NT_NR_WRITEV 66
#define NT_NR_SENDTO 206
#define NT_NR_RECVFROM 207
#define NT_NR_SENDMSG 211
#define NT_NR_RECVMSG 212
#endif

struct nt_http_pending {
	__u64 start_ns;
	__u8 method;
	__u8 has_trace;
	__u8 _pad[6];
	__u8 trace_id[16];
};

struct nt_http_conn {
	struct nt_http_pending q[NT_HTTP_PIPELINE];
	__u32 head;
	__u32 tail;
};

struct nt_http_peek_buf {
	__u8 buf[NT_HTTP_PEEK];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NT_HTTP_CONNS);
	__type(key, __u64); /* struct sock * */
	__type(value, struct nt_http_conn);
} nt_http_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_http_peek_buf);
} nt_http_peek SEC(".maps");

/* syscalls/sys_enter_close format (stable tracepoint ABI). */
struct nt_sys_enter_close {
	__u64 _common;
	int nr;
	int _pad;
	__u64 fd;
};

enum { NT_DIR_IN, NT_DIR_OUT };

/* First user buffer of a syscall: the buffer itself, or iov[0] of an iovec/msghdr. */
static __always_inline void *nt_user_buf(__u64 arg1, int kind, __u64 *len)
{
	struct iovec iov = {};
	struct user_msghdr msg = {};
	void *iovp = (void *)arg1;

	if (kind == 0)
		return (void *)arg1;
	if (kind == 2) {
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)arg1))
			return 0;
		iovp = msg.msg_iov;
	}
	if (bpf_probe_read_user(&iov, sizeof(iov), iovp))
		return 0;
	if (iov.iov_len < *len)
		*len = iov.iov_len;
	return iov.iov_base;
}

/* Parses a traceparent header value at @p ("00-<32 hex>-...") into @id. */
static __always_inline int nt_trace_id(const __u8 *p, __u8 *id)
{
	int i;

	if (p[0] != '0' || p[1] != '0' || p[2] != '-')
		return 0;
	for (i = 0; i < 16; i++) {
		int hi = nt_hex(p[3 + 2 * i]), lo = nt_hex(p[4 + 2 * i]);

		if (hi < 0 || lo < 0)
			return 0;
		id[i] = (__u8)(hi << 4 | lo);
	}
	return p[35] == '-';
}

static __always_inline struct nt_http_peek_buf *nt_peek(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&nt_http_peek, &zero);
}

/*
 * The loops live in global (not inlined) functions over the per-CPU peek
 * buffer: the verifier checks a global function once, whatever state its
 * caller is in (kernel >= 5.6). Arguments and results are scalars.
 */

/* Returns 1 + enum nt_http_method if the first @n peeked bytes start with a
 * request line (`TOKEN SP target SP HTTP/1.`), else 0. */
__noinline int nt_request_line(__u32 n)
{
	struct nt_http_peek_buf *pk = nt_peek();
	__u32 i, j, tl = NT_HTTP_MAX_TOKEN;
	const __u8 *b;

	if (!pk || n < 16 || n > NT_HTTP_PEEK)
		return 0;
	b = pk->buf;
	/* Method token: 1..11 uppercase letters then a space. */
	if (b[0] < 'A' || b[0] > 'Z')
		return 0;
	for (i = 1; i < NT_HTTP_MAX_TOKEN; i++) {
		if (b[i] == ' ') {
			tl = i;
			break;
		}
		if (b[i] < 'A' || b[i] > 'Z')
			return 0;
	}
	if (tl >= NT_HTTP_MAX_TOKEN)
		return 0;
	for (j = 2; j < NT_HTTP_PEEK - 10; j++) {
		if (j >= n - 9 || b[j] == '\n')
			return 0;
		if (b[j] == ' ' && b[j + 1] == 'H' && b[j + 2] == 'T' && b[j + 3] == 'T' && b[j + 4] == 'P' &&
		    b[j + 5] == '/' && b[j + 6] == '1' && b[j + 7] == '.')
			return 1 + nt_method_code(b, tl);
	}
	return 0;
}

/* Returns the offset of a traceparent header's value in the first @n peeked
 * bytes (`\ntraceparent:`, name case-insensitive, optional space), else 0. */
__noinline int nt_find_traceparent(__u32 n)
{
	struct nt_http_peek_buf *pk = nt_peek();
	const __u8 *b;
	__u32 j;

	if (!pk || n > NT_HTTP_PEEK)
		return 0;
	b = pk->buf;
	for (j = 14; j < NT_HTTP_PEEK - 52; j++) {
		if (j >= n - 50)
			return 0;
		if (b[j] != '\n' || (b[j + 1] | 0x20) != 't' || (b[j + 2] | 0x20) != 'r' ||
		    (b[j + 3] | 0x20) != 'a' || (b[j + 4] | 0x20) != 'c' || (b[j + 5] | 0x20) != 'e' ||
		    (b[j + 6] | 0x20) != 'p' || (b[j + 7] | 0x20) != 'a' || (b[j + 8] | 0x20) != 'r' ||
		    (b[j + 9] | 0x20) != 'e' || (b[j + 10] | 0x20) != 'n' || (b[j + 11] | 0x20) != 't' ||
		    b[j + 12] != ':')
			continue;
		return j + (b[j + 13] == ' ' ? 14 : 13);
	}
	return 0;
}

static __always_inline int nt_on_request(struct sock *sk, void *ubuf, __u64 len)
{
	struct nt_http_pending req = {};
	struct nt_http_peek_buf *pk = nt_peek();
	struct nt_http_conn *conn;
	__u32 n = len > NT_HTTP_PEEK ? NT_HTTP_PEEK : (__u32)len;
	__u64 key = (__u64)sk;
	int m, tp;

	if (!pk || n < 16 || bpf_probe_read_user(pk->buf, n, ubuf))
		return 0;
	m = nt_request_line(n);
	if (m <= 0)
		return 0;
	req.method = (__u8)(m - 1);
	req.start_ns = bpf_ktime_get_ns();
	tp = nt_find_traceparent(n);
	if (tp > 0 && tp < NT_HTTP_PEEK - 40) {
		__u8 val[36];

		if (!bpf_probe_read_kernel(val, sizeof(val), pk->buf + tp))
			req.has_trace = nt_trace_id(val, req.trace_id);
	}

	conn = bpf_map_lookup_elem(&nt_http_conns, &key);
	if (!conn) {
		struct nt_http_conn fresh = {};

		bpf_map_update_elem(&nt_http_conns, &key, &fresh, BPF_NOEXIST);
		conn = bpf_map_lookup_elem(&nt_http_conns, &key);
		if (!conn) {
			nt_stat_inc(NT_STAT_HTTP_CONN_FULL);
			return 0;
		}
	}
	if (conn->tail - conn->head >= NT_HTTP_PIPELINE) {
		nt_stat_inc(NT_STAT_HTTP_PIPELINE_FULL);
		return 0;
	}
	conn->q[conn->tail & (NT_HTTP_PIPELINE - 1)] = req;
	conn->tail++;
	return 0;
}

static __always_inline int nt_on_response(struct sock *sk, void *ubuf, __u64 len)
{
	struct nt_http_pending req;
	struct nt_http_event *ev;
	struct nt_http_conn *conn;
	__u64 key = (__u64)sk;
	__u8 r[12];
	__u16 status;

	if (len < sizeof(r) || bpf_probe_read_user(r, sizeof(r), ubuf))
		return 0;
	if (r[0] != 'H' || r[1] != 'T' || r[2] != 'T' || r[3] != 'P' || r[4] != '/' || r[5] != '1' ||
	    r[6] != '.' || r[8] != ' ')
		return 0;
	if (r[9] < '1' || r[9] > '5' || r[10] < '0' || r[10] > '9' || r[11] < '0' || r[11] > '9')
		return 0;
	status = (r[9] - '0') * 100 + (r[10] - '0') * 10 + (r[11] - '0');
	conn = bpf_map_lookup_elem(&nt_http_conns, &key);
	if (!conn || conn->head == conn->tail) {
		nt_stat_inc(NT_STAT_HTTP_UNMATCHED);
		return 0;
	}
	/* 1xx are interim: the final response still follows. */
	if (status < 200)
		return 0;
	req = conn->q[conn->head & (NT_HTTP_PIPELINE - 1)];
	conn->head++;

	ev = nt_reserve(sizeof(*ev));
	if (!ev)
		return 0;
	__builtin_memset(ev, 0, sizeof(*ev));
	nt_hdr_init(&ev->hdr, NT_EVENT_HTTP, sizeof(*ev));
	nt_read_addrs(&sk->__sk_common, &ev->family, ev->saddr, ev->daddr, &ev->sport, &ev->dport);
	ev->method = req.method;
	ev->status = status;
	ev->duration_ns = bpf_ktime_get_ns() - req.start_ns;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	if (req.has_trace) {
		ev->flags = NT_HTTP_F_TRACE;
		__builtin_memcpy(ev->trace_id, req.trace_id, sizeof(ev->trace_id));
	}
	nt_submit(ev);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(nt_http_exit, struct pt_regs *regs, long ret)
{
	__u64 nr, fd, arg1, len = ret;
	int dir, kind;
	struct sock *sk;
	void *ubuf;

	if (ret <= 0)
		return 0;
#if defined(__TARGET_ARCH_x86)
	nr = BPF_CORE_READ(regs, orig_ax);
	fd = BPF_CORE_READ(regs, di);
	arg1 = BPF_CORE_READ(regs, si);
#elif defined(__TARGET_ARCH_arm64)
	nr = BPF_CORE_READ(regs, syscallno);
	fd = BPF_CORE_READ(regs, orig_x0);
	arg1 = BPF_CORE_READ(regs, user_regs.regs[1]);
#endif
	switch (nr) {
	case NT_NR_READ:
	case NT_NR_RECVFROM:
		dir = NT_DIR_IN, kind = 0;
		break;
	case NT_NR_READV:
		dir = NT_DIR_IN, kind = 1;
		break;
	case NT_NR_RECVMSG:
		dir = NT_DIR_IN, kind = 2;
		break;
	case NT_NR_WRITE:
	case NT_NR_SENDTO:
		dir = NT_DIR_OUT, kind = 0;
		break;
	case NT_NR_WRITEV:
		dir = NT_DIR_OUT, kind = 1;
		break;
	case NT_NR_SENDMSG:
		dir = NT_DIR_OUT, kind = 2;
		break;
	default:
		return 0;
	}
	sk = nt_fd_tcp_sock(fd);
	if (!sk)
		return 0;
	ubuf = nt_user_buf(arg1, kind, &len);
	if (!ubuf)
		return 0;
	if (dir == NT_DIR_IN)
		return nt_on_request(sk, ubuf, len);
	return nt_on_response(sk, ubuf, len);
}

SEC("tracepoint/syscalls/sys_enter_close")
int nt_http_close(struct nt_sys_enter_close *ctx)
{
	struct nt_http_conn *conn;
	struct sock *sk = nt_fd_tcp_sock(ctx->fd);
	__u64 key = (__u64)sk;

	if (!sk)
		return 0;
	conn = bpf_map_lookup_elem(&nt_http_conns, &key);
	if (!conn)
		return 0;
	if (conn->head != conn->tail)
		nt_stat_inc(NT_STAT_HTTP_CLOSED);
	bpf_map_delete_elem(&nt_http_conns, &key);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
