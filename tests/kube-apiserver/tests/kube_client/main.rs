// SPDX-License-Identifier: Apache-2.0
//! Tests of the test API server driven by the real kube-rs client and runtime.

mod common;
mod faults;
mod list_watch;
mod resume;
