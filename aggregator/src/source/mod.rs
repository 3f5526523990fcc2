// SPDX-License-Identifier: Apache-2.0
//! Where events come from.
#[cfg(feature = "kube")]
pub mod kube;
pub mod loader;
pub mod message;
pub mod tracker;
