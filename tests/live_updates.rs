//! Changes while serving: the directory source and zone files are edited under a running server,
//! and answers, serials, status and metrics follow without dropping queries.

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

const G: &str = "nginx.test.galactic.svc.example.com.";
const US1: &str = "nginx.test.galactic.svc.us1.us.example.com.";
const US: &str = "nginx.test.galactic.svc.us.example.com.";

fn soa_serial(m: &hickory_proto::op::Message) -> u32 {
    match &m.answers[0].data {
        RData::SOA(s) => s.serial,
        other => panic!("not a SOA: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_endpoints_turn_the_zone_name_into_a_cname_within_a_second() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    assert_eq!(
        summary(&ask(&mut client, US1, RecordType::A).await),
        "NoError A 10.1.0.10"
    );
    let serial = soa_serial(&ask(&mut client, "example.com.", RecordType::SOA).await);

    let file = server.source().join("us-east/endpointslices.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("ready: true", "ready: false", 1)).unwrap();

    let took = eventually(Duration::from_secs(3), async || {
        summary(&ask(&mut client, US1, RecordType::A).await)
            .starts_with(&format!("NoError CNAME {US}"))
    })
    .await
    .expect("zone name became a CNAME");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // The serial follows the content within a second (serials advance at most once a second:
    // the README's serial rule).
    eventually(Duration::from_secs(2), async || {
        soa_serial(&ask(&mut client, "example.com.", RecordType::SOA).await) > serial
    })
    .await
    .expect("serial increases on change");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_yaml_keeps_the_last_good_state_and_names_the_file_in_status() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    let file = server.source().join("us-east/services.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("ip: 10.1.0.10", "ip: 10.1.0.x")).unwrap();

    let shown = eventually(Duration::from_secs(5), async || {
        server
            .admin_get("/status")
            .await
            .1
            .contains("services.yaml")
    })
    .await;
    let (_, status) = server.admin_get("/status").await;
    assert!(shown.is_some(), "status names the bad file: {status}");
    assert!(status.contains("10.1.0.x"), "and the bad value: {status}");
    // The last good content is still served.
    assert_eq!(
        summary(&ask(&mut client, US1, RecordType::A).await),
        "NoError A 10.1.0.10"
    );
    let metrics = server.admin_get("/metrics").await.1;
    assert!(metrics.contains("fedns_source_errors 1"), "{metrics}");

    // Fixing the file clears the error and applies the change.
    std::fs::write(&file, text.replace("ip: 10.1.0.10", "ip: 10.1.0.11")).unwrap();
    let fixed = eventually(Duration::from_secs(3), async || {
        summary(&ask(&mut client, US1, RecordType::A).await) == "NoError A 10.1.0.11"
    })
    .await;
    assert!(fixed.is_some());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_domain_ref_is_skipped_and_the_domain_in_its_file_still_answers() {
    let server = Server::start_with(|source, zones| {
        copy_tree(&repo().join("deploy/demo"), source);
        copy_tree(&repo().join("zones"), zones);
        let file = source.join("federation.yaml");
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str(
            "---\napiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
             metadata:\n  name: broken\n  namespace: test\nspec:\n  recordTTL: 60\n",
        );
        std::fs::write(&file, text).unwrap();
    })
    .await;
    let mut client = server.udp_client().await;
    let soa = ask(&mut client, "example.com.", RecordType::SOA).await;
    assert_eq!(rcode(&soa), ResponseCode::NoError, "{}", summary(&soa));
    assert!(
        summary(&ask(&mut client, G, RecordType::A).await).starts_with("NoError A "),
        "the other records of the file are served"
    );
    let names_it = |status: &str| {
        status.lines().any(|line| {
            line.starts_with("source error:")
                && line.contains("federation.yaml")
                && line.contains("(ServiceDNSRecord test/broken)")
                && line.contains("domainRef")
        })
    };
    let named = eventually(Duration::from_secs(3), async || {
        names_it(&server.admin_get("/status").await.1)
    })
    .await;
    let (_, status) = server.admin_get("/status").await;
    assert!(
        named.is_some(),
        "status names the file, document and field: {status}"
    );
    let metrics = server.admin_get("/metrics").await.1;
    assert!(metrics.contains("fedns_source_errors 1"), "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_files_reload_on_change_and_a_broken_edit_keeps_the_last_good_zone() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    let file = server.zones().join("acme.com.zone");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}api IN A 192.0.2.77\n")).unwrap();
    let loaded = eventually(Duration::from_secs(3), async || {
        summary(&ask(&mut client, "api.acme.com.", RecordType::A).await) == "NoError A 192.0.2.77"
    })
    .await;
    assert!(loaded.is_some(), "new static record answered");

    std::fs::write(&file, "this is not a zone file\n").unwrap();
    let reported = eventually(Duration::from_secs(3), async || {
        server
            .admin_get("/status")
            .await
            .1
            .contains("acme.com.zone")
    })
    .await;
    assert!(reported.is_some());
    let m = ask(&mut client, "api.acme.com.", RecordType::A).await;
    assert_eq!(summary(&m), "NoError A 192.0.2.77", "last good zone kept");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unloadable_zone_answers_servfail_and_status_names_file_and_line() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    let file = server.zones().join("broken.org.zone");
    std::fs::write(
        &file,
        "$ORIGIN broken.org.\n$TTL 60\n@ IN SOA ns1 host 1 2 3 4 5\nwww IN A 192.0.2.300\n",
    )
    .unwrap();
    let servfail = eventually(Duration::from_secs(3), async || {
        rcode(&ask(&mut client, "www.broken.org.", RecordType::A).await) == ResponseCode::ServFail
    })
    .await;
    assert!(
        servfail.is_some(),
        "SERVFAIL, never REFUSED, for the broken zone"
    );
    for name in ["broken.org.", "other.broken.org."] {
        let m = ask(&mut client, name, RecordType::SOA).await;
        assert_eq!(rcode(&m), ResponseCode::ServFail, "{name}");
    }
    let status = server.admin_get("/status").await.1;
    assert!(status.contains("broken.org.zone:4"), "{status}");
    let metrics = server.admin_get("/metrics").await.1;
    assert!(
        metrics.contains("fedns_zone_file_loads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    // Other zones are untouched; fixing the file serves it.
    let m = ask(&mut client, "ns1.acme.com.", RecordType::A).await;
    assert_eq!(summary(&m), "NoError A 127.0.0.1");
    std::fs::write(
        &file,
        "$ORIGIN broken.org.\n$TTL 60\n@ IN SOA ns1 host 1 2 3 4 5\nwww IN A 192.0.2.30\n",
    )
    .unwrap();
    let fixed = eventually(Duration::from_secs(3), async || {
        summary(&ask(&mut client, "www.broken.org.", RecordType::A).await) == "NoError A 192.0.2.30"
    })
    .await;
    assert!(fixed.is_some(), "served once fixed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_service_dns_record_removes_all_its_names() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    let file = server.source().join("federation.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    // Drop the nginx ServiceDNSRecord document.
    let docs: Vec<&str> = text
        .split("\n---\n")
        .filter(|d| !(d.contains("kind: ServiceDNSRecord") && d.contains("name: nginx")))
        .collect();
    std::fs::write(&file, docs.join("\n---\n")).unwrap();
    let gone = eventually(Duration::from_secs(3), async || {
        rcode(&ask(&mut client, G, RecordType::A).await) == ResponseCode::NXDomain
    })
    .await;
    assert!(gone.is_some());
    for name in [
        US1,
        US,
        "www.example.com.",
        "test.galactic.svc.example.com.",
    ] {
        assert_eq!(
            rcode(&ask(&mut client, name, RecordType::A).await),
            ResponseCode::NXDomain,
            "{name}"
        );
    }
    // The vanity CNAME now leads nowhere: NXDOMAIN at the end of the chain.
    let m = ask(&mut client, "nginx.acme.com.", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_readiness_metrics_and_explanations() {
    let server = Server::demo().await;
    assert_eq!(server.admin_get("/healthz").await.0, 200);
    assert_eq!(server.admin_get("/ready").await.0, 200);
    let mut client = server.udp_client().await;
    ask(&mut client, G, RecordType::A).await;
    ask(&mut client, "nope.example.com.", RecordType::A).await;
    let counted = eventually(Duration::from_secs(2), async || {
        server
            .admin_get("/metrics")
            .await
            .1
            .contains("fedns_dns_responses_total{rcode=\"NXDOMAIN\"} 1")
    })
    .await;
    let metrics = server.admin_get("/metrics").await.1;
    assert!(counted.is_some(), "{metrics}");
    for name in [
        "fedns_dns_requests_total",
        "fedns_dns_request_duration_seconds_bucket",
        "fedns_records",
        "fedns_dns_programming_duration_seconds",
        "fedns_members_ready 4",
        "fedns_member_ready{cluster=\"ap-south\"} 1",
        "fedns_zone_serial{zone=\"example.com.\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    let (status, body) = server
        .admin_get("/explain?name=nginx.test.galactic.svc.ap1.ap.example.com")
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("ServiceDNSRecord test/nginx"), "{body}");
    assert!(
        body.contains("ap-south") && body.contains("no ready endpoints"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lame_duck_fails_ready_before_stopping() {
    let server = Server::demo().await;
    let admin = server.admin;
    let running = {
        let mut s = server;
        let r = s.running.take().unwrap();
        (s, r)
    };
    let (server, r) = running;
    let stop = tokio::spawn(r.stop(Duration::from_millis(500)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let probe = Server {
        dir: tempfile::tempdir().unwrap(),
        dns: server.dns,
        admin,
        running: None,
    };
    assert_eq!(probe.admin_get("/ready").await.0, 503, "draining");
    // Still answering while draining.
    let mut client = server.udp_client().await;
    assert_eq!(
        rcode(&ask(&mut client, G, RecordType::A).await),
        ResponseCode::NoError
    );
    stop.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_from_config_keeps_an_offline_members_targets() {
    let server = Server::start_configured(
        |source, zones| {
            copy_tree(&repo().join("deploy/demo"), source);
            copy_tree(&repo().join("zones"), zones);
        },
        |args| args.grace_period = Some(Duration::from_millis(800)),
    )
    .await;
    let mut client = server.udp_client().await;
    let eu1 = "nginx.test.galactic.svc.eu1.eu.example.com.";
    eventually(Duration::from_secs(5), async || {
        summary(&ask(&mut client, eu1, RecordType::A).await) == "NoError A 10.3.0.10"
    })
    .await
    .expect("hostname resolved");
    // Mark eu-central offline through its KubeFedCluster condition.
    let file = server.source().join("federation.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("status: \"True\"", "status: \"False\"")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        summary(&ask(&mut client, eu1, RecordType::A).await),
        "NoError A 10.3.0.10",
        "inside the grace period"
    );
    let withdrawn = eventually(Duration::from_secs(3), async || {
        summary(&ask(&mut client, eu1, RecordType::A).await).starts_with("NoError CNAME")
    })
    .await;
    assert!(withdrawn.is_some(), "withdrawn after the grace period");
    server.stop().await;
}
