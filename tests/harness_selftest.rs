//! The fake Kubernetes API server (tests/harness) against unmodified kube-rs client code:
//! CRUD, selectors, watchers through compaction and restarts, patches, the status
//! subresource, finalizers, CRDs, conflicts, auth and the failure controls.

mod harness;

use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::{Clusters, FakeCluster, expect_event, spawn_watcher};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use kube::runtime::{conditions, wait::await_condition, watcher};
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

fn service(name: &str, labels: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
    }))
    .unwrap()
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn api_code<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_crud_round_trips_through_a_kube_client() {
    let cluster = FakeCluster::start("crud").await;
    let services: Api<Service> = Api::namespaced(cluster.client().await, "default");

    let created = services
        .create(
            &PostParams::default(),
            &service("web", json!({"app": "web"})),
        )
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    let rv1: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();

    let again = services
        .create(&PostParams::default(), &service("web", json!({})))
        .await;
    assert_eq!(api_code(again), (409, "AlreadyExists".into()));

    let mut fetched = services.get("web").await.unwrap();
    assert_eq!(fetched.metadata.uid, created.metadata.uid);

    fetched.labels_mut().insert("tier".into(), "front".into());
    let relabelled = services
        .replace("web", &PostParams::default(), &fetched)
        .await
        .unwrap();
    let rv2: u64 = relabelled.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    assert_eq!(
        relabelled.metadata.generation,
        Some(1),
        "metadata changes keep the generation"
    );

    let mut respecced = relabelled.clone();
    respecced.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 8080;
    let respecced = services
        .replace("web", &PostParams::default(), &respecced)
        .await
        .unwrap();
    assert_eq!(respecced.metadata.generation, Some(2));

    // A write that changes nothing keeps the resourceVersion.
    let same = services
        .replace("web", &PostParams::default(), &respecced)
        .await
        .unwrap();
    assert_eq!(same.resource_version(), respecced.resource_version());

    let names: Vec<String> = services
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(names, ["kubernetes", "web"]);
    let all: Api<Service> = Api::all(cluster.client().await);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );

    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_code(services.get("web").await),
        (404, "NotFound".into())
    );

    let elsewhere: Api<Service> = Api::namespaced(cluster.client().await, "missing");
    let missing_ns = elsewhere
        .create(&PostParams::default(), &service("web", json!({})))
        .await;
    assert_eq!(api_code(missing_ns), (404, "NotFound".into()));

    let namespaces: Api<Namespace> = Api::all(cluster.client().await);
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "apps"}})).unwrap(),
        )
        .await
        .unwrap();
    let apps = namespaces.get("apps").await.unwrap();
    assert_eq!(apps.status.unwrap().phase.as_deref(), Some("Active"));
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client().await, "apps");
    maps.create(&PostParams::default(), &config_map("inside"))
        .await
        .unwrap();
    namespaces
        .delete("apps", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_code(maps.get("inside").await), (404, "NotFound".into()));
    let bad_name = services
        .create(&PostParams::default(), &service("Not_Valid", json!({})))
        .await;
    assert_eq!(api_code(bad_name), (422, "Invalid".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_select_by_labels_fields_and_pages() {
    let cluster = FakeCluster::start("select").await;
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front", "env": "prod"})),
        ("b", json!({"app": "web", "tier": "back", "canary": "true"})),
        ("c", json!({"app": "db", "tier": "back"})),
    ] {
        cluster.apply_json(serde_json::to_value(service(name, labels)).unwrap());
    }
    let services: Api<Service> = Api::namespaced(cluster.client().await, "default");
    let names = |list: kube::core::ObjectList<Service>| {
        list.iter().map(|s| s.name_any()).collect::<Vec<_>>()
    };
    let select = |sel: &str| ListParams::default().labels(sel);
    assert_eq!(
        names(services.list(&select("app=web")).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(services.list(&select("app!=web,tier")).await.unwrap()),
        ["c"]
    );
    assert_eq!(
        names(
            services
                .list(&select("tier in (front,back),!canary"))
                .await
                .unwrap()
        ),
        ["a", "c"]
    );
    assert_eq!(
        names(
            services
                .list(&select("env notin (prod),app"))
                .await
                .unwrap()
        ),
        ["b", "c"]
    );
    let by_name = ListParams::default().fields("metadata.name=b");
    assert_eq!(names(services.list(&by_name).await.unwrap()), ["b"]);
    let bad = services
        .list(&ListParams::default().fields("spec.type=LoadBalancer"))
        .await;
    assert_eq!(api_code(bad), (400, "BadRequest".into()));

    let list = services.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        list.metadata.resource_version.unwrap(),
        cluster.resource_version().to_string()
    );

    let page1 = services
        .list(&ListParams::default().limit(2))
        .await
        .unwrap();
    assert_eq!(names(page1.clone()), ["a", "b"]);
    let token = page1.metadata.continue_.clone().unwrap();
    let page2 = services
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(page2.clone()), ["c", "kubernetes"]);
    assert!(page2.metadata.continue_.is_none_or(|c| c.is_empty()));
    cluster.apply_json(serde_json::to_value(service("d", json!({}))).unwrap());
    cluster.compact();
    let expired = services
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await;
    assert_eq!(api_code(expired), (410, "Expired".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_changes_and_relists_after_compaction() {
    let cluster = FakeCluster::start("watch").await;
    let client = cluster.client().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let mut events = spawn_watcher(services.clone(), watcher::Config::default());
    expect_event(&mut events, "InitDone", Duration::from_secs(5)).await;

    services
        .create(&PostParams::default(), &service("web", json!({})))
        .await
        .unwrap();
    expect_event(&mut events, "Apply(web)", Duration::from_secs(5)).await;
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    expect_event(&mut events, "Apply(web)", Duration::from_secs(5)).await;
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    expect_event(&mut events, "Delete(web)", Duration::from_secs(5)).await;

    // A closed watch resumes from its last version, without a relist.
    let lists_before = cluster.requests("list", "services");
    let watches_before = cluster.requests("watch", "services");
    cluster.close_watches();
    cluster.apply_json(serde_json::to_value(service("resumed", json!({}))).unwrap());
    let seen = expect_event(&mut events, "Apply(resumed)", Duration::from_secs(5)).await;
    assert!(!seen.contains(&"Init".to_string()), "{seen:?}");
    assert_eq!(cluster.requests("list", "services"), lists_before);
    assert!(cluster.requests("watch", "services") > watches_before);

    // Compaction: the open watch gets 410 Expired, the watcher relists and carries on.
    let lists_before = cluster.requests("list", "services");
    cluster.compact();
    let seen = expect_event(&mut events, "InitDone", Duration::from_secs(10)).await;
    assert!(
        seen.contains(&"Init".to_string()),
        "relist after 410: {seen:?}"
    );
    assert!(cluster.requests("list", "services") > lists_before);
    cluster.apply_json(serde_json::to_value(service("after", json!({}))).unwrap());
    expect_event(&mut events, "Apply(after)", Duration::from_secs(5)).await;

    // A raw watch from a compacted version gets an ERROR event with a 410 Status.
    let old = "1";
    let mut raw = services
        .watch(&WatchParams::default(), old)
        .await
        .unwrap()
        .boxed();
    match raw.next().await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // Bookmarks arrive on an idle watch that asks for them.
    let rv = cluster.resource_version().to_string();
    let mut raw = services
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let event = tokio::time::timeout(Duration::from_secs(3), raw.next())
        .await
        .expect("a bookmark within 3 s");
    assert!(
        matches!(event, Some(Ok(WatchEvent::Bookmark(_)))),
        "{event:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_with_a_label_selector_sees_objects_leave_and_enter() {
    let cluster = FakeCluster::start("watch-labels").await;
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client().await, "default");
    let slice = |labels: serde_json::Value| {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "default", "labels": labels},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
        })
    };
    let config = watcher::Config::default().labels("kubernetes.io/service-name=web");
    let mut events = spawn_watcher(slices.clone(), config);
    expect_event(&mut events, "InitDone", Duration::from_secs(5)).await;
    cluster.apply_json(slice(json!({"kubernetes.io/service-name": "web"})));
    expect_event(&mut events, "Apply(web-abc)", Duration::from_secs(5)).await;
    cluster.apply_json(slice(json!({"kubernetes.io/service-name": "other"})));
    expect_event(&mut events, "Delete(web-abc)", Duration::from_secs(5)).await;
    cluster.apply_json(slice(json!({"kubernetes.io/service-name": "web"})));
    expect_event(&mut events, "Apply(web-abc)", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watchers_get_initial_events_and_their_end_bookmark() {
    let cluster = FakeCluster::start("streaming").await;
    cluster.apply_json(serde_json::to_value(service("web", json!({}))).unwrap());
    let services: Api<Service> = Api::namespaced(cluster.client().await, "default");
    let config = watcher::Config::default().streaming_lists();
    let mut events = spawn_watcher(services, config);
    let seen = expect_event(&mut events, "InitDone", Duration::from_secs(5)).await;
    assert_eq!(seen, ["Init", "InitApply(kubernetes)", "InitApply(web)"]);
    assert_eq!(cluster.requests("list", "services"), 0);
    cluster.apply_json(serde_json::to_value(service("later", json!({}))).unwrap());
    expect_event(&mut events, "Apply(later)", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_recovers_after_stop_and_restart() {
    let cluster = FakeCluster::start("restart").await;
    cluster.apply_json(serde_json::to_value(service("before", json!({}))).unwrap());
    let services: Api<Service> = Api::namespaced(cluster.client().await, "default");
    let mut events = spawn_watcher(services.clone(), watcher::Config::default());
    expect_event(&mut events, "InitDone", Duration::from_secs(5)).await;
    // Wait for the watch itself, so the stop cuts an open stream.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.open_watches() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    cluster.stop().await;
    assert!(!cluster.is_running());
    let refused = tokio::time::timeout(Duration::from_secs(5), services.get("before"))
        .await
        .unwrap();
    assert!(
        matches!(
            refused,
            Err(kube::Error::HyperError(_) | kube::Error::Service(_))
        ),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.apply_json(serde_json::to_value(service("while-down", json!({}))).unwrap());

    let restarted = Instant::now();
    cluster.restart().await;
    let seen = expect_event(&mut events, "InitDone", Duration::from_secs(20)).await;
    let recovered = restarted.elapsed();
    assert!(
        seen.contains(&"InitApply(while-down)".to_string()),
        "{seen:?}"
    );
    eprintln!(
        "watcher re-synced {recovered:?} after restart (kube-rs default backoff; errors seen: {seen:?})"
    );
    services.get("while-down").await.unwrap();

    cluster.restart_empty().await;
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(kube::Error::Api(s)) = services.get("before").await
                && s.code == 404
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "restart_empty loses the data");
    assert!(
        services.get("kubernetes").await.is_ok(),
        "a new cluster has its defaults"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_json_and_apply_patches() {
    let cluster = FakeCluster::start("patch").await;
    let client = cluster.client().await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    maps.create(&PostParams::default(), &config_map("cfg"))
        .await
        .unwrap();

    let merged = maps
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": null, "a": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap().into_iter().collect::<Vec<_>>(),
        [("a".into(), "1".into())]
    );

    let strategic = maps
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"b": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.data.unwrap().len(), 2);

    // JSON patch (RFC 6902), sent raw: fedns's kube features do not include `jsonpatch`.
    let request = axum::http::Request::patch("/api/v1/namespaces/default/configmaps/cfg")
        .header("content-type", "application/json-patch+json")
        .body(
            serde_json::to_vec(&json!([
                {"op": "test", "path": "/data/a", "value": "1"},
                {"op": "replace", "path": "/data/a", "value": "one"},
                {"op": "remove", "path": "/data/b"},
            ]))
            .unwrap(),
        )
        .unwrap();
    let patched: ConfigMap = client.request(request).await.unwrap();
    assert_eq!(
        patched.data.unwrap().get("a").map(String::as_str),
        Some("one")
    );
    let failing = axum::http::Request::patch("/api/v1/namespaces/default/configmaps/cfg")
        .header("content-type", "application/json-patch+json")
        .body(br#"[{"op": "test", "path": "/data/a", "value": "1"}]"#.to_vec())
        .unwrap();
    assert_eq!(
        api_code(client.request::<ConfigMap>(failing).await),
        (422, "Invalid".into())
    );

    // Server-side apply: creates when missing, merges when present, needs a field manager.
    let apply = PatchParams::apply("fedns").force();
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"x": "1"}});
    let created = maps
        .patch("applied", &apply, &Patch::Apply(&body))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"y": "2"}});
    let updated = maps
        .patch("applied", &apply, &Patch::Apply(&body))
        .await
        .unwrap();
    assert_eq!(updated.data.unwrap().len(), 2);
    let no_manager = maps
        .patch("applied", &PatchParams::default(), &Patch::Apply(&body))
        .await;
    assert_eq!(api_code(no_manager), (400, "BadRequest".into()));

    // A resourceVersion in a patch is a precondition.
    let stale = maps
        .patch(
            "applied",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "data": {"z": "3"}})),
        )
        .await;
    assert_eq!(api_code(stale), (409, "Conflict".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_is_isolated_from_the_main_resource() {
    let cluster = FakeCluster::start("status").await;
    let services: Api<Service> = Api::namespaced(cluster.client().await, "default");
    let mut with_status = service("lb", json!({}));
    with_status.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})).unwrap(),
    );
    let created = services
        .create(&PostParams::default(), &with_status)
        .await
        .unwrap();
    assert!(
        created
            .status
            .is_none_or(|s| s.load_balancer.is_none_or(|lb| lb.ingress.is_none())),
        "create drops status"
    );

    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}, "spec": {"type": "ClusterIP"}});
    let patched = services
        .patch_status("lb", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        patched.spec.as_ref().unwrap().type_.as_deref(),
        Some("LoadBalancer"),
        "status writes keep spec"
    );
    let ip = |s: &Service| {
        s.status
            .as_ref()
            .unwrap()
            .load_balancer
            .as_ref()
            .unwrap()
            .ingress
            .as_ref()
            .unwrap()[0]
            .ip
            .clone()
    };
    assert_eq!(ip(&patched).as_deref(), Some("192.0.2.10"));
    assert_eq!(patched.metadata.generation, Some(1));

    let mut main = patched.clone();
    main.status = None;
    main.labels_mut().insert("changed".into(), "yes".into());
    let replaced = services
        .replace("lb", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(
        ip(&replaced).as_deref(),
        Some("192.0.2.10"),
        "main writes keep status"
    );

    let mut new_status = replaced.clone();
    new_status.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}))
            .unwrap(),
    );
    new_status
        .labels_mut()
        .insert("ignored".into(), "yes".into());
    let via_put = services
        .replace_status("lb", &PostParams::default(), &new_status)
        .await
        .unwrap();
    assert!(
        !via_put.labels().contains_key("ignored"),
        "status PUT ignores metadata"
    );
    assert_eq!(
        services.get_status("lb").await.unwrap().resource_version(),
        via_put.resource_version()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_a_deleted_object_until_they_are_removed() {
    let cluster = FakeCluster::start("finalizers").await;
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client().await, "default");
    let mut events = spawn_watcher(maps.clone(), watcher::Config::default());
    expect_event(&mut events, "InitDone", Duration::from_secs(5)).await;
    let mut held = config_map("held");
    held.metadata.finalizers = Some(vec!["fedns.io/cleanup".into()]);
    maps.create(&PostParams::default(), &held).await.unwrap();
    expect_event(&mut events, "Apply(held)", Duration::from_secs(5)).await;

    let deleted = maps.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = deleted
        .left()
        .expect("the object comes back while finalizers hold it");
    assert!(marked.metadata.deletion_timestamp.is_some());
    expect_event(&mut events, "Apply(held)", Duration::from_secs(5)).await;
    assert!(
        maps.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    let more = maps
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["fedns.io/cleanup", "other"]}})),
        )
        .await;
    assert_eq!(api_code(more), (422, "Invalid".into()));

    maps.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    expect_event(&mut events, "Delete(held)", Duration::from_secs(5)).await;
    assert_eq!(api_code(maps.get("held").await), (404, "NotFound".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_resource_versions_and_preconditions_conflict() {
    let cluster = FakeCluster::start("conflict").await;
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client().await, "default");
    let first = maps
        .create(&PostParams::default(), &config_map("cfg"))
        .await
        .unwrap();
    let mut newer = first.clone();
    newer.data = Some([("k".to_string(), "2".to_string())].into());
    maps.replace("cfg", &PostParams::default(), &newer)
        .await
        .unwrap();
    let mut stale = first.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    assert_eq!(
        api_code(maps.replace("cfg", &PostParams::default(), &stale).await),
        (409, "Conflict".into())
    );

    let wrong_rv = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: first.metadata.resource_version.clone(),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(
        api_code(maps.delete("cfg", &wrong_rv).await),
        (409, "Conflict".into())
    );
    let right_uid = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: None,
            uid: first.metadata.uid.clone(),
        }),
        ..DeleteParams::background()
    };
    maps.delete("cfg", &right_uid).await.unwrap();
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "multiclusterdns.kubefed.io",
    version = "v1alpha1",
    kind = "ServiceDNSRecord",
    namespaced,
    status = "ServiceDNSRecordStatus"
)]
#[serde(rename_all = "camelCase")]
struct ServiceDNSRecordSpec {
    domain_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    record_ttl: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
struct ServiceDNSRecordStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_crd_registers_its_resource() {
    let cluster = FakeCluster::start("crd").await;
    let client = cluster.client().await;
    let records: Api<ServiceDNSRecord> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        api_code(records.list(&ListParams::default()).await),
        (404, "NotFound".into())
    );

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &ServiceDNSRecord::crd())
        .await
        .unwrap();
    let established = await_condition(
        crds.clone(),
        "servicednsrecords.multiclusterdns.kubefed.io",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(5), established)
        .await
        .unwrap()
        .unwrap();

    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let group = discovery
        .get("multiclusterdns.kubefed.io")
        .expect("the CRD's group is discovered");
    let (resource, caps) = group.recommended_kind("ServiceDNSRecord").unwrap();
    assert_eq!(
        (resource.plural.as_str(), caps.scope),
        ("servicednsrecords", kube::discovery::Scope::Namespaced)
    );
    assert!(caps.subresources.iter().any(|(r, _)| r.plural == "status"));
    assert!(discovery.get("discovery.k8s.io").is_some());

    let mut events = spawn_watcher(records.clone(), watcher::Config::default());
    expect_event(&mut events, "InitDone", Duration::from_secs(5)).await;
    let record = ServiceDNSRecord::new(
        "web",
        ServiceDNSRecordSpec {
            domain_ref: "example".into(),
            record_ttl: Some(300),
        },
    );
    records
        .create(&PostParams::default(), &record)
        .await
        .unwrap();
    expect_event(&mut events, "Apply(web)", Duration::from_secs(5)).await;

    // Unknown fields are pruned by the CRD's schema, as a real server does.
    let pruned = records
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"bogus": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(pruned.metadata.generation, Some(1));
    let raw = cluster
        .get_json(
            "multiclusterdns.kubefed.io/v1alpha1",
            "ServiceDNSRecord",
            Some("default"),
            "web",
        )
        .unwrap();
    assert!(raw["spec"].get("bogus").is_none(), "{raw}");

    let status = json!({"status": {"domain": "example.com"}});
    let with_status = records
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        with_status.status.unwrap().domain.as_deref(),
        Some("example.com")
    );
    let main_write = records
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"recordTTL": 60}, "status": {"domain": "ignored"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main_write.status.unwrap().domain.as_deref(),
        Some("example.com")
    );

    crds.delete(
        "servicednsrecords.multiclusterdns.kubefed.io",
        &DeleteParams::default(),
    )
    .await
    .unwrap();
    expect_event(&mut events, "Delete(web)", Duration::from_secs(5)).await;
    assert_eq!(api_code(records.get("web").await), (404, "NotFound".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_token_is_required() {
    let cluster = FakeCluster::start("auth").await;
    let old_client = cluster.client().await;
    let maps: Api<ConfigMap> = Api::namespaced(old_client.clone(), "default");
    maps.list(&ListParams::default()).await.unwrap();

    let anonymous =
        kube::Client::try_from(kube::Config::new(cluster.url().parse().unwrap())).unwrap();
    let anonymous: Api<ConfigMap> = Api::namespaced(anonymous, "default");
    assert_eq!(
        api_code(anonymous.list(&ListParams::default()).await),
        (401, "Unauthorized".into())
    );

    cluster.rotate_token();
    assert_eq!(
        api_code(maps.list(&ListParams::default()).await),
        (401, "Unauthorized".into())
    );
    let fresh: Api<ConfigMap> = Api::namespaced(cluster.client().await, "default");
    fresh.list(&ListParams::default()).await.unwrap();
    // Health probes need no token (like a real server's public health endpoints).
    let body = old_client
        .request_text(
            axum::http::Request::get("/readyz")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(body, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_is_reached_through_its_ca_bundle_only() {
    let cluster = FakeCluster::start_tls("tls").await;
    assert!(cluster.url().starts_with("https://127.0.0.1:"));
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client().await, "default");
    maps.create(&PostParams::default(), &config_map("cfg"))
        .await
        .unwrap();
    let mut events = spawn_watcher(maps.clone(), watcher::Config::default());
    expect_event(&mut events, "InitApply(cfg)", Duration::from_secs(5)).await;

    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, ca_bundle: Option<String>| {
        let entry = harness::KubeconfigEntry {
            name: "tls".into(),
            server: cluster.url(),
            token: cluster.token(),
            ca_bundle,
        };
        let path = dir.path().join(file);
        std::fs::write(&path, harness::kubeconfig_yaml(&[entry], "tls")).unwrap();
        path
    };
    let untrusted = write("untrusted", None);
    let client = harness::client_for(&untrusted, None).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    let refused = maps.get("cfg").await;
    assert!(
        !matches!(refused, Ok(_) | Err(kube::Error::Api(_))),
        "{refused:?}"
    );

    let other_ca = FakeCluster::start_tls("other").await.ca_bundle();
    let wrong_ca = write("wrong-ca", other_ca);
    let client = harness::client_for(&wrong_ca, None).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    assert!(maps.get("cfg").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_controls_inject_errors_delay_partition_and_count() {
    let cluster = FakeCluster::start("controls").await;
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client().await, "default");
    cluster.apply_json(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "default"}}));

    cluster.fail_next(1, 500, "/configmaps/cfg");
    assert_eq!(
        api_code(maps.get("cfg").await),
        (500, "InternalError".into())
    );
    maps.get("cfg").await.unwrap();
    // kube-rs 5 clients retry 429, 503 and 504 by themselves (honouring Retry-After), so
    // those codes only show up as extra requests; other codes reach the caller.
    cluster.fail_next(1, 429, "GET ");
    maps.list(&ListParams::default()).await.unwrap();
    assert_eq!(cluster.requests("list", "configmaps"), 2);
    cluster.fail_next(1, 409, "GET ");
    assert_eq!(api_code(maps.get("cfg").await), (409, "Conflict".into()));
    cluster.fail_next(1, 403, "watch=true");
    let forbidden = maps.watch(&WatchParams::default(), "0").await;
    assert_eq!(api_code(forbidden.map(|_| ())), (403, "Forbidden".into()));

    assert_eq!(cluster.requests("get", "configmaps"), 3);
    assert_eq!(cluster.requests("watch", "configmaps"), 1);
    assert_eq!(cluster.writes(), 0, "seeding is not an API write");
    maps.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "b"}})),
    )
    .await
    .unwrap();
    assert_eq!(cluster.writes(), 1);
    assert_eq!(cluster.requests("patch", "*"), 1);

    cluster.delay(Duration::from_millis(300));
    let started = Instant::now();
    maps.get("cfg").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    cluster.delay(Duration::ZERO);

    let mut events = spawn_watcher(maps.clone(), watcher::Config::default());
    expect_event(&mut events, "InitDone", Duration::from_secs(5)).await;
    cluster.partition(true);
    cluster.apply_json(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "during", "namespace": "default"}}));
    let held = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
    assert!(
        held.is_err(),
        "watches deliver nothing during a partition: {held:?}"
    );
    let hung = tokio::time::timeout(Duration::from_millis(300), maps.get("cfg")).await;
    assert!(hung.is_err(), "requests hang during a partition");
    let pending = tokio::spawn({
        let maps = maps.clone();
        async move { maps.get("cfg").await.map(|c| c.name_any()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.partition(false);
    expect_event(&mut events, "Apply(during)", Duration::from_secs(2)).await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), pending)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        "cfg"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_are_fake_without_kubeconfigs_and_share_one_combined_kubeconfig() {
    if Clusters::kubeconfigs_from_env().is_some() {
        eprintln!("skipping: this test checks the fake clusters");
        return;
    }
    let clusters = Clusters::start_named("host", &["east", "west"])
        .await
        .unwrap();
    assert!(!clusters.is_real());
    assert_eq!(
        clusters
            .all()
            .map(|c| c.name().to_string())
            .collect::<Vec<_>>(),
        ["host", "east", "west"]
    );
    let east = clusters.member("east").controls("check controls").unwrap();
    east.apply_json(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "only-east", "namespace": "default"}}));

    let combined = clusters.combined_kubeconfig();
    for cluster in clusters.all() {
        let client = harness::client_for(&combined, Some(cluster.name()))
            .await
            .unwrap();
        let maps: Api<ConfigMap> = Api::namespaced(client, "default");
        let found = maps.get_opt("only-east").await.unwrap().is_some();
        assert_eq!(found, cluster.name() == "east", "{}", cluster.name());
    }
    assert_eq!(clusters.host.as_fake().unwrap().writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_clusters_have_no_controls_and_skip_when_too_few() {
    // Fake clusters stand in for real ones: only their kubeconfig files are handed over.
    let host = FakeCluster::start("kind-host").await;
    let member = FakeCluster::start("kind-east").await;
    let paths = vec![host.kubeconfig_path(), member.kubeconfig_path()];
    assert!(Clusters::from_kubeconfigs(paths.clone(), 2).is_none());
    let clusters = Clusters::from_kubeconfigs(paths, 1).unwrap();
    assert!(clusters.is_real());
    assert_eq!(clusters.members[0].name(), "kind-east");
    assert!(clusters.members[0].controls("stop a member").is_none());
    let maps: Api<ConfigMap> = Api::namespaced(clusters.members[0].client().await, "default");
    maps.create(&PostParams::default(), &config_map("via-kubeconfig"))
        .await
        .unwrap();
    assert!(
        member
            .get_json("v1", "ConfigMap", Some("default"), "via-kubeconfig")
            .is_some()
    );
    let combined = clusters.combined_kubeconfig();
    let client = harness::client_for(&combined, Some("kind-host"))
        .await
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    assert!(maps.get_opt("via-kubeconfig").await.unwrap().is_none());
}
