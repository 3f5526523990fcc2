// SPDX-License-Identifier: Apache-2.0
//! Where events come from.
pub mod convert;
pub mod http_table;
pub mod ringbuf;
pub mod wire;
