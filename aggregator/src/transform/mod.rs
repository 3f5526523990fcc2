// SPDX-License-Identifier: Apache-2.0
//! What the aggregator does to events: attribute them to pods, fold ports,
//! and count them into series.
pub mod aggregate;
pub mod enrich_pod;
pub mod fold_port;
pub mod limit_cardinality;
