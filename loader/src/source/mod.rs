// SPDX-License-Identifier: Apache-2.0
//! Where events come from.
pub mod convert;
pub mod ringbuf;
