//! Generated federations as directory-source JSON, shared by `tests/busy_engine.rs` and
//! `bench/engine_busy.rs`.

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
