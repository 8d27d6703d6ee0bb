//! The metrics contract: `/metrics` of a running fedns (directory source, and Kubernetes source on
//! the harness so the per-member series exist) passes `promtool check metrics` with no lint
//! problem, and the Grafana dashboard in `deploy/grafana/` references only metrics that fedns
//! exports (or that the propagation controller will export). promtool comes from Debian's
//! `prometheus` package; a missing promtool fails these tests naming it (`bash .ci/test`
//! installs it), or marks them ignored under `FEDNS_SKIP_MISSING_TOOLS=1`.

mod common;
mod harness;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use harness::FakeCluster;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

const NS: &str = "kube-federation-system";

/// The propagation controller's metrics (written in parallel): the dashboard may use them before
/// fedns exports them. Histograms are listed with their series.
const PROPAGATION_METRICS: [&str; 6] = [
    "fedns_propagation_objects",
    "fedns_propagation_writes_total",
    "fedns_propagation_duration_seconds",
    "fedns_propagation_duration_seconds_bucket",
    "fedns_propagation_duration_seconds_sum",
    "fedns_propagation_duration_seconds_count",
];

/// What the dashboard must show (a panel cannot silently disappear).
const DASHBOARD_MUST_USE: [&str; 9] = [
    "fedns_dns_requests_total",
    "fedns_dns_responses_total",
    "fedns_dns_request_duration_seconds_bucket",
    "fedns_member_ready",
    "fedns_member_last_sync_timestamp_seconds",
    "fedns_dns_programming_duration_seconds_bucket",
    "fedns_propagation_objects",
    "fedns_propagation_writes_total",
    "fedns_propagation_duration_seconds_bucket",
];

/// `promtool check metrics` on `text`: whether it passed, and its output.
fn promtool_check(text: &str) -> (bool, String) {
    common::tools::require(
        "promtool",
        "command -v promtool",
        "apt-get install prometheus",
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), output)
}

/// Names of the series and families in an exposition (`foo_bucket`, `foo_sum`, `foo`, …).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            names.insert(rest.split(' ').next().unwrap().to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The value of the first sample whose line starts with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// fedns on the demo after answers of every kind (hits, fallback, NXDOMAIN, REFUSED) and a source
/// change, so counters and both histograms have samples; returns its `/metrics`.
async fn demo_metrics_after_traffic() -> String {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    for name in [
        "nginx.test.galactic.svc.example.com.",
        "nginx.test.galactic.svc.ap1.ap.example.com.",
        "nope.example.com.",
        "example.org.",
    ] {
        ask(&mut client, name, RecordType::A).await;
    }
    let file = server.source().join("us-east/endpointslices.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("ready: true", "ready: false", 1)).unwrap();
    let mut body = String::new();
    let filled = eventually(Duration::from_secs(5), async || {
        body = server.admin_get("/metrics").await.1;
        sample(&body, "fedns_dns_request_duration_seconds_count").unwrap_or(0.0) >= 4.0
            && sample(&body, "fedns_dns_responses_total{rcode=\"REFUSED\"}").unwrap_or(0.0) >= 1.0
            && sample(&body, "fedns_dns_programming_duration_seconds_count").unwrap_or(0.0) >= 1.0
    })
    .await;
    assert!(filled.is_some(), "samples missing:\n{body}");
    server.stop().await;
    body
}

/// fedns on the Kubernetes source (a harness host with one member, `east`), after the member came
/// back from a restart with no nodes, so the per-member series exist: last sync, watch restarts, ignored
/// empty relists. Returns its `/metrics`.
async fn kubernetes_metrics_after_a_member_outage() -> String {
    let host = FakeCluster::start("host").await;
    let east = FakeCluster::start("east").await;
    for crd in fedns::cli::crds::all() {
        host.apply(&crd);
    }
    host.apply_json(json!({
        "apiVersion": "multiclusterdns.kubefed.io/v1alpha1", "kind": "Domain",
        "metadata": {"name": "galactic", "namespace": NS}, "domain": "example.com",
    }));
    host.apply_json(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "east-token", "namespace": NS},
        "stringData": {"token": east.token()},
    }));
    host.apply_json(json!({
        "apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
        "metadata": {"name": "east", "namespace": NS},
        "spec": {"apiEndpoint": east.url(), "secretRef": {"name": "east-token"}},
    }));
    east.apply_json(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "nginx", "namespace": "test"},
        "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}},
    }));
    // A node, so that the member's empty relist after its restart is one to distrust.
    east.apply_json(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "east-1", "labels": {
            "topology.kubernetes.io/zone": "us1", "topology.kubernetes.io/region": "us"}},
    }));
    let kubeconfig = host.kubeconfig_path();
    let server = Server::start_configured(
        |_, _| {},
        |args| {
            args.source = None;
            args.kubeconfig = Some(kubeconfig);
            args.context = Some("host".into());
        },
    )
    .await;
    // Ready: every kind of east has been listed once (the node included).
    let synced = eventually(Duration::from_secs(10), async || {
        server.admin_get("/ready").await.0 == 200
            && server
                .admin_get("/metrics")
                .await
                .1
                .contains("fedns_member_last_sync_timestamp_seconds{cluster=\"east\"}")
    })
    .await;
    assert!(synced.is_some(), "{}", server.admin_get("/metrics").await.1);

    // east goes down (watches fail), loses its only node meanwhile and comes back with a fresh
    // watch history: the relist is empty where a node was seen, and is not trusted.
    east.stop().await;
    assert!(east.delete("v1", "Node", None, "east-1"));
    east.restart().await;
    let mut body = String::new();
    let counted = eventually(Duration::from_secs(20), async || {
        body = server.admin_get("/metrics").await.1;
        body.contains("fedns_watch_restarts_total{") && body.contains("fedns_empty_relists_ignored")
    })
    .await;
    assert!(counted.is_some(), "{body}");
    server.stop().await;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_promtool,
    ignore = "promtool is missing (apt-get install prometheus) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn metrics_after_traffic_pass_promtool_without_lint_problems() {
    let body = demo_metrics_after_traffic().await;
    let (passed, output) = promtool_check(&body);
    assert!(
        passed && output.trim().is_empty(),
        "promtool: {output}\n{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_promtool,
    ignore = "promtool is missing (apt-get install prometheus) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn kubernetes_source_metrics_pass_promtool_without_lint_problems() {
    let body = kubernetes_metrics_after_a_member_outage().await;
    let (passed, output) = promtool_check(&body);
    assert!(
        passed && output.trim().is_empty(),
        "promtool: {output}\n{body}"
    );
}

/// promtool really lints what it is given: a counter without `_total` and a metric without help
/// are reported (otherwise the two tests above could not fail).
#[test]
#[cfg_attr(
    fedns_missing_promtool,
    ignore = "promtool is missing (apt-get install prometheus) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
fn promtool_reports_lint_problems() {
    let bad = "# HELP fedns_bad_requests Requests\n# TYPE fedns_bad_requests counter\n\
               fedns_bad_requests 1\n# TYPE fedns_nohelp gauge\nfedns_nohelp 1\n";
    let (passed, output) = promtool_check(bad);
    assert!(!passed, "{output}");
    assert!(output.contains("_total"), "{output}");
    assert!(output.contains("no help text"), "{output}");
}

#[test]
fn every_exported_metric_is_fedns_prefixed_in_base_units() {
    let text = fedns::metrics::Metrics::new().render();
    for name in exported_names(&text) {
        // The standard process_* family is the one exception, named as every exporter names it.
        if name.starts_with("process_") {
            continue;
        }
        assert!(name.starts_with("fedns_"), "{name}");
        for unit in [
            "_milliseconds",
            "_microseconds",
            "_ms",
            "_kilobytes",
            "_minutes",
        ] {
            assert!(!name.contains(unit), "{name} is not in base units");
        }
    }
}

/// Every string of the dashboard (expressions, variable queries, descriptions) scanned for
/// `fedns_…` names.
fn dashboard_metric_names(value: &Value, names: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find("fedns_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_owned());
                rest = &tail[end..];
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_metric_names(v, names)),
        Value::Object(map) => map.values().for_each(|v| dashboard_metric_names(v, names)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_references_only_metrics_fedns_exports() {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/fedns-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "fedns-overview");

    // Every panel but rows queries something, through the datasource variable.
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "duplicate id");
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(expr.contains("fedns_"), "{}: {expr}", panel["title"]);
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}");
    }

    let mut referenced = BTreeSet::new();
    dashboard_metric_names(&dashboard, &mut referenced);
    for name in DASHBOARD_MUST_USE {
        assert!(
            referenced.contains(name),
            "the dashboard no longer shows {name}"
        );
    }

    let mut known = exported_names(&demo_metrics_after_traffic().await);
    known.extend(exported_names(
        &kubernetes_metrics_after_a_member_outage().await,
    ));
    known.extend(PROPAGATION_METRICS.map(String::from));
    let unknown: Vec<&String> = referenced.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard references metrics fedns does not export: {unknown:?}\nexported: {known:?}"
    );
}

/// What operators look for first: the process_* family, fedns_build_info, requests by a bounded
/// qtype, rejected zone-file loads counted, and fedns_records equal to /status's names served;
/// all of it promtool-clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_build_info_qtypes_zone_errors_and_names_served_are_exported() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    for qtype in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::AAAA,
        RecordType::CAA,
    ] {
        ask(&mut client, "nginx.test.galactic.svc.example.com.", qtype).await;
    }
    std::fs::write(
        server.zones().join("broken.zone"),
        "$ORIGIN broken.test.\nwww IN CNAME\n",
    )
    .unwrap();
    let mut body = String::new();
    let filled = eventually(Duration::from_secs(5), async || {
        body = server.admin_get("/metrics").await.1;
        sample(&body, "fedns_zone_file_loads_total{result=\"error\"}").unwrap_or(0.0) >= 1.0
            && sample(
                &body,
                "fedns_dns_requests_total{qtype=\"AAAA\",transport=\"udp\"}",
            )
            .unwrap_or(0.0)
                >= 2.0
    })
    .await;
    assert!(filled.is_some(), "samples missing:\n{body}");
    assert_eq!(
        sample(
            &body,
            "fedns_dns_requests_total{qtype=\"other\",transport=\"udp\"}"
        ),
        Some(1.0),
        "CAA is not in the label set: counted as other\n{body}"
    );
    let qtypes: BTreeSet<&str> = body
        .lines()
        .filter(|l| l.starts_with("fedns_dns_requests_total{"))
        .filter_map(|l| l.split("qtype=\"").nth(1)?.split('"').next())
        .collect();
    assert!(qtypes.len() <= 12, "a bounded qtype label: {qtypes:?}");
    assert_eq!(
        sample(
            &body,
            &format!(
                "fedns_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0),
        "{body}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let value = sample(&body, &format!("{name} ")).unwrap_or_else(|| panic!("{name}: {body}"));
        // CPU is counted in whole seconds: 0 this early.
        assert!(
            value > 0.0 || name == "process_cpu_seconds_total",
            "{name} {value}"
        );
    }
    let status = server.admin_get("/status").await.1;
    let served: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("names served:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(
        sample(&body, "fedns_records "),
        Some(served),
        "fedns_records and /status names served are one number:\n{status}"
    );
    server.stop().await;
    let (passed, output) = promtool_check(&body);
    assert!(
        passed && output.trim().is_empty(),
        "promtool: {output}\n{body}"
    );
}
