//! Propagation benchmark: fedns's sync controller (in-process, release build) against the
//! in-process fake API servers of `tests/harness`: 1 host + `--members` members (default 10).
//!
//! `cargo bench --bench propagation -- [--members N] [--objects N] [--changes N]` measures:
//!
//! * time until `--objects` (default 1,000) FederatedConfigMaps, created at once and placed in every
//!   member, exist in every member;
//! * API writes to members per object per cluster during that (1 is the minimum: one create);
//! * writes to members and to the host during a steady-state resync (every object checked again
//!   with nothing changed: the goal is zero);
//! * single-object change → every member has it: p50/p99 over `--changes` (default 100) template
//!   edits, one at a time, polled straight from the fake servers' stores;
//! * a restart of fedns (graceful stop, start again against the same servers): time until every
//!   object is reconciled again, and the writes to members (the goal is zero) and to the host
//!   that the restart caused.
//!
//! Results go to stdout and `bench/out/propagation/results.txt`. The harness and fedns share the
//! process and its 2 cores, so figures include the fake servers' own cost.

// Cargo builds benches with `--cfg test` but without libtest, so the harness's own unit-test
// modules compile with their `#[test]` functions stripped and their imports unused.
#[allow(unused_imports)]
#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use fedns::config::ServeArgs;
use fedns::propagation::types::{MANAGED_LABEL, default_type, type_config};
use harness::FakeCluster;
use serde_json::{Value, json};

const NS: &str = "kube-federation-system";
const RESYNC: Duration = Duration::from_secs(5);

struct Options {
    members: usize,
    objects: usize,
    changes: usize,
}

fn options() -> Options {
    let mut o = Options {
        members: 10,
        objects: 1000,
        changes: 100,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|v| v.parse().ok());
        match args[i].as_str() {
            "--members" => o.members = value().expect("--members N"),
            "--objects" => o.objects = value().expect("--objects N"),
            "--changes" => o.changes = value().expect("--changes N"),
            _ => {}
        }
        i += 1;
    }
    o
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn federated_configmap(i: usize, value: &str) -> Value {
    json!({
        "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedConfigMap",
        "metadata": {"name": format!("cm-{i}"), "namespace": "bench"},
        "spec": {"template": {"data": {"value": value}}, "placement": {"clusterSelector": {}}}
    })
}

fn managed_count(member: &FakeCluster) -> usize {
    member
        .list_json("v1", "ConfigMap", Some("bench"))
        .iter()
        .filter(|o| o["metadata"]["labels"][MANAGED_LABEL] == "true")
        .count()
}

/// The running fedns's `/metrics` text (empty while it cannot be reached).
async fn metrics_text(admin: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(admin).await else {
        return String::new();
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body
}

async fn metric(admin: std::net::SocketAddr, line: &str) -> bool {
    metrics_text(admin).await.contains(line)
}

/// Objects fully propagated by the running fedns (its `fedns_propagation_objects` gauge).
async fn propagated(admin: std::net::SocketAddr) -> usize {
    metrics_text(admin)
        .await
        .lines()
        .filter(|l| {
            l.starts_with("fedns_propagation_objects{") && l.contains("state=\"propagated\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(o));
}

async fn run(o: Options) {
    let host = FakeCluster::start("host").await;
    let mut members = Vec::new();
    for i in 0..o.members {
        members.push(FakeCluster::start(&format!("m{i}")).await);
    }
    for crd in fedns::cli::crds::all() {
        host.apply_json(serde_json::to_value(&crd).unwrap());
    }
    for ns in [NS, "bench"] {
        host.apply_json(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    for t in ["configmaps", "namespaces"] {
        let mut v = serde_json::to_value(type_config(&default_type(t).unwrap(), NS)).unwrap();
        v["apiVersion"] = json!("core.kubefed.io/v1beta1");
        v["kind"] = json!("FederatedTypeConfig");
        host.apply_json(v);
    }
    host.apply_json(json!({
        "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedNamespace",
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {"placement": {"clusterSelector": {}}}
    }));
    for m in &members {
        host.apply_json(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{}-token", m.name()), "namespace": NS},
            "stringData": {"token": m.token()}}));
        host.apply_json(json!({"apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
            "metadata": {"name": m.name(), "namespace": NS},
            "spec": {"apiEndpoint": m.url(), "secretRef": {"name": format!("{}-token", m.name())}}}));
    }
    let dir = tempfile::tempdir().unwrap();
    let args = || ServeArgs {
        kubeconfig: Some(host.kubeconfig_path()),
        zones: Some(dir.path().to_owned()),
        dns_listen: vec!["127.0.0.1:0".parse().unwrap()],
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        udp_workers: Some(1),
        probe_period: Some(Duration::from_millis(500)),
        leader_elect: Some(false),
        propagation_resync: Some(RESYNC),
        ..Default::default()
    };
    let running = fedns::app::start(args().resolve().expect("config"))
        .await
        .expect("fedns starts");
    let admin = running.admin_addr;
    for m in &members {
        let line = format!("fedns_member_ready{{cluster=\"{}\"}} 1", m.name());
        while !metric(admin, &line).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The namespace first, so the objects measure themselves.
    while members
        .iter()
        .any(|m| m.get_json("v1", "Namespace", None, "bench").is_none())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for m in &members {
        m.reset_requests();
    }

    let mut out = String::new();
    let mut report = |line: String| {
        println!("{line}");
        out.push_str(&line);
        out.push('\n');
    };
    report(format!(
        "propagation: {} objects x {} members (fedns and fake API servers in one process, 2 cores)",
        o.objects, o.members
    ));

    // 1. Everything at once.
    let start = Instant::now();
    for i in 0..o.objects {
        host.apply_json(federated_configmap(i, "v0"));
    }
    loop {
        if members.iter().all(|m| managed_count(m) >= o.objects) {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            report("gave up after 600 s".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = start.elapsed();
    let writes: u64 = members.iter().map(FakeCluster::writes).sum();
    report(format!(
        "all propagated: {:.2} s ({:.0} objects/s into {} members)",
        all.as_secs_f64(),
        o.objects as f64 / all.as_secs_f64(),
        o.members
    ));
    report(format!(
        "member writes per object per cluster: {:.3} ({writes} writes)",
        writes as f64 / (o.objects * o.members) as f64
    ));

    // 2. Steady state: let status writes settle, then watch a full resync.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for m in &members {
        m.reset_requests();
    }
    host.reset_requests();
    tokio::time::sleep(RESYNC * 2 + Duration::from_secs(1)).await;
    let member_writes: u64 = members.iter().map(FakeCluster::writes).sum();
    let host_writes: u64 = host.writes();
    report(format!(
        "steady-state resync ({}s window, {} checks): {member_writes} member writes, {host_writes} host writes",
        (RESYNC * 2 + Duration::from_secs(1)).as_secs(),
        2 * o.objects
    ));

    // 3. One object at a time.
    let mut latencies = Vec::new();
    for c in 0..o.changes {
        let i = c % o.objects;
        let value = format!("v{}", c + 1);
        let t = Instant::now();
        host.apply_json(federated_configmap(i, &value));
        let name = format!("cm-{i}");
        loop {
            let done = members.iter().all(|m| {
                m.get_json("v1", "ConfigMap", Some("bench"), &name)
                    .is_some_and(|o| o["data"]["value"] == value.as_str())
            });
            if done {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        latencies.push(t.elapsed());
    }
    latencies.sort();
    report(format!(
        "single-object change -> all {} members: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} changes)",
        o.members,
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        latencies.len()
    ));
    // 4. A restart: nothing changed, so nothing may be written to members.
    running.stop(Duration::from_millis(100)).await;
    for c in members.iter().chain([&host]) {
        c.reset_requests();
    }
    let start = Instant::now();
    let running = fedns::app::start(args().resolve().expect("config"))
        .await
        .expect("fedns starts again");
    // Every object (and the FederatedNamespace) reconciled to the end by the new process.
    let wanted = o.objects + 1;
    while propagated(running.admin_addr).await < wanted {
        if start.elapsed() > Duration::from_secs(600) {
            report("restart: gave up after 600 s".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let steady = start.elapsed();
    let member_writes: u64 = members.iter().map(FakeCluster::writes).sum();
    let host_writes: Vec<String> = host
        .request_counts()
        .into_iter()
        .filter(|((verb, _), _)| matches!(verb.as_str(), "create" | "update" | "patch" | "delete"))
        .map(|((verb, resource), n)| format!("{n} {verb} {resource}"))
        .collect();
    report(format!(
        "restart -> steady state ({wanted} objects reconciled): {:.2} s; writes: {member_writes} to members, host: {}",
        steady.as_secs_f64(),
        if host_writes.is_empty() {
            "none".to_string()
        } else {
            host_writes.join(", ")
        }
    ));

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/out/propagation");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("results.txt"), out);
    running.stop(Duration::from_millis(100)).await;
}
