//! The propagation controller end to end: 1 host + 3 members (`c1`, `c2` labeled `region: us`,
//! `c3` labeled `region: eu`) on the harness, or the real clusters of `FEDNS_E2E_KUBECONFIGS`
//! (host first; failure injection skipped there). fedns runs in-process on 127.0.0.1:0.

mod common;
mod harness;

use std::time::Duration;

use common::{Server, apply, ask, eventually, install_crds, namespace, summary};
use fedns::propagation::types::{MANAGED_LABEL, default_type, type_config};
use harness::{Clusters, RequestClock};
use hickory_proto::rr::RecordType;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

const NS: &str = "kube-federation-system";
const LIMIT: Duration = Duration::from_secs(15);

/// A federation with the deployments, configmaps, services and namespaces types enabled, the
/// `test` namespace federated to every member, and fedns running against it.
struct Federation {
    clusters: Clusters,
    host: kube::Client,
    members: Vec<kube::Client>,
    server: Server,
    _config: tempfile::NamedTempFile,
}

const MEMBERS: [(&str, &str); 3] = [("c1", "us"), ("c2", "us"), ("c3", "eu")];

impl Federation {
    async fn start() -> Option<Federation> {
        Self::start_with(|_| {}).await
    }

    /// Like [`start`](Self::start), with `prepare` run on the clusters before fedns starts.
    async fn start_with(prepare: impl FnOnce(&Clusters)) -> Option<Federation> {
        let names: Vec<&str> = MEMBERS.iter().map(|(n, _)| *n).collect();
        let clusters = Clusters::start_named("host", &names).await?;
        prepare(&clusters);
        let host = clusters.host.client().await;
        install_crds(&host).await;
        for ns in [NS, "test"] {
            namespace(&host, ns).await;
        }
        for t in ["deployments", "configmaps", "services", "namespaces"] {
            let ftc = type_config(&default_type(t).unwrap(), NS);
            let mut v = serde_json::to_value(&ftc).unwrap();
            v["apiVersion"] = json!("core.kubefed.io/v1beta1");
            v["kind"] = json!("FederatedTypeConfig");
            apply(&host, v).await;
        }
        apply(
            &host,
            json!({
                "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedNamespace",
                "metadata": {"name": "test", "namespace": "test"},
                "spec": {"placement": {"clusterSelector": {}}},
            }),
        )
        .await;
        let mut members = Vec::new();
        let mut static_members = Vec::new();
        for (i, (name, region)) in MEMBERS.iter().enumerate() {
            let cluster = &clusters.members[i];
            members.push(cluster.client().await);
            match cluster.as_fake() {
                Some(fake) => {
                    apply(
                        &host,
                        json!({
                            "apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": format!("{name}-token"), "namespace": NS},
                            "stringData": {"token": fake.token()},
                        }),
                    )
                    .await;
                    apply(
                        &host,
                        json!({
                            "apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
                            "metadata": {"name": name, "namespace": NS, "labels": {"region": region}},
                            "spec": {"apiEndpoint": fake.url(), "secretRef": {"name": format!("{name}-token")}},
                        }),
                    )
                    .await;
                }
                None => static_members.push(format!(
                    "- {{name: {name}, context: {ctx}, kubeconfig: {path}, labels: {{region: {region}}}}}",
                    ctx = cluster.context(),
                    path = cluster.kubeconfig_path().display(),
                )),
            }
        }
        let config = tempfile::NamedTempFile::new().unwrap();
        if !static_members.is_empty() {
            std::fs::write(
                config.path(),
                format!("members:\n{}\n", static_members.join("\n")),
            )
            .unwrap();
        }
        let kubeconfig = clusters.host.kubeconfig_path().to_owned();
        let context = clusters.host.context().to_owned();
        let config_path = config.path().to_owned();
        let server = Server::start_configured(
            |_, _| {},
            |args| {
                args.source = None;
                args.config = Some(config_path);
                args.kubeconfig = Some(kubeconfig);
                args.context = Some(context);
                args.probe_period = Some(Duration::from_millis(200));
                args.probe_timeout = Some(Duration::from_millis(300));
                args.probe_failure_threshold = Some(2);
                args.sync_timeout = Some(Duration::from_secs(10));
                args.leader_elect = Some(false);
            },
        )
        .await;
        let fed = Federation {
            clusters,
            host,
            members,
            server,
            _config: config,
        };
        for (name, _) in MEMBERS {
            fed.wait_metric(&format!("fedns_member_ready{{cluster=\"{name}\"}} 1"))
                .await;
        }
        Some(fed)
    }

    async fn wait_metric(&self, line: &str) {
        let found = eventually(LIMIT, async || {
            self.server.admin_get("/metrics").await.1.contains(line)
        })
        .await;
        assert!(found.is_some(), "metric never showed {line:?}");
    }

    fn member(&self, name: &str) -> &kube::Client {
        let i = MEMBERS.iter().position(|(n, _)| *n == name).unwrap();
        &self.members[i]
    }
}

fn resource(api_version: &str, kind: &str, plural: &str) -> ApiResource {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn deployments() -> ApiResource {
    resource("apps/v1", "Deployment", "deployments")
}

fn configmaps() -> ApiResource {
    resource("v1", "ConfigMap", "configmaps")
}

fn federated(kind: &str) -> ApiResource {
    resource(
        "types.kubefed.io/v1beta1",
        &format!("Federated{kind}"),
        &format!("federated{}s", kind.to_lowercase()),
    )
}

async fn get(client: &kube::Client, ar: &ApiResource, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "test", ar);
    api.get_opt(name)
        .await
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

/// Polls `client` until the object satisfies `ok` (`None`: absent); returns it.
async fn until(
    client: &kube::Client,
    ar: &ApiResource,
    name: &str,
    what: &str,
    ok: impl Fn(Option<&Value>) -> bool,
) -> Option<Value> {
    let mut last = None;
    let found = eventually(LIMIT, async || {
        last = get(client, ar, name).await;
        ok(last.as_ref())
    })
    .await;
    assert!(found.is_some(), "{what}: last seen {last:#?}");
    last
}

fn managed(o: Option<&Value>) -> bool {
    o.is_some_and(|o| o["metadata"]["labels"][MANAGED_LABEL] == "true")
}

async fn patch(client: &kube::Client, ar: &ApiResource, name: &str, body: Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "test", ar);
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .unwrap();
}

async fn delete(client: &kube::Client, ar: &ApiResource, name: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "test", ar);
    api.delete(name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_deployment_follows_placement_overrides_and_reverts_member_edits() {
    let Some(fed) = Federation::start().await else {
        return;
    };
    apply(
        &fed.host,
        json!({
            "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedDeployment",
            "metadata": {"name": "web", "namespace": "test"},
            "spec": {
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                             "template": {"metadata": {"labels": {"app": "web"}},
                                          "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}
                },
                "placement": {"clusterSelector": {"matchLabels": {"region": "us"}}},
                "overrides": [{"clusterName": "c2", "clusterOverrides": [
                    {"path": "/spec/replicas", "value": 5},
                    {"op": "add", "path": "/metadata/annotations", "value": {"team": "blue"}},
                    {"path": "/spec/template/spec/containers/0/image", "value": "nginx:2"}
                ]}]
            }
        }),
    )
    .await;

    // Lands in the selected members with the right fields; not in c3.
    let c1 = until(
        fed.member("c1"),
        &deployments(),
        "web",
        "web in c1",
        managed,
    )
    .await
    .unwrap();
    assert_eq!(c1["spec"]["replicas"], 2);
    assert_eq!(
        c1["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1"
    );
    let c2 = until(
        fed.member("c2"),
        &deployments(),
        "web",
        "web in c2",
        managed,
    )
    .await
    .unwrap();
    assert_eq!(c2["spec"]["replicas"], 5);
    assert_eq!(c2["metadata"]["annotations"]["team"], "blue");
    assert_eq!(
        c2["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    assert!(get(fed.member("c3"), &deployments(), "web").await.is_none());
    let status = until(
        &fed.host,
        &federated("Deployment"),
        "web",
        "Propagation True",
        |o| o.is_some_and(|o| o["status"]["conditions"][0]["status"] == "True"),
    )
    .await
    .unwrap();
    let placed: Vec<&str> = status["status"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(placed, ["c1", "c2"]);
    assert_eq!(
        status["metadata"]["finalizers"],
        json!(["kubefed.io/sync-controller"])
    );

    // A member-side spec edit is reverted; a member-side annotation is kept.
    patch(
        fed.member("c1"),
        &deployments(),
        "web",
        json!({"spec": {"replicas": 7}, "metadata": {"annotations": {"note": "kept"}}}),
    )
    .await;
    until(
        fed.member("c1"),
        &deployments(),
        "web",
        "c1 edit reverted, annotation kept",
        |o| {
            o.is_some_and(|o| {
                o["spec"]["replicas"] == 2 && o["metadata"]["annotations"]["note"] == "kept"
            })
        },
    )
    .await;

    // Changing the selector moves the object.
    patch(
        &fed.host,
        &federated("Deployment"),
        "web",
        json!({"spec": {"placement": {"clusterSelector": {"matchLabels": {"region": "eu"}}}}}),
    )
    .await;
    until(
        fed.member("c3"),
        &deployments(),
        "web",
        "web moved to c3",
        managed,
    )
    .await;
    for c in ["c1", "c2"] {
        until(
            fed.member(c),
            &deployments(),
            "web",
            "web gone from us",
            |o| o.is_none(),
        )
        .await;
    }

    // Orphaning deletion: the member object stays, unlabeled; the federated object goes.
    patch(
        &fed.host,
        &federated("Deployment"),
        "web",
        json!({"metadata": {"annotations": {"kubefed.io/orphan": "true"}}}),
    )
    .await;
    delete(&fed.host, &federated("Deployment"), "web").await;
    until(
        &fed.host,
        &federated("Deployment"),
        "web",
        "federated object gone",
        |o| o.is_none(),
    )
    .await;
    let kept = until(
        fed.member("c3"),
        &deployments(),
        "web",
        "orphan unlabeled",
        |o| o.is_some_and(|o| o["metadata"]["labels"].get(MANAGED_LABEL).is_none()),
    )
    .await
    .unwrap();
    assert_eq!(kept["spec"]["replicas"], 2);
    assert_eq!(kept["metadata"]["labels"]["app"], "web");
    fed.wait_metric("fedns_propagation_writes_total{cluster=\"c3\",verb=\"unlabel\"} 1")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_respects_the_managed_label_and_deletion_is_not_blocked_by_a_member_never_placed()
{
    let Some(fed) = Federation::start().await else {
        return;
    };
    let c1 = fed.member("c1").clone();
    namespace(&c1, "test").await;
    // Existing objects: one to adopt, one its owner refuses to hand over.
    apply(
        &c1,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "adopt-me", "namespace": "test"}, "data": {"k": "old"}}),
    )
    .await;
    apply(
        &c1,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "hands-off", "namespace": "test", "labels": {MANAGED_LABEL: "false"}},
               "data": {"k": "mine"}}),
    )
    .await;
    for name in ["cfg", "adopt-me", "hands-off"] {
        apply(
            &fed.host,
            json!({
                "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedConfigMap",
                "metadata": {"name": name, "namespace": "test"},
                "spec": {"template": {"data": {"k": "federated"}},
                         "placement": {"clusters": [{"name": "c1"}]}}
            }),
        )
        .await;
    }
    until(&c1, &configmaps(), "cfg", "cfg created", managed).await;
    until(&c1, &configmaps(), "adopt-me", "adopt-me adopted", |o| {
        managed(o) && o.unwrap()["data"]["k"] == "federated"
    })
    .await;
    until(
        &fed.host,
        &federated("ConfigMap"),
        "hands-off",
        "hands-off refused",
        |o| o.is_some_and(|o| o["status"]["clusters"][0]["status"] == "ManagedLabelFalse"),
    )
    .await;
    let untouched = get(&c1, &configmaps(), "hands-off").await.unwrap();
    assert_eq!(untouched["data"]["k"], "mine");

    // c2 goes down; cfg was never placed there, so deleting cfg is not blocked by it.
    if let Some(c2) = fed.clusters.members[1].controls("stop member c2") {
        c2.stop().await;
        fed.wait_metric("fedns_member_ready{cluster=\"c2\"} 0")
            .await;
    }
    delete(&fed.host, &federated("ConfigMap"), "cfg").await;
    until(&c1, &configmaps(), "cfg", "cfg deleted from c1", |o| {
        o.is_none()
    })
    .await;
    until(
        &fed.host,
        &federated("ConfigMap"),
        "cfg",
        "cfg finalized",
        |o| o.is_none(),
    )
    .await;
    // The refused object was never ours: deleting its federated object leaves it alone.
    delete(&fed.host, &federated("ConfigMap"), "hands-off").await;
    until(
        &fed.host,
        &federated("ConfigMap"),
        "hands-off",
        "hands-off finalized",
        |o| o.is_none(),
    )
    .await;
    assert_eq!(
        get(&c1, &configmaps(), "hands-off").await.unwrap()["data"]["k"],
        "mine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federated_service_answers_by_name_once_its_services_get_addresses() {
    let Some(fed) = Federation::start().await else {
        return;
    };
    apply(
        &fed.host,
        json!({
            "apiVersion": "multiclusterdns.kubefed.io/v1alpha1", "kind": "Domain",
            "metadata": {"name": "galactic", "namespace": NS}, "domain": "example.com",
        }),
    )
    .await;
    apply(
        &fed.host,
        json!({
            "apiVersion": "multiclusterdns.kubefed.io/v1alpha1", "kind": "ServiceDNSRecord",
            "metadata": {"name": "nginx", "namespace": "test"}, "spec": {"domainRef": "galactic"},
        }),
    )
    .await;
    apply(
        &fed.host,
        json!({
            "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedService",
            "metadata": {"name": "nginx", "namespace": "test"},
            "spec": {"template": {"spec": {"type": "LoadBalancer", "selector": {"app": "nginx"},
                                           "ports": [{"name": "http", "port": 80}]}},
                     "placement": {"clusterSelector": {}}}
        }),
    )
    .await;
    let services = resource("v1", "Service", "services");
    // The namespace arrives through the FederatedNamespace, the Service after it.
    for (i, (name, _)) in MEMBERS.iter().enumerate() {
        let member = fed.member(name);
        until(member, &services, "nginx", "service propagated", managed).await;
        // What the member's cloud load balancer and endpoints controllers would do.
        let api: Api<DynamicObject> = Api::namespaced_with(member.clone(), "test", &services);
        api.patch_status(
            "nginx",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": format!("10.0.0.{}", i + 1)}]}}})),
        )
        .await
        .unwrap();
        apply(
            member,
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "nginx-e2e", "namespace": "test",
                             "labels": {"kubernetes.io/service-name": "nginx"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["172.16.0.9"], "conditions": {"ready": true}}],
            }),
        )
        .await;
    }
    let mut client = fed.server.udp_client().await;
    let mut last = String::new();
    let answered = eventually(LIMIT, async || {
        last = summary(
            &ask(
                &mut client,
                "nginx.test.galactic.svc.example.com.",
                RecordType::A,
            )
            .await,
        );
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .all(|ip| last.contains(&format!("A {ip}")))
    })
    .await;
    assert!(answered.is_some(), "global name answered {last:?}");
    // `fedns explain` against the cluster itself (read-only, in its own process) sees the same.
    if !fed.clusters.is_real() {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedns"))
            .args([
                "explain",
                "nginx.test.galactic.svc.example.com",
                "--kubeconfig",
            ])
            .arg(fed.clusters.host.kubeconfig_path())
            .env_remove("FEDNS_ADMIN")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            text.contains("owner:  ServiceDNSRecord test/nginx"),
            "{text}"
        );
        for (name, _) in MEMBERS {
            assert!(
                text.contains(&format!("+ {name}")),
                "{name} healthy in {text}"
            );
        }
    }
    // The members' load balancers are also visible in one place: the federated object.
    until(
        &fed.host,
        &federated("Service"),
        "nginx",
        "aggregated load balancers",
        |o| {
            o.is_some_and(|o| {
                o["status"]["aggregatedStatus"]["loadBalancer"]["ingress"]
                    .as_array()
                    .is_some_and(|a| a.len() == 3)
            })
        },
    )
    .await;
}

fn services() -> ApiResource {
    resource("v1", "Service", "services")
}

/// Deletes in each member so far (fake members only; real clusters count nothing).
fn member_deletes(fed: &Federation) -> u64 {
    fed.clusters
        .members
        .iter()
        .filter_map(|m| m.as_fake())
        .map(|m| m.object_writes().1)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_template_keys_labels_and_selector_keys_reach_members_and_member_annotations_stay()
{
    let Some(fed) = Federation::start().await else {
        return;
    };
    let placement = json!({"clusterSelector": {"matchLabels": {"region": "eu"}}});
    apply(
        &fed.host,
        json!({
            "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedConfigMap",
            "metadata": {"name": "keys", "namespace": "test"},
            "spec": {"template": {"metadata": {"labels": {"app": "keys", "extra": "drop-me"}},
                                  "data": {"a": "1", "b": "drop-me"}},
                     "placement": placement}
        }),
    )
    .await;
    apply(
        &fed.host,
        json!({
            "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedService",
            "metadata": {"name": "keys", "namespace": "test"},
            "spec": {"template": {"spec": {"selector": {"app": "keys", "tier": "drop-me"},
                                           "ports": [{"port": 80}]}},
                     "placement": placement}
        }),
    )
    .await;
    until(fed.member("c3"), &configmaps(), "keys", "keys in c3", |o| {
        managed(o) && o.is_some_and(|o| o["data"]["b"] == "drop-me")
    })
    .await;
    until(
        fed.member("c3"),
        &services(),
        "keys",
        "service in c3",
        |o| o.is_some_and(|o| o["spec"]["selector"]["tier"] == "drop-me"),
    )
    .await;
    // Someone in the member annotates the object: fedns keeps that.
    patch(
        fed.member("c3"),
        &configmaps(),
        "keys",
        json!({"metadata": {"annotations": {"member.example/note": "kept"}}}),
    )
    .await;

    patch(
        &fed.host,
        &federated("ConfigMap"),
        "keys",
        json!({"spec": {"template": {"metadata": {"labels": {"extra": null}}, "data": {"b": null}}}}),
    )
    .await;
    patch(
        &fed.host,
        &federated("Service"),
        "keys",
        json!({"spec": {"template": {"spec": {"selector": {"tier": null}}}}}),
    )
    .await;
    until(
        fed.member("c3"),
        &configmaps(),
        "keys",
        "the removed key and label gone from c3, the member's annotation kept",
        |o| {
            o.is_some_and(|o| {
                o["data"] == json!({"a": "1"})
                    && o["metadata"]["labels"].get("extra").is_none()
                    && o["metadata"]["labels"]["app"] == "keys"
                    && o["metadata"]["annotations"]["member.example/note"] == "kept"
            })
        },
    )
    .await;
    until(
        fed.member("c3"),
        &services(),
        "keys",
        "the removed selector key gone from c3",
        |o| o.is_some_and(|o| o["spec"]["selector"] == json!({"app": "keys"})),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_placement_selector_deletes_nothing_and_says_why() {
    let Some(fed) = Federation::start().await else {
        return;
    };
    apply(
        &fed.host,
        json!({
            "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedConfigMap",
            "metadata": {"name": "sel", "namespace": "test"},
            "spec": {"template": {"data": {"a": "1"}},
                     "placement": {"clusterSelector": {}}}
        }),
    )
    .await;
    for (name, _) in MEMBERS {
        until(
            fed.member(name),
            &configmaps(),
            "sel",
            "sel placed",
            managed,
        )
        .await;
    }
    let deletes_before = member_deletes(&fed);
    patch(
        &fed.host,
        &federated("ConfigMap"),
        "sel",
        json!({"spec": {"placement": {"clusterSelector": {"matchExpressions": [
            {"key": "region", "operator": "In", "values": []}
        ]}}}}),
    )
    .await;
    // The status is written after every cluster's step: once it says why, any delete would
    // have been sent.
    let status = until(
        &fed.host,
        &federated("ConfigMap"),
        "sel",
        "status says the placement could not be computed",
        |o| o.is_some_and(|o| o["status"]["conditions"][0]["reason"] == "ComputePlacementFailed"),
    )
    .await
    .unwrap();
    assert_eq!(status["status"]["conditions"][0]["status"], "False");
    assert_eq!(
        member_deletes(&fed),
        deletes_before,
        "no member copy deleted"
    );
    for (name, _) in MEMBERS {
        assert!(
            managed(get(fed.member(name), &configmaps(), "sel").await.as_ref()),
            "sel still in {name}"
        );
    }
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(fed.host.clone(), "test");
    let found = eventually(LIMIT, async || {
        events.list(&Default::default()).await.is_ok_and(|l| {
            l.items.iter().any(|e| {
                e.reason.as_deref() == Some("ComputePlacementFailed")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("sel")
            })
        })
    })
    .await;
    assert!(found.is_some(), "a ComputePlacementFailed Event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_member_with_a_rotated_token_gets_its_objects_back_without_401s() {
    let Some(fed) = Federation::start().await else {
        return;
    };
    let Some(c1) = fed.clusters.members[0].controls("rebuild member c1 with a new token") else {
        return;
    };
    apply(
        &fed.host,
        json!({
            "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedConfigMap",
            "metadata": {"name": "rot", "namespace": "test"},
            "spec": {"template": {"data": {"v": "1"}}, "placement": {"clusterSelector": {}}}
        }),
    )
    .await;
    until(fed.member("c1"), &configmaps(), "rot", "rot in c1", managed).await;

    // The member comes back empty, and is joined again with a new token (the old one 401s).
    c1.restart_empty().await;
    let token = c1.rotate_token();
    apply(
        &fed.host,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "c1-token", "namespace": NS},
            "stringData": {"token": token},
        }),
    )
    .await;
    let back = eventually(LIMIT, async || {
        c1.get_json("v1", "ConfigMap", Some("test"), "rot")
            .is_some_and(|o| o["metadata"]["labels"][MANAGED_LABEL] == "true")
    })
    .await;
    assert!(back.is_some(), "rot recreated in the rebuilt c1");

    // From now on the new token is used: a change reaches c1 with no 401 on the way.
    let refused = c1.unauthorized();
    patch(
        &fed.host,
        &federated("ConfigMap"),
        "rot",
        json!({"spec": {"template": {"data": {"v": "2"}}}}),
    )
    .await;
    let updated = eventually(LIMIT, async || {
        c1.get_json("v1", "ConfigMap", Some("test"), "rot")
            .is_some_and(|o| o["data"]["v"] == "2")
    })
    .await;
    assert!(updated.is_some(), "the update reached c1");
    until(
        &fed.host,
        &federated("ConfigMap"),
        "rot",
        "status: propagated everywhere again",
        |o| {
            o.is_some_and(|o| {
                o["status"]["conditions"][0]["status"] == "True"
                    && o["status"]["observedGeneration"] == o["metadata"]["generation"]
            })
        },
    )
    .await;
    assert_eq!(c1.unauthorized(), refused, "no request with the old token");
}

/// A member whose role lacks the target type (403 on every LIST of it): the other members are
/// served meanwhile, the status says which member could not be read, and the controller's watch
/// of that member backs off exponentially instead of retrying at its minimum delay (a relist
/// used to reset the backoff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_watch_that_keeps_failing_backs_off_exponentially() {
    let mut clock = None;
    let Some(fed) = Federation::start_with(|clusters| {
        if let Some(c1) = clusters.members[0].as_fake() {
            c1.forbid("configmaps");
            clock = Some(RequestClock::start(c1, "list", "configmaps"));
        }
    })
    .await
    else {
        return;
    };
    let Some(lists) = clock else {
        eprintln!("fault injection needs the harness: not run against real clusters");
        return;
    };
    apply(
        &fed.host,
        json!({
            "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedConfigMap",
            "metadata": {"name": "backoff", "namespace": "test"},
            "spec": {"template": {"data": {"a": "1"}},
                     "placement": {"clusterSelector": {}}}
        }),
    )
    .await;
    for name in ["c2", "c3"] {
        until(
            fed.member(name),
            &configmaps(),
            "backoff",
            "placed in the members that can be listed",
            managed,
        )
        .await;
    }
    // The member that cannot be listed is reported, with KubeFed's reason for it.
    until(
        &fed.host,
        &federated("ConfigMap"),
        "backoff",
        "status reports c1's cache",
        |o| {
            o.is_some_and(|o| {
                o["status"]["clusters"].as_array().is_some_and(|c| {
                    c.contains(&json!({"name": "c1", "status": "CachedRetrievalFailed"}))
                })
            })
        },
    )
    .await;
    // A doubling backoff from 200 ms (jittered ×0.8–1.2) lists at about 0, 0.2, 0.6, 1.4, 3.0
    // and 6.2 s, so the fifth gap is 10–24 times the first; a backoff reset by every relist
    // keeps the gaps equal (about 0.1 s).
    let six = eventually(Duration::from_secs(30), async || lists.times().len() >= 6).await;
    let times = lists.times();
    assert!(six.is_some(), "c1 ConfigMaps listed {} times", times.len());
    let gaps: Vec<Duration> = times.windows(2).take(5).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[4] >= gaps[0] * 6,
        "gaps between LISTs grow exponentially: {gaps:?}"
    );
}
