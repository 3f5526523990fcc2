// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * HTTP/1.x server-side requests: method, status, latency, W3C trace id.
 *
 * Attach points, one set per kernel (the loader's --http-hook): the sendmsg
 * hooks (tp_btf/sock_recv_length, tcp_sendmsg_locked, inet_sock_set_state;
 * 6.16+), the socket hooks (the same with sock_send_length for sends; 6.3+)
 * or the syscall hooks (tp_btf/sys_exit for the read/write syscall family,
 * and tracepoint syscalls/sys_enter_close). Kernel floor: 5.8 (tp_btf, ring
 * buffer).
 * HTTPS: uprobes on OpenSSL's SSL_read/SSL_write family feed the same
 * matcher with plaintext (http_tls.h).
 *
 * A read on a TCP socket whose first bytes are a request line
 * (`TOKEN SP target SP HTTP/1.x`) starts a request, and so does each further
 * request line that follows a header block in the same read (pipelining).
 * A write on that socket starting with `HTTP/1.x NNN` (NNN >= 200) ends the
 * oldest pending request (FIFO); a write carrying several responses back to
 * back ends one request per response. So pipelined requests are timed from
 * the read that brought them to the write that answered them.
 * Only the first NT_HTTP_PEEK bytes are read, only for the method, the status
 * and a traceparent header; no URL or body leaves the kernel.
 *
 * Everything else (non-sockets, UDP, non-HTTP TCP) exits after at most a few
 * kernel reads; with the socket and sendmsg hooks, a server connection whose
 * first read rules out HTTP/1.x exits before any user read from then on
 * (nt_sk_conn()). Limits: requests and responses beyond the first NT_HTTP_PEEK
 * bytes of a read or write (or beyond iov[0] of a vectored one) are not
 * seen, so their responses count as unmatched; a request line split across
 * reads is recognised when the first read holds the method and the start of
 * the path; with the syscall hooks, a connection whose process exits without
 * close(), or whose last close() runs while another thread of its process is
 * in a call on it, keeps its entry until LRU eviction.
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
/* How long a carried first byte waits for the rest of its request line. */
#define NT_HTTP_CARRY_MAX_NS (1000ULL * 1000 * 1000)
/* Pending requests per connection (power of two). */
#ifndef NT_HTTP_PIPELINE
#define NT_HTTP_PIPELINE 4
#endif

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
	/* A 1-byte read of an uppercase letter (Go's net/http reads the next
	 * request's first byte alone, in the background): kept for the next read,
	 * which then starts with the rest of the method. */
	__u64 carry_ns;
	__u8 carry;
	/* The slot (nt_http_slots index + 1; 0: none) of this connection's
	 * last answered request, with the method, status and TLS flag it was
	 * for and the low bits of the slot's generation: the next request with
	 * the same three reuses it without the key's hash lookup while the slot
	 * has not been freed since. The cgroup and local address, the rest of
	 * the key, are the connection's own. */
	__u8 slot_method;
	__u8 slot_tls;
	/* Whether resp_seq holds the write_seq of the last status line seen
	 * by the send hook (nt_http_sendmsg): that hook fires again for the
	 * same bytes when a send waits for buffer space or is retried after
	 * EAGAIN, and a status line at the same sequence is that one again. */
	__u8 resp_seen;
	__u16 slot_status;
	__u16 slot_gen;
	__u32 slot;
	__u32 resp_seq;
	/* What the connection's first read showed (enum nt_conn_kind; socket
	 * and sendmsg hooks only): a connection that is not HTTP/1.x skips
	 * every later read and send before any user memory is read. */
	__u8 kind;
};

enum nt_conn_kind {
	NT_CONN_UNSEEN = 0, /* no read yet */
	NT_CONN_SEEN = 1,   /* its first read did not rule HTTP/1.x out */
	NT_CONN_OTHER = 2,  /* its first read did (nt_not_http1()) */
};

struct nt_http_peek_buf {
	__u8 buf[NT_HTTP_PEEK];
	/* Room for the request scans' padding: nt_parse_request() zeroes the 8
	 * bytes after the peeked ones, so that the scans read whole words to
	 * the end (nt_request_line_end(), nt_request_headers()). */
	__u8 _pad[8];
	/* nt_parse_request()'s working values, kept here rather than in
	 * registers so that the verifier knows nothing of them (nt_opaque()):
	 * a value passed through nt_opaque(), then the scans' next position;
	 * the bytes scanned; the request line's end, then a traceparent value's
	 * offset; the method token's length. */
	__u32 scratch;
	__u32 scan_n;
	__u32 tp;
	__u32 token_len;
	/* A sock pointer on its way to a global function as a number
	 * (nt_record()): what comes back from map memory is a scalar. */
	__u64 sk;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NT_HTTP_CONNS);
	__type(key, __u64); /* struct sock * */
	__type(value, struct nt_http_conn);
	__uint(pinning, LIBBPF_PIN_BY_NAME); /* shared with a restarted loader's programs */
} nt_http_conns SEC(".maps");

/* The same state kept in the socket itself, for the socket hooks (trusted
 * sock pointers): a lookup is a pointer walk instead of a hash, and the
 * kernel frees it with the socket. nt_http_conns remains for the paths with
 * untrusted sock pointers (syscall hooks, OpenSSL uprobes). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct nt_http_conn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_http_sk_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_http_peek_buf);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_http_peek SEC(".maps");

/* Requests counted in the kernel (abi.h, struct nt_http_slot): running
 * totals the loader reads through mmap, so most requests never become an
 * event. All four maps are pinned (totals outlive a loader restart) and
 * replaced together (nettel_bpf::names::HTTP_TABLE_MAPS). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, NT_HTTP_TABLE_ENTRIES); /* --http-table-entries */
	__type(key, __u32);
	__type(value, struct nt_http_slot);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_http_slots SEC(".maps");

/* Key -> its slot. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NT_HTTP_TABLE_ENTRIES); /* --http-table-entries */
	__type(key, struct nt_http_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_http_index SEC(".maps");

/* Claimed slots (slot -> 1): an insert with BPF_NOEXIST is the claim. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NT_HTTP_TABLE_ENTRIES); /* --http-table-entries */
	__type(key, __u32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_http_claims SEC(".maps");

/* Where the next claim starts looking: slots are claimed in order, so this
 * is usually the first free one. Updated without atomics: a stale value only
 * costs a failed claim. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_http_hint SEC(".maps");

/* syscalls/sys_enter_close format (stable tracepoint ABI). */
struct nt_sys_enter_close {
	__u64 _common;
	int nr;
	int _pad;
	__u64 fd;
};

enum { NT_DIR_IN, NT_DIR_OUT };

#define NT_MSG_PEEK 2
#define NT_TCP_CLOSE 7

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

static __always_inline struct nt_http_peek_buf *nt_peek(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&nt_http_peek, &zero);
}

/*
 * The loops live in global (not inlined) functions over the per-CPU peek
 * buffer: the verifier checks a global function once, whatever state its
 * caller is in (kernel >= 5.6). Arguments and results are scalars; the
 * rules that keep verification linear are in bpf/README.md (Verifier).
 * A message that does not start the buffer (the second of two pipelined
 * requests) is peeked again at its own start.
 */

/*
 * Word-at-a-time scanning. A line of headers costs one load and a few ALU
 * instructions per 8 bytes instead of eight byte loads and compares (a byte
 * copy into a u64 alone compiles to 22 instructions). The peek buffer has no
 * alignment: BPF loads need none on x86-64 and arm64 (the verifier enforces
 * alignment only where unaligned access is slow).
 */
#define NT_ONES 0x0101010101010101ULL

/* The 8 peeked bytes at @p, the byte at @p lowest (little-endian order). */
static __always_inline __u64 nt_word(const __u8 *p)
{
	__u64 x = *(const __u64 *)p;

#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	x = __builtin_bswap64(x);
#endif
	return x;
}

/* Bit 7 of each byte of @x that is zero, and of no other byte (exact for
 * every byte, unlike the classic borrow trick, so that masks can be combined
 * and bytes masked out). */
static __always_inline __u64 nt_zero_exact(__u64 x)
{
	return ~(((x & 0x7f * NT_ONES) + 0x7f * NT_ONES) | x | 0x7f * NT_ONES);
}

/* Flags (bit 7) of the control characters (< 0x20, and DEL) in @x. */
static __always_inline __u64 nt_ctl_flags(__u64 x)
{
	return nt_zero_exact(x & 0xe0 * NT_ONES) | nt_zero_exact(x ^ 0x7f * NT_ONES);
}

/* Flags (bit 7) of the newlines in @x. */
static __always_inline __u64 nt_lf_flags(__u64 x)
{
	return nt_zero_exact(x ^ '\n' * NT_ONES);
}

/* Flags (bit 7) of the bytes of @y that can start a header line the scan
 * stops at: CR (the blank line ending the headers) and `t`/`T` (a
 * traceparent header). `c | 0x20` is `t` for those two bytes only. */
static __always_inline __u64 nt_line_start_flags(__u64 y)
{
	return nt_zero_exact(y ^ '\r' * NT_ONES) | nt_zero_exact((y | 0x20 * NT_ONES) ^ 't' * NT_ONES);
}

/* The index (0..7) of the lowest flagged byte of @m (nonzero, flags in
 * bit 7 of bytes). Branch-free, so that the verifier follows one path: the
 * lowest flag alone, shifted to bit 8k, times a constant whose byte 7 - k
 * is k, leaves k in the top byte. */
static __always_inline __u32 nt_first_flag(__u64 m)
{
	return (__u32)(((m & -m) >> 7) * 0x0001020304050607ULL >> 56) & 7;
}

/* Header lines looked at per message: a 512-byte peek of real traffic holds
 * far fewer; past this, the scan gives up as if the headers ran on. */
#define NT_HTTP_MAX_LINES 96

/* " HTTP/1." as nt_word() loads it. */
#define NT_HTTP1_WORD                                                                                     \
	((__u64)' ' | (__u64)'H' << 8 | (__u64)'T' << 16 | (__u64)'T' << 24 | (__u64)'P' << 32 | (__u64)'/' << 40 | \
	 (__u64)'1' << 48 | (__u64)'.' << 56)
/* "tracepar", lowercase, as nt_word() loads it. */
#define NT_TRACEPAR_WORD                                                                                  \
	((__u64)'t' | (__u64)'r' << 8 | (__u64)'a' << 16 | (__u64)'c' << 24 | (__u64)'e' << 32 | (__u64)'p' << 40 | \
	 (__u64)'a' << 48 | (__u64)'r' << 56)

/* "ent", lowercase, as three bytes load little-endian. */
#define NT_ENT_WORD ((__u64)'e' | (__u64)'n' << 8 | (__u64)'t' << 16)

/* Flags of bytes @skip..7 of a word (@skip < 8). */
#define NT_FROM_BYTE(skip) (~0ULL << (8 * (skip)))

/*
 * The word-sized window @i of the peeked bytes [@from, @n): its offset, and
 * in @skip how many of its first bytes an earlier window already covered
 * (the last window is moved back to end at @n). Returns -1 past the end.
 * The response matcher's scans (nt_next_lf()) use it; the request scans
 * read zero padding instead (nt_parse_request()).
 */
static __always_inline int nt_window(__u32 from, __u32 n, __u32 i, __u32 *skip)
{
	__u32 j = from + 8 * i;

	*skip = 0;
	if (j >= n || n < 8)
		return -1;
	if (j + 8 > n) {
		*skip = j - (n - 8);
		j = n - 8;
	}
	return j > NT_HTTP_PEEK - 8 ? -1 : (int)j;
}

/* What nt_find() looks for. */
enum { NT_FIND_CTL, NT_FIND_LF };

/*
 * The offset of the first control character (@what NT_FIND_CTL) or newline
 * (NT_FIND_LF) in peeked bytes [@from, @n) of @b, else -1, a word at a time.
 * Inlined into the global functions below, each verified once.
 */
static __always_inline int nt_find(const __u8 *b, __u32 from, __u32 n, int what)
{
	__u32 i, skip;
	int j;

	for (i = 0; i < NT_HTTP_PEEK / 8 + 1; i++) {
		__u64 x, m;

		j = nt_window(from, n, i, &skip);
		if (j < 0)
			return -1;
		x = nt_word(b + j);
		m = (what == NT_FIND_LF ? nt_lf_flags(x) : nt_ctl_flags(x)) & NT_FROM_BYTE(skip);
		if (m)
			return j + (int)nt_first_flag(m);
	}
	return -1;
}

/*
 * @v, passed through the peek buffer's scratch word. The verifier does not
 * track what a map value holds: what comes back is a number it knows nothing
 * about, so paths that reach this point with different values (a loop left
 * in each of its rounds, a method token of each length) have the same state
 * from here on and are verified once. The caller bounds the value again.
 */
static __always_inline __u32 nt_opaque(struct nt_http_peek_buf *pk, __u32 v)
{
	*(volatile __u32 *)&pk->scratch = v;
	return *(volatile __u32 *)&pk->scratch;
}

/* Rounds of the header scan: one per word without a stop, one per line it
 * stops at; past this, the scan gives up as if the headers ran on. */
#define NT_HTTP_SCAN_ROUNDS (NT_HTTP_PEEK / 8 + NT_HTTP_SCAN_STOPS)
/* Lines starting with `t`/`T` (the scan stops at each) looked at per
 * request: real requests carry a few (traceparent, tracestate, TE). */
#define NT_HTTP_SCAN_STOPS 32

/*
 * 1 when @v is nonzero, else 0, without a branch. The empty asm hides that
 * the result is 0 or 1: clang would otherwise turn the masks built from it
 * back into selects, which BPF compiles to branches.
 */
static __always_inline __u64 nt_nonzero(__u64 v)
{
	__u64 r = (v | -v) >> 63;

	asm volatile("" : "+r"(r));
	return r;
}

/* 1 when @a < @b (both below 2^63), else 0, without a branch. */
static __always_inline __u64 nt_below(__u64 a, __u64 b)
{
	__u64 r = (a - b) >> 63;

	asm volatile("" : "+r"(r));
	return r;
}

/*
 * Scans the header lines after the newline at peeked offset @lf (of @n), a
 * word at a time, stopping only at lines that start with CR (the blank line
 * ending the headers) or `t`/`T` (a traceparent candidate): a browser's
 * dozen other lines cost no stop. Returns the offset just past the blank
 * line (0 when it is not within the peek); a traceparent header's value
 * offset (`traceparent:`, any case, its 36-byte value within the peek,
 * optional space skipped) is left in pk->tp (0: none). The bytes after the
 * peeked ones are zero (nt_parse_request()): no newline, no stop, so the
 * last word is read whole and needs no mask.
 *
 * Verified in one pass per round: a round's branches leave the loop, but
 * for the skip of a word with no stop, and where the next round starts,
 * and the byte count, live in the peek buffer rather than in registers, so
 * that every round begins in the same state but for its counter.
 */
static __always_inline __u32 nt_request_headers(struct nt_http_peek_buf *pk, __u32 lf, __u32 n)
{
	volatile __u32 *next = &pk->scratch, *count = &pk->scan_n;
	const __u8 *b = pk->buf;
	__u32 r;

	pk->tp = 0;
	*next = lf;
	*count = n;
	for (r = 0; r < NT_HTTP_SCAN_ROUNDS; r++) {
		__u32 k, pos = *next;
		__u64 m, is_tp;

		n = *count;
		if (pos >= n || pos > NT_HTTP_PEEK - 1)
			return 0;
		m = nt_lf_flags(nt_word(b + pos)) & nt_line_start_flags(nt_word(b + pos + 1));
		if (!m) {
			/* Most words: on to the next. */
			*next = pos + 8;
			continue;
		}
		/* The newline the scan stops at. */
		k = pos + nt_first_flag(m);
		/* No room for the stop line's first two bytes: as if the
		 * headers ran on. */
		if (k + 2 >= n || k > NT_HTTP_PEEK - 1)
			return 0;
		if (!((b[k + 1] ^ '\r') | (b[k + 2] ^ '\n')))
			return k + 3;
		/* `traceparent:` (any case), its 36-byte value within the data,
		 * the first one only; tested without a branch per byte. */
		is_tp = nt_below(k + 49, n) & (nt_nonzero(pk->tp) ^ 1) &
			(nt_nonzero(((nt_word(b + k + 1) | 0x20 * NT_ONES) ^ NT_TRACEPAR_WORD) |
				    (((__u64)b[k + 9] | (__u64)b[k + 10] << 8 | (__u64)b[k + 11] << 16 | 0x202020) ^
				     NT_ENT_WORD) |
				    (b[k + 12] ^ ':')) ^
			 1);
		pk->tp |= (k + 13 + (nt_nonzero(b[k + 13] ^ ' ') ^ 1)) & -(__u32)is_tp;
		*next = k + 1;
	}
	return 0;
}

/*
 * The offset of the first control character in peeked bytes [@from, @n)
 * (where the request line ends), else (__u32)-1. The zeroed bytes after
 * the peeked ones (nt_parse_request()) are control characters: a first one
 * among them is no end within the data. Verified as the header scan is
 * (nt_request_headers()): each round starts from the peek buffer, and the
 * three ways out of the loop leave nothing in registers that the code after
 * it reads.
 */
static __always_inline __u32 nt_request_line_end(struct nt_http_peek_buf *pk, __u32 from, __u32 n)
{
	volatile __u32 *next = &pk->scratch, *count = &pk->scan_n, *end = &pk->tp;
	const __u8 *b = pk->buf;
	__u32 r;

	*next = from;
	*count = n;
	*end = (__u32)-1;
	for (r = 0; r < NT_HTTP_PEEK / 8 + 1; r++) {
		__u32 k, pos = *next, cnt = *count;
		__u64 m;

		if (pos >= cnt || pos > NT_HTTP_PEEK - 1)
			break;
		m = nt_ctl_flags(nt_word(b + pos));
		if (m) {
			k = pos + nt_first_flag(m);
			if (k < cnt)
				*end = k;
			break;
		}
		*next = pos + 8;
	}
	return *end;
}

/* 1 + the method (enum nt_http_method) of the @tl-byte token starting @b. */
static __always_inline int nt_request_method(const __u8 *b, __u32 tl)
{
	if (tl >= NT_HTTP_MAX_TOKEN)
		return 0;
	return 1 + nt_method_code(b, tl);
}

/*
 * Parses the request starting the first @n peeked bytes. One function,
 * calling none: on the measured host each BPF-to-BPF call costs ~15-20 ns
 * (BENCHMARKS.md, session 12), and this runs on every request. Its loops
 * keep verification linear by the rules in bpf/README.md (Verifier): the
 * values that differ from path to path wait in the peek buffer.
 *
 * The request line (`TOKEN SP target SP HTTP/1.x`) ends at its first control
 * character, which must be the CR or LF right after the version. With
 * @partial_ok, an origin-form line (`TOKEN SP /...`) running to the end of
 * the peeked bytes without a control character also counts: the request
 * line was split across reads, or is longer than the peek.
 *
 * Returns 0 when the bytes do not start a request line, else
 * 1 + enum nt_http_method | header end << 4 | traceparent value << 14
 * (nt_request_headers(); each offset fits in 10 bits).
 */
__noinline int nt_parse_request(__u32 n, int partial_ok)
{
	struct nt_http_peek_buf *pk = nt_peek();
	volatile __u32 *token_len;
	__u32 i, tl, eol, lf, hdr;
	const __u8 *b;

	if (!pk || n < 8 || n > NT_HTTP_PEEK)
		return 0;
	b = pk->buf;
	/* The scans read whole words past the end: zero what follows. */
	*(__u64 *)(pk->buf + n) = 0;
	token_len = &pk->token_len;
	/* Method token: 1..11 uppercase letters then a space. */
	if (b[0] < 'A' || b[0] > 'Z')
		return 0;
	for (i = 1; i < NT_HTTP_MAX_TOKEN; i++) {
		if (b[i] == ' ')
			break;
		if (b[i] < 'A' || b[i] > 'Z')
			return 0;
	}
	tl = nt_opaque(pk, i);
	if (tl >= NT_HTTP_MAX_TOKEN || b[tl + 1] == ' ')
		return 0;
	/* The token's length waits in the peek buffer, and the method is
	 * worked out from it at the end: before the scans, each method (and
	 * each length) would be a state of its own through all their rounds. */
	*token_len = tl;
	eol = nt_request_line_end(pk, tl + 1, n);
	if ((int)eol < 0) {
		/* No end within the data: a split or long line. */
		if (!partial_ok || b[tl + 1] != '/')
			return 0;
		return nt_request_method(b, *token_len);
	}
	/* ` HTTP/1.x` right before it, after a target of at least a byte. */
	if (eol < tl + 11 || eol > NT_HTTP_PEEK - 1 || nt_word(b + eol - 9) != NT_HTTP1_WORD || b[eol - 1] < '0' ||
	    b[eol - 1] > '9')
		return 0;
	lf = eol;
	if (b[eol] == '\r') {
		if (eol + 1 >= n)
			return nt_request_method(b, *token_len); /* the LF is in the next read */
		lf = eol + 1;
	}
	if (lf > NT_HTTP_PEEK - 1 || b[lf] != '\n')
		return 0;
	/* Opaque: the scan returns from each of its rounds. */
	hdr = nt_opaque(pk, nt_request_headers(pk, lf, n));
	return nt_request_method(b, *token_len) | (int)((hdr & 0x3ff) << 4 | (pk->tp & 0x3ff) << 14);
}

/*
 * Returns the offset of the first `\n` in peeked bytes [@from, @n), else -1,
 * a word at a time (responses, off the fast path).
 */
__noinline int nt_next_lf(__u32 from, __u32 n)
{
	struct nt_http_peek_buf *pk = nt_peek();

	if (!pk || n > NT_HTTP_PEEK)
		return -1;
	return nt_find(pk->buf, from, n, NT_FIND_LF);
}

/* The status code of the status line (`HTTP/1.x NNN`) in the 12 bytes at
 * @r, else 0. */
static __always_inline int nt_status_of(const __u8 *r)
{
	if (r[0] != 'H' || r[1] != 'T' || r[2] != 'T' || r[3] != 'P' || r[4] != '/' || r[5] != '1' ||
	    r[6] != '.' || r[8] != ' ')
		return 0;
	if (r[9] < '1' || r[9] > '5' || r[10] < '0' || r[10] > '9' || r[11] < '0' || r[11] > '9')
		return 0;
	return (r[9] - '0') * 100 + (r[10] - '0') * 10 + (r[11] - '0');
}

/* Returns the status code of a status line (`HTTP/1.x NNN`) starting the
 * first @n peeked bytes, else 0. */
__noinline int nt_status_line(__u32 n)
{
	struct nt_http_peek_buf *pk = nt_peek();

	if (!pk || n < 12 || n > NT_HTTP_PEEK)
		return 0;
	return nt_status_of(pk->buf);
}

/* nt_response_line_kind() results other than a Content-Length value. */
enum { NT_RESP_STOP = -1, NT_RESP_BLANK = -2, NT_RESP_OTHER = -3 };

/*
 * Classifies the header line following the newline at @lf of a response:
 * returns NT_RESP_STOP (no newline, or too close to the end of the peek),
 * NT_RESP_BLANK for the blank line ending the headers, the value of a
 * Content-Length header (0..65535; 0 when malformed or larger), or
 * NT_RESP_OTHER for another line. A global function of its own, so that
 * the verifier walks the compare chain once, not once per line (responses
 * reach it only off the fast path: pipelining, interim responses).
 */
__noinline int nt_response_line_kind(int lf, __u32 n)
{
	struct nt_http_peek_buf *pk = nt_peek();
	const __u8 *b;
	__u32 k, body = 0;

	if (!pk || lf < 0 || lf > NT_HTTP_PEEK - 24 || lf + 2 >= n || n > NT_HTTP_PEEK)
		return NT_RESP_STOP;
	b = pk->buf + lf;
	if (b[1] == '\r' && b[2] == '\n')
		return NT_RESP_BLANK;
	if ((b[1] | 0x20) != 'c' || (b[2] | 0x20) != 'o' || (b[3] | 0x20) != 'n' || (b[4] | 0x20) != 't' ||
	    (b[5] | 0x20) != 'e' || (b[6] | 0x20) != 'n' || (b[7] | 0x20) != 't' || b[8] != '-' ||
	    (b[9] | 0x20) != 'l' || (b[10] | 0x20) != 'e' || (b[11] | 0x20) != 'n' || (b[12] | 0x20) != 'g' ||
	    (b[13] | 0x20) != 't' || (b[14] | 0x20) != 'h' || b[15] != ':')
		return NT_RESP_OTHER;
	if (b[16] == ' ') {
#pragma unroll
		for (k = 17; k < 23; k++) {
			if (b[k] < '0' || b[k] > '9')
				break;
			body = body * 10 + (b[k] - '0');
		}
	}
	return body > 0xffff ? 0 : (int)body;
}

/*
 * Returns where the response starting the first @n peeked bytes ends, as
 * header length | body length << 16 (Content-Length, capped below 65536),
 * or 0 when its headers do not end within the peeked bytes.
 */
__noinline int nt_response_extent(__u32 n)
{
	__u32 from = 12, i, body = 0;

	for (i = 0; i < NT_HTTP_MAX_LINES; i++) {
		int lf = nt_next_lf(from, n);
		int kind = nt_response_line_kind(lf, n);

		if (kind == NT_RESP_STOP)
			return 0;
		if (kind == NT_RESP_BLANK)
			return (int)((lf + 3) | body << 16);
		if (kind >= 0)
			body = kind & 0xffff;
		from = lf + 1;
	}
	return 0;
}

/*
 * Whether the 7 bytes at @b can start a request line, or continue one whose
 * first letter was carried: uppercase letters up to a space (which may come
 * first, after a carried one-letter method), or 7 uppercase letters of a
 * longer token. A filter only; the request-line parser is exact.
 */
static __always_inline int nt_maybe_request(const __u8 *b)
{
	int i;

#pragma unroll
	for (i = 0; i < 7; i++) {
		if (b[i] >= 'A' && b[i] <= 'Z')
			continue;
		return b[i] == ' ';
	}
	return 1;
}

/* Copies the bytes at @ubuf + @off (of @len) into the peek buffer; returns
 * how many (0 when fewer than @min). */
static __always_inline __u32 nt_peek_user(struct nt_http_peek_buf *pk, void *ubuf, __u64 len, __u64 off,
					  __u32 min)
{
	__u64 left = len > off ? len - off : 0;
	__u32 n = left > NT_HTTP_PEEK ? NT_HTTP_PEEK : (__u32)left;

	/* Hide what clang knows of n, so that the verifier sees the bound. */
	asm volatile("" : "+r"(n));
	if (n < min || n > NT_HTTP_PEEK || bpf_probe_read_user(pk->buf, n, ubuf + off))
		return 0;
	return n;
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

/*
 * The trace id of the traceparent value at peeked offset @tp, parsed into
 * @req (has_trace, trace_id). A global function, verified once: inlined in
 * nt_on_request()'s loop, its sixteen unrolled digit pairs were walked for
 * every request of a read.
 */
__noinline int nt_trace_id_at(__u32 tp, struct nt_http_pending *req)
{
	struct nt_http_peek_buf *pk = nt_peek();
	__u8 val[36];

	if (!pk || !req || !tp || tp >= NT_HTTP_PEEK - 40)
		return 0;
	/* To the stack first: the parse's loads stay within a buffer the
	 * verifier knows whole. */
	if (bpf_probe_read_kernel(val, sizeof(val), pk->buf + tp))
		return 0;
	req->has_trace = nt_trace_id(val, req->trace_id);
	return req->has_trace;
}

static __always_inline struct nt_http_conn *nt_conn(__u64 key)
{
	struct nt_http_conn *conn = bpf_map_lookup_elem(&nt_http_conns, &key);

	if (!conn) {
		struct nt_http_conn fresh = {};

		bpf_map_update_elem(&nt_http_conns, &key, &fresh, BPF_NOEXIST);
		conn = bpf_map_lookup_elem(&nt_http_conns, &key);
		if (!conn)
			nt_stat_inc(NT_STAT_HTTP_CONN_FULL);
	}
	return conn;
}

/*
 * The state of connection @sk, created if @create; NULL if there is none (or
 * it could not be created: counted). @btf: @sk is a trusted BTF pointer, and
 * the state lives in the socket (nt_http_sk_conns).
 */
static __always_inline struct nt_http_conn *nt_conn_of(struct sock *sk, int btf, int create)
{
	struct nt_http_conn *conn;
	__u64 key = (__u64)sk;

	if (btf) {
		conn = bpf_sk_storage_get(&nt_http_sk_conns, sk, 0, create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
		if (!conn && create)
			nt_stat_inc(NT_STAT_HTTP_CONN_FULL);
		return conn;
	}
	if (create)
		return nt_conn(key);
	return bpf_map_lookup_elem(&nt_http_conns, &key);
}

/*
 * The time of a read. With a trusted @sk (tp_btf), the TCP clock the
 * kernel cached as the read copied the bytes (tcp_recvmsg_locked() refreshes
 * it through tcp_rcv_space_adjust() after each segment it copies): the same
 * clock as bpf_ktime_get_ns() (ktime_get_ns()), read a few hundred
 * nanoseconds earlier, for a pointer cast instead of a clock read (26 ns on
 * the server's path, BENCHMARKS.md session 13). Otherwise, and on a socket
 * whose clock was never set, bpf_ktime_get_ns().
 */
static __always_inline __u64 nt_read_ns(struct sock *sk, int btf)
{
	if (btf) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

		if (tp && tp->tcp_clock_cache)
			return tp->tcp_clock_cache;
	}
	return bpf_ktime_get_ns();
}

/* "PRI * HT", the HTTP/2 connection preface's first word, as nt_word()
 * loads it. */
#define NT_H2_PREFACE_WORD                                                                                \
	((__u64)'P' | (__u64)'R' << 8 | (__u64)'I' << 16 | (__u64)' ' << 24 | (__u64)'*' << 32 | (__u64)' ' << 40 | \
	 (__u64)'H' << 48 | (__u64)'T' << 56)

/*
 * Whether a connection's first bytes @b (8 or more peeked) rule out HTTP/1.x:
 * they are the HTTP/2 preface, or they cannot start a request line
 * (nt_maybe_request()). A CR or LF first does not: a server skips empty
 * lines before a request (RFC 9112, 2.2), and the PROXY protocol v2 header a
 * load balancer puts before the request starts with CR LF.
 */
static __always_inline int nt_not_http1(const __u8 *b)
{
	if (nt_word(b) == NT_H2_PREFACE_WORD)
		return 1;
	return b[0] != '\r' && b[0] != '\n' && !nt_maybe_request(b);
}

/*
 * Whether the read of @len bytes on @sk that just returned began at the
 * connection's first byte: what the application has read so far (the bytes
 * received less those still queued) is this read. Not for a connection that
 * predates the probe's attach, whose first read seen can be the middle of a
 * body or of a request.
 */
static __always_inline int nt_stream_start(struct sock *sk, __u64 len)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

	return tp && tp->bytes_received - (__u32)(tp->rcv_nxt - tp->copied_seq) == len;
}

/*
 * A read: the request line at its start, and each further one right after a
 * header block (pipelining), is queued with the read's time, which is when
 * those requests arrived. @conn: the connection's state in the socket,
 * already looked up (socket and sendmsg hooks: @btf), else NULL; @first_read:
 * this is the first read of @conn (which then says so, NT_CONN_SEEN): unless
 * it began mid-stream, a first read that rules out HTTP/1.x marks the
 * connection NT_CONN_OTHER.
 */
static __always_inline int nt_on_request(struct sock *sk, struct nt_http_conn *conn, int first_read, void *ubuf,
					 __u64 len, int btf)
{
	struct nt_http_peek_buf *pk;
	__u64 now = 0, off = 0;
	__u32 first;
	__u8 carry = 0;
	int i;

	if (len == 1) {
		__u8 c = 0;

		if (!conn)
			conn = nt_conn_of(sk, btf, 0);
		if (!conn)
			return 0;
		/* A second 1-byte read: the carried byte was not a request's. */
		if (conn->carry) {
			conn->carry = 0;
			return 0;
		}
		if (!bpf_probe_read_user(&c, 1, ubuf) && c >= 'A' && c <= 'Z') {
			conn->carry = c;
			conn->carry_ns = nt_read_ns(sk, btf);
		}
		return 0;
	}
	/*
	 * One read of the first bytes (up to the peek size), tested before
	 * anything else, the map lookup included: a read that cannot start a
	 * request (another protocol, a body) exits here. Reading 7 bytes first
	 * would cost a second user copy on every request, and on this path
	 * (servers' sockets only) most reads are requests.
	 */
	pk = nt_peek();
	if (!pk)
		return 0;
	first = nt_peek_user(pk, ubuf, len, 0, 8);
	if (btf && first_read && first && nt_not_http1(pk->buf) && nt_stream_start(sk, len)) {
		conn->kind = NT_CONN_OTHER;
		return 0;
	}
	if (!first || !nt_maybe_request(pk->buf))
		return 0;
	now = nt_read_ns(sk, btf);
	if (!conn)
		conn = nt_conn_of(sk, btf, 0);
	if (conn && conn->carry) {
		/* The rest of a request follows its first byte at once; a carry
		 * older than that belongs to no request this read continues. */
		if (now - conn->carry_ns < NT_HTTP_CARRY_MAX_NS) {
			carry = conn->carry;
			now = conn->carry_ns;
		}
		conn->carry = 0;
	}
	/* One more than the queue holds, so that an overflow is counted. */
	for (i = 0; i <= NT_HTTP_PIPELINE; i++) {
		struct nt_http_pending req = {};
		__u32 n;
		int parsed, end, tp;

		if (i == 0 && carry) {
			/* The carried first byte, then this read. */
			n = len > NT_HTTP_PEEK - 1 ? NT_HTTP_PEEK - 1 : (__u32)len;
			/* Hide what clang knows of n, so the verifier sees the bound. */
			asm volatile("" : "+r"(n));
			if (n < 7 || n > NT_HTTP_PEEK - 1 || bpf_probe_read_user(pk->buf + 1, n, ubuf))
				break;
			pk->buf[0] = carry;
			n += 1;
		} else {
			n = i == 0 ? first : nt_peek_user(pk, ubuf, len, off, 8);
		}
		if (!n)
			break;
		parsed = nt_parse_request(n, i == 0);
		if (parsed <= 0)
			break;
		if (!conn)
			conn = nt_conn_of(sk, btf, 1);
		if (!conn)
			return 0;
		end = (parsed >> 4) & 0x3ff;
		tp = (parsed >> 14) & 0x3ff;
		req.method = (__u8)((parsed & 0xf) - 1);
		req.start_ns = now;
		if (tp > 0)
			nt_trace_id_at((__u32)tp, &req);
		if (conn->tail - conn->head >= NT_HTTP_PIPELINE) {
			nt_stat_inc(NT_STAT_HTTP_PIPELINE_FULL);
			return 0;
		}
		conn->q[conn->tail & (NT_HTTP_PIPELINE - 1)] = req;
		conn->tail++;
		/* Another request can only follow a complete header block. */
		if (end <= 0)
			break;
		/* Offsets past the first message are in this read, without the carry. */
		off += carry && i == 0 ? end - 1 : end;
	}
	return 0;
}

static __always_inline void nt_emit(struct sock *sk, const struct nt_http_pending *req, __u16 status,
				    __u32 flags, int btf, __u64 duration_ns, __u64 cgroup_id)
{
	struct nt_http_event *ev = nt_reserve(sizeof(*ev));

	if (!ev)
		return;
	__builtin_memset(ev, 0, sizeof(*ev));
	nt_hdr_init(&ev->hdr, NT_EVENT_HTTP, sizeof(*ev));
	if (btf)
		nt_load_addrs(&sk->__sk_common, &ev->family, ev->saddr, ev->daddr, &ev->sport, &ev->dport);
	else
		nt_read_addrs(&sk->__sk_common, &ev->family, ev->saddr, ev->daddr, &ev->sport, &ev->dport);
	ev->method = req->method;
	ev->status = status;
	ev->duration_ns = duration_ns;
	ev->cgroup_id = cgroup_id;
	ev->flags = flags;
	if (req->has_trace) {
		ev->flags |= NT_HTTP_F_TRACE;
		__builtin_memcpy(ev->trace_id, req->trace_id, sizeof(ev->trace_id));
	}
	nt_submit(ev);
}

/* The histogram bucket of @ns (abi.h: NT_HTTP_BOUNDS_NS_LIST, then +Inf). */
static __always_inline __u32 nt_http_bucket(__u64 ns)
{
	static const __u64 bounds[NT_HTTP_BUCKETS - 1] = { NT_HTTP_BOUNDS_NS_LIST };
	__u32 i;

#pragma unroll
	for (i = 0; i < NT_HTTP_BUCKETS - 1; i++) {
		if (ns <= bounds[i])
			return i;
	}
	return NT_HTTP_BUCKETS - 1;
}

/* Claims tried per new key before giving up for this request (other CPUs
 * are claiming the same slots right now, or the hint is stale). */
#define NT_HTTP_CLAIM_TRIES 4
#define NT_EEXIST 17

/*
 * The index of @key's slot (abi.h, struct nt_http_slot), claimed if the key
 * has none yet; -1 when no slot could be claimed. The loader sizes all three
 * maps alike (--http-table-entries): once every slot is claimed, the claims
 * map is full and refuses the insert. A global function, verified once
 * (kernel >= 5.6) instead of at each inlined nt_record(): the claim loop was
 * most of the HTTP programs' load time.
 */
__noinline int nt_http_slot_of(const struct nt_http_key *key)
{
	struct nt_http_slot *slot;
	__u32 *idx, *hint, zero = 0, i, s;
	__u8 one = 1;
	long err;

	if (!key)
		return -1;
	idx = bpf_map_lookup_elem(&nt_http_index, key);
	if (idx)
		return (int)*idx;
	hint = bpf_map_lookup_elem(&nt_http_hint, &zero);
	if (!hint)
		return -1;
	s = *hint;
	for (i = 0; i < NT_HTTP_CLAIM_TRIES; i++, s++) {
		err = bpf_map_update_elem(&nt_http_claims, &s, &one, BPF_NOEXIST);
		if (err == -NT_EEXIST)
			continue; /* someone else's */
		if (err)
			return -1; /* every slot is claimed */
		*hint = s + 1;
		slot = bpf_map_lookup_elem(&nt_http_slots, &s);
		if (!slot) {
			/* Past the table's end: slots below the hint were freed
			 * (nt_http_free_slots()). Start over at the first. */
			bpf_map_delete_elem(&nt_http_claims, &s);
			*hint = 0;
			return -1;
		}
		/* The key before the index entry: a CPU that finds the slot
		 * through the index adds to a slot whose key is written. The
		 * loader trusts a key only once two reads agree (it has no
		 * barrier against this write). */
		__builtin_memcpy(&slot->key, key, sizeof(*key));
		if (bpf_map_update_elem(&nt_http_index, key, &s, BPF_NOEXIST)) {
			/* Another CPU indexed the key first: use its slot (this
			 * one keeps the key and zero totals; readers sum by key). */
			idx = bpf_map_lookup_elem(&nt_http_index, key);
			if (idx)
				return (int)*idx;
		}
		return (int)s;
	}
	*hint = s;
	return -1;
}

/* Slots looked at per call of nt_http_free_slots(), and the largest table
 * (--http-table-entries) the cgroup_rmdir hook walks. */
#define NT_HTTP_FREE_CHUNK 64
#define NT_HTTP_TABLE_MAX 65536

/*
 * Frees the slots of cgroup @cgroup_id among slots [@from, @from + 64), in
 * the order abi.h gives. Returns 1 once past the table's end, else 0. A
 * global function: the verifier walks the loop once, not once per chunk.
 */
__noinline int nt_http_free_slots(__u64 cgroup_id, __u32 from)
{
	__u32 i, zero = 0, *hint;

	for (i = 0; i < NT_HTTP_FREE_CHUNK; i++) {
		__u32 idx = from + i;
		struct nt_http_slot *slot = bpf_map_lookup_elem(&nt_http_slots, &idx);
		struct nt_http_key key;

		if (!slot)
			return 1;
		if (!slot->key.family || slot->key.cgroup_id != cgroup_id)
			continue;
		key = slot->key;
		bpf_map_delete_elem(&nt_http_index, &key);
		__builtin_memset(&slot->key, 0, sizeof(slot->key));
		/* An atomic add is a full barrier: the key is zeroed before the
		 * totals, as a reader checking the key twice needs. */
		__sync_fetch_and_add(&slot->generation, 1);
		__builtin_memset(&slot->totals, 0, sizeof(slot->totals));
		bpf_map_delete_elem(&nt_http_claims, &idx);
		hint = bpf_map_lookup_elem(&nt_http_hint, &zero);
		if (hint && idx < *hint)
			*hint = idx;
	}
	return 0;
}

/*
 * One request answered with @status, taking @ns, on the connection at @sk
 * (state @conn), the full way: its slot found or claimed for its key
 * (cgroup, local address, method, status, TLS) and cached in @conn, the
 * request added to the slot's totals; and it goes out as an event when it
 * carries a trace id (flagged NT_HTTP_F_COUNTED: the aggregator takes its
 * exemplar and does not count it again) or when it has no slot (counted,
 * NT_STAT_HTTP_TABLE_FULL, and sent whole, so that it is not lost).
 * @status_flags: the status in bits 0-15, NT_HTTP_F_* above them.
 *
 * A global function, verified once, not at each of nt_on_response()'s
 * inlined calls: it made nt_http_sendmsg the slowest program to load (186k
 * instructions, 308 ms here). So @sk is a number here, and its fields are
 * read with probe reads (BPF_CORE_READ), never loaded through a trusted
 * pointer; nt_record() handles the common case inline.
 */
__noinline int nt_record_slow(__u64 sk, struct nt_http_conn *conn, const struct nt_http_pending *req,
			      __u32 status_flags, __u64 ns)
{
	struct sock *s = (struct sock *)sk;
	struct nt_http_key key = {};
	struct nt_http_slot *slot = NULL;
	__u16 status = (__u16)status_flags;
	__u32 flags = status_flags >> 16, idx = 0;
	__u8 tls = (flags & NT_HTTP_F_TLS) != 0;
	struct nt_http_pending r;
	int i;

	if (!conn || !req)
		return 0;
	r = *req;
	if (conn->slot && conn->slot_method == r.method && conn->slot_status == status && conn->slot_tls == tls) {
		idx = conn->slot - 1;
		slot = bpf_map_lookup_elem(&nt_http_slots, &idx);
		if (slot && (__u16)slot->generation != conn->slot_gen)
			slot = NULL;
	}
	if (!slot) {
		key.cgroup_id = bpf_get_current_cgroup_id();
		key.family = (__u8)BPF_CORE_READ(s, __sk_common.skc_family);
		if (key.family == NT_AF_INET6)
			bpf_core_read(key.addr, 16, &s->__sk_common.skc_v6_rcv_saddr);
		else
			bpf_core_read(key.addr, 4, &s->__sk_common.skc_rcv_saddr);
		key.method = r.method;
		key.status = status;
		key.flags = flags & NT_HTTP_F_TLS;
		i = nt_http_slot_of(&key);
		if (i >= 0) {
			idx = (__u32)i;
			slot = bpf_map_lookup_elem(&nt_http_slots, &idx);
		}
		if (slot) {
			conn->slot = idx + 1;
			conn->slot_method = r.method;
			conn->slot_status = status;
			conn->slot_tls = tls;
			conn->slot_gen = (__u16)slot->generation;
		}
	}
	if (slot) {
		__sync_fetch_and_add(&slot->totals.buckets[nt_http_bucket(ns)], 1);
		__sync_fetch_and_add(&slot->totals.sum_ns, ns);
		if (!r.has_trace)
			return 0;
		flags |= NT_HTTP_F_COUNTED;
	} else {
		nt_stat_inc(NT_STAT_HTTP_TABLE_FULL);
	}
	/* The key was built (its cgroup read) unless the cached slot served;
	 * a cgroup id is never 0. */
	nt_emit(s, &r, status, flags, 0, ns, key.cgroup_id ? key.cgroup_id : bpf_get_current_cgroup_id());
	return 0;
}

/*
 * One request answered with @status: the common case inline, a request with
 * no trace id whose key is the connection's cached slot (the same method,
 * status and TLS as the last one, the slot not freed since), added to the
 * slot's totals; anything else by nt_record_slow().
 */
static __always_inline void nt_record(struct sock *sk, struct nt_http_conn *conn,
				      const struct nt_http_pending *req, __u16 status, __u32 flags, int btf)
{
	__u64 ns = bpf_ktime_get_ns() - req->start_ns;
	__u8 tls = (flags & NT_HTTP_F_TLS) != 0;
	struct nt_http_peek_buf *pk;

	/* A start from the socket's cached clock (ktime_get_ns(), through
	 * nt_read_ns()) can lead this NMI-safe reading of the same clock by a
	 * little across a timekeeping update: a negative duration counts as
	 * zero, without a branch. */
	ns &= ~(__u64)((__s64)ns >> 63);
	if (conn->slot && !req->has_trace && conn->slot_method == req->method && conn->slot_status == status &&
	    conn->slot_tls == tls) {
		__u32 idx = conn->slot - 1;
		struct nt_http_slot *slot = bpf_map_lookup_elem(&nt_http_slots, &idx);

		if (slot && (__u16)slot->generation == conn->slot_gen) {
			__sync_fetch_and_add(&slot->totals.buckets[nt_http_bucket(ns)], 1);
			__sync_fetch_and_add(&slot->totals.sum_ns, ns);
			return;
		}
	}
	/* The sock as a number: a global function takes no trusted pointer.
	 * (Storing a pointer into a map needs CAP_PERFMON, which loading
	 * these programs needs anyway.) */
	pk = nt_peek();
	if (!pk)
		return;
	*(volatile __u64 *)&pk->sk = (__u64)sk;
	nt_record_slow(*(volatile __u64 *)&pk->sk, conn, req, (__u32)status | flags << 16, ns);
}

/*
 * A write: each final status line (one, or several back to back when a
 * server answers pipelined requests in one write) ends the oldest pending
 * request of the connection. The next response is looked for right after
 * the previous one's Content-Length body, then right after its headers
 * (HEAD, 204 and 304 responses carry none). @flags (NT_HTTP_F_*) go into
 * the events. @btf: @sk is a trusted BTF pointer (a tp_btf argument), whose
 * fields are loaded directly instead of through probe reads, and @conn its
 * state in the socket, which the caller looked up (NULL: none); otherwise
 * the state is looked up here.
 */
static __always_inline int nt_on_response(struct sock *sk, struct nt_http_conn *conn, void *ubuf, __u64 len,
					  __u32 flags, int btf, int seq_check)
{
	struct nt_http_peek_buf *pk;
	struct nt_http_pending req;
	__u64 off = 0;
	__u32 first = 0;
	__u8 line[12];
	int i, status;

	/*
	 * The status line is read to the stack first, and only 12 bytes of
	 * it: bulk writes exit after this test, and most responses end here.
	 * A user copy to the stack is cheaper than one to the peek buffer (a
	 * map value), which hardened usercopy checks as a heap object.
	 */
	if (len < 12 || bpf_probe_read_user(line, sizeof(line), ubuf))
		return 0;
	status = nt_status_of(line);
	if (!status)
		return 0;
	/* @btf: the caller looked the socket's state up (NULL: none). */
	if (!btf)
		conn = nt_conn_of(sk, btf, 0);
	/* @seq_check (the send hook): the same status line again, not a new one. */
	if (seq_check && conn) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

		if (tp) {
			__u32 seq = tp->write_seq;

			if (conn->resp_seen && conn->resp_seq == seq)
				return 0;
			conn->resp_seq = seq;
			conn->resp_seen = 1;
		}
	}
	/*
	 * A final response to the only request pending: nothing in this write
	 * can pair with another (further responses are looked for only while
	 * requests are pending).
	 */
	if (status >= 200 && conn && conn->tail - conn->head == 1) {
		req = conn->q[conn->head & (NT_HTTP_PIPELINE - 1)];
		conn->head++;
		nt_record(sk, conn, &req, (__u16)status, flags, btf);
		return 0;
	}
	/* Otherwise (pipelining, interim 1xx, no request): the whole peek. */
	pk = nt_peek();
	if (!pk)
		return 0;
	if (len <= NT_HTTP_PEEK) {
		first = nt_peek_user(pk, ubuf, len, 0, 12);
		if (!first)
			return 0;
	}
	for (i = 0; i < NT_HTTP_PIPELINE; i++) {
		__u32 n = i == 0 && first ? first : nt_peek_user(pk, ubuf, len, off, 12);
		int extent;
		__u64 head, body;

		if (!n)
			break;
		status = nt_status_line(n);
		if (status <= 0)
			break;
		/* 1xx are interim: the final response still follows. */
		if (status >= 200) {
			if (!conn || conn->head == conn->tail) {
				nt_stat_inc(NT_STAT_HTTP_UNMATCHED);
				return 0;
			}
			req = conn->q[conn->head & (NT_HTTP_PIPELINE - 1)];
			conn->head++;
			nt_record(sk, conn, &req, (__u16)status, flags, btf);
			/*
			 * Further responses in this write are looked for only
			 * while requests are pending (pipelining): finding where
			 * this one ends is a header scan, most of a write's cost.
			 */
			if (conn->head == conn->tail)
				break;
		}
		extent = nt_response_extent(n);
		if (extent <= 0)
			break;
		head = extent & 0xffff;
		body = (__u32)extent >> 16;
		if (off + head + 12 > len)
			break;
		/* The next status line: after a body, or right after the headers. */
		if (body && off + head + body + 12 <= len) {
			n = nt_peek_user(pk, ubuf, len, off + head + body, 12);
			if (n && nt_status_line(n) > 0) {
				off += head + body;
				continue;
			}
		}
		off += head;
	}
	return 0;
}

/* HTTPS through OpenSSL uprobes: shares the matcher above. */
#include "http_tls.h"

/* The syscall @nr, when it is one of the read/write family: its direction
 * and how its second argument holds the buffer (0 plain, 1 iovec, 2 msghdr). */
static __always_inline int nt_syscall_io(__u64 nr, int *dir, int *kind)
{
	switch (nr) {
	case NT_NR_READ:
	case NT_NR_RECVFROM:
		*dir = NT_DIR_IN, *kind = 0;
		return 1;
	case NT_NR_READV:
		*dir = NT_DIR_IN, *kind = 1;
		return 1;
	case NT_NR_RECVMSG:
		*dir = NT_DIR_IN, *kind = 2;
		return 1;
	case NT_NR_WRITE:
	case NT_NR_SENDTO:
		*dir = NT_DIR_OUT, *kind = 0;
		return 1;
	case NT_NR_WRITEV:
		*dir = NT_DIR_OUT, *kind = 1;
		return 1;
	case NT_NR_SENDMSG:
		*dir = NT_DIR_OUT, *kind = 2;
		return 1;
	}
	return 0;
}

/* A read or write of a syscall on TCP sock @sk. @btf (the socket hooks):
 * the caller did the TLS check and looked up @conn (nt_sock_io()). */
static __always_inline int nt_io(struct sock *sk, struct nt_http_conn *conn, int first_read, int dir, int kind,
				 __u64 arg1, __u64 len, int btf)
{
	void *ubuf = nt_user_buf(arg1, kind, &len);

	if (!ubuf || (!btf && nt_tls_sock_io((__u64)sk, dir == NT_DIR_IN)))
		return 0;
	if (dir == NT_DIR_IN)
		return nt_on_request(sk, conn, first_read, ubuf, len, btf);
	return nt_on_response(sk, conn, ubuf, len, 0, btf, 0);
}

/* Drops the state of connection @key, counting requests left unanswered. */
static __always_inline int nt_conn_end(__u64 key)
{
	struct nt_http_conn *conn;

	nt_tls_forget(key);
	conn = bpf_map_lookup_elem(&nt_http_conns, &key);
	if (!conn)
		return 0;
	if (conn->head != conn->tail)
		nt_stat_inc(NT_STAT_HTTP_CLOSED);
	bpf_map_delete_elem(&nt_http_conns, &key);
	return 0;
}

/*
 * The state of the server end @sk of a TCP connection for a read (@in:
 * created if missing) or a send, with the socket and sendmsg hooks; NULL
 * when it has none (a send before any read) or it could not be created (the
 * request that needed it counts that). In @first_read, whether this is the
 * connection's first read, which the state then records. A connection whose
 * first read ruled out HTTP/1.x (NT_CONN_OTHER) returns NULL with @skip set:
 * its reads and sends cost this lookup and no user memory read.
 */
static __always_inline struct nt_http_conn *nt_sk_conn(struct sock *sk, int in, int *first_read, int *skip)
{
	struct nt_http_conn *conn =
		bpf_sk_storage_get(&nt_http_sk_conns, sk, 0, in ? BPF_SK_STORAGE_GET_F_CREATE : 0);

	*first_read = 0;
	*skip = 0;
	if (!conn)
		return NULL;
	if (conn->kind == NT_CONN_OTHER) {
		*skip = 1;
		return NULL;
	}
	if (in && conn->kind == NT_CONN_UNSEEN) {
		conn->kind = NT_CONN_SEEN;
		*first_read = 1;
	}
	return conn;
}

/*
 * Socket hooks (kernel >= 6.3, the default where available): the
 * sock_recv_length/sock_send_length tracepoints fire only for socket I/O and
 * hand over the sock itself, so no other syscall on the node pays anything and
 * nothing is looked up by fd. The user buffer comes from the syscall's saved
 * registers (bpf_task_pt_regs); socket I/O from other paths (io_uring,
 * sendfile, splice, in-kernel sockets) is not a read/write syscall and is
 * skipped.
 */
static __always_inline int nt_sock_io(struct sock *sk, int ret, int want)
{
	struct nt_http_conn *conn;
	struct pt_regs *regs;
	int dir, kind, first_read, skip;
	__u64 nr, arg1;

	if (ret <= 0 || sk->sk_protocol != NT_IPPROTO_TCP || sk->sk_type != NT_SOCK_STREAM)
		return 0;
	/*
	 * The client end of a connection: nothing to parse (requests are
	 * recognised where they are served). Only an SSL call in progress needs
	 * the sock, so that its plaintext is attributed and not counted as lost.
	 */
	if (!nt_accepted(sk)) {
		nt_tls_sock_io((__u64)sk, want == NT_DIR_IN);
		return 0;
	}
	if (nt_tls_sock_io((__u64)sk, want == NT_DIR_IN))
		return 0;
	conn = nt_sk_conn(sk, want == NT_DIR_IN, &first_read, &skip);
	if (skip)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
#if defined(__TARGET_ARCH_x86)
	nr = regs->orig_ax;
	arg1 = regs->si;
#elif defined(__TARGET_ARCH_arm64)
	nr = regs->syscallno;
	arg1 = regs->user_regs.regs[1];
#endif
	if (!nt_syscall_io(nr, &dir, &kind) || dir != want)
		return 0;
	return nt_io(sk, conn, first_read, dir, kind, arg1, (__u64)ret, 1);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(nt_http_recv, struct sock *sk, int ret, int flags)
{
	/* A peek is read again: count the real read only. */
	if (flags & NT_MSG_PEEK)
		return 0;
	return nt_sock_io(sk, ret, NT_DIR_IN);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(nt_http_send, struct sock *sk, int ret, int flags)
{
	return nt_sock_io(sk, ret, NT_DIR_OUT);
}

/* iov_iter types (enum iter_type): these values hold on every kernel with
 * the tcp_sendmsg_locked tracepoint (6.16 on). */
#define NT_ITER_UBUF 0
#define NT_ITER_IOVEC 1

/*
 * The send side of the sendmsg hooks (kernel >= 6.16, the default where
 * available): tcp_sendmsg_locked hands over the kernel's msghdr, whose
 * iterator holds the user buffer (and for writev/sendmsg the kernel's copy of
 * the iovec), so a response costs one user read instead of three (registers,
 * iovec, bytes). It fires before the bytes are queued, once per skb the send
 * fills, and again for the same bytes after a wait for buffer space or an
 * EAGAIN retry (deduplicated by write_seq, nt_on_response()). TCP sends from
 * any path with user memory count, io_uring's included; kernel buffers
 * (sendfile, splice, kTLS) are skipped.
 */
SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(nt_http_sendmsg, struct sock *sk, struct msghdr *msg, struct sk_buff *skb, int size_goal)
{
	struct iov_iter *it = &msg->msg_iter;
	__u64 off, left, seg, base, d;
	struct nt_http_conn *conn;
	int first_read, skip;

	if (!nt_accepted(sk)) {
		nt_tls_sock_io((__u64)sk, 0);
		return 0;
	}
	/* The current segment's base and end: a single buffer (ITER_UBUF) is
	 * one segment ending where the bytes left end. */
	off = it->iov_offset;
	left = it->count;
	if (it->iter_type == NT_ITER_UBUF) {
		base = (__u64)it->ubuf;
		seg = off + left;
	} else if (it->iter_type == NT_ITER_IOVEC) {
		const struct iovec *iov = it->__iov;

		base = (__u64)iov->iov_base;
		seg = iov->iov_len;
	} else {
		return 0;
	}
	if (seg < off)
		return 0;
	/* left = min(left, seg - off) without a branch: a branch here doubles
	 * the states the verifier walks through nt_on_response() (168k
	 * instructions instead of 96k). Both are sizes below 2^63
	 * (MAX_RW_COUNT), so the sign of their difference orders them. */
	d = seg - off;
	left ^= (left ^ d) & -((d - left) >> 63);
	if (!left || nt_tls_sock_io((__u64)sk, 0))
		return 0;
	conn = nt_sk_conn(sk, 0, &first_read, &skip);
	if (skip)
		return 0;
	return nt_on_response(sk, conn, (void *)(base + off), left, 0, 1, 1);
}

/*
 * A removed cgroup's slots are freed for new keys. No process is left in it
 * to add to them (rmdir succeeds only on an empty cgroup) and its id is never
 * reused, so its keys cannot come back; without this, a node's pod churn
 * would fill the table and turn every new key's requests into events. The
 * loader's readers stop seeing the keys (proto: http_totals_complete). A walk
 * of the whole table: 23-45 us per rmdir at the default 8192 slots
 * (scripts/rmdir-cost), in the context of the process removing the cgroup.
 */
SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(nt_http_rmdir, struct cgroup *cgrp, const char *path)
{
	__u64 id = cgrp->kn->id;
	__u32 i;

	if (!id)
		return 0;
	for (i = 0; i < NT_HTTP_TABLE_MAX / NT_HTTP_FREE_CHUNK; i++) {
		if (nt_http_free_slots(id, i * NT_HTTP_FREE_CHUNK))
			break;
	}
	return 0;
}

/* A TCP socket reaching CLOSE ends its connection state, whoever closed it
 * (close(), exit, reset). */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(nt_http_state, struct sock *sk, int oldstate, int newstate)
{
	struct nt_http_conn *conn;

	if (newstate != NT_TCP_CLOSE)
		return 0;
	conn = bpf_sk_storage_get(&nt_http_sk_conns, sk, 0, 0);
	if (conn) {
		if (conn->head != conn->tail)
			nt_stat_inc(NT_STAT_HTTP_CLOSED);
		bpf_sk_storage_delete(&nt_http_sk_conns, sk);
	}
	return nt_conn_end((__u64)sk);
}

/*
 * Syscall hooks (kernels 5.8 to 6.2, or --http-hook=syscall): one program on
 * every syscall exit, which resolves the fd to a TCP sock, and sys_enter_close.
 */
SEC("tp_btf/sys_exit")
int BPF_PROG(nt_http_exit, struct pt_regs *regs, long ret)
{
	__u64 nr, fd, arg1;
	int dir, kind;
	struct sock *sk;

	if (ret <= 0)
		return 0;
#if defined(__TARGET_ARCH_x86)
	nr = BPF_CORE_READ(regs, orig_ax);
#elif defined(__TARGET_ARCH_arm64)
	nr = BPF_CORE_READ(regs, syscallno);
#endif
	if (!nt_syscall_io(nr, &dir, &kind))
		return 0;
#if defined(__TARGET_ARCH_x86)
	fd = BPF_CORE_READ(regs, di);
	arg1 = BPF_CORE_READ(regs, si);
#elif defined(__TARGET_ARCH_arm64)
	fd = BPF_CORE_READ(regs, orig_x0);
	arg1 = BPF_CORE_READ(regs, user_regs.regs[1]);
#endif
	sk = nt_fd_tcp_sock(fd);
	if (!sk)
		return 0;
	/* The client end: see nt_sock_io(). */
	if (!BPF_CORE_READ(sk, sk_max_ack_backlog)) {
		nt_tls_sock_io((__u64)sk, dir == NT_DIR_IN);
		return 0;
	}
	return nt_io(sk, NULL, 0, dir, kind, arg1, (__u64)ret, 0);
}

/*
 * A close() of a TCP socket's last descriptor ends its connection state. One
 * of several does not: a pre-fork or inetd-style server's parent closes its
 * copy of each connection a forked child serves, requests pending.
 */
SEC("tracepoint/syscalls/sys_enter_close")
int nt_http_close(struct nt_sys_enter_close *ctx)
{
	struct file *f = 0;
	struct sock *sk = nt_fd_tcp_sock_file(ctx->fd, &f);

	if (!sk || nt_file_shared(f))
		return 0;
	return nt_conn_end((__u64)sk);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
