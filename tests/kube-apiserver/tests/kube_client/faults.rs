// SPDX-License-Identifier: Apache-2.0
//! Outages, delays and authentication as the kube client sees them.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::{api::ListParams, Api};
use nettel_test_apiserver::{Kind, TestApiServer};

use crate::common::{pod, within};

#[tokio::test]
async fn outage_refuses_requests_until_back_up() {
    let server = TestApiServer::start().await;
    server.create(pod("a", "10.1.0.1")).unwrap();
    let api: Api<Pod> = Api::all(server.client().await);
    within(5, "list", api.list(&ListParams::default())).await.unwrap();
    server.set_down(true);
    // The first request closes the pooled connection, the second is refused at accept.
    for attempt in ["pooled", "new"] {
        let err = within(5, attempt, api.list(&ListParams::default())).await.unwrap_err();
        assert!(!matches!(err, kube::Error::Api(_)), "transport error expected, got {err:?}");
    }
    server.set_down(false);
    let list = within(5, "list after outage", api.list(&ListParams::default())).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(server.list_count(Kind::Pod), 2);
    assert!(server.stats().refused_connections >= 1);
}

#[tokio::test]
async fn delay_slows_responses() {
    let server = TestApiServer::start().await;
    let api: Api<Pod> = Api::all(server.client().await);
    within(5, "warm-up list", api.list(&ListParams::default())).await.unwrap();
    server.set_delay(Duration::from_millis(300));
    let started = Instant::now();
    within(5, "slow list", api.list(&ListParams::default())).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn injected_failures_reach_the_client() {
    let server = TestApiServer::start().await;
    let api: Api<Pod> = Api::all(server.client().await);
    server.set_failures(1, 500);
    let err = within(5, "failing list", api.list(&ListParams::default())).await.unwrap_err();
    let kube::Error::Api(status) = err else { panic!("expected Api error, got {err:?}") };
    assert_eq!((status.code, status.reason.as_str()), (500, "InternalError"));
    // 503 is retried inside the kube client, so the call succeeds.
    server.set_failures(2, 503);
    within(5, "retried list", api.list(&ListParams::default())).await.unwrap();
    assert_eq!(server.stats().injected_failures, 3);
    assert_eq!(server.list_count(Kind::Pod), 1);
}
