//! The federation the Kubernetes end-to-end tests share: the Domain `galactic` (example.com) and
//! the `nginx` ServiceDNSRecord on the host, LoadBalancer Services, EndpointSlices and Nodes on
//! members, and polling a name until its answer is as expected.

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::json;

use super::{Server, apply, ask, install_crds, namespace, summary};

/// The control-plane namespace.
pub const NS: &str = "kube-federation-system";
/// The `nginx` record's global name.
pub const G: &str = "nginx.test.galactic.svc.example.com.";

/// A LoadBalancer Service with `ip` and an EndpointSlice with one endpoint.
pub async fn service(client: &kube::Client, ip: &str, ready: bool) {
    apply(
        client,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "nginx", "namespace": "test"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
        }),
    )
    .await;
    endpoints(client, ready).await;
}

pub async fn endpoints(client: &kube::Client, ready: bool) {
    apply(
        client,
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "nginx-e2e", "namespace": "test",
                         "labels": {"kubernetes.io/service-name": "nginx"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["172.16.0.9"], "conditions": {"ready": ready}}],
        }),
    )
    .await;
}

pub async fn node(client: &kube::Client, zone: &str, region: &str) {
    apply(
        client,
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("node-{zone}"), "labels": {
                "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": region}},
        }),
    )
    .await;
}

/// Polls `name` until its answer summary satisfies `ok`; returns how long that took.
pub async fn until(
    server: &Server,
    name: &str,
    limit: Duration,
    ok: impl Fn(&str) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut client = server.udp_client().await;
    let mut last = String::new();
    while start.elapsed() < limit {
        last = summary(&ask(&mut client, name, RecordType::A).await);
        if ok(&last) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name}: still {last:?} after {limit:?}");
}

/// Applies the CRDs, the namespaces, the Domain `galactic` (example.com) and the `nginx`
/// ServiceDNSRecord (recordTTL 300) on a host.
pub async fn federation(host: &kube::Client) {
    install_crds(host).await;
    for ns in [NS, "test"] {
        namespace(host, ns).await;
    }
    apply(
        host,
        json!({
            "apiVersion": "multiclusterdns.kubefed.io/v1alpha1", "kind": "Domain",
            "metadata": {"name": "galactic", "namespace": NS}, "domain": "example.com",
        }),
    )
    .await;
    apply(
        host,
        json!({
            "apiVersion": "multiclusterdns.kubefed.io/v1alpha1", "kind": "ServiceDNSRecord",
            "metadata": {"name": "nginx", "namespace": "test"}, "spec": {"domainRef": "galactic"},
        }),
    )
    .await;
}

/// Joins a member to the host as `kubefedctl join` leaves it: a token Secret and a
/// KubeFedCluster pointing at `url`.
pub async fn join(host: &kube::Client, name: &str, url: &str, token: &str) {
    apply(
        host,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{name}-token"), "namespace": NS},
            "stringData": {"token": token},
        }),
    )
    .await;
    apply(
        host,
        json!({
            "apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"apiEndpoint": url, "secretRef": {"name": format!("{name}-token")}},
        }),
    )
    .await;
}

/// The value of the sample of `name` whose labels include every one of `labels` (summed over
/// the matching samples), or `None` when there is none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => match rest.split_once("} ") {
                Some(parts) => parts,
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => ("", value),
                None => continue,
            },
        };
        if labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
            && let Ok(value) = value.trim().parse::<f64>()
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// Polls the admin `/metrics` until the sample reaches `at_least`; panics after `limit`.
pub async fn until_metric(
    server: &Server,
    name: &str,
    labels: &[(&str, &str)],
    at_least: f64,
    limit: Duration,
) -> f64 {
    let start = Instant::now();
    loop {
        let text = server.admin_get("/metrics").await.1;
        let value = metric(&text, name, labels).unwrap_or(0.0);
        if value >= at_least {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "{name}{labels:?} is {value} after {limit:?}, wanted >= {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until fedns has held back an empty relist of `kind` in `cluster`.
pub async fn until_empty_relist_held(server: &Server, cluster: &str, kind: &str) {
    until_metric(
        server,
        "fedns_empty_relists_ignored_total",
        &[("cluster", cluster), ("kind", kind)],
        1.0,
        Duration::from_secs(10),
    )
    .await;
}
