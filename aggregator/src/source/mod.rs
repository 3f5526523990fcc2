// SPDX-License-Identifier: Apache-2.0
//! Where events come from.
pub mod loader;
pub mod tracker;
