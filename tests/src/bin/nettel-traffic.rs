// SPDX-License-Identifier: Apache-2.0
//! Traffic generator for the end-to-end tests, run inside a network namespace.
//!
//! ```text
//! nettel-traffic sink   LISTEN_ADDR CONNECTIONS          # accept, read everything, exit
//! nettel-traffic source LISTEN_ADDR CONNECTIONS BYTES    # accept, write BYTES each, exit
//! nettel-traffic send   CONNECT_ADDR BYTES               # connect, write BYTES, close
//! nettel-traffic recv   CONNECT_ADDR                     # connect, read until EOF
//! nettel-traffic dial   CONNECT_ADDR COUNT               # COUNT connect+close handshakes
//! nettel-traffic http   LISTEN_ADDR                      # HTTP/1.1 server, routes as tests/fixtures/http_server.py
//!                                                        # and /big (8 MiB, corked: see BIG_BODY)
//! nettel-traffic blob   CONNECT_ADDR COUNT               # COUNT non-HTTP request/response exchanges
//! nettel-traffic pipeline CONNECT_ADDR PATH...          # one GET per PATH, all in one write; read the responses
//! nettel-traffic split  CONNECT_ADDR PATH                # one GET whose request line spans two writes
//! nettel-traffic paced  CONNECT_ADDR PATH RATE SECONDS CONNS  # GETs at RATE/s over CONNS keep-alive
//!                                                        # connections; prints "p50_us p99_us requests"
//! ```
//! `LISTEN_ADDR` `[::]:PORT` listens dual-stack (IPv4 peers appear v4-mapped).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::ExitCode,
    time::Duration,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse_addr = |s: &str| s.parse::<SocketAddr>().unwrap_or_else(|e| panic!("bad address `{s}`: {e}"));
    let parse_n = |s: &str| s.parse::<u64>().unwrap_or_else(|e| panic!("bad number `{s}`: {e}"));
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["sink", addr, n] => serve(parse_addr(addr), parse_n(n), None),
        ["source", addr, n, bytes] => serve(parse_addr(addr), parse_n(n), Some(parse_n(bytes))),
        ["send", addr, bytes] => connect(parse_addr(addr)).and_then(|mut s| {
            write_n(&mut s, parse_n(bytes))?;
            s.shutdown(std::net::Shutdown::Write)?;
            // Wait for the peer to close so every byte was acknowledged.
            std::io::copy(&mut s, &mut std::io::sink()).map(drop)
        }),
        ["recv", addr] => {
            connect(parse_addr(addr)).and_then(|mut s| std::io::copy(&mut s, &mut std::io::sink()).map(drop))
        }
        ["dial", addr, n] => (0..parse_n(n)).try_for_each(|_| connect(parse_addr(addr)).map(drop)),
        ["http", addr] => http_server(parse_addr(addr)),
        ["blob", addr, n] => blob_client(parse_addr(addr), parse_n(n)),
        ["blobd", addr] => blob_server(parse_addr(addr)),
        ["pipeline", addr, paths @ ..] if !paths.is_empty() => pipeline_client(parse_addr(addr), paths),
        ["split", addr, path] => split_client(parse_addr(addr), path),
        ["paced", addr, path, rate, seconds, conns] => {
            paced_client(parse_addr(addr), path, parse_n(rate), parse_n(seconds), parse_n(conns))
        }
        _ => {
            eprintln!("usage: see the module docs of tests/src/bin/nettel-traffic.rs");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nettel-traffic: {e}");
            ExitCode::FAILURE
        }
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(60))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    Ok(s)
}

fn serve(addr: SocketAddr, connections: u64, write: Option<u64>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    // Tell the parent we are listening.
    println!("ready");
    std::io::stdout().flush()?;
    for _ in 0..connections {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        match write {
            Some(n) => {
                write_n(&mut s, n)?;
                s.shutdown(std::net::Shutdown::Write)?;
                let mut b = [0u8; 1];
                // Wait for the client's close: all data acknowledged.
                let _ = s.read(&mut b);
            }
            None => {
                std::io::copy(&mut s, &mut std::io::sink())?;
            }
        }
    }
    Ok(())
}

fn write_n(s: &mut TcpStream, mut n: u64) -> std::io::Result<()> {
    let buf = [0x5au8; 64 * 1024];
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k])?;
        n -= k as u64;
    }
    Ok(())
}

// === HTTP/1.1 server (the Rust runtime of the HTTP tests) ===

fn http_server(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("ready");
    std::io::stdout().flush()?;
    for conn in listener.incoming() {
        let conn = conn?;
        std::thread::spawn(move || {
            let _ = http_connection(conn);
        });
    }
    Ok(())
}

fn http_connection(conn: TcpStream) -> std::io::Result<()> {
    use std::io::BufRead;
    // One fd for reading, writing and /big's uncork thread: the syscall hooks
    // end a connection's state when any fd of it is closed.
    let conn = std::sync::Arc::new(conn);
    let mut reader = std::io::BufReader::new(&*conn);
    let mut out = &*conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
        let (mut length, mut close) = (0usize, false);
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            close |= lower == "connection: close";
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let status = match path.as_str() {
            "/ok" => "200 OK",
            "/fail" => "500 Internal Server Error",
            "/sleep" => {
                std::thread::sleep(Duration::from_millis(120));
                "202 Accepted"
            }
            "/big" => "200 OK",
            _ => "404 Not Found",
        };
        let size = if path == "/big" { BIG_BODY } else { 16 };
        let payload = if method == "HEAD" { Vec::new() } else { vec![b'x'; size] };
        // One write per response, as real servers do (the probe reads the
        // status line from the first write).
        let mut response = format!("HTTP/1.1 {status}\r\nContent-Length: {size}\r\n\r\n").into_bytes();
        response.extend_from_slice(&payload);
        if path == "/big" {
            // See BIG_BODY.
            rustix::net::sockopt::set_tcp_cork(out, true)?;
            let mut rest = &response[..];
            while !rest.is_empty() {
                let n = rustix::net::send(out, rest, rustix::net::SendFlags::EOR)?;
                rest = &rest[n..];
            }
            let corked = std::sync::Arc::clone(&conn);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                let _ = rustix::net::sockopt::set_tcp_cork(&*corked, false);
            });
        } else {
            out.write_all(&response)?;
        }
        if close {
            return Ok(());
        }
    }
}

// === HTTP/1.1 clients the usual tools do not cover ===

/// Sends one keep-alive GET per path in a single write (HTTP pipelining) and
/// reads the responses; prints their status codes.
fn pipeline_client(addr: SocketAddr, paths: &[&str]) -> std::io::Result<()> {
    let mut s = connect(addr)?;
    s.set_nodelay(true)?;
    let requests: String = paths.iter().map(|p| format!("GET {p} HTTP/1.1\r\nHost: test\r\n\r\n")).collect();
    s.write_all(requests.as_bytes())?;
    let mut reader = std::io::BufReader::new(s);
    let statuses = paths.iter().map(|_| read_response(&mut reader)).collect::<std::io::Result<Vec<_>>>()?;
    println!("{statuses:?}");
    Ok(())
}

/// The body of the Rust server's `/big`, larger than the socket buffers: its
/// send fills many segments. The response goes out corked and with MSG_EOR,
/// and is uncorked 200 ms later: until then its last partial segment stays
/// unsent, and the connection's next response cannot join that segment. With
/// `net.ipv4.tcp_notsent_lowat=1` in the server's netns, that next response's
/// send then waits for space before queueing any byte (tests/tests/http.rs).
const BIG_BODY: usize = 8 << 20;

/// Sends one GET whose request line is split across two writes 300 ms apart
/// (so the server sees two reads), then reads the response.
fn split_client(addr: SocketAddr, path: &str) -> std::io::Result<()> {
    let mut s = connect(addr)?;
    s.set_nodelay(true)?;
    s.write_all(format!("GET {path} HT").as_bytes())?;
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"TP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
    let status = read_response(&mut std::io::BufReader::new(s))?;
    println!("{status}");
    Ok(())
}

/// `paced`: GETs at a fixed total rate, open loop, from one thread.
///
/// Connection `i` sends at `t0 + i * interval / conns + k * interval`; a
/// request due while the connection still waits for its previous response
/// goes out as soon as that response is in (none is skipped). Latency runs
/// from the write to the last byte of the response. One thread with epoll and
/// a timerfd instead of a thread per connection: on a 2-CPU host, sixteen
/// client threads waking for every request put the scheduler's queueing into
/// the figure, which then amplifies any change of the server's CPU cost.
fn paced_client(addr: SocketAddr, path: &str, rate: u64, seconds: u64, conns: u64) -> std::io::Result<()> {
    use rustix::{
        event::epoll,
        time::{
            timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
        },
    };
    const TIMER: u64 = u64::MAX;
    let conns = conns.clamp(1, 256) as usize;
    let interval = 1_000_000_000 * conns as u64 / rate.max(1);
    let t0 = monotonic_ns();
    let end = t0 + seconds * 1_000_000_000;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let timer = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK)?;
    epoll::add(&ep, &timer, epoll::EventData::new_u64(TIMER), epoll::EventFlags::IN)?;
    let mut slots = Vec::with_capacity(conns);
    for i in 0..conns {
        let stream = PacedConn::open(addr, &ep, i as u64)?;
        slots.push(PacedConn {
            stream,
            buf: Vec::new(),
            sent: None,
            next: t0 + interval * i as u64 / conns as u64,
        });
    }
    let mut latencies: Vec<u64> = Vec::with_capacity((rate * seconds) as usize + conns);
    let mut events = Vec::with_capacity(conns + 1);
    loop {
        let now = monotonic_ns();
        let (mut busy, mut wake) = (false, u64::MAX);
        for c in &mut slots {
            if c.sent.is_none() && c.next < end && c.next <= now {
                (&c.stream).write_all(&request)?;
                c.sent = Some(monotonic_ns());
                c.next += interval;
            }
            if c.sent.is_some() {
                busy = true;
            } else if c.next < end {
                wake = wake.min(c.next);
            }
        }
        if !busy && wake == u64::MAX {
            break;
        }
        if wake != u64::MAX {
            let at = rustix::time::Timespec {
                tv_sec: (wake / 1_000_000_000) as i64,
                tv_nsec: (wake % 1_000_000_000) as i64,
            };
            let spec =
                Itimerspec { it_interval: rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 }, it_value: at };
            timerfd_settime(&timer, TimerfdTimerFlags::ABSTIME, &spec)?;
        }
        events.clear();
        epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None)?;
        for ev in &events {
            let k = ev.data.u64();
            if k == TIMER {
                let _ = rustix::io::read(&timer, &mut [0u8; 8]);
                continue;
            }
            let c = &mut slots[k as usize];
            while let Some(close) = c.receive()? {
                let sent =
                    c.sent.take().ok_or_else(|| std::io::Error::other("a response without a request"))?;
                latencies.push(monotonic_ns() - sent);
                // Servers cap requests per connection: reconnect, untimed.
                if close {
                    epoll::delete(&ep, &c.stream)?;
                    c.stream = PacedConn::open(addr, &ep, k)?;
                    c.buf.clear();
                }
            }
        }
    }
    if latencies.is_empty() {
        return Err(std::io::Error::other("no request completed"));
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1] as f64 / 1e3
    };
    println!("{:.1} {:.1} {}", pct(0.50), pct(0.99), latencies.len());
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds (the timerfd's clock).
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// One keep-alive connection of the paced client.
struct PacedConn {
    stream: TcpStream,
    /// Response bytes read and not yet consumed.
    buf: Vec<u8>,
    /// When the request in flight was written (CLOCK_MONOTONIC ns).
    sent: Option<u64>,
    /// When the next request is due.
    next: u64,
}

impl PacedConn {
    /// Connects (blocking), then switches to non-blocking and registers with `ep` as `key`.
    fn open(addr: SocketAddr, ep: &impl std::os::fd::AsFd, key: u64) -> std::io::Result<TcpStream> {
        let s = connect(addr)?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        rustix::event::epoll::add(
            ep,
            &s,
            rustix::event::epoll::EventData::new_u64(key),
            rustix::event::epoll::EventFlags::IN,
        )?;
        Ok(s)
    }

    /// Reads what is there; returns a completed response (whether the server
    /// closes after it), or `None` until one is complete.
    fn receive(&mut self) -> std::io::Result<Option<bool>> {
        let mut chunk = [0u8; 4096];
        let mut eof = false;
        loop {
            match (&self.stream).read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        match response_extent(&self.buf)? {
            // A close right after the response (its FIN read with it) ends the connection too.
            Some((len, close)) => {
                self.buf.drain(..len);
                Ok(Some(close || eof))
            }
            None if eof => Err(std::io::Error::other(format!(
                "the server closed mid-response ({} bytes of it read)",
                self.buf.len()
            ))),
            None => Ok(None),
        }
    }
}

/// The length of the complete response (headers and Content-Length body)
/// starting `buf`, and whether it says `Connection: close`; `None` while
/// incomplete.
fn response_extent(buf: &[u8]) -> std::io::Result<Option<(usize, bool)>> {
    let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text =
        std::str::from_utf8(&buf[..head]).map_err(|_| std::io::Error::other("non-UTF-8 response headers"))?;
    let (length, close) = header_fields(text.split("\r\n").skip(1))?;
    let total = head + 4 + length;
    Ok((buf.len() >= total).then_some((total, close)))
}

/// Reads one response with a Content-Length body; returns its status code.
fn read_response(r: &mut impl std::io::BufRead) -> std::io::Result<u16> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| bad(&line))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(bad("eof in headers"));
        }
        if h.trim_end().is_empty() {
            break;
        }
        headers.push(h);
    }
    let (length, _) = header_fields(headers.iter().map(|h| h.trim_end()))?;
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    Ok(status)
}

/// Content-Length (0 when absent) and whether `Connection: close` is among
/// a response's header lines.
fn header_fields<'a>(lines: impl Iterator<Item = &'a str>) -> std::io::Result<(usize, bool)> {
    let (mut length, mut close) = (0usize, false);
    for line in lines {
        let line = line.to_ascii_lowercase();
        if let Some(v) = line.strip_prefix("content-length:") {
            length = v.trim().parse().map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad header `{line}`"))
            })?;
        }
        if line.strip_prefix("connection:").is_some_and(|v| v.trim() == "close") {
            close = true;
        }
    }
    Ok((length, close))
}

// === Non-HTTP TCP traffic: a Redis-like line protocol ===

fn blob_server(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("ready");
    std::io::stdout().flush()?;
    let (conn, _) = listener.accept()?;
    let mut out = conn.try_clone()?;
    let mut buf = [0u8; 4096];
    let mut reader = conn;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(b"+OK\r\n")?;
    }
}

fn blob_client(addr: SocketAddr, n: u64) -> std::io::Result<()> {
    let mut s = connect(addr)?;
    let mut buf = [0u8; 64];
    for i in 0..n {
        write!(s, "*3\r\n$3\r\nSET\r\n$3\r\nk{i}\r\n$1\r\nv\r\n")?;
        let _ = s.read(&mut buf)?;
    }
    Ok(())
}
