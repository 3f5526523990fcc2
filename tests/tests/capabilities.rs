// SPDX-License-Identifier: Apache-2.0
//! Capability minimality, for real: the loader runs as uid 0 with exactly the
//! capabilities deploy/base/daemonset.yaml grants (read from the manifest; the
//! bounding, inheritable and ambient sets are set to them with `setpriv`, and
//! everything else is dropped), under the seccomp profile
//! security/seccomp/loader.json, with the aggregator's group as its primary
//! group, as in the DaemonSet. It must load, attach and stream real HTTP
//! events to an aggregator running as uid 65534 with no capabilities, and hold
//! no capability once attached (`CapEff`/`CapPrm` of every thread in
//! /proc/<pid>/task/*/status); its `check` (the liveness and readiness probe)
//! must pass under the same profile, and a restart must adopt the pinned probes. Without any one of the granted
//! capabilities it must fail with an error naming it: once from nettel's own
//! preflight, and once with the preflight skipped (`--skip-capability-check`),
//! from the kernel itself, naming the system call it refused, which is what
//! proves the capability is needed. With a syscall the profile does not allow,
//! the error must say a seccomp profile or LSM refused. And the profile is
//! exactly what the loader calls: `check` and `run` (attaching, then restarted
//! and adopting) under `strace -f` with the DaemonSet's capabilities call
//! nothing the profile lacks, and every syscall it allows was called or is
//! justified in security/seccomp/loader-unobserved.txt.
//!
//! Network namespaces: ids 40-41. No retransmits are generated (no drop rules).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use nettel_integration::{
    metrics::sum,
    netns::{exec, PodPair},
    process::{bin, pods_file, scratch_dir, Aggregator, Loader},
    require_kernel,
    servers::Server,
    traffic::start_server,
    wait_for,
};

const NOBODY: u32 = 65534;
const HIST_COUNT: &str = "http_request_duration_seconds_count";
/// The loader's seccomp profile and the syscalls it allows unobserved, with why.
const PROFILE: &str = "security/seccomp/loader.json";
const UNOBSERVED: &str = "security/seccomp/loader-unobserved.txt";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The loader container's `capabilities.add` list in the DaemonSet, as
/// capability names without `CAP_` (e.g. `["BPF", "PERFMON"]`).
fn daemonset_loader_caps() -> Vec<String> {
    let yaml = std::fs::read_to_string(repo().join("deploy/base/daemonset.yaml")).unwrap();
    let loader = yaml.split("- name: aggregator").next().unwrap();
    let add = loader.split_once("add:\n").expect("the loader adds capabilities").1;
    let caps: Vec<String> = add
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .take_while(|l| l.starts_with("- "))
        .map(|l| l.trim_start_matches("- ").trim_matches('"').to_owned())
        .collect();
    assert!(!caps.is_empty(), "no capabilities parsed from the DaemonSet");
    caps
}

/// `setpriv` arguments giving uid 0 exactly `caps` (all sets) and gid `gid`.
fn setpriv(caps: &[String], gid: u32) -> Vec<String> {
    let set = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{}", c.to_lowercase())))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "setpriv".into(),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
        format!("--bounding-set={set}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
    ]
}

/// The seccomp wrapper with `profile`.
fn confined(profile: &Path) -> Vec<String> {
    let ok = Command::new("/usr/bin/python3").args(["-c", "import seccomp"]).status().unwrap().success();
    assert!(ok, "python3-seccomp is missing: scripts/setup installs it");
    vec![
        repo().join("security/seccomp/run-confined").display().to_string(),
        profile.display().to_string(),
        "--".into(),
    ]
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `(CapEff, CapPrm, NoNewPrivs, Seccomp)` of every thread of `pid`.
fn thread_caps(pid: u32) -> Vec<(u64, u64, String, String)> {
    let field = |status: &str, key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_owned()).unwrap_or_default()
    };
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| {
            let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
            let hex = |k| u64::from_str_radix(&field(&status, k), 16).unwrap();
            (hex("CapEff:"), hex("CapPrm:"), field(&status, "NoNewPrivs:"), field(&status, "Seccomp:"))
        })
        .collect()
}

fn unique_pin_dir(tag: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/nettel-caps-{tag}-{}", std::process::id()))
}

/// Streams: real HTTP requests in a netns pod reach an unprivileged
/// aggregator subscribed to `loader`. Three requests are sent; the new
/// aggregator must count `3 + before`, where `before` is what earlier loaders
/// on the same pin dir counted (the kernel's totals outlive them, and a new
/// aggregator counts them whole). Returns the aggregator.
fn streams_http(loader: &Loader, pods: &PodPair, before: u64) -> Aggregator {
    let pf = pods_file(&scratch_dir("pods"), &[(&pods.b_v4, "web-0", "shop", "web")]);
    let mut agg = Aggregator::start(&loader.socket, Some(&pf), NOBODY, NOBODY);
    agg.wait_connected();
    let addr = format!("{}:8080", pods.b_v4);
    // Killed on drop, also when an assertion below fails.
    let server = Server(start_server(&pods.b, &["http", &addr]));
    for path in ["/ok", "/ok", "/fail"] {
        let out = exec(&pods.a, "curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "10", &format!("http://{addr}{path}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "curl: {}", text(&out));
    }
    let want = 3 + before;
    wait_for(Duration::from_secs(10), &format!("{want} HTTP requests attributed to web-0"), || {
        (sum(&agg.scrape(), HIST_COUNT, &[("pod", "web-0")]) == want).then_some(())
    });
    // Nothing more arrives (no request counted twice).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sum(&agg.scrape(), HIST_COUNT, &[("pod", "web-0")]), want);
    drop(server);
    agg
}

#[test]
fn loader_streams_with_exactly_the_daemonset_capabilities_and_drops_them_after_attach() {
    if !require_kernel("loader_streams_with_exactly_the_daemonset_capabilities_and_drops_them_after_attach") {
        return;
    }
    let caps = daemonset_loader_caps();
    assert_eq!(caps, ["BPF", "PERFMON"], "the capability table in security/ documents exactly these");
    let pods = PodPair::new(40);
    let mut prefix = setpriv(&caps, NOBODY);
    prefix.extend(confined(&repo().join(PROFILE)));
    // The base DaemonSet runs without the TLS attacher (deploy/overlays/https
    // adds it with its capabilities; tests/tests/https.rs covers that set).
    let yaml = std::fs::read_to_string(repo().join("deploy/base/daemonset.yaml")).unwrap();
    assert!(yaml.contains("- --tls=off"), "the base DaemonSet passes --tls=off");
    let pin_dir = unique_pin_dir("ok");
    let loader = Loader::start_wrapped(&prefix, &pin_dir, NOBODY, &[NOBODY], &["--tls", "off"]);

    let agg = streams_http(&loader, &pods, 0);
    let status = loader.status();
    // Two retransmit tracepoints, the three socket hooks of the HTTP probe and its cgroup_rmdir hook.
    assert_eq!(status.probes.iter().filter(|p| p.attached).count(), 6, "{status:?}");

    // After attach: no capability in any thread, no_new_privs, seccomp filter on.
    let pid = loader.proc.child.id();
    let threads = thread_caps(pid);
    // One thread: the runtime is current-thread (loader/src/main.rs) and
    // `--tls off` starts no attacher.
    assert_eq!(threads.len(), 1, "expected the main thread only: {threads:?}");
    for (eff, prm, nnp, seccomp) in &threads {
        assert_eq!((*eff, *prm), (0, 0), "a loader thread still holds capabilities: {threads:?}");
        assert_eq!((nnp.as_str(), seccomp.as_str()), ("1", "2"), "{threads:?}");
    }
    assert!(loader.proc.log().contains("Dropped capabilities after attach."), "{}", loader.proc.log());

    // The aggregator: uid 65534, no capability at all.
    let agg_threads = thread_caps(agg.proc.child.id());
    assert!(agg_threads.iter().all(|(e, p, _, _)| *e == 0 && *p == 0), "{agg_threads:?}");
    let agg_status = std::fs::read_to_string(format!("/proc/{}/status", agg.proc.child.id())).unwrap();
    assert!(agg_status.lines().any(|l| l.starts_with("Uid:") && l.contains("65534")), "{agg_status}");

    // The liveness/readiness probe, with the same capabilities and profile,
    // while the loader runs (as the kubelet execs it into the container).
    let out = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(bin("nettel-loader"))
        .arg("check")
        .arg("--pin-dir")
        .arg(&pin_dir)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success() && t.contains("all checks passed"), "`check` under the profile:\n{t}");

    // A restart under the same profile adopts the pinned links (reading
    // /proc/self/fd and fdinfo) instead of replacing them.
    let (pin_dir, _) = loader.exit(rustix::process::Signal::TERM);
    let loader = Loader::start_wrapped(&prefix, &pin_dir, NOBODY, &[NOBODY], &["--tls", "off"]);
    let status = loader.status();
    assert!(
        status.probes.iter().all(|p| p.origin == "adopted"),
        "a restart under the profile did not adopt: {status:?}\n{}",
        loader.proc.log()
    );
}

/// What the kernel refuses first without each capability the DaemonSet
/// grants (Linux 6.18, `unprivileged_bpf_disabled=2`, `perf_event_paranoid=2`):
/// the system call named in the loader's error.
fn kernel_refusal_without(cap: &str) -> &'static str {
    match cap {
        // map_create(): bpf_capable().
        "BPF" => "bpf(BPF_MAP_CREATE)",
        // bpf_prog_load(): is_perfmon_prog_type() needs perfmon_capable().
        "PERFMON" => "bpf(BPF_PROG_LOAD)",
        other => panic!(
            "the DaemonSet grants CAP_{other}, but this test does not know what the kernel refuses without it: \
             record it here and in security/capabilities.md"
        ),
    }
}

#[test]
fn each_missing_capability_is_named_and_a_seccomp_refusal_is_explained() {
    if !require_kernel("each_missing_capability_is_named_and_a_seccomp_refusal_is_explained") {
        return;
    }
    let caps = daemonset_loader_caps();
    let run = |prefix: &[String], tag: &str, command: &str| {
        let pin_dir = unique_pin_dir(tag);
        let dir = scratch_dir("caps");
        let mut argv = prefix.to_vec();
        argv.push(bin("nettel-loader").display().to_string());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).args(command.split(' ')).arg("--pin-dir").arg(&pin_dir);
        if command.starts_with("run") {
            // As in the base DaemonSet.
            cmd.arg("--socket").arg(dir.join("loader.sock")).args(["--tls", "off"]);
        }
        // Every call must fail; a `run` nothing refuses would serve forever.
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let exited = (0..300).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            child.try_wait().unwrap().is_some()
        });
        if !exited {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let _ = Command::new(bin("nettel-loader")).args(["cleanup", "--pin-dir"]).arg(&pin_dir).output();
        assert!(exited, "`{command}` ran on for 30 s: nothing refused it\n{}", text(&out));
        out
    };
    for missing in &caps {
        let rest: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let prefix = setpriv(&rest, NOBODY);
        // nettel's own preflight refuses first.
        for command in ["check", "run"] {
            let out = run(&prefix, &missing.to_lowercase(), command);
            let t = text(&out);
            assert!(!out.status.success(), "`{command}` without CAP_{missing} succeeded:\n{t}");
            assert!(t.contains(&format!("CAP_{missing}")), "`{command}` without CAP_{missing}:\n{t}");
            for other in &rest {
                assert!(
                    !t.contains(&format!("missing capabilities: CAP_{other}")),
                    "blames CAP_{other}:\n{t}"
                );
            }
        }

        // The preflight skipped: the kernel must refuse, naming the same
        // capability, or the DaemonSet grants one it does not need.
        let out = run(&prefix, &format!("kernel-{}", missing.to_lowercase()), "run --skip-capability-check");
        let t = text(&out);
        assert!(
            !out.status.success(),
            "without CAP_{missing} the kernel refused nothing: the DaemonSet need not grant it\n{t}"
        );
        assert!(t.contains("Capability checks skipped"), "{t}");
        assert!(!t.contains("preflight checks failed"), "refused by the preflight, not the kernel:\n{t}");
        let expected = format!(
            "permission denied: needs CAP_{missing} (Kubernetes: `capabilities.add: [{missing}]`): the kernel refused {}",
            kernel_refusal_without(missing)
        );
        assert!(t.contains(&expected), "without CAP_{missing}, expected `{expected}` in:\n{t}");
        assert!(t.contains("Operation not permitted (os error 1)"), "the kernel's EPERM:\n{t}");
    }

    // All capabilities there, but the profile lacks perf_event_open. With
    // the socket hooks no probe opens a perf event (all are tp_btf), so the
    // loader runs; with the syscall hooks (sys_enter_close is a tracepoint)
    // the EPERM is attributed to seccomp/LSM rather than to a capability.
    let profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(PROFILE)).unwrap()).unwrap();
    let mut profile = profile;
    let names = profile["syscalls"][0]["names"].as_array_mut().unwrap();
    names.retain(|n| n != "perf_event_open");
    let path = scratch_dir("seccomp").join("no-perf.json");
    std::fs::write(&path, profile.to_string()).unwrap();
    let mut prefix = setpriv(&caps, NOBODY);
    prefix.extend(confined(&path));
    let out = run(&prefix, "seccomp", "run --http-hook syscall");
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("seccomp profile refused it: the kernel refused perf_event_open(2)"), "{t}");
    assert!(t.contains("sys_enter_close"), "the syscall hooks' tracepoint is what needs it:\n{t}");

    // The same profile, the socket hooks: the loader comes up and serves.
    let pin_dir = unique_pin_dir("seccomp-socket");
    let dir = scratch_dir("caps");
    let log = dir.join("socket-hooks.log");
    let mut argv = prefix.clone();
    argv.push(bin("nettel-loader").display().to_string());
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .args(["run", "--http-hook", "socket", "--tls", "off", "--pin-dir"])
        .arg(&pin_dir)
        .arg("--socket")
        .arg(dir.join("loader.sock"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let served = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        t.contains("Serving the event stream.") || child.try_wait().unwrap().is_some()
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = Command::new(bin("nettel-loader")).args(["cleanup", "--pin-dir"]).arg(&pin_dir).output();
    let t = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        served && t.contains("Serving the event stream."),
        "the socket hooks need no perf_event_open, yet the loader did not come up:\n{t}"
    );
}

/// Every name `security/seccomp/loader.json` allows.
fn profile_syscalls() -> std::collections::BTreeSet<String> {
    let profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(PROFILE)).unwrap()).unwrap();
    profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["names"].as_array().unwrap())
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

/// `security/seccomp/loader-unobserved.txt`: name -> reason. Panics on an
/// entry without a reason or listed twice.
fn unobserved_allowlist() -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let file = std::fs::read_to_string(repo().join(UNOBSERVED)).unwrap();
    for line in file.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        assert!(!reason.trim().is_empty(), "{UNOBSERVED}: `{name}` has no reason");
        assert!(
            out.insert(name.to_owned(), reason.trim().to_owned()).is_none(),
            "{UNOBSERVED}: `{name}` twice"
        );
    }
    out
}

/// The process `strace` (pid `strace`) started: the loader, which `setpriv`
/// became by exec. Signals must go to it: a signalled strace detaches instead
/// of passing the signal on.
fn tracee(strace: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children")).unwrap();
    children.split_whitespace().next().and_then(|p| p.parse().ok()).expect("strace has a child")
}

/// SIGTERMs the traced loader and waits for it and strace to exit.
fn stop_traced(loader: &mut Loader) {
    let pid = rustix::process::Pid::from_raw(tracee(loader.proc.child.id()) as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    wait_for(Duration::from_secs(20), "the traced loader to exit", || (!loader.proc.running()).then_some(()));
    assert!(loader.proc.log().contains("Exiting;"), "no clean exit:\n{}", loader.proc.log());
}

/// A peer the loader must turn away (uid 12345, not in --allow-uid), which
/// connects and waits for the loader to close the connection.
fn rejected_peer(socket: &Path) {
    let out = Command::new("setpriv")
        .args(["--reuid=12345", &format!("--regid={NOBODY}"), "--clear-groups", "/usr/bin/python3", "-c"])
        .arg("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.settimeout(10)\nassert s.recv(1) == b''")
        .arg(socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "the rejected peer: {}", text(&out));
}

#[test]
fn the_seccomp_profile_allows_what_check_and_run_call_and_justifies_the_rest() {
    if !require_kernel("the_seccomp_profile_allows_what_check_and_run_call_and_justifies_the_rest") {
        return;
    }
    let strace = Command::new("strace").arg("-V").output();
    assert!(strace.is_ok_and(|o| o.status.success()), "strace is missing: scripts/setup installs it");
    let caps = daemonset_loader_caps();
    let dir = scratch_dir("strace");
    let traced = |trace: &str| {
        let mut prefix: Vec<String> = ["strace", "-f", "-qq", "-o"]
            .map(String::from)
            .into_iter()
            .chain([dir.join(trace).display().to_string()])
            .collect();
        prefix.extend(setpriv(&caps, NOBODY));
        prefix
    };
    let pin_dir = unique_pin_dir("strace");

    // `check`, as the liveness and readiness probes run it.
    let check = traced("check.trace");
    let out = Command::new(&check[0])
        .args(&check[1..])
        .arg(bin("nettel-loader"))
        .args(["check", "--pin-dir"])
        .arg(&pin_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "`check`:\n{}", text(&out));

    // `run` twice on one pin dir, as the DaemonSet runs it: the first attaches
    // and pins, the second (a restart) adopts the pinned links. Each streams
    // HTTP events to an aggregator, answers the status RPC, turns a peer away
    // and stops on SIGTERM.
    let pods = PodPair::new(41);
    for (before, trace, origin) in [(0, "run-attach.trace", "attached"), (3, "run-adopt.trace", "adopted")] {
        let mut loader =
            Loader::start_wrapped(&traced(trace), &pin_dir, NOBODY, &[NOBODY], &["--tls", "off"]);
        let status = loader.status();
        assert!(
            status.probes.iter().all(|p| p.origin == origin),
            "expected every probe {origin}: {status:?}"
        );
        let _agg = streams_http(&loader, &pods, before);
        rejected_peer(&loader.socket);
        stop_traced(&mut loader);
        if origin == "attached" {
            let _ = loader.exit(rustix::process::Signal::TERM);
        }
    }

    let traces = ["check.trace", "run-attach.trace", "run-adopt.trace"].map(|t| dir.join(t));
    let out = Command::new("/usr/bin/python3")
        .arg(repo().join("security/seccomp/strace-syscalls.py"))
        .args(&traces)
        .output()
        .unwrap();
    assert!(out.status.success(), "strace-syscalls.py: {}", text(&out));
    let observed: std::collections::BTreeSet<String> =
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    eprintln!(
        "observed {} syscalls: {}",
        observed.len(),
        observed.iter().cloned().collect::<Vec<_>>().join(" ")
    );
    let allowed = profile_syscalls();
    let unobserved = unobserved_allowlist();

    let missing: Vec<&String> = observed.difference(&allowed).collect();
    assert!(missing.is_empty(), "the loader calls {missing:?}, which {PROFILE} does not allow");
    let unjustified: Vec<&String> =
        allowed.iter().filter(|n| !observed.contains(*n) && !unobserved.contains_key(*n)).collect();
    assert!(
        unjustified.is_empty(),
        "{PROFILE} allows {unjustified:?}, which neither `check` nor `run` called: remove them, or give the \
         reason for each in {UNOBSERVED}"
    );
    let stale: Vec<&String> = unobserved.keys().filter(|n| !allowed.contains(*n)).collect();
    assert!(stale.is_empty(), "{UNOBSERVED} lists {stale:?}, which {PROFILE} does not allow");
}
