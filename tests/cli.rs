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

/// Kills a spawned fedns when the test fails before stopping it (it would outlive the test).
struct KillOnPanic(u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}

/// Starts the binary with env vars and a config file, queries it, stops it with SIGTERM.
#[test]
fn binary_serves_from_env_and_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fedns.yaml");
    std::fs::write(
        &cfg,
        "dnsListen: [\"localhost:0\"]\nadminListen: localhost:0\nudpWorkers: 1\nlogFormat: json\n",
    )
    .unwrap();
    let mut child = fedns()
        .arg("serve")
        .env("FEDNS_CONFIG", &cfg)
        .env("FEDNS_SOURCE", repo().join("deploy/demo"))
        .env("FEDNS_ZONES", repo().join("zones"))
        .env("FEDNS_SHUTDOWN_DRAIN", "1.5s")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _reaper = KillOnPanic(child.id());
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = Instant::now();
    let dns = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no serving line"
        );
        let line = lines.next().unwrap().unwrap();
        // JSON logs, flat: {"level":"INFO","message":"fedns serving","dns":"127.0.0.1:port",...}
        if line.contains("fedns serving") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(v.get("fields").is_none(), "fields at the top level: {line}");
            assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{line}");
            break v["dns"].as_str().unwrap().to_owned();
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
    let rest: Vec<serde_json::Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let drain = rest
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("shutting down")
        })
        .unwrap_or_else(|| panic!("no shutdown line: {rest:?}"));
    assert_eq!(
        drain["drain"], "1.5s",
        "--shutdown-drain in effect: {drain}"
    );
    assert_eq!(drain["signal"], "SIGTERM");
    let last = rest.last().unwrap();
    assert_eq!(last["message"], "fedns stopped", "a final line: {rest:?}");
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "answers continued for the drain"
    );
}

/// Runs fedns with `args`; returns (exit code, stdout, stderr).
fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = fedns()
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const DURATIONS: [&str; 5] = ["1m30s", "1.5s", "500ms", "2h", "0"];

#[test]
fn every_serve_duration_flag_takes_every_duration_form() {
    // Parsing succeeds, so the run gets as far as the missing source directory.
    for flag in [
        "--grace-period",
        "--shutdown-drain",
        "--probe-period",
        "--probe-timeout",
        "--sync-timeout",
        "--propagation-resync",
        "--lease-duration",
        "--lease-renew-deadline",
        "--lease-retry-period",
    ] {
        for d in DURATIONS {
            let (code, _, err) = run(
                &["serve", "--source", "/nonexistent/fedns-demo", flag, d],
                &[],
            );
            assert_eq!(code, 1, "{flag} {d}: {err}");
            assert!(err.contains("/nonexistent/fedns-demo"), "{flag} {d}: {err}");
        }
        let (code, _, err) = run(
            &["serve", "--source", "/nonexistent/fedns-demo", flag, "90"],
            &[],
        );
        assert_eq!(code, 2, "{flag} 90 is rejected: {err}");
        assert!(err.contains("90s"), "the error suggests the unit: {err}");
    }
}

/// `fedns serve --source <missing dir>` with this config file text; returns (code, stderr).
fn serve_missing_source_with_config(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fedns.yaml");
    std::fs::write(&cfg, config).unwrap();
    let (code, _, err) = run(
        &[
            "serve",
            "--source",
            "/nonexistent/fedns-demo",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    (code, err)
}

#[test]
fn durations_in_the_environment_and_the_config_file_take_the_same_forms() {
    for d in DURATIONS {
        let (_, _, err) = run(
            &["serve", "--source", "/nonexistent/fedns-demo"],
            &[("FEDNS_GRACE_PERIOD", d)],
        );
        assert!(
            err.contains("/nonexistent/fedns-demo"),
            "FEDNS_GRACE_PERIOD={d}: {err}"
        );
        let (_, err) = serve_missing_source_with_config(&format!(
            "gracePeriod: \"{d}\"\nsyncTimeout: \"{d}\"\n"
        ));
        assert!(err.contains("/nonexistent/fedns-demo"), "config {d}: {err}");
    }
    let (code, err) = serve_missing_source_with_config("gracePeriod: 5 parsecs\n");
    assert_eq!(code, 1);
    assert!(
        err.contains("gracePeriod") && err.contains("1m30s") && !err.contains("nonexistent"),
        "{err}"
    );
}

#[test]
fn join_takes_the_same_duration_forms() {
    for d in DURATIONS {
        let (code, _, err) = run(
            &[
                "join",
                "m1",
                "--cluster-context",
                "a",
                "--host-cluster-context",
                "b",
                "--kubeconfig",
                "/nonexistent/kubeconfig",
                "--token-timeout",
                d,
            ],
            &[],
        );
        assert_eq!(code, 1, "{d}: {err}");
        assert!(err.contains("/nonexistent/kubeconfig"), "{d}: {err}");
    }
}

#[test]
fn an_unsupported_output_format_is_rejected_not_ignored() {
    for args in [
        &["enable", "deployments.apps", "--dry-run", "-o", "text"][..],
        &["enable", "deployments.apps", "--dry-run", "-o", "xml"],
        &["federate", "-f", "-", "-o", "table"],
        &[
            "join",
            "m1",
            "--cluster-context",
            "a",
            "--host-cluster-context",
            "b",
            "--dry-run",
            "-o",
            "text",
        ],
        &["status", "-o", "xml"],
    ] {
        let (code, out, err) = run(args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out}");
        assert!(
            err.contains("invalid value") && err.contains("possible values"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn namespace_has_its_short_flag_wherever_it_means_something() {
    for sub in [
        "join", "unjoin", "enable", "federate", "status", "corefile", "explain",
    ] {
        let (_, help, _) = run(&[sub, "--help"], &[]);
        assert!(help.contains("-n, --namespace"), "{sub}:\n{help}");
    }
    for sub in ["join", "enable", "federate", "status"] {
        let (_, help, _) = run(&[sub, "--help"], &[]);
        assert!(help.contains("-o, --output"), "{sub}:\n{help}");
    }
}

#[test]
fn every_argument_of_every_command_has_help_text() {
    let (_, top, _) = run(&["--help"], &[]);
    let commands: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect();
    assert!(commands.len() >= 10, "{commands:?}");
    let mut bare = Vec::new();
    for c in &commands {
        let (_, help, _) = run(&[c, "--help"], &[]);
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let indent = line.len() - t.len();
            if indent == 0
                || indent > 6
                || !(t.starts_with('-') || t.starts_with('<') || t.starts_with('['))
            {
                continue;
            }
            // Help on the same line (`--flag <V>  Help`) or on the next, indented deeper.
            let same_line = t.trim_end().contains("  ");
            let next_line = lines.get(i + 1).is_some_and(|n| {
                let nt = n.trim_start();
                !nt.is_empty() && n.len() - nt.len() > indent
            });
            if !same_line && !next_line {
                bare.push(format!("{c}: {t}"));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "arguments without help:\n{}",
        bare.join("\n")
    );
}

#[test]
fn an_error_is_printed_once_without_a_backtrace() {
    let (code, out, err) = run(
        &["serve", "--source", "/nonexistent/fedns-demo"],
        &[("RUST_BACKTRACE", "1"), ("RUST_LIB_BACKTRACE", "1")],
    );
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(
        err.matches("/nonexistent/fedns-demo").count(),
        1,
        "said once: {err}"
    );
    for noise in ["Caused by", "backtrace", "Stack"] {
        assert!(!err.contains(noise), "{noise}: {err}");
    }
}

#[test]
fn query_prints_like_dig_and_times_out_readably() {
    // A socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let (code, _, err) = run(
        &[
            "query",
            "nginx.example.com",
            "--server",
            &server,
            "--timeout",
            "300ms",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the --timeout is used"
    );
    assert!(
        err.contains(&format!("no answer from {server} within 300ms")) && err.contains("--server"),
        "{err}"
    );
    // Against the demo, served in-process.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(common::Server::demo());
    let (code, out, err) = run(
        &[
            "query",
            "nginx.test.galactic.svc.ap1.ap.example.com",
            "A",
            "--server",
            &server.dns.to_string(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    for part in [
        ";; ->>HEADER<<- opcode: QUERY, status: NOERROR",
        ";; flags: qr aa rd;",
        ";; QUESTION SECTION:",
        ";nginx.test.galactic.svc.ap1.ap.example.com.\t\tIN\tA",
        ";; ANSWER SECTION:",
        "nginx.test.galactic.svc.ap1.ap.example.com.\t300\tIN\tCNAME\tnginx.test.galactic.svc.ap.example.com.",
        "\tIN\tA\t10.1.0.10",
        ";; SERVER: 127.0.0.1#",
    ] {
        assert!(out.contains(part), "{part:?} missing:\n{out}");
    }
    let (_, out, _) = run(
        &[
            "query",
            "missing.galactic.svc.example.com",
            "--server",
            &server.dns.to_string(),
            "--tcp",
        ],
        &[],
    );
    assert!(
        out.contains("status: NXDOMAIN") && out.contains(";; AUTHORITY SECTION:"),
        "{out}"
    );
    assert!(out.contains("(tcp)"), "{out}");
    runtime.block_on(server.stop());
}
