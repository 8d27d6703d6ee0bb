//! `fedns corefile`, run as the real binary: the CoreDNS server blocks and the kube-dns
//! `stubDomains` ConfigMap for the Domains of a source directory or of a host cluster (the
//! harness), and that the recipes in `deploy/forwarding/` are exactly what it prints.

mod common;
mod harness;

use std::process::{Command, Output};

use common::repo;
use harness::FakeCluster;
use serde_json::json;

fn fedns(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedns"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The lines that are not comments (what CoreDNS or kube-dns reads).
fn content(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect()
}

fn demo() -> String {
    repo().join("deploy/demo").display().to_string()
}

#[test]
fn corefile_from_a_source_directory_is_the_coredns_recipe() {
    let text = stdout(&fedns(&[
        "corefile",
        "--source",
        &demo(),
        "--fedns",
        "10.96.0.53:53",
    ]));
    assert_eq!(
        content(&text),
        [
            "example.com:53 {",
            "    errors",
            "    cache",
            "    forward . 10.96.0.53:53",
            "}"
        ]
    );
    let recipe = std::fs::read_to_string(repo().join("deploy/forwarding/Corefile")).unwrap();
    assert!(
        recipe.ends_with(&text),
        "deploy/forwarding/Corefile ends with what `fedns corefile` prints:\n{text}"
    );
}

#[test]
fn stubdomains_format_is_the_kube_dns_recipe() {
    let text = stdout(&fedns(&[
        "corefile",
        "--source",
        &demo(),
        "--fedns",
        "10.96.0.53:53",
        "--format",
        "stubdomains",
    ]));
    let recipe =
        std::fs::read_to_string(repo().join("deploy/forwarding/kube-dns-stubdomains.yaml"))
            .unwrap();
    assert_eq!(content(&text), content(&recipe));
    assert!(
        text.contains("{\"example.com\": [\"10.96.0.53\"]}"),
        "{text}"
    );
}

#[test]
fn the_fedns_address_is_required() {
    let out = fedns(&["corefile", "--source", &demo()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fedns"));
}

#[test]
fn a_source_without_domains_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = fedns(&[
        "corefile",
        "--source",
        &dir.path().display().to_string(),
        "--fedns",
        "10.96.0.53:53",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no Domain objects found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corefile_lists_the_domains_of_the_host_clusters_namespace() {
    let host = FakeCluster::start("host").await;
    for crd in fedns::cli::crds::all() {
        host.apply(&crd);
    }
    for (name, namespace, zone) in [
        ("galactic", "kube-federation-system", "example.com"),
        ("stellar", "kube-federation-system", "acme.org"),
        ("elsewhere", "other", "other.net"),
    ] {
        host.apply_json(json!({
            "apiVersion": "multiclusterdns.kubefed.io/v1alpha1", "kind": "Domain",
            "metadata": {"name": name, "namespace": namespace}, "domain": zone,
        }));
    }
    let kubeconfig = host.kubeconfig_path().display().to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            fedns(&args)
        })
    };
    let base = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "corefile",
            "--kubeconfig",
            &kubeconfig,
            "--context",
            "host",
            "--fedns",
            "[fd00::53]:53",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    let text = stdout(&run(base(&[])).await.unwrap());
    assert_eq!(
        content(&text),
        [
            "acme.org:53 {",
            "    errors",
            "    cache",
            "    forward . [fd00::53]:53",
            "}",
            "example.com:53 {",
            "    errors",
            "    cache",
            "    forward . [fd00::53]:53",
            "}",
        ],
        "{text}"
    );

    let text = stdout(
        &run(base(&["--namespace", "other", "--format", "stubdomains"]))
            .await
            .unwrap(),
    );
    assert!(
        text.contains("    {\"other.net\": [\"fd00::53\"]}\n"),
        "{text}"
    );
}
