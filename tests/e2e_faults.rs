//! The Kubernetes source under faults, on the harness: watchers back off exponentially on a
//! persistent 403 and on refused connections and report what fails; a replica that has not listed
//! its host is never Ready and answers SERVFAIL (never REFUSED), however long that takes; an empty
//! relist is held back until a later listing confirms it. Every test here injects faults, so
//! against real clusters (`FEDNS_E2E_KUBECONFIGS`) they are skipped.

mod common;
mod harness;

use std::time::{Duration, Instant};

use common::federation::{G, federation, join, metric, service, until, until_empty_relist_held};
use common::{Server, ask, namespace, rcode, summary};
use harness::{Blackhole, Clusters, FakeCluster, RequestClock, kubeconfig_for, refused_url};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

fn on_harness_only(test: &str) -> bool {
    if Clusters::kubeconfigs_from_env().is_some() {
        eprintln!("skipping {test}: it injects faults into the harness's clusters");
        return false;
    }
    true
}

/// fedns on `host`'s kubeconfig with fast probes and the given sync timeout.
async fn fedns(
    kubeconfig: std::path::PathBuf,
    sync_timeout: Duration,
    configure: impl FnOnce(&mut fedns::config::ServeArgs),
) -> Server {
    Server::start_configured(
        |_, _| {},
        |args| {
            args.source = None;
            args.kubeconfig = Some(kubeconfig);
            args.probe_period = Some(Duration::from_millis(200));
            args.probe_timeout = Some(Duration::from_millis(300));
            args.probe_failure_threshold = Some(2);
            args.sync_timeout = Some(sync_timeout);
            args.propagation = Some(false);
            args.leader_elect = Some(false);
            configure(args);
        },
    )
    .await
}

/// A host with the federation and a member `name` serving nginx at `ip`.
async fn member(host: &kube::Client, name: &str, ip: &str) -> FakeCluster {
    let cluster = FakeCluster::start(name).await;
    let client = cluster.client().await;
    namespace(&client, "test").await;
    service(&client, ip, true).await;
    join(host, name, &cluster.url(), &cluster.token()).await;
    cluster
}

async fn answer(server: &Server, name: &str) -> hickory_proto::op::Message {
    ask(&mut server.udp_client().await, name, RecordType::A).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_watchers_back_off_exponentially_and_report_what_fails() {
    if !on_harness_only("failing_watchers_back_off_exponentially_and_report_what_fails") {
        return;
    }
    let host_cluster = FakeCluster::start("host").await;
    let host = host_cluster.client().await;
    federation(&host).await;
    // c1 serves everything but Nodes (a role that lacks one resource); `gone` refuses
    // connections; c2 is healthy.
    let c1 = member(&host, "c1", "10.0.0.1").await;
    c1.forbid("nodes");
    let c2 = member(&host, "c2", "10.0.0.2").await;
    let gone = refused_url();
    join(&host, "gone", &gone, "unused").await;
    let lists = RequestClock::start(&c1, "list", "nodes");
    let started = Instant::now();
    let server = fedns(
        host_cluster.kubeconfig_path(),
        Duration::from_secs(2),
        |_| {},
    )
    .await;

    // The members that list are served after the sync timeout; the others are unreachable.
    until(&server, G, Duration::from_secs(10), |a| {
        a == "NoError A 10.0.0.2"
    })
    .await;
    assert_eq!(server.admin_get("/ready").await.0, 200);

    // Over 12 s a doubling backoff from 200 ms lists at about 0, 0.2, 0.6, 1.4, 3.0, 6.2 and
    // maybe 11 s: at most 7 LISTs (a fixed 100 ms retry would be 120).
    let window = Duration::from_secs(12);
    tokio::time::sleep_until((started + window).into()).await;
    let times: Vec<Instant> = lists
        .times()
        .into_iter()
        .filter(|t| *t <= started + window)
        .collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!(
        "c1 nodes LISTs in {window:?}: {}; gaps {gaps:?}",
        times.len()
    );
    assert!(times.len() >= 4, "retried at all: {gaps:?}");
    assert!(
        times.len() <= 7,
        "{} LISTs in {window:?}: {gaps:?}",
        times.len()
    );
    // Doubling from 200 ms (jittered ×0.8–1.2) makes the fifth gap 10–24 times the first; a fixed
    // or reset backoff keeps them equal. Request latency on a loaded machine blurs single steps, so
    // the growth is checked end to end.
    let (first, last) = (gaps[0].as_secs_f64(), gaps[gaps.len() - 1].as_secs_f64());
    assert!(last >= 6.0 * first, "gaps grow exponentially: {gaps:?}");
    // Refused connections: the same doubling, capped at 5 s: about 0, 0.2, 0.6, 1.4, 3.0, 6.2,
    // 11 s (a fixed 100 ms retry would be 120 per watcher).
    let metrics = server.admin_get("/metrics").await.1;
    let refused = metric(
        &metrics,
        "fedns_watch_errors_total",
        &[
            ("cluster", "gone"),
            ("resource", "services"),
            ("reason", "connect"),
        ],
    )
    .unwrap_or(0.0);
    assert!(
        (3.0..=8.0).contains(&refused),
        "refused services watch: {refused} errors"
    );
    let forbidden = metric(
        &metrics,
        "fedns_watch_errors_total",
        &[
            ("cluster", "c1"),
            ("resource", "nodes"),
            ("reason", "forbidden"),
        ],
    )
    .unwrap_or(0.0);
    let all_lists = c1.requests("list", "nodes") as f64;
    assert!(
        forbidden >= times.len() as f64 && forbidden <= all_lists,
        "every forbidden LIST counted: {forbidden} of {all_lists}"
    );

    // /status (and so `fedns status --admin`) names each failing watcher with its last error.
    let status = server.admin_get("/status").await.1;
    let failing: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("watch failing:"))
        .collect();
    let c1_nodes = failing
        .iter()
        .find(|l| l.contains("c1/nodes"))
        .unwrap_or_else(|| panic!("c1/nodes not reported: {status}"));
    assert!(
        c1_nodes.contains(&format!("{}/api/v1/nodes", c1.url()))
            && c1_nodes.contains("403 Forbidden"),
        "{c1_nodes}"
    );
    let gone_services = failing
        .iter()
        .find(|l| l.contains("gone/services"))
        .unwrap_or_else(|| panic!("gone/services not reported: {status}"));
    assert!(
        gone_services.contains(&format!("{gone}/api/v1/services"))
            && gone_services.to_lowercase().contains("connection refused"),
        "{gone_services}"
    );
    assert_eq!(
        failing.iter().filter(|l| l.contains(" c2/")).count(),
        0,
        "c2 is fine: {status}"
    );
    let parsed = fedns::cli::status::parse_admin_status(&status);
    assert_eq!(parsed.failing_watches.len(), failing.len());

    // Recovery: the 403 goes, c1 lists at its next retry, leaves /status and is served again.
    c1.clear_faults();
    let started = Instant::now();
    loop {
        let status = server.admin_get("/status").await.1;
        if !status.contains("c1/nodes") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "c1/nodes still failing: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until(&server, G, Duration::from_secs(5), |a| {
        a == "NoError A 10.0.0.1 A 10.0.0.2"
    })
    .await;
    drop(c2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_and_servfail_until_the_host_is_listed_never_refused() {
    if !on_harness_only("never_ready_and_servfail_until_the_host_is_listed_never_refused") {
        return;
    }
    // Three hosts that cannot be listed: one that accepts connections and never answers, one
    // that refuses them, and a real one behind a partition (healed at the end).
    let blackhole = Blackhole::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host_cluster = FakeCluster::start("host").await;
    let host = host_cluster.client().await;
    federation(&host).await;
    let _c1 = member(&host, "c1", "10.0.0.1").await;
    host_cluster.partition(true);
    let sync_timeout = Duration::from_millis(500);
    let servers = [
        fedns(
            kubeconfig_for(dir.path(), "blackhole", &blackhole.url()),
            sync_timeout,
            |_| {},
        )
        .await,
        fedns(
            kubeconfig_for(dir.path(), "refused", &refused_url()),
            sync_timeout,
            |_| {},
        )
        .await,
        fedns(host_cluster.kubeconfig_path(), sync_timeout, |_| {}).await,
    ];
    // Well past the sync timeout (the event that used to make fedns Ready), every replica is
    // still not Ready and answers SERVFAIL for the federation's zone.
    let started = Instant::now();
    while started.elapsed() < sync_timeout * 6 {
        for server in &servers {
            assert_eq!(
                server.admin_get("/ready").await.0,
                503,
                "Ready without a host listing"
            );
            let m = answer(server, G).await;
            assert_eq!(rcode(&m), ResponseCode::ServFail, "{}", summary(&m));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(blackhole.accepted() > 0, "the blackhole was asked");
    // The host comes back: Ready, and the zone answers.
    host_cluster.partition(false);
    until(&servers[2], G, Duration::from_secs(15), |a| {
        a == "NoError A 10.0.0.1"
    })
    .await;
    assert_eq!(servers[2].admin_get("/ready").await.0, 200);
    // After the first listing a host outage keeps serving the last state.
    host_cluster.stop().await;
    let m = answer(&servers[2], G).await;
    assert_eq!(summary(&m), "NoError A 10.0.0.1");
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_relist_is_held_back_until_a_second_listing_confirms_it() {
    if !on_harness_only("an_empty_relist_is_held_back_until_a_second_listing_confirms_it") {
        return;
    }
    let host_cluster = FakeCluster::start("host").await;
    let host = host_cluster.client().await;
    federation(&host).await;
    let c1 = member(&host, "c1", "10.0.0.1").await;
    let _c2 = member(&host, "c2", "10.0.0.2").await;
    let confirm = Duration::from_secs(3);
    let server = fedns(
        host_cluster.kubeconfig_path(),
        Duration::from_secs(10),
        |args| {
            args.empty_relist_confirm = Some(confirm);
        },
    )
    .await;
    until(&server, G, Duration::from_secs(10), |a| {
        a == "NoError A 10.0.0.1 A 10.0.0.2"
    })
    .await;

    // c1's Services are deleted while its watch is down, so it comes back with an empty relist.
    c1.empty_services_while_down().await;
    until_empty_relist_held(&server, "c1", "services").await;
    let held = Instant::now();
    // Half one: the records survive the empty relist.
    let m = answer(&server, G).await;
    assert_eq!(summary(&m), "NoError A 10.0.0.1 A 10.0.0.2", "held back");
    // Half two: a second listing at least `confirm` later is still empty, so it is applied.
    until(&server, G, Duration::from_secs(15), |a| {
        a == "NoError A 10.0.0.2"
    })
    .await;
    let after = held.elapsed();
    assert!(
        after + Duration::from_millis(500) >= confirm,
        "applied {after:?} after the hold, before the confirmation period"
    );
    assert_eq!(
        metric(
            &server.admin_get("/metrics").await.1,
            "fedns_empty_relists_ignored_total",
            &[("cluster", "c1"), ("kind", "services")],
        ),
        Some(1.0),
        "the confirming relist is not counted as ignored"
    );
    server.stop().await;
}
