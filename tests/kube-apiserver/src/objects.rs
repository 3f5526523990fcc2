// SPDX-License-Identifier: Apache-2.0
//! Builders for Kubernetes JSON objects in the shape a real API server returns
//! (`kubectl get -o json`): Pods, EndpointSlices, lists, Status and watch events.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::store::Kind;

/// One endpoint of an EndpointSlice: the Pod it points at (`targetRef`) and its address.
#[derive(Debug, Clone, Copy)]
pub struct SliceEndpoint<'a> {
    /// `targetRef.name` of the backing Pod.
    pub pod_name: &'a str,
    /// `targetRef.namespace` of the backing Pod.
    pub pod_namespace: &'a str,
    /// `targetRef.uid` of the backing Pod.
    pub pod_uid: &'a str,
    /// The endpoint address (an IPv4 or IPv6 literal).
    pub address: &'a str,
}

/// Builds a Pod as the API server would return it.
///
/// `ips` become `status.podIP` (the first) and `status.podIPs` (all); with
/// `host_network` the Pod has `spec.hostNetwork: true` and its `status.hostIP`
/// is its first IP. `uid` may be empty to let the store assign one.
pub fn pod_json(
    name: &str,
    namespace: &str,
    uid: &str,
    ips: &[&str],
    phase: &str,
    labels: &[(&str, &str)],
    host_network: bool,
) -> Value {
    let labels: Map<String, Value> = labels.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect();
    let mut metadata = json!({
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "creationTimestamp": now_rfc3339(),
    });
    if !uid.is_empty() {
        metadata["uid"] = Value::from(uid);
    }
    let host_ip = if host_network { ips.first().copied().unwrap_or("192.0.2.10") } else { "192.0.2.10" };
    let mut status = json!({
        "phase": phase,
        "hostIP": host_ip,
        "hostIPs": [{ "ip": host_ip }],
        "podIPs": ips.iter().map(|ip| json!({ "ip": ip })).collect::<Vec<_>>(),
        "conditions": [{ "type": "Ready", "status": if phase == "Running" { "True" } else { "False" } }],
    });
    if let Some(first) = ips.first() {
        status["podIP"] = Value::from(*first);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [{ "name": "app", "image": "registry.invalid/app:1" }],
            "hostNetwork": host_network,
            "nodeName": "node-1",
            "restartPolicy": "Always",
        },
        "status": status,
    })
}

/// Builds a `discovery.k8s.io/v1` EndpointSlice for Service `service_name`.
///
/// Each endpoint is ready and has a `targetRef` to its Pod; the slice carries the
/// `kubernetes.io/service-name` label and one TCP port named `http` (80).
/// `addressType` is `IPv6` when the first address contains a colon, else `IPv4`.
pub fn endpoint_slice_json(
    name: &str,
    namespace: &str,
    service_name: &str,
    endpoints: &[SliceEndpoint<'_>],
) -> Value {
    let ipv6 = endpoints.first().is_some_and(|e| e.address.contains(':'));
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            json!({
                "addresses": [e.address],
                "conditions": { "ready": true, "serving": true, "terminating": false },
                "nodeName": "node-1",
                "targetRef": {
                    "kind": "Pod",
                    "name": e.pod_name,
                    "namespace": e.pod_namespace,
                    "uid": e.pod_uid,
                },
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": now_rfc3339(),
            "labels": {
                "kubernetes.io/service-name": service_name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": if ipv6 { "IPv6" } else { "IPv4" },
        "endpoints": endpoints,
        "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }],
    })
}

/// A `metav1.Status` failure object, as returned in error bodies and ERROR watch events.
pub fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// The `reason` a real API server puts in a Status for an HTTP status code.
pub fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "AlreadyExists",
        410 => "Expired",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// A list response (`PodList`, `EndpointSliceList`) at resourceVersion `rv`,
/// with `metadata.continue` when more pages remain.
pub(crate) fn list_json(kind: Kind, items: Vec<Value>, rv: u64, continue_token: Option<String>) -> Value {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if let Some(token) = continue_token {
        metadata["continue"] = Value::from(token);
    }
    json!({
        "kind": kind.list_kind(),
        "apiVersion": kind.api_version(),
        "metadata": metadata,
        "items": items,
    })
}

/// One watch event line (without the trailing newline).
pub(crate) fn watch_event_json(event_type: &str, object: &Value) -> Value {
    json!({ "type": event_type, "object": object })
}

/// A BOOKMARK event object: only kind, apiVersion and metadata.resourceVersion.
pub(crate) fn bookmark_json(kind: Kind, rv: u64) -> Value {
    json!({
        "type": "BOOKMARK",
        "object": {
            "kind": kind.kind(),
            "apiVersion": kind.api_version(),
            "metadata": { "resourceVersion": rv.to_string() },
        },
    })
}

/// The current time as RFC 3339 with second precision (`2024-05-01T12:00:00Z`).
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, u32::try_from(m).unwrap_or(1), u32::try_from(d).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn pod_shape() {
        let pod = pod_json("p", "ns", "u-1", &["10.1.0.5", "fd00::5"], "Running", &[("app", "x")], false);
        assert_eq!(pod["status"]["podIP"], "10.1.0.5");
        assert_eq!(pod["status"]["podIPs"][1]["ip"], "fd00::5");
        assert_eq!(pod["spec"]["hostNetwork"], false);
        assert_eq!(pod["metadata"]["labels"]["app"], "x");
    }
}
