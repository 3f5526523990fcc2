// SPDX-License-Identifier: Apache-2.0
//! cgroup id -> pod UID, for events that come from a process (L7 probes)
//! rather than an address.
//!
//! The kernel's cgroup id (`bpf_get_current_cgroup_id()`) is the inode number
//! of the cgroup's directory in the cgroup v2 hierarchy (checked on Linux 6.18:
//! a process in `/sys/fs/cgroup/unified/nt-verify`, inode 82, reported
//! `cgroup` 82 to `bpftrace -e 'tracepoint:sched:sched_process_exit { printf("%llu", cgroup) }'`).
//! kubelet names pod
//! cgroups after the pod UID:
//!
//! * systemd driver: `.../kubepods-burstable-pod1a2b3c4d_..._9f.slice/cri-containerd-<id>.scope`
//!   (dashes of the UID become underscores);
//! * cgroupfs driver: `.../kubepods/burstable/pod1a2b3c4d-...-9f/<container id>`.
//!
//! The resolver walks the cgroup2 tree (bounded depth and size), maps the
//! inode of every pod cgroup and of everything below it to the UID, and
//! rescans on a miss at most once per `min_rescan`.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// Deepest cgroup level scanned below the root.
pub const MAX_DEPTH: usize = 10;
/// Most cgroups indexed; a larger tree is truncated (and reported by `scan`).
pub const MAX_ENTRIES: usize = 200_000;

/// Finds the cgroup v2 mount: `/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub fn default_root() -> PathBuf {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    for p in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        #[allow(clippy::unnecessary_cast, reason = "f_type's width differs between targets")]
        if rustix::fs::statfs(p).is_ok_and(|s| s.f_type as i64 == CGROUP2_SUPER_MAGIC) {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("/sys/fs/cgroup")
}

/// Extracts a pod UID from one cgroup path component, if it names a pod.
pub fn pod_uid_from_component(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".slice").unwrap_or(name);
    let idx = stem.rfind("pod")?;
    // `pod` must start the component or follow a `-` (kubepods-burstable-pod...).
    if idx > 0 && stem.as_bytes()[idx - 1] != b'-' {
        return None;
    }
    let uid = stem[idx + 3..].replace('_', "-");
    let valid = uid.len() == 36
        && uid.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    valid.then_some(uid)
}

/// The resolver.
#[derive(Debug)]
pub struct CgroupResolver {
    root: PathBuf,
    by_id: HashMap<u64, Arc<str>>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
}

/// What one scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanStats {
    pub cgroups_seen: usize,
    pub pod_cgroups: usize,
    pub truncated: bool,
}

impl CgroupResolver {
    /// A resolver over the cgroup2 tree at `root`.
    pub fn new(root: PathBuf, min_rescan: Duration) -> Self {
        Self { root, by_id: HashMap::new(), last_scan: None, min_rescan }
    }

    /// Rebuilds the map from the tree.
    pub fn scan(&mut self, now: Instant) -> ScanStats {
        let mut by_id = HashMap::new();
        let mut stats = ScanStats { cgroups_seen: 0, pod_cgroups: 0, truncated: false };
        walk(&self.root, 0, None, &mut by_id, &mut stats);
        self.by_id = by_id;
        self.last_scan = Some(now);
        stats
    }

    /// The pod UID owning cgroup `id`, rescanning on a miss when allowed.
    pub fn pod_uid(&mut self, id: u64, now: Instant) -> Option<Arc<str>> {
        if let Some(uid) = self.by_id.get(&id) {
            return Some(Arc::clone(uid));
        }
        if self.last_scan.is_none_or(|t| now.duration_since(t) >= self.min_rescan) {
            self.scan(now);
            return self.by_id.get(&id).cloned();
        }
        None
    }
}

fn walk(
    dir: &Path,
    depth: usize,
    uid: Option<&Arc<str>>,
    out: &mut HashMap<u64, Arc<str>>,
    stats: &mut ScanStats,
) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        // cgroupfs holds only directories (cgroups) and regular files (knobs).
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_dir() {
            continue;
        }
        if stats.cgroups_seen >= MAX_ENTRIES {
            stats.truncated = true;
            return;
        }
        stats.cgroups_seen += 1;
        let name = entry.file_name();
        let own = name.to_str().and_then(pod_uid_from_component).map(Arc::<str>::from);
        let uid = own.as_ref().or(uid);
        if let Some(u) = uid {
            out.insert(meta.ino(), Arc::clone(u));
            if own.is_some() {
                stats.pod_cgroups += 1;
            }
        }
        if depth + 1 < MAX_DEPTH {
            walk(&entry.path(), depth + 1, uid, out, stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

    #[test]
    fn parses_both_cgroup_drivers() {
        let sd = format!("kubepods-burstable-pod{}.slice", UID.replace('-', "_"));
        assert_eq!(pod_uid_from_component(&sd).as_deref(), Some(UID));
        assert_eq!(
            pod_uid_from_component(&format!("kubepods-pod{}.slice", UID.replace('-', "_"))).as_deref(),
            Some(UID)
        );
        assert_eq!(pod_uid_from_component(&format!("pod{UID}")).as_deref(), Some(UID));
        for bad in [
            "kubepods.slice",
            "burstable",
            "pod1234",
            "ipod1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
            "cri-containerd-abc.scope",
        ] {
            assert_eq!(pod_uid_from_component(bad), None, "{bad}");
        }
    }

    #[test]
    fn maps_pod_and_container_directories_by_inode() {
        let root = tempfile::tempdir().unwrap();
        let pod_dir = root
            .path()
            .join("kubepods.slice/kubepods-besteffort.slice")
            .join(format!("kubepods-besteffort-pod{}.slice", UID.replace('-', "_")));
        let container = pod_dir.join("cri-containerd-0123abcd.scope");
        fs::create_dir_all(&container).unwrap();
        let other = root.path().join("system.slice/sshd.service");
        fs::create_dir_all(&other).unwrap();

        let mut r = CgroupResolver::new(root.path().to_owned(), Duration::from_secs(5));
        let now = Instant::now();
        let stats = r.scan(now);
        assert_eq!(stats.pod_cgroups, 1);
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(r.pod_uid(ino(&pod_dir), now).as_deref(), Some(UID));
        assert_eq!(r.pod_uid(ino(&container), now).as_deref(), Some(UID));
        assert_eq!(r.pod_uid(ino(&other), now), None);

        // A pod created after the scan is found on a miss once `min_rescan` passed.
        let uid2 = "00000000-0000-4000-8000-000000000002";
        let late =
            root.path().join("kubepods.slice").join(format!("kubepods-pod{}.slice", uid2.replace('-', "_")));
        fs::create_dir_all(&late).unwrap();
        assert_eq!(r.pod_uid(ino(&late), now + Duration::from_secs(1)), None, "rate-limited");
        assert_eq!(r.pod_uid(ino(&late), now + Duration::from_secs(6)).as_deref(), Some(uid2));
    }
}
