// SPDX-License-Identifier: Apache-2.0
//! The exposition formats with hostile label values (a pods file may name a
//! service anything without control characters; here even those): in both
//! formats the series stays one sample line, and its label values read back
//! exactly as they went in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettel_aggregator::{
    metrics::{Metrics, RetransmitLabels},
    sink::{
        families::LabelSet,
        text_format::{encode, Format},
    },
};

/// The label values of a sample line's label set, unescaped (`\\`, `\"`, `\n`).
fn label_values(line: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut chars = line.chars();
    while chars.by_ref().any(|c| c == '"') {
        let mut v = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => v.push('\n'),
                    Some(c) => v.push(c),
                    None => panic!("dangling escape in {line:?}"),
                },
                Some('"') => break,
                Some(c) => v.push(c),
                None => panic!("unterminated value in {line:?}"),
            }
        }
        values.push(v);
    }
    values
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else { return };
    let m = Metrics::default();
    let labels = RetransmitLabels {
        pod: value.into(),
        namespace: "ns".into(),
        service: value.into(),
        dest_port: "80".into(),
        kind: "data".into(),
    };
    let mut text = String::new();
    labels.write_text(&mut text);
    m.tcp_retransmits.0.get_or_create(&text, false, 0).value.inc_by(7);
    for format in [Format::OpenMetrics, Format::Prometheus] {
        let body = encode(&m.register(), &m, format).unwrap();
        let samples: Vec<&str> =
            body.lines().filter(|l| l.starts_with("node_tcp_retransmits_total{")).collect();
        assert_eq!(samples.len(), 1, "{format:?}: one sample line\n{body}");
        assert!(samples[0].ends_with("} 7"), "{format:?}: {:?}", samples[0]);
        let expected = [value, "ns", value, "80", "data"];
        assert_eq!(label_values(samples[0]), expected, "{format:?}: {:?}", samples[0]);
    }
});
