// SPDX-License-Identifier: Apache-2.0
//! The HTTP endpoint: `/metrics` (Prometheus text, or OpenMetrics when the
//! scraper asks for it), `/healthz` (process alive) and `/readyz` (an event
//! stream to the loader is open).

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{
    body::{Frame, Incoming},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{info, warn};

use super::text_format::{self, Chunks, Format, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use crate::{metrics::Metrics, Error};

/// Most concurrent HTTP connections; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared state of the endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    /// Whether readiness also waits for the Kubernetes caches to sync.
    pub require_kube_sync: bool,
}

/// Binds `addr` (separately, so bind errors surface before serving).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })
}

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Ok(addr) = listener.local_addr() {
        info!(addr = %addr, "Serving /metrics.");
    }
    loop {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "Accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let endpoint = Arc::clone(&endpoint);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let endpoint = Arc::clone(&endpoint);
                async move { Ok::<_, Infallible>(handle(&endpoint, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(permit);
        });
    }
}

/// A response body: whole, or `/metrics` streamed in chunks.
pub type Body = BoxBody<bytes_crate::Bytes, Infallible>;

/// Answers one request.
pub fn handle(endpoint: &Endpoint, req: &Request<Incoming>) -> Response<Body> {
    respond(
        endpoint,
        req.method(),
        req.uri().path(),
        req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()),
    )
}

/// Request handling without the HTTP plumbing (tested directly).
pub fn respond(endpoint: &Endpoint, method: &Method, path: &str, accept: Option<&str>) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are supported\n");
    }
    match path {
        "/metrics" => {
            let format = text_format::negotiate(accept);
            let ctype = match format {
                Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
                Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
            };
            let body = if method == Method::HEAD {
                Full::new(bytes_crate::Bytes::new()).boxed()
            } else {
                match Chunks::new(&endpoint.registry, &endpoint.metrics, format) {
                    // Written chunk by chunk as hyper sends them.
                    Ok(chunks) => StreamBody::new(futures::stream::iter(
                        chunks.map(|c| Ok::<_, Infallible>(Frame::data(bytes_crate::Bytes::from(c)))),
                    ))
                    .boxed(),
                    Err(e) => {
                        return plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("encoding failed: {e}\n"))
                    }
                }
            };
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, ctype)
                .body(body)
                .expect("static response parts are valid")
        }
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if endpoint.metrics.loader_connected.get() != 1 {
                plain(StatusCode::SERVICE_UNAVAILABLE, "not connected to the loader\n")
            } else if endpoint.require_kube_sync && endpoint.metrics.kube_synced.get() != 1 {
                plain(StatusCode::SERVICE_UNAVAILABLE, "Kubernetes caches not synced yet\n")
            } else {
                plain(StatusCode::OK, "ready\n")
            }
        }
        _ => plain(StatusCode::NOT_FOUND, "not found; try /metrics, /healthz or /readyz\n"),
    }
}

fn plain(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(bytes_crate::Bytes::copy_from_slice(body.as_bytes())).boxed())
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn endpoint() -> Endpoint {
        let metrics = Arc::new(Metrics::default());
        Endpoint { registry: metrics.register(), metrics, require_kube_sync: true }
    }

    fn label_text(l: &impl crate::sink::families::LabelSet) -> String {
        let mut s = String::new();
        l.write_text(&mut s);
        s
    }

    async fn body(r: Response<Body>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn serves_both_formats_and_rejects_the_rest() {
        let e = endpoint();
        let labels = crate::metrics::RetransmitLabels {
            pod: "web-0".into(),
            namespace: "shop".into(),
            service: "web".into(),
            dest_port: "8080".into(),
            kind: "data".into(),
        };
        e.metrics.tcp_retransmits.0.get_or_create(&label_text(&labels), false, 0).value.inc_by(1);
        let prom = respond(&e, &Method::GET, "/metrics", None);
        assert_eq!(prom.headers()[header::CONTENT_TYPE], PROMETHEUS_CONTENT_TYPE);
        let text = body(prom).await;
        assert!(text.contains("# TYPE node_tcp_retransmits_total counter"), "{text}");
        assert!(text.contains("\nnode_tcp_retransmits_total{pod=\"web-0\",namespace=\"shop\",service=\"web\",dest_port=\"8080\",kind=\"data\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE nettel_loader_connected gauge"), "self-metrics too: {text}");
        assert!(!text.contains("# EOF"));
        let om = respond(&e, &Method::GET, "/metrics", Some("application/openmetrics-text; version=1.0.0"));
        assert_eq!(om.headers()[header::CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
        let om = body(om).await;
        assert!(om.contains("# TYPE node_tcp_retransmits counter\n"), "{om}");
        assert!(om.ends_with("# EOF\n") && om.matches("# EOF").count() == 1, "{om}");
        assert_eq!(respond(&e, &Method::POST, "/metrics", None).status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(respond(&e, &Method::GET, "/nope", None).status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&e, &Method::GET, "/readyz", None).status(), StatusCode::SERVICE_UNAVAILABLE);
        e.metrics.loader_connected.set(1);
        assert_eq!(
            respond(&e, &Method::GET, "/readyz", None).status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "kube not synced"
        );
        e.metrics.kube_synced.set(1);
        assert_eq!(respond(&e, &Method::GET, "/readyz", None).status(), StatusCode::OK);
    }
}
