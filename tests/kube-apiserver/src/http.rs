// SPDX-License-Identifier: Apache-2.0
//! HTTP routing: discovery, LIST, GET and WATCH of the stored kinds, with
//! bearer-token auth and injected faults applied first.

use std::{collections::HashMap, convert::Infallible, io, sync::Arc};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{body::Incoming, header, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::{
    objects::{list_json, reason_for, status_json},
    server::Shared,
    store::Kind,
    watch, RequestRecord,
};

/// Response body: a full JSON document or a stream of watch events.
pub(crate) type Body = BoxBody<Bytes, io::Error>;

/// A parsed resource request.
#[derive(Debug)]
struct Target<'a> {
    kind: Kind,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

/// Handles one request. An `Err` makes hyper close the connection (used while down).
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> io::Result<Response<Body>> {
    if shared.faults.is_down() {
        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "server is down"));
    }
    let delay = shared.faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let response = respond(&shared, &req, &path, &query);
    shared.stats().requests.push(RequestRecord {
        method: req.method().to_string(),
        path,
        query,
        status: response.status().as_u16(),
    });
    Ok(response)
}

fn respond(shared: &Arc<Shared>, req: &Request<Incoming>, path: &str, query: &str) -> Response<Body> {
    let expected = format!("Bearer {}", shared.token);
    let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if auth != Some(expected.as_str()) {
        return status_response(401, "Unauthorized");
    }
    if let Some(code) = shared.faults.take_failure() {
        shared.stats().injected_failures += 1;
        return status_response(code, "injected failure");
    }
    if req.method() != Method::GET {
        return status_response(405, &format!("method {} is not supported", req.method()));
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Some(doc) = discovery(&segments) {
        return json_response(StatusCode::OK, &doc);
    }
    let Some(target) = parse_target(&segments) else {
        return status_response(404, "the server could not find the requested resource");
    };
    let params = parse_query(query);
    if let Some(name) = target.name {
        let ns = target.namespace.unwrap_or("default");
        return match shared.store().get(target.kind, ns, name) {
            Some(obj) => json_response(StatusCode::OK, &obj),
            None => status_response(404, &format!("{} \"{name}\" not found", target.kind.plural())),
        };
    }
    if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) {
        return watch::start(shared.clone(), target.kind, target.namespace.map(str::to_owned), &params);
    }
    // Pagination as the real API server does it: `limit` and an opaque `continue`.
    let limit =
        params.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let after = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match decode_continue(token) {
            Some(key) => Some(key),
            None => return status_response(400, "invalid continue token"),
        },
        None => None,
    };
    let (items, rv, next) = shared.store().list_page(target.kind, target.namespace, limit, after.as_ref());
    // One list = its first page.
    if after.is_none() {
        shared.stats().kind_mut(target.kind).lists += 1;
    }
    json_response(StatusCode::OK, &list_json(target.kind, items, rv, next.map(|k| encode_continue(&k))))
}

/// Opaque continue token: base64url of `namespace\0name` of the last item served.
fn encode_continue((ns, name): &(String, String)) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{ns}\0{name}"))
}

fn decode_continue(token: &str) -> Option<(String, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let (ns, name) = std::str::from_utf8(&raw).ok()?.split_once('\0')?;
    Some((ns.to_owned(), name.to_owned()))
}

/// `/api/v1/[namespaces/{ns}/]pods[/{name}]` and the EndpointSlice equivalent.
fn parse_target<'a>(segments: &[&'a str]) -> Option<Target<'a>> {
    let rest = match segments {
        ["api", "v1", rest @ ..] => rest,
        ["apis", "discovery.k8s.io", "v1", rest @ ..] => rest,
        _ => return None,
    };
    let core = segments[0] == "api";
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    let (plural, name) = match rest {
        [plural] => (*plural, None),
        [plural, name] if namespace.is_some() => (*plural, Some(*name)),
        _ => return None,
    };
    let kind = Kind::ALL.into_iter().find(|k| k.plural() == plural && (k.api_version() == "v1") == core)?;
    Some(Target { kind, namespace, name })
}

/// Minimal discovery documents.
fn discovery(segments: &[&str]) -> Option<Value> {
    let resource = |kind: Kind| {
        json!({
            "name": kind.plural(), "singularName": kind.kind().to_lowercase(), "namespaced": true,
            "kind": kind.kind(), "verbs": ["get", "list", "watch"],
        })
    };
    Some(match segments {
        ["version"] => json!({
            "major": "1", "minor": "37", "gitVersion": "v1.37.0-nettel-test",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25", "compiler": "gc",
            "platform": "linux/amd64",
        }),
        ["api"] => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443" }],
        }),
        ["apis"] => json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [{
                "name": "discovery.k8s.io",
                "versions": [{ "groupVersion": "discovery.k8s.io/v1", "version": "v1" }],
                "preferredVersion": { "groupVersion": "discovery.k8s.io/v1", "version": "v1" },
            }],
        }),
        ["api", "v1"] => json!({
            "kind": "APIResourceList", "groupVersion": "v1", "resources": [resource(Kind::Pod)],
        }),
        ["apis", "discovery.k8s.io", "v1"] => json!({
            "kind": "APIResourceList", "groupVersion": "discovery.k8s.io/v1",
            "resources": [resource(Kind::EndpointSlice)],
        }),
        _ => return None,
    })
}

/// Parses `a=b&c=d` with percent-decoding; unknown parameters are kept and ignored.
pub(crate) fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON response with a complete body.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let bytes = Bytes::from(body.to_string());
    let body = Full::new(bytes).map_err(|never: Infallible| match never {}).boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

/// A `metav1.Status` failure response with the given HTTP status code.
pub(crate) fn status_response(code: u16, message: &str) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &status_json(status.as_u16(), reason_for(status.as_u16()), message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target(&["api", "v1", "pods"]).unwrap();
        assert_eq!((t.kind, t.namespace, t.name), (Kind::Pod, None, None));
        let t = parse_target(&["apis", "discovery.k8s.io", "v1", "namespaces", "ns", "endpointslices", "s"])
            .unwrap();
        assert_eq!((t.kind, t.namespace, t.name), (Kind::EndpointSlice, Some("ns"), Some("s")));
        assert!(parse_target(&["api", "v1", "endpointslices"]).is_none());
        assert!(parse_target(&["api", "v1", "services"]).is_none());
    }

    #[test]
    fn query() {
        let q = parse_query("watch=true&labelSelector=app%3Dx%2Cb+c&resourceVersion=12&x");
        assert_eq!(q["watch"], "true");
        assert_eq!(q["labelSelector"], "app=x,b c");
        assert_eq!(q["resourceVersion"], "12");
        assert_eq!(q["x"], "");
    }
}
