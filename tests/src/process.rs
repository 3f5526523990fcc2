// SPDX-License-Identifier: Apache-2.0
//! The loader and aggregator as real processes, with their logs kept for
//! failure messages and cleanup on drop.

use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
    time::Duration,
};

use nettel_proto::v1;

use crate::wait_for;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Directory holding the workspace binaries (`target/<profile>`), found from
/// this test executable's own path (`target/<profile>/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps, binaries in target/<profile>.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("executable's directory");
    if dir.file_name().is_some_and(|n| n == "deps") { dir.parent().expect("target/<profile>") } else { dir }
        .to_owned()
}

/// Path of workspace binary `name`; panics with the fix if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        p.display()
    );
    p
}

/// A unique scratch directory, world-traversable so unprivileged processes
/// can reach sockets and files in it. It lives under [`scratch_root`].
pub fn scratch_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = scratch_root().join(format!("{tag}-{n}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// This process's scratch root, `$TMPDIR/nettel-tests/<pid>`. Its first use
/// removes the roots of processes that have exited, so the last run's logs
/// stay for inspection and earlier runs' do not pile up (every agent start
/// leaves its logs and socket directory: 1.2 GB had gathered here).
pub fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join("nettel-tests");
        world_traversable_dir(&base);
        for entry in fs::read_dir(&base).unwrap().flatten() {
            let name = entry.file_name();
            let exited = name
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists());
            if exited {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let root = base.join(std::process::id().to_string());
        world_traversable_dir(&root);
        root
    })
}

fn world_traversable_dir(dir: &Path) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A child process killed (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: &'static str,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Self {
        let f = fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, log, name }
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` and waits for exit; returns whether it exited successfully.
    pub fn stop_with(&mut self, signal: rustix::process::Signal) -> bool {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            self.stop_with(rustix::process::Signal::TERM);
        }
    }
}

/// A running `nettel-loader run`. On drop it is stopped and its pins are
/// removed (`nettel-loader cleanup`), unless [`Loader::exit`] let it go.
#[derive(Debug)]
pub struct Loader {
    pub proc: Proc,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    keep_pins: bool,
}

impl Loader {
    /// Starts a loader whose socket belongs to group `socket_gid` and admits `allow_uids`.
    pub fn start(socket_gid: u32, allow_uids: &[u32], extra: &[&str]) -> Self {
        Self::start_at(&fresh_pin_dir(), socket_gid, allow_uids, extra)
    }

    /// Like [`Loader::start`] with an explicit pin dir.
    pub fn start_at(pin_dir: &Path, socket_gid: u32, allow_uids: &[u32], extra: &[&str]) -> Self {
        Self::start_wrapped(&[], pin_dir, socket_gid, allow_uids, extra)
    }

    /// Like [`Loader::start_at`], run through `prefix` (e.g. `setpriv
    /// --bounding-set=...`, a seccomp wrapper), which must exec the loader so
    /// that the child's pid is the loader's.
    pub fn start_wrapped(
        prefix: &[String],
        pin_dir: &Path,
        socket_gid: u32,
        allow_uids: &[u32],
        extra: &[&str],
    ) -> Self {
        Self::spawn(
            prefix,
            pin_dir,
            &scratch_dir("loader").join("loader.sock"),
            socket_gid,
            allow_uids,
            extra,
        )
    }

    /// Starts a loader on `pin_dir` serving at `socket`: with both taken from
    /// a loader that [`Loader::exit`]ed, a restart its aggregator reconnects to.
    pub fn restart(
        pin_dir: &Path,
        socket: &Path,
        socket_gid: u32,
        allow_uids: &[u32],
        extra: &[&str],
    ) -> Self {
        Self::spawn(&[], pin_dir, socket, socket_gid, allow_uids, extra)
    }

    /// Stops the loader with `signal` and leaves its pins (the probes stay
    /// attached). Returns the pin dir and socket path for [`Loader::restart`].
    pub fn exit(mut self, signal: rustix::process::Signal) -> (PathBuf, PathBuf) {
        self.proc.stop_with(signal);
        self.keep_pins = true;
        (self.pin_dir.clone(), self.socket.clone())
    }

    fn spawn(
        prefix: &[String],
        pin_dir: &Path,
        socket: &Path,
        socket_gid: u32,
        allow_uids: &[u32],
        extra: &[&str],
    ) -> Self {
        let pin_dir = pin_dir.to_owned();
        let socket = socket.to_owned();
        let dir = socket.parent().expect("socket in a directory").to_owned();
        // A killed loader leaves its socket; the next one replaces it, but the
        // wait below must see the new one.
        let _ = fs::remove_file(&socket);
        let log = dir.join(format!("loader-{}.log", COUNTER.fetch_add(1, Ordering::Relaxed)));
        let uids = allow_uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin("nettel-loader"));
                c
            }
            None => Command::new(bin("nettel-loader")),
        };
        cmd.arg("run")
            .arg("--socket")
            .arg(&socket)
            .arg("--pin-dir")
            .arg(&pin_dir)
            .args(["--socket-gid", &socket_gid.to_string(), "--allow-uid", &uids])
            .args(extra);
        let mut proc = Proc::spawn("nettel-loader", &mut cmd, log);
        wait_for(Duration::from_secs(30), "the loader socket", || {
            assert!(proc.running(), "loader exited:\n{}", proc.log());
            socket.exists().then_some(())
        });
        Self { proc, socket, pin_dir, keep_pins: false }
    }

    /// The status RPC.
    pub fn status(&self) -> v1::GetLoaderStatusResponse {
        let socket = self.socket.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            v1::telemetry_service_client::TelemetryServiceClient::new(loader_channel(socket).await)
                .get_loader_status(v1::GetLoaderStatusRequest {})
                .await
                .expect("GetLoaderStatus")
                .into_inner()
        })
    }
}

/// The prefix of test loaders' pin dirs under /sys/fs/bpf: `nettel-test-<pid>-<n>`.
pub const TEST_PIN_PREFIX: &str = "nettel-test-";

/// A pin dir of this test process no loader has used yet. The first call
/// removes the pins of test processes that have exited
/// ([`remove_stale_test_pins`]).
fn fresh_pin_dir() -> PathBuf {
    static REAPED: std::sync::Once = std::sync::Once::new();
    REAPED.call_once(|| {
        remove_stale_test_pins();
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!("/sys/fs/bpf/nettel-test-{}-{n}", std::process::id()))
}

/// Removes the pins (`nettel-loader cleanup`) of test loaders whose test
/// process is gone: a test binary killed mid-run (a timeout, SIGKILL) never
/// runs its drops, and its probes stay attached, taxing every later test and
/// benchmark on the machine and feeding a ring buffer nobody reads. Runs
/// once per test process, before its first loader; returns the dirs removed.
pub fn remove_stale_test_pins() -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/fs/bpf") else { return removed };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TEST_PIN_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // A live pid (the owner, or a reuse of its number) keeps its pins.
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        eprintln!("removing the pins of a dead test process (pid {pid}): {}", dir.display());
        let _ = Command::new(bin("nettel-loader")).arg("cleanup").arg("--pin-dir").arg(&dir).output();
        removed.push(dir);
    }
    removed
}

impl Drop for Loader {
    fn drop(&mut self) {
        if self.keep_pins {
            return;
        }
        self.proc.stop_with(rustix::process::Signal::TERM);
        // A wrapper (strace -f) that got the signal may have left the loader
        // it forked running, its probes attached: a failed test must not
        // leave them to the tests after it.
        stop_loaders_of(&self.pin_dir);
        let _ =
            Command::new(bin("nettel-loader")).arg("cleanup").arg("--pin-dir").arg(&self.pin_dir).output();
    }
}

/// Stops (SIGTERM, then SIGKILL after 2 s) every process whose command line
/// has `--pin-dir <pin_dir>`.
fn stop_loaders_of(pin_dir: &Path) {
    let find = || -> Vec<rustix::process::Pid> {
        let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
        let want = pin_dir.as_os_str().as_encoded_bytes();
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != std::process::id() as i32)
            .filter(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
                args.windows(2).any(|w| w[0] == b"--pin-dir" && w[1] == want)
            })
            .filter_map(rustix::process::Pid::from_raw)
            .collect()
    };
    for (signal, wait) in [(rustix::process::Signal::TERM, 40), (rustix::process::Signal::KILL, 0)] {
        let pids = find();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = rustix::process::kill_process(pid, signal);
        }
        for _ in 0..wait {
            if find().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running `nettel-aggregator`.
#[derive(Debug)]
pub struct Aggregator {
    pub proc: Proc,
    pub port: u16,
}

impl Aggregator {
    /// Starts an aggregator as `uid:gid` (no supplementary groups).
    pub fn start(socket: &Path, pods_file: Option<&Path>, uid: u32, gid: u32) -> Self {
        let extra: Vec<String> =
            pods_file.map(|p| vec!["--pods-file".into(), p.display().to_string()]).unwrap_or_default();
        Self::start_with(socket, &extra, uid, gid)
    }

    /// Starts an aggregator with extra flags.
    pub fn start_with(socket: &Path, extra: &[String], uid: u32, gid: u32) -> Self {
        let port = free_port();
        let dir = scratch_dir("aggregator");
        let mut cmd = Command::new(bin("nettel-aggregator"));
        cmd.arg("--loader-socket")
            .arg(socket)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--reconnect-max-ms", "500"])
            .args(extra)
            .uid(uid)
            .gid(gid);
        let mut proc = Proc::spawn("nettel-aggregator", &mut cmd, dir.join("aggregator.log"));
        wait_for(Duration::from_secs(30), "the aggregator's /healthz", || {
            assert!(proc.running(), "aggregator exited:\n{}", proc.log());
            crate::metrics::http_get(port, "/healthz", None)
                .ok()
                .filter(|(s, _)| s.contains(" 200 "))
                .map(drop)
        });
        Self { proc, port }
    }

    /// Waits until the aggregator has an open event stream.
    pub fn wait_connected(&mut self) {
        let port = self.port;
        let log = self.proc.log.clone();
        wait_for(Duration::from_secs(30), "the aggregator to connect to the loader", || {
            crate::metrics::http_get(port, "/readyz", None)
                .ok()
                .filter(|(s, _)| s.contains(" 200 "))
                .map(drop)
        });
        let _ = log;
    }

    /// Scrapes `/metrics`.
    pub fn scrape(&self) -> String {
        crate::metrics::scrape(self.port)
    }
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes a pods file mapping each `(ip, pod, namespace, service)`.
pub fn pods_file(dir: &Path, pods: &[(&str, &str, &str, &str)]) -> PathBuf {
    let entries: Vec<String> = pods
        .iter()
        .map(|(ip, pod, ns, svc)| {
            format!(r#"{{"name":"{pod}","namespace":"{ns}","service":"{svc}","ips":["{ip}"]}}"#)
        })
        .collect();
    let path = dir.join("pods.json");
    fs::write(&path, format!(r#"{{"pods":[{}]}}"#, entries.join(","))).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// A loader and an aggregator (both as the tests run them: root and uid 65534)
/// attributing by a pods file, with the aggregator's stream open.
#[derive(Debug)]
pub struct Stack {
    /// Dropped first: the aggregator goes before its loader.
    pub agg: Aggregator,
    pub loader: Loader,
    pub pods_file: PathBuf,
}

impl Stack {
    /// Starts the stack; `pods` as for [`pods_file`].
    pub fn start(pods: &[(&str, &str, &str, &str)]) -> Self {
        Self::start_with(pods, &[])
    }

    /// Starts the stack with extra loader flags.
    pub fn start_with(pods: &[(&str, &str, &str, &str)], loader_args: &[&str]) -> Self {
        Self::start_wrapped(&[], pods, loader_args)
    }

    /// Like [`Stack::start_with`], the loader run through `prefix` as for
    /// [`Loader::start_wrapped`].
    pub fn start_wrapped(prefix: &[String], pods: &[(&str, &str, &str, &str)], loader_args: &[&str]) -> Self {
        const NOBODY: u32 = 65534;
        let loader = Loader::start_wrapped(prefix, &fresh_pin_dir(), NOBODY, &[NOBODY], loader_args);
        let pods_file = pods_file(&scratch_dir("pods"), pods);
        let mut agg = Aggregator::start(&loader.socket, Some(&pods_file), NOBODY, NOBODY);
        agg.wait_connected();
        Self { agg, loader, pods_file }
    }
}

/// A gRPC channel to the loader's Unix socket at `socket` (connected now).
pub async fn loader_channel(socket: PathBuf) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://loader.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await
        .expect("connect to loader")
}
