//! The replica scheduler against fake API servers: 1 host + 3 members (`a`, `b`, `c`), the
//! scheduler started directly with a hand-built member directory. Expected splits are worked out
//! by hand in each test (not by calling the planner).

#[path = "harness/mod.rs"]
mod harness;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedns::propagation::members::{self, MemberHandle, MemberPublisher, Members};
use fedns::propagation::scheduler;
use fedns::shutdown::Shutdown;
use harness::FakeCluster;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

const FED_API: &str = "types.kubefed.io/v1beta1";
const RSP_API: &str = "scheduling.kubefed.io/v1alpha1";

struct Federation {
    host: FakeCluster,
    members: Vec<(FakeCluster, kube::Client)>,
    publisher: MemberPublisher,
    leader: watch::Sender<bool>,
    shutdown: Shutdown,
}

impl Federation {
    /// Host with the CRDs, members `a`, `b`, `c` all Ready, the scheduler running as leader.
    async fn start() -> Federation {
        let host = FakeCluster::start("host").await;
        let client = host.client().await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in fedns::cli::crds::all() {
            let name = crd.metadata.name.clone().unwrap();
            crds.patch(
                &name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap();
        }
        let mut members = Vec::new();
        for name in ["a", "b", "c"] {
            let member = FakeCluster::start(name).await;
            let client = member.client().await;
            members.push((member, client));
        }
        let (publisher, directory) = members::directory();
        let (leader, leader_rx) = watch::channel(true);
        let shutdown = Shutdown::new();
        let federation = Federation {
            host,
            members,
            publisher,
            leader,
            shutdown: shutdown.clone(),
        };
        federation.publish(&[]);
        tokio::spawn(scheduler::run(client, None, directory, leader_rx, shutdown));
        federation
    }

    /// Publishes the member set with `unready` members not Ready.
    fn publish(&self, unready: &[&str]) {
        let set: Members = self
            .members
            .iter()
            .map(|(cluster, client)| {
                let name = cluster.name().to_string();
                let mut handle = MemberHandle::new(
                    &name,
                    client.clone(),
                    BTreeMap::from([("region".to_string(), format!("r-{name}"))]),
                );
                handle.ready = !unready.contains(&name.as_str());
                handle.probed = true;
                (name, handle)
            })
            .collect();
        self.publisher.send_replace(Arc::new(set));
    }

    fn deployment(&self) -> Value {
        self.host
            .get_json(FED_API, "FederatedDeployment", Some("test"), "web")
            .expect("the FederatedDeployment exists")
    }

    fn rsp(&self, name: &str) -> Option<Value> {
        self.host
            .get_json(RSP_API, "ReplicaSchedulingPreference", Some("test"), name)
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn federated_deployment() -> Value {
    json!({
        "apiVersion": FED_API, "kind": "FederatedDeployment",
        "metadata": {"name": "web", "namespace": "test"},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
            },
            "placement": {"clusterSelector": {}},
            "overrides": [{"clusterName": "a", "clusterOverrides": [
                {"path": "/metadata/labels/site", "value": "a"}
            ]}]
        }
    })
}

fn rsp(name: &str, total: i64) -> Value {
    json!({
        "apiVersion": RSP_API, "kind": "ReplicaSchedulingPreference",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {
            "targetKind": "FederatedDeployment",
            "totalReplicas": total,
            "clusters": {"a": {"weight": 1}, "b": {"weight": 2}, "c": {"weight": 2}}
        }
    })
}

/// Placement names and `/spec/replicas` override per cluster of a federated object.
fn split(object: &Value) -> (Vec<String>, BTreeMap<String, i64>) {
    let placed = object["spec"]["placement"]["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let mut replicas = BTreeMap::new();
    for entry in object["spec"]["overrides"].as_array().into_iter().flatten() {
        for o in entry["clusterOverrides"].as_array().into_iter().flatten() {
            if o["path"] == "/spec/replicas" {
                replicas.insert(
                    entry["clusterName"].as_str().unwrap().to_string(),
                    o["value"].as_i64().unwrap(),
                );
            }
        }
    }
    (placed, replicas)
}

fn expected(placed: &[&str], replicas: &[(&str, i64)]) -> (Vec<String>, BTreeMap<String, i64>) {
    (
        placed.iter().map(|s| s.to_string()).collect(),
        replicas.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    )
}

async fn eventually(what: &str, mut ok: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        let result = ok();
        match result {
            Ok(()) => return,
            Err(last) if start.elapsed() > Duration::from_secs(15) => {
                panic!("{what}: still {last} after 15 s")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn until_split(f: &Federation, what: &str, want: (Vec<String>, BTreeMap<String, i64>)) {
    eventually(what, || {
        let got = split(&f.deployment());
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}, want {want:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_weights_readiness_and_only_the_leader_writes() {
    let f = Federation::start().await;
    f.host.apply_json(federated_deployment());
    f.host.apply_json(rsp("web", 10));

    // Weights b 2, c 2, a 1 (sum 5) over 10: ceil(10*2/5) = 4 for b and c, 2 left for a.
    until_split(
        &f,
        "initial split",
        expected(&["a", "b", "c"], &[("a", 2), ("b", 4), ("c", 4)]),
    )
    .await;
    let object = f.deployment();
    assert_eq!(
        object["spec"]["overrides"][0]["clusterOverrides"][0],
        json!({"path": "/metadata/labels/site", "value": "a"}),
        "other overrides are kept, in front of the replicas override"
    );
    assert_eq!(object["spec"]["placement"]["clusterSelector"], json!({}));
    eventually("RSP status", || {
        let status = &f.rsp("web").unwrap()["status"];
        let ok = status["plan"] == json!({"a": 2, "b": 4, "c": 4})
            && status["conditions"][0]["type"] == "Ready"
            && status["conditions"][0]["status"] == "True";
        ok.then_some(()).ok_or_else(|| status.to_string())
    })
    .await;

    // c not Ready: b 2 and a 1 (sum 3) share 10: b ceil(20/3) = 7, a the 3 left. c stays placed
    // with its last 4, so it keeps running them until it is Ready again.
    f.publish(&["c"]);
    until_split(
        &f,
        "c not ready",
        expected(&["a", "b", "c"], &[("a", 3), ("b", 7), ("c", 4)]),
    )
    .await;
    f.publish(&[]);
    until_split(
        &f,
        "c ready again",
        expected(&["a", "b", "c"], &[("a", 2), ("b", 4), ("c", 4)]),
    )
    .await;

    // Not the leader: an RSP change is planned but nothing is written.
    f.leader.send_replace(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writes = f.host.writes();
    f.host.apply_json(rsp("web", 20));
    f.publish(&["a"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(f.host.writes(), writes, "a follower wrote to the host");
    assert_eq!(
        split(&f.deployment()),
        expected(&["a", "b", "c"], &[("a", 2), ("b", 4), ("c", 4)])
    );
    assert!(
        f.host.requests("get", "federateddeployments") > 0,
        "the follower did read"
    );

    // Leading again, with a not Ready: b and c (weight 2 each) split 20 evenly.
    f.leader.send_replace(true);
    until_split(
        &f,
        "leader again",
        expected(&["a", "b", "c"], &[("a", 2), ("b", 10), ("c", 10)]),
    )
    .await;
    for (member, _) in &f.members {
        assert_eq!(member.writes(), 0, "the scheduler never writes to members");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_replicas_are_kept_and_a_missing_target_is_reported() {
    let f = Federation::start().await;
    // b already runs 8 ready replicas: without rebalance they stay, and the 2 left go to the
    // others in weight order (c: ceil(2*2/5) = 1 → 1, a: ceil(2/5) = 1 → 1).
    let (b, _) = &f.members[1];
    b.apply_json(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "test"},
        "spec": {"replicas": 8, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}},
        "status": {"replicas": 8, "readyReplicas": 8}
    }));
    f.host.apply_json(federated_deployment());
    f.host.apply_json(rsp("web", 10));
    until_split(
        &f,
        "kept replicas",
        expected(&["a", "b", "c"], &[("a", 1), ("b", 8), ("c", 1)]),
    )
    .await;

    f.host.apply_json(rsp("orphan", 3));
    eventually("TargetNotFound", || {
        let status = f.rsp("orphan").unwrap()["status"].clone();
        let c = &status["conditions"][0];
        (c["status"] == "False" && c["reason"] == "TargetNotFound")
            .then_some(())
            .ok_or_else(|| status.to_string())
    })
    .await;
}
