// SPDX-License-Identifier: Apache-2.0
//! The test harness's own promises, run for real: a test process killed
//! mid-run does not leave its probes attached for the next run.

use std::process::Command;

use nettel_integration::{
    process::{remove_stale_test_pins, Loader, TEST_PIN_PREFIX},
    require_kernel,
};
use rustix::process::Signal;

const NOBODY: u32 = 65534;

#[test]
fn the_pins_of_a_killed_test_process_are_removed_by_the_next_run() {
    if !require_kernel("the_pins_of_a_killed_test_process_are_removed_by_the_next_run") {
        return;
    }
    // A pid that no process has any more: a test binary that was killed.
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let pid = gone.id();
    gone.wait().expect("wait true");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} was reused at once");
    let pin_dir = std::path::PathBuf::from(format!("/sys/fs/bpf/{TEST_PIN_PREFIX}{pid}-0"));

    // Its loader died with SIGKILL: no drop ran, the pins and probes stay.
    let loader = Loader::start_at(&pin_dir, NOBODY, &[NOBODY], &[]);
    let (pin_dir, _socket) = loader.exit(Signal::KILL);
    assert!(pin_dir.join("links").read_dir().expect("links dir").next().is_some(), "no links pinned");

    // A live test process's pin dir (this one's) must survive the sweep.
    let live = std::path::PathBuf::from(format!("/sys/fs/bpf/{TEST_PIN_PREFIX}{}-999", std::process::id()));
    std::fs::create_dir(&live).expect("create a live test pin dir");

    let removed = remove_stale_test_pins();
    let live_kept = live.exists();
    let _ = std::fs::remove_dir(&live);
    assert!(removed.contains(&pin_dir), "{} not removed; removed {removed:?}", pin_dir.display());
    assert!(!pin_dir.exists(), "{} still exists", pin_dir.display());
    assert!(live_kept && !removed.contains(&live), "a live process's pins were removed: {removed:?}");
}
