//! One version everywhere: Cargo.toml (and Cargo.lock), `fedns --version`, the Helm chart's
//! `appVersion`, the README changelog's latest entry, the image tag the manifests deploy and the
//! Dockerfile's label. The image built by deploy/image/build carries the same version as its label
//! (checked on the real archive by tests/image.rs).

mod common;

use std::process::Command;

use common::repo;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The value of the first line `key: value` / `key = value` (quotes removed).
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(key)
                .and_then(|rest| rest.trim_start().strip_prefix([':', '=']))
        })
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
        .trim()
        .trim_matches('"')
        .to_owned()
}

#[test]
fn the_binary_prints_the_cargo_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_fedns"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("fedns {VERSION}")
    );
}

#[test]
fn the_chart_changelog_manifests_and_dockerfile_carry_the_cargo_version() {
    let lock = read("Cargo.lock");
    let fedns = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"fedns\""))
        .unwrap();
    assert_eq!(field(fedns, "version"), VERSION, "Cargo.lock");

    let chart = read("deploy/helm/fedns/Chart.yaml");
    assert_eq!(
        field(&chart, "appVersion"),
        VERSION,
        "Chart.yaml appVersion"
    );
    assert_eq!(field(&chart, "version"), VERSION, "Chart.yaml version");

    let readme = read("README.md");
    let changelog = readme
        .split("## Changelog")
        .nth(1)
        .expect("a Changelog section");
    let latest = changelog
        .lines()
        .find_map(|l| l.strip_prefix("* **"))
        .and_then(|l| l.split("**").next())
        .expect("a changelog entry");
    assert_eq!(latest, VERSION, "the changelog's latest entry");

    let image = format!("ghcr.io/fedns/fedns:{VERSION}");
    assert!(
        read("deploy/kustomize/base/deployment.yaml").contains(&format!("image: {image}")),
        "the kustomize base deploys {image}"
    );
    assert_eq!(
        field(
            &read("deploy/kustomize/overlays/production/kustomization.yaml"),
            "newTag"
        ),
        VERSION,
        "the production overlay's tag"
    );
    let dockerfile = read("deploy/Dockerfile");
    assert_eq!(
        field(&dockerfile, "ARG VERSION"),
        VERSION,
        "deploy/Dockerfile"
    );
    assert!(dockerfile.contains(&format!("-t {image}")));
}
