// SPDX-License-Identifier: Apache-2.0
//! Command lines of both binaries: NUL-separated arguments parsed by clap and
//! validated; every outcome is a value or an error, never a panic.
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut args: Vec<&str> = text.split('\0').collect();
    if args.len() > 64 {
        return;
    }
    args.insert(0, "nettel");
    if let Ok(a) = nettel_aggregator::config::Args::try_parse_from(&args) {
        let _ = a.use_kube(false);
        let _ = a.use_kube(true);
        if let Ok(l) = a.series_limits() {
            assert!(l.max_per_metric >= 2 && l.max_per_metric <= l.max_series);
        }
    }
    if let Ok(cli) = nettel_loader::config::Cli::try_parse_from(&args) {
        if let nettel_loader::config::Command::Run(run) = cli.command {
            if let Ok(c) = run.validate() {
                assert!(c.ring_bytes.is_none_or(|r| nettel_loader::pin::valid_ring_bytes(r.into())));
                assert!(c.queue_batches >= 1);
            }
        }
    }
});
