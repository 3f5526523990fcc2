// SPDX-License-Identifier: Apache-2.0
//! Capability minimality, for real: the loader runs as uid 0 with exactly the
//! capabilities deploy/base/daemonset.yaml grants (read from the manifest; the
//! bounding, inheritable and ambient sets are set to them with `setpriv`, and
//! everything else is dropped), under the seccomp profile
//! security/seccomp/loader.json, with the aggregator's group as its primary
//! group, as in the DaemonSet. It must load, attach and stream real HTTP
//! events to an aggregator running as uid 65534 with no capabilities, and hold
//! no capability once attached (`CapEff`/`CapPrm` of every thread in
//! /proc/<pid>/task/*/status). Without any one of the granted capabilities it
//! must fail with an error naming it; with a syscall the profile does not
//! allow, the error must say a seccomp profile or LSM refused.
//!
//! Network namespaces: ids 40-41. No retransmits are generated (no drop rules).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use nettel_integration::{
    metrics::sum,
    netns::{exec, PodPair},
    process::{bin, pods_file, scratch_dir, Aggregator, Loader},
    require_kernel,
    traffic::start_server,
    wait_for,
};

const NOBODY: u32 = 65534;
const HIST_COUNT: &str = "http_request_duration_seconds_count";

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

#[test]
fn loader_streams_with_exactly_the_daemonset_capabilities_and_drops_them_after_attach() {
    if !require_kernel("loader_streams_with_exactly_the_daemonset_capabilities_and_drops_them_after_attach") {
        return;
    }
    let caps = daemonset_loader_caps();
    assert_eq!(caps, ["BPF", "PERFMON"], "the capability table in security/ documents exactly these");
    let pods = PodPair::new(40);
    let mut prefix = setpriv(&caps, NOBODY);
    prefix.extend(confined(&repo().join("security/seccomp/loader.json")));
    // The base DaemonSet runs without the TLS attacher (deploy/overlays/https
    // adds it with its capabilities; tests/tests/https.rs covers that set).
    let yaml = std::fs::read_to_string(repo().join("deploy/base/daemonset.yaml")).unwrap();
    assert!(yaml.contains("- --tls=off"), "the base DaemonSet passes --tls=off");
    let loader = Loader::start_wrapped(&prefix, &unique_pin_dir("ok"), NOBODY, &[NOBODY], &["--tls", "off"]);

    // Streams: real HTTP requests in a netns pod reach an unprivileged aggregator.
    let pf = pods_file(&scratch_dir("pods"), &[(&pods.b_v4, "web-0", "shop", "web")]);
    let mut agg = Aggregator::start(&loader.socket, Some(&pf), NOBODY, NOBODY);
    agg.wait_connected();
    let addr = format!("{}:8080", pods.b_v4);
    let mut server = start_server(&pods.b, &["http", &addr]);
    for path in ["/ok", "/ok", "/fail"] {
        let out = exec(&pods.a, "curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "10", &format!("http://{addr}{path}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "curl: {}", text(&out));
    }
    wait_for(Duration::from_secs(10), "3 HTTP requests attributed to web-0", || {
        (sum(&agg.scrape(), HIST_COUNT, &[("pod", "web-0")]) == 3).then_some(())
    });
    let _ = server.kill();
    let _ = server.wait();
    let status = loader.status();
    // Two retransmit tracepoints and the three socket hooks of the HTTP probe.
    assert_eq!(status.probes.iter().filter(|p| p.attached).count(), 5, "{status:?}");

    // After attach: no capability in any thread, no_new_privs, seccomp filter on.
    let pid = loader.proc.child.id();
    let threads = thread_caps(pid);
    assert!(threads.len() >= 3, "expected the runtime's threads: {threads:?}");
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
        cmd.args(&argv[1..]).arg(command).arg("--pin-dir").arg(&pin_dir);
        if command == "run" {
            cmd.arg("--socket").arg(dir.join("loader.sock"));
        }
        let out = cmd.output().unwrap();
        let _ = Command::new(bin("nettel-loader")).args(["cleanup", "--pin-dir"]).arg(&pin_dir).output();
        out
    };
    for missing in &caps {
        let rest: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let prefix = setpriv(&rest, NOBODY);
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
    }

    // All capabilities there, but the profile lacks perf_event_open: the
    // EPERM is attributed to seccomp/LSM rather than to a capability.
    let profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("security/seccomp/loader.json")).unwrap())
            .unwrap();
    let mut profile = profile;
    let names = profile["syscalls"][0]["names"].as_array_mut().unwrap();
    names.retain(|n| n != "perf_event_open");
    let path = scratch_dir("seccomp").join("no-perf.json");
    std::fs::write(&path, profile.to_string()).unwrap();
    let mut prefix = setpriv(&caps, NOBODY);
    prefix.extend(confined(&path));
    let out = run(&prefix, "seccomp", "run");
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("permission denied") && t.contains("seccomp") && t.contains("perf_event_open"), "{t}");
}
