//! Restart safety of propagation with the real binary: `fedns serve` is stopped (SIGTERM, or
//! SIGKILL: no shutdown path at all) and started again against the same clusters, whose lists
//! are slow (the host's FederatedNamespaces, every member list), while 50 federated objects of
//! 6 types are propagated; then two replicas elect a leader and the leader is killed, so the
//! standby takes over. Nothing may be written to a member, nothing deleted, and every member
//! object keeps its uid.
//!
//! Runs on the harness (1 host + 3 members), or on the clusters of `FEDNS_E2E_KUBECONFIGS`
//! (host first; members then join through the config file, and write counting and slow lists
//! are skipped: only the uids are compared).

mod common;
mod harness;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{apply, eventually, http_get, install_crds, namespace};
use fedns::propagation::types::{MANAGED_LABEL, default_type, type_config};
use harness::Clusters;
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

const NS: &str = "kube-federation-system";
const MEMBERS: [(&str, &str); 3] = [("c1", "us"), ("c2", "us"), ("c3", "eu")];
/// The member types, as (api version, kind, plural), with how many federated objects of each.
const TYPES: [(&str, &str, &str, usize); 6] = [
    ("v1", "Namespace", "namespaces", 2),
    ("v1", "ConfigMap", "configmaps", 10),
    ("v1", "Secret", "secrets", 10),
    ("v1", "Service", "services", 10),
    ("v1", "ServiceAccount", "serviceaccounts", 9),
    ("batch/v1", "Job", "jobs", 9),
];
const OBJECTS: usize = 50;
const STEADY: Duration = Duration::from_secs(90);

/// A running `fedns serve`; its log is drained on a thread (kept for failure messages).
struct Fedns {
    child: Child,
    admin: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Fedns {
    /// Started alone (`--leader-elect=false`).
    fn start(kubeconfig: &std::path::Path, context: &str, config: &std::path::Path) -> Fedns {
        Self::start_with(kubeconfig, context, config, &["--leader-elect=false"])
    }

    /// Started as one of several replicas electing a leader with a short Lease.
    fn start_elected(
        kubeconfig: &std::path::Path,
        context: &str,
        config: &std::path::Path,
    ) -> Fedns {
        Self::start_with(
            kubeconfig,
            context,
            config,
            &[
                "--leader-elect=true",
                "--lease-duration=3s",
                "--lease-renew-deadline=2s",
                "--lease-retry-period=300ms",
            ],
        )
    }

    fn start_with(
        kubeconfig: &std::path::Path,
        context: &str,
        config: &std::path::Path,
        election: &[&str],
    ) -> Fedns {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fedns"))
            .arg("serve")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--context", context, "--config"])
            .arg(config)
            .args([
                "--dns-listen=127.0.0.1:0",
                "--admin-listen=127.0.0.1:0",
                "--udp-workers=1",
                "--probe-period=200ms",
                "--probe-timeout=300ms",
                "--log-format=json",
            ])
            .args(election)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("fedns starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let started = Instant::now();
        let admin = loop {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no serving line"
            );
            let line = lines.next().expect("fedns logs").unwrap();
            if line.contains("fedns serving") {
                let v: Value = serde_json::from_str(&line).unwrap();
                break v["admin"].as_str().unwrap().parse().unwrap();
            }
        };
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                keep.lock().unwrap().push(line);
            }
        });
        Fedns { child, admin, log }
    }

    /// SIGTERM (and the shutdown path) when `graceful`, else SIGKILL.
    fn stop(mut self, graceful: bool) {
        if graceful {
            Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .unwrap();
        } else {
            self.child.kill().unwrap();
        }
        let stopped = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(stopped.elapsed() < Duration::from_secs(15), "did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Objects fully propagated by this process (every input listed, every cluster in sync).
    async fn propagated(&self) -> usize {
        let (_, body) = http_get(self.admin, "/metrics").await;
        body.lines()
            .filter(|l| {
                l.starts_with("fedns_propagation_objects{") && l.contains("state=\"propagated\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as usize
    }

    /// Whether this replica holds the Lease (`fedns_leader 1`).
    async fn leads(&self) -> bool {
        let (_, body) = http_get(self.admin, "/metrics").await;
        body.lines().any(|l| l.trim() == "fedns_leader 1")
    }

    async fn wait_steady(&self, what: &str) {
        let mut last = 0;
        let steady = eventually(STEADY, async || {
            last = self.propagated().await;
            last == OBJECTS
        })
        .await;
        if steady.is_none() {
            let log = self.log.lock().unwrap();
            let tail = log.iter().rev().take(30).rev().cloned().collect::<Vec<_>>();
            panic!(
                "{what}: {last} of {OBJECTS} objects propagated; log tail:\n{}",
                tail.join("\n")
            );
        }
    }
}

impl Drop for Fedns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// The template of object `i` of a kind.
fn template(kind: &str, i: usize) -> Value {
    match kind {
        "ConfigMap" => json!({"data": {"i": i.to_string()}}),
        "Secret" => json!({"stringData": {"i": i.to_string()}, "type": "Opaque"}),
        "Service" => json!({"spec": {"ports": [{"port": 80}], "selector": {"app": "a"}}}),
        "ServiceAccount" => json!({"metadata": {"labels": {"i": i.to_string()}}}),
        "Job" => json!({"spec": {"template": {"spec": {
            "containers": [{"name": "j", "image": "busybox"}], "restartPolicy": "Never"}}}}),
        _ => json!({}),
    }
}

/// No write or delete in any member since the request counts were reset, and no host write
/// beyond the Lease and the probes' KubeFedCluster conditions (once per process).
fn assert_nothing_written(clusters: &Clusters, what: &str) {
    for (i, m) in clusters.members.iter().enumerate() {
        if let Some(fake) = m.as_fake() {
            assert_eq!(
                fake.object_writes(),
                (0, 0),
                "{what}: writes and deletes in {}: {:?}",
                MEMBERS[i].0,
                fake.request_counts()
            );
        }
    }
    if let Some(h) = clusters.host.as_fake() {
        let federated_writes: Vec<_> = h
            .request_counts()
            .into_iter()
            .filter(|((verb, resource), _)| {
                matches!(verb.as_str(), "create" | "update" | "patch" | "delete")
                    && !resource.starts_with("kubefedclusters")
                    && !resource.starts_with("leases")
            })
            .collect();
        assert!(
            federated_writes.is_empty(),
            "{what}: host writes {federated_writes:?}"
        );
    }
}

/// Every managed object in every member: (member, kind, namespace/name) → uid.
async fn member_uids(members: &[kube::Client]) -> BTreeMap<(usize, String, String), String> {
    let mut uids = BTreeMap::new();
    for (m, client) in members.iter().enumerate() {
        for (api_version, kind, plural, _) in TYPES {
            let api: Api<DynamicObject> =
                Api::all_with(client.clone(), &resource(api_version, kind, plural));
            let list = api
                .list(&ListParams::default().labels(&format!("{MANAGED_LABEL}=true")))
                .await
                .unwrap();
            for o in list.items {
                let id = format!(
                    "{}/{}",
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.metadata.name.clone().unwrap()
                );
                uids.insert((m, kind.to_string(), id), o.metadata.uid.unwrap());
            }
        }
    }
    uids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_restarts_and_a_leader_change_with_slow_lists_write_and_delete_nothing_in_members() {
    let names: Vec<&str> = MEMBERS.iter().map(|(n, _)| *n).collect();
    let Some(clusters) = Clusters::start_named("host", &names).await else {
        return;
    };
    let host = clusters.host.client().await;
    install_crds(&host).await;
    for ns in [NS, "r0", "r1"] {
        namespace(&host, ns).await;
    }
    for (_, _, plural, _) in TYPES {
        let mut v = serde_json::to_value(type_config(&default_type(plural).unwrap(), NS)).unwrap();
        v["apiVersion"] = json!("core.kubefed.io/v1beta1");
        v["kind"] = json!("FederatedTypeConfig");
        apply(&host, v).await;
    }
    let mut members = Vec::new();
    let mut static_members = Vec::new();
    for (i, (name, region)) in MEMBERS.iter().enumerate() {
        let cluster = &clusters.members[i];
        members.push(cluster.client().await);
        match cluster.as_fake() {
            Some(fake) => {
                apply(&host, json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("{name}-token"), "namespace": NS},
                    "stringData": {"token": fake.token()},
                }))
                .await;
                apply(&host, json!({
                    "apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
                    "metadata": {"name": name, "namespace": NS, "labels": {"region": region}},
                    "spec": {"apiEndpoint": fake.url(), "secretRef": {"name": format!("{name}-token")}},
                }))
                .await;
            }
            None => static_members.push(format!(
                "- {{name: {name}, context: {ctx}, kubeconfig: {path}, labels: {{region: {region}}}}}",
                ctx = cluster.context(),
                path = cluster.kubeconfig_path().display(),
            )),
        }
    }
    // r0 goes everywhere, r1 to the `us` members only.
    for (ns, placement) in [
        ("r0", json!({"clusterSelector": {}})),
        (
            "r1",
            json!({"clusterSelector": {"matchLabels": {"region": "us"}}}),
        ),
    ] {
        apply(
            &host,
            json!({
                "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedNamespace",
                "metadata": {"name": ns, "namespace": ns},
                "spec": {"placement": placement},
            }),
        )
        .await;
    }
    for (_, kind, _, count) in TYPES.iter().skip(1) {
        for i in 0..*count {
            let placement = if i % 3 == 0 {
                json!({"clusters": [{"name": "c1"}, {"name": "c3"}]})
            } else {
                json!({"clusterSelector": {}})
            };
            apply(&host, json!({
                "apiVersion": "types.kubefed.io/v1beta1", "kind": format!("Federated{kind}"),
                "metadata": {"name": format!("{}-{i}", kind.to_lowercase()), "namespace": format!("r{}", i % 2)},
                "spec": {"template": template(kind, i), "placement": placement},
            }))
            .await;
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

    let mut fedns = Fedns::start(&kubeconfig, &context, config.path());
    fedns.wait_steady("first propagation").await;
    // Each FederatedTypeConfig says, as KubeFed's do, that its propagation runs.
    let ftcs: Api<DynamicObject> = Api::namespaced_with(
        host.clone(),
        NS,
        &resource(
            "core.kubefed.io/v1beta1",
            "FederatedTypeConfig",
            "federatedtypeconfigs",
        ),
    );
    let running = eventually(Duration::from_secs(15), async || {
        ftcs.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items.len() == TYPES.len()
                && l.items.iter().all(|f| {
                    f.data["status"]["propagationController"] == "Running"
                        && f.data["status"]["observedGeneration"] == json!(f.metadata.generation)
                })
        })
    })
    .await;
    assert!(running.is_some(), "FederatedTypeConfig status: Running");
    let uids = member_uids(&members).await;
    // 2 namespaces (r0 in 3 members, r1 in 2) and 48 objects (r0 objects in every member they
    // are placed in, r1 objects only where r1 is).
    assert!(uids.len() > OBJECTS, "{} member objects", uids.len());

    // Slow lists from now on: the FederatedNamespaces on the host, everything in the members.
    if let Some(h) = clusters.host.controls("slow FederatedNamespace list") {
        h.slow_list("federatednamespaces", Duration::from_millis(1500));
    }
    for m in &clusters.members {
        if let Some(m) = m.controls("slow member lists") {
            m.slow_list("*", Duration::from_millis(800));
        }
    }
    for restart in 0..10 {
        let graceful = restart % 2 == 0;
        fedns.stop(graceful);
        for c in clusters.all().filter_map(|c| c.as_fake()) {
            c.reset_requests();
        }
        fedns = Fedns::start(&kubeconfig, &context, config.path());
        // Every object reconciled to the end by the new process: whatever it was going to
        // write, it has written.
        let what = format!(
            "restart {restart} ({})",
            if graceful { "SIGTERM" } else { "SIGKILL" }
        );
        fedns.wait_steady(&what).await;
        assert_nothing_written(&clusters, &what);
    }
    assert_eq!(
        member_uids(&members).await,
        uids,
        "same member objects, same uids"
    );
    fedns.stop(true);

    // A leader change: replica A leads, B stands by; A is killed (its Lease is left to expire)
    // and B takes over. B's first reconcile of everything writes nothing either.
    let a = Fedns::start_elected(&kubeconfig, &context, config.path());
    a.wait_steady("leader A").await;
    assert!(a.leads().await, "A leads once it propagates");
    let b = Fedns::start_elected(&kubeconfig, &context, config.path());
    let standby = eventually(Duration::from_secs(20), async || {
        http_get(b.admin, "/metrics")
            .await
            .1
            .lines()
            .any(|l| l.trim() == "fedns_leader 0")
    })
    .await;
    assert!(standby.is_some(), "B stands by while A leads");
    for c in clusters.all().filter_map(|c| c.as_fake()) {
        c.reset_requests();
    }
    a.stop(false);
    // The event that could cause writes: B became the leader.
    let took_over = eventually(Duration::from_secs(30), async || b.leads().await).await;
    assert!(took_over.is_some(), "B takes the Lease after A is killed");
    b.wait_steady("after the leader change").await;
    assert_nothing_written(&clusters, "leader change");
    assert_eq!(
        member_uids(&members).await,
        uids,
        "same member objects, same uids after the leader change"
    );
    b.stop(true);
}
