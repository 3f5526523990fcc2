// SPDX-License-Identifier: Apache-2.0
//! What the kernel says is attached, through `bpftool` (JSON output): the
//! independent check that a restarted loader did not attach a second copy.

use std::{path::Path, process::Command};

use serde_json::Value;

fn json(args: &[&str]) -> Option<Value> {
    let out = Command::new("bpftool").arg("-j").args(args).output().expect("run bpftool");
    out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("bpftool JSON"))
}

/// Every link or program (`what`: "link" or "prog"). Listing fails when one
/// is being created meanwhile (the kernel answers EAGAIN for an id it has
/// not settled yet: the TLS attacher attaches uprobes at any time), so a
/// failed listing is retried; one that keeps failing panics with bpftool's
/// answer rather than reading as an empty list.
fn list(what: &str) -> Vec<Value> {
    let mut last = String::new();
    for _ in 0..20 {
        let out = Command::new("bpftool").args(["-j", what, "show"]).output().expect("run bpftool");
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
            return v.as_array().cloned().unwrap_or_default();
        }
        last = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("bpftool {what} show kept failing: {last}");
}

/// (link id, program id) of the link pinned at `path`, if any.
pub fn pinned_link(path: &Path) -> Option<(u64, u64)> {
    let v = json(&["link", "show", "pinned", path.to_str().unwrap()])?;
    Some((v["id"].as_u64()?, v["prog_id"].as_u64()?))
}

/// Id of the map pinned at `path`.
pub fn pinned_map_id(path: &Path) -> u64 {
    let v = json(&["map", "show", "pinned", path.to_str().unwrap()]).expect("pinned map");
    v["id"].as_u64().unwrap()
}

/// `max_entries` of the map pinned at `path` (a ring buffer's size in bytes).
pub fn pinned_map_max_entries(path: &Path) -> u64 {
    let v = json(&["map", "show", "pinned", path.to_str().unwrap()]).expect("pinned map");
    v["max_entries"].as_u64().unwrap()
}

/// Whether a link with this id exists.
pub fn link_exists(id: u64) -> bool {
    json(&["link", "show", "id", &id.to_string()]).is_some()
}

/// How many attached links run a program named `name` that uses map `map_id`:
/// the copies of a probe feeding one ring buffer.
pub fn links_feeding(name: &str, map_id: u64) -> usize {
    let links = list("link");
    let progs = list("prog");
    let feeds = |prog_id: u64| {
        progs.iter().any(|p| {
            p["id"].as_u64() == Some(prog_id)
                && p["name"].as_str() == Some(name)
                && p["map_ids"].as_array().is_some_and(|m| m.iter().any(|m| m.as_u64() == Some(map_id)))
        })
    };
    links.iter().filter_map(|l| l["prog_id"].as_u64()).filter(|p| feeds(*p)).count()
}
