// SPDX-License-Identifier: Apache-2.0
//! The loader's and aggregator's refusals, run for real: an unsafe pin dir, a
//! pinned map that does not match (and the ring's default size when none is
//! pinned), a `check` without capabilities, an aggregator started as root.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    process::{Command, Output},
};

use nettel_integration::{process::bin, process::scratch_dir, require_kernel};

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `nettel-loader run` expecting it to refuse to start.
fn loader_refuses(pin_dir: &str, extra: &[&str]) -> String {
    let dir = scratch_dir("guard");
    let out = Command::new(bin("nettel-loader"))
        .arg("run")
        .arg("--socket")
        .arg(dir.join("loader.sock"))
        .args(["--pin-dir", pin_dir])
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success(), "loader started but should have refused:\n{}", text(&out));
    text(&out)
}

/// Runs `nettel-loader run` on `pin_dir` until its ring buffer is pinned,
/// kills it (the pins stay) and returns the pinned ring's size in bytes.
fn pin_ring(pin_dir: &str, extra: &[&str]) -> u64 {
    let dir = scratch_dir("guard");
    let ring = std::path::Path::new(pin_dir).join("nt_events");
    let mut child = Command::new(bin("nettel-loader"))
        .arg("run")
        .arg("--socket")
        .arg(dir.join("loader.sock"))
        .args(["--pin-dir", pin_dir])
        .args(extra)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    nettel_integration::wait_for(std::time::Duration::from_secs(20), "pinned maps", || {
        ring.exists().then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    nettel_integration::bpftool::pinned_map_max_entries(&ring)
}

#[test]
fn loader_refuses_unsafe_pin_dirs_and_mismatched_pins() {
    if !require_kernel("loader_refuses_unsafe_pin_dirs_and_mismatched_pins") {
        return;
    }
    let pin_dir = format!("/sys/fs/bpf/nettel-guard-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&pin_dir);

    // World-writable pin dir.
    std::fs::create_dir(&pin_dir).unwrap();
    std::fs::set_permissions(&pin_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = loader_refuses(&pin_dir, &[]);
    assert!(e.contains("is unsafe") && e.contains("group/world-writable"), "{e}");
    std::fs::set_permissions(&pin_dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    // Pin with a 64 KiB ring, then ask for 128 KiB on the same pins.
    assert_eq!(pin_ring(&pin_dir, &["--ring-buffer-bytes", "65536"]), 65536);
    let e = loader_refuses(&pin_dir, &["--ring-buffer-bytes", "131072"]);
    assert!(
        e.contains("pinned map `nt_events`")
            && e.contains("max_entries 65536")
            && e.contains("nettel-loader cleanup"),
        "{e}"
    );
    // The same size is reused without complaint; cleanup removes everything.
    let out = Command::new(bin("nettel-loader")).args(["cleanup", "--pin-dir", &pin_dir]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nt_events") && text(&out).contains("nt_stats"), "{}", text(&out));
    assert!(!std::path::Path::new(&pin_dir).exists(), "pin dir left behind");

    // Unset, on a pin dir with no ring (the loader creates the dir): the 4 MiB default.
    assert_eq!(pin_ring(&pin_dir, &[]), 4 << 20);
    let out = Command::new(bin("nettel-loader")).args(["cleanup", "--pin-dir", &pin_dir]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Invalid flags are refused before anything is loaded, naming the flag.
    let e = loader_refuses(&pin_dir, &["--ring-buffer-bytes", "3000"]);
    assert!(e.contains("--ring-buffer-bytes 3000 must be a power of two"), "{e}");
}

#[test]
fn check_without_capabilities_names_each_failure_and_its_fix() {
    if !require_kernel("check_without_capabilities_names_each_failure_and_its_fix") {
        return;
    }
    let out = Command::new(bin("nettel-loader")).arg("check").uid(65534).gid(65534).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL  capabilities") && t.contains("CAP_BPF") && t.contains("CAP_PERFMON"), "{t}");
    assert!(t.contains("fix: run as root, or grant `capabilities.add: [BPF, PERFMON]`"), "{t}");
    assert!(t.contains("PASS  btf") && t.contains("PASS  kernel"), "{t}");

    // As root everything passes.
    let out = Command::new(bin("nettel-loader")).arg("check").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn aggregator_refuses_root_without_the_flag() {
    if !require_kernel("aggregator_refuses_root_without_the_flag") {
        return;
    }
    let out = Command::new(bin("nettel-aggregator")).args(["--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("refusing to run as root"), "{}", text(&out));
}

fn is_mountpoint(path: &str) -> bool {
    Command::new("mountpoint").arg("-q").arg(path).status().unwrap().success()
}

#[test]
fn run_mounts_missing_bpffs_and_tracefs() {
    if !require_kernel("run_mounts_missing_bpffs_and_tracefs") {
        return;
    }
    // A pin dir whose parent is not bpffs yet, and tracefs unmounted.
    let root = scratch_dir("mounts");
    let bpffs = root.join("bpf");
    let pin_dir = bpffs.join("nettel");
    let _ = Command::new("umount").arg("/sys/kernel/tracing").status();
    assert!(!is_mountpoint("/sys/kernel/tracing"), "could not unmount tracefs for the test");

    let loader = nettel_integration::process::Loader::start_at(&pin_dir, 65534, &[65534], &[]);
    let status = loader.status();
    assert!(is_mountpoint("/sys/kernel/tracing"), "tracefs was not mounted:\n{}", loader.proc.log());
    assert!(is_mountpoint(bpffs.to_str().unwrap()), "bpffs was not mounted:\n{}", loader.proc.log());
    let mut attached: Vec<&str> =
        status.probes.iter().filter(|p| p.attached).map(|p| p.attach_point.as_str()).collect();
    attached.sort_unstable();
    assert_eq!(
        attached,
        // --http-hook=auto picks the sendmsg hooks on this kernel (>= 6.16).
        [
            "tp_btf/cgroup_rmdir",
            "tp_btf/inet_sock_set_state",
            "tp_btf/sock_recv_length",
            "tp_btf/tcp_retransmit_skb",
            "tp_btf/tcp_retransmit_synack",
            "tp_btf/tcp_sendmsg_locked"
        ],
        "{status:?}"
    );
    assert!(loader.proc.log().contains("Mounted bpffs.") && loader.proc.log().contains("Mounted tracefs."));
    drop(loader);
    let _ = Command::new("umount").arg(&bpffs).status();
}
