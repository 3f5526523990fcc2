/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * HTTPS through OpenSSL: uprobes on SSL_read, SSL_read_ex, SSL_write and
 * SSL_write_ex (OpenSSL 1.1 and 3.x, and BoringSSL's SSL_read/SSL_write) feed
 * the plaintext to the same request/response matcher as the socket hooks,
 * keyed by the same `struct sock *`. Part of the `http` object (included by
 * http.bpf.c, after the matcher), because it shares the connection table and
 * the peek buffer. Kernel floor: 5.8 like the rest of the object (uprobes
 * with BPF exist since 4.x).
 *
 * The TCP connection under an SSL object is learned three ways, best first:
 * 1. A socket hook of the http object (sock_recv_length/sock_send_length or
 *    sys_exit) that fires on the same thread *during* an SSL call: the
 *    library's socket BIO did the I/O (nginx, Python, any SSL_set_fd user).
 *    Exact; it also overwrites a mapping left by a freed SSL object whose
 *    address was reused.
 * 2. The mapping SSL object -> sock remembered from an earlier call.
 * 3. For reads only: the last socket this thread received on since its
 *    previous SSL_read, for libraries driven through a memory BIO, where
 *    the event loop reads the ciphertext and then calls SSL_read (Node.js).
 * Mappings are dropped when the sock reaches TCP CLOSE (nt_tls_forget()).
 * Plaintext whose connection is still unknown is counted
 * (NT_STAT_TLS_NO_SOCK), never guessed.
 *
 * Ciphertext seen by the socket hooks during an SSL call is skipped: it is
 * never parsed as HTTP, so a TLS request is counted once.
 */
#ifndef __NETTEL_HTTP_TLS_H
#define __NETTEL_HTTP_TLS_H

/* Threads with SSL state at once (one entry per thread that ever called
 * SSL_read/SSL_write; LRU, so exited threads age out). */
#define NT_TLS_THREADS 16384
/* SSL objects whose TCP connection is known. */
#define NT_TLS_SOCKS 65536

#if defined(__TARGET_ARCH_x86)
#define NT_ARG1(c) ((c)->di)
#define NT_ARG2(c) ((c)->si)
#define NT_ARG3(c) ((c)->dx)
#define NT_ARG4(c) ((c)->cx)
#define NT_ARG5(c) ((c)->r8)
#define NT_RET(c) ((c)->ax)
#elif defined(__TARGET_ARCH_arm64)
#define NT_ARG1(c) ((c)->user_regs.regs[0])
#define NT_ARG2(c) ((c)->user_regs.regs[1])
#define NT_ARG3(c) ((c)->user_regs.regs[2])
#define NT_ARG4(c) ((c)->user_regs.regs[3])
#define NT_ARG5(c) ((c)->user_regs.regs[4])
#define NT_RET(c) ((c)->user_regs.regs[0])
#endif

/* Per-thread state: the SSL call in progress, and the last socket read. */
struct nt_tls_thread {
	__u64 ssl;     /* SSL * of the call in progress, 0 when none */
	__u64 buf;     /* its plaintext buffer */
	__u64 nbytes;  /* size_t * of the _ex variants (bytes done), 0 for SSL_read/SSL_write */
	__u64 sk;      /* sock a socket hook saw during the call, 0 if none */
	__u64 last_rx; /* sock this thread last received on outside SSL calls */
};

struct nt_tls_key {
	__u32 tgid;
	__u32 _pad;
	__u64 ssl;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NT_TLS_THREADS);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct nt_tls_thread);
	__uint(pinning, LIBBPF_PIN_BY_NAME); /* shared with adopted socket hooks */
} nt_tls_threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NT_TLS_SOCKS);
	__type(key, struct nt_tls_key);
	__type(value, __u64); /* struct sock * */
	__uint(pinning, LIBBPF_PIN_BY_NAME); /* shared with adopted socket hooks */
} nt_tls_socks SEC(".maps");

/* The reverse of nt_tls_socks, so TCP CLOSE can drop the mapping. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NT_TLS_SOCKS);
	__type(key, __u64); /* struct sock * */
	__type(value, struct nt_tls_key);
	__uint(pinning, LIBBPF_PIN_BY_NAME); /* shared with adopted socket hooks */
} nt_tls_ssls SEC(".maps");

/*
 * Processes that ever called SSL_read/SSL_write, one flag per tgid hash
 * (tgid % NT_TLS_PROCS): the socket hooks look up a thread's SSL state only
 * when its process's flag is set, so plain-HTTP processes skip that hash
 * lookup (an array lookup is inlined by the verifier: a load). A flag shared
 * by two processes, or left by an exited one, costs only the lookup. Never
 * cleared: a process whose flag were cleared during an SSL call would have
 * its ciphertext parsed.
 */
#define NT_TLS_PROCS 4096

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NT_TLS_PROCS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME); /* shared with adopted socket hooks */
} nt_tls_procs SEC(".maps");

/* HTTP probe settings (NT_HTTP_CFG_* flags), written by the loader at every
 * start, so programs adopted from a previous loader follow the new one. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_http_cfg SEC(".maps");

/* Whether the OpenSSL uprobes may run. Without them nt_tls_threads stays
 * empty, and the socket hooks skip its lookup (an array lookup with a
 * constant key is inlined by the verifier: a load, not a hash). */
static __always_inline int nt_tls_on(void)
{
	__u32 zero = 0, *flags = bpf_map_lookup_elem(&nt_http_cfg, &zero);

	return flags && (*flags & NT_HTTP_CFG_TLS);
}

/*
 * Called by the socket hooks for every successful TCP read/write. Returns 1
 * when the bytes are ciphertext of an SSL call in progress on this thread
 * (the caller then skips them), 0 otherwise. Inlined: a global function
 * cannot take the hook's trusted sock pointer. Costs the thread id and two
 * loads in processes that never called SSL_read/SSL_write (nt_tls_procs),
 * and a hash lookup more in those that did; nothing when TLS is off.
 */
static __always_inline int nt_tls_sock_io(__u64 sk, int in)
{
	struct nt_tls_thread *t;
	__u32 proc, *seen;
	__u64 id;

	if (!nt_tls_on())
		return 0;
	id = bpf_get_current_pid_tgid();
	proc = (__u32)(id >> 32) % NT_TLS_PROCS;
	seen = bpf_map_lookup_elem(&nt_tls_procs, &proc);
	if (!seen || !*seen)
		return 0;
	t = bpf_map_lookup_elem(&nt_tls_threads, &id);
	if (!t)
		return 0;
	if (t->ssl) {
		t->sk = sk;
		return 1;
	}
	if (in)
		t->last_rx = sk;
	return 0;
}

/* Drops the SSL mapping of sock @sk (at TCP CLOSE). */
static __always_inline void nt_tls_forget(__u64 sk)
{
	struct nt_tls_key *k;

	if (!nt_tls_on())
		return;
	k = bpf_map_lookup_elem(&nt_tls_ssls, &sk);
	if (!k)
		return;
	bpf_map_delete_elem(&nt_tls_socks, k);
	bpf_map_delete_elem(&nt_tls_ssls, &sk);
}

static __always_inline void nt_tls_remember(struct nt_tls_key *k, __u64 sk)
{
	bpf_map_update_elem(&nt_tls_socks, k, &sk, BPF_ANY);
	bpf_map_update_elem(&nt_tls_ssls, &sk, k, BPF_ANY);
}

static __always_inline int nt_tls_enter(__u64 ssl, __u64 buf, __u64 nbytes)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 proc = (__u32)(id >> 32) % NT_TLS_PROCS, *seen;
	struct nt_tls_thread *t;

	/* Set before the call's state exists, so that a socket hook that sees
	 * the state also sees the flag. */
	seen = bpf_map_lookup_elem(&nt_tls_procs, &proc);
	if (seen && !*seen)
		*seen = 1;
	t = bpf_map_lookup_elem(&nt_tls_threads, &id);
	if (!t) {
		struct nt_tls_thread fresh = {};

		bpf_map_update_elem(&nt_tls_threads, &id, &fresh, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&nt_tls_threads, &id);
		if (!t)
			return 0;
	}
	t->ssl = ssl;
	t->buf = buf;
	t->nbytes = nbytes;
	t->sk = 0;
	return 0;
}

/*
 * The end of an SSL call on this thread: finds the plaintext length and the
 * connection, then hands the plaintext to the matcher. Returns 0.
 */
static __always_inline int nt_tls_exit(struct pt_regs *ctx, int in)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct nt_tls_thread *t = bpf_map_lookup_elem(&nt_tls_threads, &id);
	struct nt_tls_key key = {};
	__u64 buf, nbytes, sk, len, *known;
	long ret = (int)NT_RET(ctx);

	if (!t || !t->ssl) {
		/* Entry state lost: the thread table evicted it, or the call
		 * entered while the file's entry probe was not attached (the
		 * attacher attaches return probes first and detaches them last). */
		nt_stat_inc(NT_STAT_TLS_CALL_LOST);
		return 0;
	}
	key.tgid = id >> 32;
	key.ssl = t->ssl;
	buf = t->buf;
	nbytes = t->nbytes;
	sk = t->sk;
	t->ssl = 0;
	if (sk) {
		/* Two LRU updates cost more than the lookup that spares them on
		 * every call of a known connection but its first. */
		known = bpf_map_lookup_elem(&nt_tls_socks, &key);
		if (!known || *known != sk)
			nt_tls_remember(&key, sk);
	}
	if (nbytes) {
		if (ret != 1 || bpf_probe_read_user(&len, sizeof(len), (void *)nbytes))
			return 0;
	} else {
		if (ret <= 0)
			return 0;
		len = ret;
	}
	if (!len)
		return 0;
	if (!sk) {
		known = bpf_map_lookup_elem(&nt_tls_socks, &key);
		if (known) {
			sk = *known;
		} else if (in && t->last_rx) {
			sk = t->last_rx;
			nt_tls_remember(&key, sk);
		}
	}
	if (in)
		t->last_rx = 0;
	if (!sk) {
		nt_stat_inc(NT_STAT_TLS_NO_SOCK);
		return 0;
	}
	if (in)
		return nt_on_request((struct sock *)sk, NULL, 0, (void *)buf, len, 0);
	return nt_on_response((struct sock *)sk, NULL, (void *)buf, len, NT_HTTP_F_TLS, 0, 0);
}

/* int SSL_read(SSL *ssl, void *buf, int num) and
 * int SSL_write(SSL *ssl, const void *buf, int num) */
SEC("uprobe")
int nt_tls_ent(struct pt_regs *ctx)
{
	return nt_tls_enter(NT_ARG1(ctx), NT_ARG2(ctx), 0);
}

/* int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes) and
 * int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written);
 * also OpenSSL's ssl_read_internal() and, in 1.1.1-3.1, ssl_write_internal(),
 * which take the same arguments and return 1 on success, where the loader
 * probes them instead of the four exported functions
 * (loader/src/tls/internal.rs). */
SEC("uprobe")
int nt_tls_entx(struct pt_regs *ctx)
{
	return nt_tls_enter(NT_ARG1(ctx), NT_ARG2(ctx), NT_ARG4(ctx));
}

/* OpenSSL >= 3.2's ssl_write_internal(SSL *s, const void *buf, size_t num,
 * uint64_t flags, size_t *written), under SSL_write and SSL_write_ex2 (which
 * SSL_write_ex jumps to), where the loader probes it. */
SEC("uprobe")
int nt_tls_entx5(struct pt_regs *ctx)
{
	return nt_tls_enter(NT_ARG1(ctx), NT_ARG2(ctx), NT_ARG5(ctx));
}

/* Returns of SSL_read and SSL_read_ex. */
SEC("uretprobe")
int nt_tls_rd_ret(struct pt_regs *ctx)
{
	return nt_tls_exit(ctx, 1);
}

/* Returns of SSL_write and SSL_write_ex. */
SEC("uretprobe")
int nt_tls_wr_ret(struct pt_regs *ctx)
{
	return nt_tls_exit(ctx, 0);
}

#endif /* __NETTEL_HTTP_TLS_H */
