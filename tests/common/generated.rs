//! Generated federations as directory-source JSON, shared by `tests/busy_engine.rs`,
//! `bench/engine_busy.rs` and `bench/xfr.rs`.

use std::fmt::Write as _;
use std::path::Path;

/// A KubeFedCluster in region `r<region>`, zone `r<region>a`, ready or not.
pub fn kubefed_cluster(name: &str, region: usize, ready: bool) -> String {
    format!(
        r#"{{"apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
  "metadata": {{"name": "{name}"}},
  "spec": {{"apiEndpoint": "https://{name}:6443", "secretRef": {{"name": "{name}"}}}},
  "status": {{"conditions": [{{"type": "Ready", "status": "{}"}}],
    "zones": ["r{region}a"], "region": "r{region}"}}}}"#,
        if ready { "True" } else { "False" }
    )
}

/// `fedns_dns_programming_duration_seconds` count and sum from a `/metrics` text: one sample per
/// engine batch of source events, from the oldest event's arrival to the end of its flush.
pub fn programming(metrics: &str) -> (f64, f64) {
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (
        value("fedns_dns_programming_duration_seconds_count "),
        value("fedns_dns_programming_duration_seconds_sum "),
    )
}

/// Writes a federation into a directory source: the Domain `load` (zone example.com), one
/// ServiceDNSRecord per service, `clusters` ready KubeFedClusters in 5 regions (c0's alone in
/// `flip.json`, for flipping), and per cluster `c<N>/services.json` with the LoadBalancer Services
/// placed there: each service in `placement` consecutive clusters (all of them when `placement`
/// is at least `clusters`).
pub fn write_federation(
    source: &Path,
    clusters: usize,
    services: usize,
    placement: usize,
) -> std::io::Result<()> {
    let mut items = vec![
        r#"{"apiVersion": "multiclusterdns.kubefed.io/v1alpha1", "kind": "Domain",
  "metadata": {"name": "load"}, "domain": "example.com"}"#
            .to_owned(),
    ];
    for s in 0..services {
        items.push(format!(
            r#"{{"apiVersion": "multiclusterdns.kubefed.io/v1alpha1", "kind": "ServiceDNSRecord",
  "metadata": {{"name": "s{s}", "namespace": "load"}},
  "spec": {{"domainRef": "load", "allowServiceWithoutEndpoints": true}}}}"#
        ));
    }
    for c in 1..clusters {
        items.push(kubefed_cluster(&format!("c{c}"), c % 5, true));
    }
    let list = format!(r#"{{"kind": "List", "items": [{}]}}"#, items.join(",\n"));
    std::fs::write(source.join("federation.json"), list)?;
    std::fs::write(source.join("flip.json"), kubefed_cluster("c0", 0, true))?;
    for c in 0..clusters {
        write_cluster_services(source, clusters, services, placement, c, |_| 0)?;
    }
    Ok(())
}

/// Writes `c<cluster>/services.json` of [`write_federation`]'s federation, each service's address
/// moved by `bump(service)` (0: as generated), atomically (the source never reads half a file).
pub fn write_cluster_services(
    source: &Path,
    clusters: usize,
    services: usize,
    placement: usize,
    cluster: usize,
    bump: impl Fn(usize) -> usize,
) -> std::io::Result<()> {
    let c = cluster;
    let mut out = String::new();
    for s in (0..services).filter(|s| (0..placement).any(|k| (s + k) % clusters == c)) {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "s{s}", "namespace": "load"}},
  "spec": {{"type": "LoadBalancer"}},
  "status": {{"loadBalancer": {{"ingress": [{{"ip": "10.{}.{}.{}"}}]}}}}}}"#,
            c % 250,
            (s / 250 + bump(s)) % 250,
            s % 250 + 1
        );
    }
    let dir = source.join(format!("c{c}"));
    std::fs::create_dir_all(&dir)?;
    let staged = source.join(format!(".c{c}-services.json"));
    std::fs::write(&staged, format!(r#"{{"kind": "List", "items": [{out}]}}"#))?;
    std::fs::rename(&staged, dir.join("services.json"))
}
