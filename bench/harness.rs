//! Measurements of the test harness itself (moved out of the test suite: they time things and
//! assert nothing a test could rely on):
//!
//! - `scale`: 100 fake clusters × (1,000 Services + 1,000 EndpointSlices), one kube-rs watcher per
//!   collection: seeding, memory, first listing of every watcher, 100 changes delivered;
//! - `recovery`: how long kube-rs's default watcher backoff takes to re-sync after 1, 5 and 15 s
//!   outages (the figure fedns's own backoff has to beat).
//!
//! Run: `cargo bench --bench harness -- [scale|recovery]` (both by default).

#[path = "../tests/harness/mod.rs"]
#[allow(unused_imports)] // the harness's own unit tests, built with `--all-targets`
mod harness;

use std::time::{Duration, Instant};

use harness::{FakeCluster, expect_event, spawn_watcher};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::watcher;
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!(
            "harness is a benchmark: run it with `cargo bench --bench harness -- [scale|recovery]`"
        );
        return;
    }
    let only: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        if only.is_empty() || only.contains(&"scale") {
            a_hundred_clusters_of_two_thousand_objects_each().await;
        }
        if only.is_empty() || only.contains(&"recovery") {
            watcher_recovery_time_after_outages().await;
        }
    });
}

/// The scale the benchmarks need: 100 clusters × (1,000 Services + 1,000 EndpointSlices), one
/// watcher per collection: seeding time, memory, time for every watcher to list, and for 100 changes
/// to reach their watchers.
async fn a_hundred_clusters_of_two_thousand_objects_each() {
    let started = Instant::now();
    let mut clusters = Vec::new();
    for i in 0..100 {
        let cluster = FakeCluster::start(&format!("member-{i}")).await;
        cluster.apply_all((0..1000).flat_map(|s| {
            [
                json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": format!("svc-{s}"), "namespace": "apps", "labels": {"app": format!("svc-{s}")}},
                    "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
                    "status": {"loadBalancer": {"ingress": [{"ip": format!("10.{i}.{}.{}", s / 250, s % 250)}]}},
                }),
                json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("svc-{s}-abcde"), "namespace": "apps", "labels": {"kubernetes.io/service-name": format!("svc-{s}")}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [format!("172.16.{}.{}", s / 250, s % 250)], "conditions": {"ready": true}}],
                }),
            ]
        }));
        clusters.push(cluster);
    }
    eprintln!("seeded 100 × 2,000 objects in {:?}", started.elapsed());
    eprintln!("memory after seeding: {}", rss());

    let synced = Instant::now();
    let mut receivers = Vec::new();
    for cluster in &clusters {
        let client = cluster.client().await;
        receivers.push(spawn_watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ));
        receivers.push(spawn_watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ));
    }
    for rx in &mut receivers {
        expect_event(rx, "InitDone", Duration::from_secs(120)).await;
    }
    eprintln!(
        "200 watchers listed 200,000 objects in {:?}",
        synced.elapsed()
    );

    let changed = Instant::now();
    for cluster in &clusters {
        cluster.apply_json(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "svc-0", "namespace": "apps", "labels": {"app": "svc-0", "changed": "yes"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
        }));
    }
    for rx in receivers.iter_mut().step_by(2) {
        expect_event(rx, "Apply(svc-0)", Duration::from_secs(30)).await;
    }
    eprintln!(
        "100 changes seen by their watchers in {:?}",
        changed.elapsed()
    );
    eprintln!("memory at the end: {}", rss());
}

/// Resident memory of this process, from /proc.
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or_default();
    line.trim_start_matches("VmRSS:").trim().to_string()
}

/// How long kube-rs's default watcher backoff takes to re-sync after outages of several lengths
/// (the figure fedns's own backoff has to beat).
async fn watcher_recovery_time_after_outages() {
    for outage in [1u64, 5, 15] {
        let cluster = FakeCluster::start("outage").await;
        let services: Api<Service> = Api::namespaced(cluster.client().await, "default");
        let mut events = spawn_watcher(services, watcher::Config::default());
        expect_event(&mut events, "InitDone", Duration::from_secs(5)).await;
        while cluster.open_watches() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cluster.stop().await;
        tokio::time::sleep(Duration::from_secs(outage)).await;
        cluster.apply_json(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "while-down", "namespace": "default"},
        }));
        let restarted = Instant::now();
        cluster.restart().await;
        let seen = expect_event(
            &mut events,
            "InitApply(while-down)",
            Duration::from_secs(120),
        )
        .await;
        let errors = seen.iter().filter(|e| *e == "Error").count();
        eprintln!(
            "outage {outage:>2} s: re-synced {:.1} s after the restart ({errors} watcher errors)",
            restarted.elapsed().as_secs_f64()
        );
    }
}
