// SPDX-License-Identifier: Apache-2.0
//! LIST, GET and WATCH of Pods and EndpointSlices through kube's typed `Api`.

use futures::StreamExt;
use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};
use kube::{
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{watcher, WatchStreamExt},
    Api, Client, Config,
};
use nettel_test_apiserver::{
    endpoint_slice_json, install_crypto_provider, pod_json, Kind, SliceEndpoint, TestApiServer,
};

use crate::common::{is_event, pod, wait_event, within, EventStream};

fn ips(pod: &Pod) -> (Option<String>, Vec<String>) {
    let status = pod.status.clone().unwrap_or_default();
    let all = status.pod_ips.unwrap_or_default().into_iter().map(|p| p.ip).collect();
    (status.pod_ip, all)
}

#[tokio::test]
async fn list_returns_created_pods_with_ips() {
    let server = TestApiServer::start().await;
    let labels = [("app", "web")];
    server
        .create(pod_json(
            "web-0",
            "default",
            "uid-web-0",
            &["10.1.0.7", "fd00::7"],
            "Running",
            &labels,
            false,
        ))
        .unwrap();
    server.create(pod_json("agent", "kube-system", "", &["192.0.2.10"], "Running", &[], true)).unwrap();

    // Through a kubeconfig file, as the aggregator would load it.
    let dir = tempfile::tempdir().unwrap();
    let path = server.kubeconfig(dir.path());
    install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    let client = Client::try_from(config).unwrap();

    let version = within(5, "version", client.apiserver_version()).await.unwrap();
    assert_eq!(version.git_version, "v1.37.0-nettel-test");

    let all: Api<Pod> = Api::all(client.clone());
    let list = within(5, "list", all.list(&ListParams::default())).await.unwrap();
    assert_eq!(list.metadata.resource_version, Some(server.resource_version().to_string()));
    let mut names: Vec<_> = list.items.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["agent", "web-0"]);
    let web = list.items.iter().find(|p| p.metadata.name.as_deref() == Some("web-0")).unwrap();
    assert_eq!(ips(web), (Some("10.1.0.7".into()), vec!["10.1.0.7".into(), "fd00::7".into()]));
    assert_eq!(web.metadata.uid.as_deref(), Some("uid-web-0"));
    assert_eq!(web.metadata.labels.as_ref().unwrap()["app"], "web");
    assert!(web.metadata.resource_version.is_some());
    assert!(web.metadata.creation_timestamp.is_some());
    assert_eq!(web.status.as_ref().unwrap().phase.as_deref(), Some("Running"));

    let system: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let agent = within(5, "get", system.get("agent")).await.unwrap();
    assert_eq!(agent.spec.unwrap().host_network, Some(true));
    let listed = within(5, "namespaced list", system.list(&ListParams::default().labels("x=y"))).await;
    assert_eq!(listed.unwrap().items.len(), 1);
    let missing = within(5, "get missing", system.get("nope")).await.unwrap_err();
    assert!(matches!(missing, kube::Error::Api(ref s) if s.code == 404), "{missing:?}");
    assert_eq!(server.list_count(Kind::Pod), 2);
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted() {
    let server = TestApiServer::start().await;
    server.create(pod("before", "10.1.0.1")).unwrap();
    let api: Api<Pod> = Api::all(server.client().await);
    let mut stream: EventStream<Pod> = watcher(api, watcher::Config::default()).default_backoff().boxed();

    let (_, errors) =
        wait_event(&mut stream, 5, "InitApply before", |e| is_event(e, "InitApply", "before")).await;
    wait_event(&mut stream, 5, "InitDone", |e| matches!(e, watcher::Event::InitDone)).await;
    server.create(pod("a", "10.1.0.2")).unwrap();
    wait_event(&mut stream, 5, "Apply a", |e| is_event(e, "Apply", "a")).await;
    server.update(pod("a", "10.1.0.3")).unwrap();
    let (event, _) = wait_event(&mut stream, 5, "Apply a (modified)", |e| is_event(e, "Apply", "a")).await;
    let watcher::Event::Apply(modified) = event else { unreachable!() };
    assert_eq!(ips(&modified).0.as_deref(), Some("10.1.0.3"));
    server.delete(Kind::Pod, "default", "a").unwrap();
    let (_, later_errors) = wait_event(&mut stream, 5, "Delete a", |e| is_event(e, "Delete", "a")).await;
    assert_eq!(errors + later_errors, 0);
    assert_eq!(server.list_count(Kind::Pod), 1);
    assert_eq!(server.watch_count(Kind::Pod), 1);
    let requests = server.stats().requests;
    let watch = requests.iter().find(|r| r.query.contains("watch=true")).unwrap();
    eprintln!("kube list request: {:?}", requests[0]);
    eprintln!("kube watch request: {watch:?}");
    assert!(watch.query.contains("allowWatchBookmarks=true"), "{watch:?}");
}

#[tokio::test]
async fn endpoint_slices_list_and_watch() {
    let server = TestApiServer::start().await;
    let ep = |pod_name, address| SliceEndpoint { pod_name, pod_namespace: "shop", pod_uid: "uid-1", address };
    server.create(endpoint_slice_json("cart-abc", "shop", "cart", &[ep("cart-0", "10.2.0.5")])).unwrap();
    let client = server.client().await;

    let all: Api<EndpointSlice> = Api::all(client.clone());
    let list = within(5, "list slices", all.list(&ListParams::default())).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let slice = &list.items[0];
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"], "cart");
    let endpoints = slice.endpoints.clone().unwrap_or_default();
    let target = endpoints[0].target_ref.clone().unwrap();
    assert_eq!(
        (target.kind.as_deref(), target.name.as_deref(), target.namespace.as_deref()),
        (Some("Pod"), Some("cart-0"), Some("shop"))
    );
    assert_eq!(endpoints[0].addresses, ["10.2.0.5"]);
    let shop: Api<EndpointSlice> = Api::namespaced(client.clone(), "shop");
    assert_eq!(within(5, "ns list", shop.list(&ListParams::default())).await.unwrap().items.len(), 1);
    let other: Api<EndpointSlice> = Api::namespaced(client, "other");
    assert!(within(5, "other list", other.list(&ListParams::default())).await.unwrap().items.is_empty());

    let mut stream: EventStream<EndpointSlice> =
        watcher(all, watcher::Config::default()).default_backoff().boxed();
    wait_event(&mut stream, 5, "InitDone", |e| matches!(e, watcher::Event::InitDone)).await;
    let both = [ep("cart-0", "10.2.0.5"), ep("cart-1", "10.2.0.6")];
    server.update(endpoint_slice_json("cart-abc", "shop", "cart", &both)).unwrap();
    let (event, _) = wait_event(&mut stream, 5, "Apply slice", |e| is_event(e, "Apply", "cart-abc")).await;
    let watcher::Event::Apply(slice) = event else { unreachable!() };
    assert_eq!(slice.endpoints.map_or(0, |e| e.len()), 2);
    server.delete(Kind::EndpointSlice, "shop", "cart-abc").unwrap();
    wait_event(&mut stream, 5, "Delete slice", |e| is_event(e, "Delete", "cart-abc")).await;
    assert_eq!(server.watch_count(Kind::EndpointSlice), 1);
    assert_eq!(server.watch_count(Kind::Pod), 0);
}

#[tokio::test]
async fn lists_paginate_with_limit_and_continue() {
    let server = TestApiServer::start().await;
    for i in 0..7 {
        server
            .create(pod_json(
                &format!("p{i}"),
                "default",
                "",
                &[&format!("10.9.0.{i}")],
                "Running",
                &[],
                false,
            ))
            .unwrap();
    }
    let api: Api<Pod> = Api::all(server.client().await);
    let mut names = Vec::new();
    let mut params = kube::api::ListParams::default().limit(3);
    let mut pages = 0;
    loop {
        let page = api.list(&params).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3, "a page holds at most `limit` items");
        names.extend(page.items.iter().map(|p| p.metadata.name.clone().unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|i| format!("p{i}")).collect::<Vec<_>>());
    assert_eq!(server.list_count(Kind::Pod), 1, "continued pages belong to one list");
}
