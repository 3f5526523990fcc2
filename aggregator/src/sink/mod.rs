// SPDX-License-Identifier: Apache-2.0
//! What the aggregator serves.
pub mod families;
pub mod prometheus;
pub mod text_format;
