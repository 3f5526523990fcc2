// SPDX-License-Identifier: Apache-2.0
//! cgroup v2 subtrees made by tests (kubelet-style pod cgroups).

use std::{fs, path::PathBuf};

/// A cgroup subtree, removed leaf first on drop; rmdir fails while a process
/// is still inside, so tests move or kill their processes first.
#[derive(Debug)]
pub struct CgroupTree(pub PathBuf);

impl Drop for CgroupTree {
    fn drop(&mut self) {
        let mut dirs = Vec::new();
        let mut stack = vec![self.0.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = fs::read_dir(&d) {
                stack.extend(
                    rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()),
                );
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}
