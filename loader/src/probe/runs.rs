// SPDX-License-Identifier: Apache-2.0
//! The running programs' skipped runs (`recursion_misses`), read from their
//! descriptors' fdinfo: runs the kernel did not make, whose events are lost
//! and counted nowhere else (proto `ProgramRuns`).
//!
//! A program this loader attached is its own descriptor. An adopted one
//! (kept running by its pinned link across a loader restart) is another
//! instance: its program is pinned next to its link at attach
//! ([`super::link::prog_pin_path`]) and opened from there.

use std::{
    os::fd::{AsFd, OwnedFd},
    sync::Arc,
};

use nettel_proto::v1;
use tracing::warn;

/// Descriptors of the running programs, by name.
#[derive(Debug, Default)]
pub struct ProgramRuns {
    programs: Vec<(&'static str, Arc<OwnedFd>)>,
    read_errors: u64,
}

impl ProgramRuns {
    pub fn add(&mut self, program: &'static str, fd: Arc<OwnedFd>) {
        self.programs.push((program, fd));
    }

    /// Each program's skipped runs; a program whose kernel has no
    /// `recursion_misses` (Linux < 5.12) is left out.
    pub fn read(&mut self) -> Vec<v1::ProgramRuns> {
        let mut out = Vec::with_capacity(self.programs.len());
        for (program, fd) in &self.programs {
            match crate::sys::prog_recursion_misses(fd.as_fd()) {
                Ok(Some(skipped)) => out.push(v1::ProgramRuns { program: (*program).into(), skipped }),
                Ok(None) => {}
                Err(e) => {
                    self.read_errors += 1;
                    if self.read_errors.is_power_of_two() {
                        warn!(program, error = %e, errors = self.read_errors, "Cannot read a program's run statistics.");
                    }
                }
            }
        }
        out
    }
}
