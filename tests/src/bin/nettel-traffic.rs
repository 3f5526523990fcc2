// SPDX-License-Identifier: Apache-2.0
//! Traffic generator for the end-to-end tests, run inside a network namespace.
//!
//! ```text
//! nettel-traffic sink   LISTEN_ADDR CONNECTIONS          # accept, read everything, exit
//! nettel-traffic source LISTEN_ADDR CONNECTIONS BYTES    # accept, write BYTES each, exit
//! nettel-traffic send   CONNECT_ADDR BYTES               # connect, write BYTES, close
//! nettel-traffic recv   CONNECT_ADDR                     # connect, read until EOF
//! nettel-traffic dial   CONNECT_ADDR COUNT               # COUNT connect+close handshakes
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
