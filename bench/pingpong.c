// SPDX-License-Identifier: Apache-2.0
/*
 * One thread plays an HTTP/1.1 client and server over loopback TCP: write a
 * request, recv it on the accepted socket, writev a response, read it back.
 * No scheduler, no second CPU: the cost the probes add per request shows up
 * as nanoseconds per round trip, steadier than a wrk run (scripts/http-pingpong).
 *   pingpong ROUNDS [REPEATS]   -> best ns per request over REPEATS runs
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

int main(int argc, char **argv)
{
	static const char small[] = "GET /index.html HTTP/1.1\r\nHost: 10.0.0.2:8080\r\nUser-Agent: wrk\r\n\r\n";
	/* What a browser sends: 466 bytes, within the probe's 512-byte peek. */
	static const char browser[] =
		"GET /shop/cart?item=1234 HTTP/1.1\r\nHost: shop.example.com\r\n"
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
		"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
		"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n"
		"Referer: https://shop.example.com/shop/item/1234\r\nConnection: keep-alive\r\n"
		"Cookie: session=6f1c2a9be3d84a7f9b0c1d2e3f405162; theme=dark; consent=1\r\n"
		"Sec-Fetch-Dest: document\r\n\r\n";
	const char *req = small;
	size_t req_len = sizeof(small) - 1;
	static const char hdr[] = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
				  "Content-Length: 5\r\nConnection: keep-alive\r\n\r\n";
	struct iovec iov[2] = { { (void *)hdr, sizeof(hdr) - 1 }, { "hello", 5 } };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	long rounds = argc > 1 ? atol(argv[1]) : 200000;
	int repeats = argc > 2 ? atoi(argv[2]) : 7, one = 1, l, c, s;
	const char *kind = argc > 3 ? argv[3] : "small";
	double best = 1e18;
	char buf[4096];

	if (!strcmp(kind, "browser")) {
		req = browser;
		req_len = sizeof(browser) - 1;
	} else if (strcmp(kind, "small")) {
		rounds = 0;
	}
	if (rounds <= 0 || repeats <= 0) {
		fprintf(stderr, "usage: pingpong ROUNDS [REPEATS [small|browser]] (both > 0)\n");
		return 2;
	}
	l = socket(AF_INET, SOCK_STREAM, 0);
	/* Port 0: the kernel picks a free one; a backlog > 0 makes the accepted
	 * socket a server end for the probe. */
	if (l < 0 || bind(l, (void *)&a, sizeof(a)) || listen(l, 16) || getsockname(l, (void *)&a, &alen))
		die("listen");
	c = socket(AF_INET, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (void *)&a, sizeof(a)))
		die("connect");
	s = accept(l, 0, 0);
	if (s < 0)
		die("accept");
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (int r = 0; r < repeats; r++) {
		double t = now(), d;

		for (long i = 0; i < rounds; i++) {
			if (write(c, req, req_len) != (ssize_t)req_len || recv(s, buf, sizeof(buf), 0) <= 0 ||
			    writev(s, iov, 2) <= 0 || read(c, buf, sizeof(buf)) <= 0)
				die("round trip");
		}
		d = (now() - t) * 1e9 / rounds;
		if (d < best)
			best = d;
	}
	printf("%.0f\n", best);
	return 0;
}
