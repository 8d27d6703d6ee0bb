//! The command-line contract of the real `fedns` binary: flag names, environment variables,
//! the config file, clear errors, `query`, `explain`, and a clean stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::repo;

fn fedns() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedns"))
}

#[test]
fn serve_help_names_every_flag_of_the_contract() {
    let out = fedns().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--source",
        "--zones",
        "--dns-listen",
        "--admin-listen",
        "--config",
        "--udp-workers",
        "--grace-period",
        "FEDNS_SOURCE",
        "FEDNS_DNS_LISTEN",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn a_missing_source_is_a_clear_error() {
    let out = fedns()
        .args(["serve", "--source", "/nonexistent/fedns-demo"])
        .args([
            "--dns-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/fedns-demo"), "{err}");
}

#[test]
fn a_bad_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fedns.yaml");
    std::fs::write(&cfg, "dnsListen: [not-an-address]\n").unwrap();
    let out = fedns()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fedns.yaml") && err.contains("dnsListen"),
        "{err}"
    );
}

#[test]
fn explain_from_a_source_directory_needs_no_server() {
    let out = fedns()
        .args([
            "explain",
            "nginx.test.galactic.svc.ap1.ap.example.com",
            "--source",
        ])
        .arg(repo().join("deploy/demo"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("CNAME nginx.test.galactic.svc.ap.example.com."),
        "{text}"
    );
    assert!(text.contains("no ready endpoints"), "{text}");
}

/// Starts the binary with env vars and a config file, queries it, stops it with SIGTERM.
#[test]
fn binary_serves_from_env_and_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fedns.yaml");
    std::fs::write(
        &cfg,
        "dnsListen: [\"127.0.0.1:0\"]\nadminListen: 127.0.0.1:0\nudpWorkers: 1\nlogFormat: json\n",
    )
    .unwrap();
    let mut child = fedns()
        .arg("serve")
        .env("FEDNS_CONFIG", &cfg)
        .env("FEDNS_SOURCE", repo().join("deploy/demo"))
        .env("FEDNS_ZONES", repo().join("zones"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = Instant::now();
    let dns = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no serving line"
        );
        let line = lines.next().unwrap().unwrap();
        // JSON logs: {"fields":{"message":"fedns serving","dns":"[127.0.0.1:port]",...}}
        if line.contains("fedns serving") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let dns = v["fields"]["dns"]
                .as_str()
                .unwrap()
                .trim_matches(['[', ']'])
                .to_owned();
            break dns;
        }
    };
    let out = fedns()
        .args([
            "query",
            "nginx.test.galactic.svc.us1.us.example.com",
            "A",
            "--server",
            &dns,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("10.1.0.10"), "{text}");
    let out = fedns()
        .args([
            "query",
            "nginx.test.galactic.svc.us1.us.example.com",
            "A",
            "--tcp",
            "--server",
            &dns,
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.1.0.10"));

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(stopped.elapsed() < Duration::from_secs(10), "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}
