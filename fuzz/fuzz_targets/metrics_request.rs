// SPDX-License-Identifier: Apache-2.0
//! `/metrics`, `/healthz` and `/readyz` request handling without a socket:
//! input lines are the method, the path and the Accept header.
#![no_main]

use std::sync::{Arc, OnceLock};

use http::{header, Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use nettel_aggregator::{
    metrics::{Metrics, RetransmitLabels},
    sink::{
        families::LabelSet,
        prometheus::{respond, Endpoint},
    },
};

fn endpoint() -> &'static Endpoint {
    static E: OnceLock<Endpoint> = OnceLock::new();
    E.get_or_init(|| {
        let metrics = Arc::new(Metrics::default());
        let labels = RetransmitLabels {
            pod: "web-0".into(),
            namespace: "shop".into(),
            service: "we\"b\\\n".into(),
            dest_port: "8080".into(),
            kind: "data".into(),
        };
        let mut text = String::new();
        labels.write_text(&mut text);
        metrics.tcp_retransmits.0.get_or_create(&text, false, 0).value.inc_by(1);
        Endpoint { registry: metrics.register(), metrics, require_kube_sync: true }
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let Ok(method) = Method::from_bytes(parts.next().unwrap_or_default()) else { return };
    let Ok(path) = std::str::from_utf8(parts.next().unwrap_or_default()) else { return };
    let accept = parts.next().and_then(|a| std::str::from_utf8(a).ok());
    let r = respond(endpoint(), &method, path, accept);
    assert!(r.headers().contains_key(header::CONTENT_TYPE));
    let s = r.status();
    assert!(matches!(
        s,
        StatusCode::OK
            | StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::SERVICE_UNAVAILABLE
    ));
});
