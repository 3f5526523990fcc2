// SPDX-License-Identifier: Apache-2.0
//! Destination-port folding.
//!
//! A server retransmitting to thousands of clients sees thousands of client
//! (ephemeral) ports as destinations. Ports at or above the floor
//! (`--ephemeral-port-floor`, default 32768, the start of Linux's default
//! `ip_local_port_range`) become the single label value `ephemeral`; lower
//! ports (where services listen) keep their number. Port 0 stays `0`.

use std::sync::Arc;

/// The label value for folded ports.
pub const EPHEMERAL: &str = "ephemeral";

/// Port -> `dest_port` label value, with the label strings of low ports
/// precomputed so the per-event path does not format numbers.
#[derive(Debug, Clone)]
pub struct PortFolder {
    floor: u16,
    labels: Vec<Arc<str>>,
    ephemeral: Arc<str>,
}

impl PortFolder {
    /// A folder keeping ports below `floor`.
    pub fn new(floor: u16) -> Self {
        Self {
            floor,
            labels: (0..floor).map(|p| Arc::from(p.to_string())).collect(),
            ephemeral: Arc::from(EPHEMERAL),
        }
    }

    /// The label value for `port`.
    pub fn fold(&self, port: u32) -> Arc<str> {
        match u16::try_from(port) {
            Ok(p) if p < self.floor => Arc::clone(&self.labels[p as usize]),
            _ => Arc::clone(&self.ephemeral),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_at_the_floor() {
        let f = PortFolder::new(32768);
        assert_eq!(&*f.fold(80), "80");
        assert_eq!(&*f.fold(0), "0");
        assert_eq!(&*f.fold(32767), "32767");
        assert_eq!(&*f.fold(32768), "ephemeral");
        assert_eq!(&*f.fold(60000), "ephemeral");
        assert_eq!(&*f.fold(70000), "ephemeral", "out-of-range ports from a hostile stream fold too");
        assert_eq!(&*PortFolder::new(1024).fold(8080), "ephemeral");
    }
}
