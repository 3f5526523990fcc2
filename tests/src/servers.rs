// SPDX-License-Identifier: Apache-2.0
//! HTTP servers and clients of the L7 tests: fixture servers started inside a
//! netns pod, curl, and the raw client for what curl cannot send.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
};

use std::time::Duration;

use crate::{
    netns::exec,
    process::{bin, scratch_dir, Proc},
    wait_for,
};

/// Path of a file in `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A server process, killed when dropped (also when a test panics).
#[derive(Debug)]
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server in `ns` and waits for its "ready" line.
pub fn start(ns: &str, program: &str, args: &[String]) -> Server {
    let child = exec(ns, program)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    await_ready(child, program)
}

/// Waits for the "ready" line of a started server.
pub fn await_ready(mut child: Child, program: &str) -> Server {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "{program} did not start");
    Server(child)
}

/// A throwaway self-signed certificate and key (openssl CLI, P-256), made
/// for one test run in a scratch directory: (cert path, key path).
pub fn self_signed_cert() -> (String, String) {
    let dir = scratch_dir("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-subj", "/CN=nettel-test", "-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `openssl` ({e}): install openssl (scripts/setup does)"));
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    (cert.display().to_string(), key.display().to_string())
}

/// Runs curl in `ns` (body discarded); panics when it fails.
pub fn curl(ns: &str, args: &[&str]) {
    let out =
        exec(ns, "curl").args(["-s", "-o", "/dev/null", "--max-time", "20"]).args(args).output().unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The raw client (`nettel-traffic pipeline|split`); returns its output.
pub fn raw_client(ns: &str, args: &[&str]) -> String {
    let out = exec(ns, &bin("nettel-traffic").display().to_string()).args(args).output().unwrap();
    assert!(out.status.success(), "nettel-traffic {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether something in `ns` listens on TCP `port`.
pub fn listening(ns: &str, port: u16) -> bool {
    let out = exec(ns, "ss").args(["-Hltn", &format!("sport = :{port}")]).output().unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// nginx (master + one worker) on `addr:8080` in `ns`, with its /sleep
/// upstream: Node on a Unix socket, which the TCP-only probe does not see.
pub fn start_nginx(ns: &str, addr: &str) -> (Proc, Server) {
    start_nginx_conf(ns, addr, "nginx.conf", &[])
}

/// nginx serving HTTPS (`nginx_tls.conf`, Debian's nginx on the system's
/// OpenSSL) with `cert`/`key`, otherwise as [`start_nginx`].
pub fn start_nginx_tls(ns: &str, addr: &str, cert: &str, key: &str) -> (Proc, Server) {
    start_nginx_conf(ns, addr, "nginx_tls.conf", &[("@CERT@", cert), ("@KEY@", key)])
}

fn start_nginx_conf(ns: &str, addr: &str, conf: &str, vars: &[(&str, &str)]) -> (Proc, Server) {
    let dir = scratch_dir("nginx");
    let sock = dir.join("upstream.sock").display().to_string();
    let upstream = start(ns, "node", &[fixture("http_server.js"), sock.clone()]);
    let mut conf = std::fs::read_to_string(fixture(conf))
        .unwrap()
        .replace("@LISTEN@", &format!("{addr}:8080"))
        .replace("@UPSTREAM@", &sock)
        .replace("@DIR@", &dir.display().to_string());
    for (k, v) in vars {
        conf = conf.replace(k, v);
    }
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let prefix = dir.display().to_string();
    let nginx = Proc::spawn(
        "nginx",
        exec(ns, "nginx").args(["-p", &prefix, "-c", &conf_path.display().to_string()]),
        dir.join("nginx.log"),
    );
    wait_for(Duration::from_secs(10), "nginx listening on 8080", || listening(ns, 8080).then_some(()));
    (nginx, upstream)
}

/// An `iperf3` server listening on `addr` in netns `ns`, killed on drop.
pub fn start_iperf3(ns: &str, addr: &str) -> Server {
    let child = exec(ns, "iperf3")
        .args(["-s", "-B", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start iperf3 ({e}): scripts/setup installs it"));
    // It prints nothing parseable when ready; it listens within milliseconds.
    std::thread::sleep(Duration::from_millis(300));
    Server(child)
}
