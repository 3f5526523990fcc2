// SPDX-License-Identifier: Apache-2.0
//! Kubernetes attribution: the pod index the aggregator resolves addresses
//! (and cgroups) against, and the list/watch that keeps it current.
pub mod cgroup;
#[cfg(feature = "kube")]
pub mod objects;
pub mod pod_index;
