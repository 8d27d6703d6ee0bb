//! Leader election end to end on the harness: one host, one member, fedns replicas in-process on
//! 127.0.0.1:0 with short lease timings. Only the Lease holder writes to the host; a follower
//! serves DNS and writes nothing; a released or expired Lease is taken over and the new leader
//! writes what changed meanwhile. Setup is seeded straight into the fake clusters, so the
//! request counters hold only what fedns sent.

mod common;
#[path = "harness/mod.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Server, ask, eventually, summary};
use harness::FakeCluster;
use hickory_proto::rr::RecordType;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use serde_json::{Value, json};

const NS: &str = "kube-federation-system";
const G: &str = "nginx.test.galactic.svc.example.com.";
const SDR: &str = "multiclusterdns.kubefed.io/v1alpha1";
const LEASE: &str = "coordination.k8s.io/v1";
const STATUS_WRITES: (&str, &str) = ("patch", "servicednsrecords/status");

/// A host with the CRDs, the Domain `galactic` and the `nginx` ServiceDNSRecord, and a member
/// `c1` (a KubeFedCluster) serving `nginx` at 10.0.0.1.
async fn federation() -> (FakeCluster, FakeCluster) {
    let host = FakeCluster::start("host").await;
    let member = FakeCluster::start("c1").await;
    for crd in fedns::cli::crds::all() {
        host.apply(&crd);
    }
    host.apply_json(json!({
        "apiVersion": SDR, "kind": "Domain",
        "metadata": {"name": "galactic", "namespace": NS}, "domain": "example.com",
    }));
    record(&host, "nginx");
    host.apply_json(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "c1-token", "namespace": NS},
        "stringData": {"token": member.token()},
    }));
    host.apply_json(json!({
        "apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
        "metadata": {"name": "c1", "namespace": NS},
        "spec": {"apiEndpoint": member.url(), "secretRef": {"name": "c1-token"}},
        "status": {"zones": ["us1"], "region": "us"},
    }));
    service(&member, "nginx", "10.0.0.1");
    (host, member)
}

fn record(host: &FakeCluster, name: &str) {
    host.apply_json(json!({
        "apiVersion": SDR, "kind": "ServiceDNSRecord",
        "metadata": {"name": name, "namespace": "test"}, "spec": {"domainRef": "galactic"},
    }));
}

/// A LoadBalancer Service at `ip` with one ready endpoint.
fn service(member: &FakeCluster, name: &str, ip: &str) {
    member.apply_json(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
    }));
    member.apply_json(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "namespace": "test",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["172.16.0.9"], "conditions": {"ready": true}}],
    }));
}

/// A fedns replica against `host` electing with a 2 s lease, 1.5 s renew deadline, 0.5 s retry.
async fn replica(host: &FakeCluster) -> Server {
    replica_with(host, Duration::from_secs(2), Duration::from_millis(1500)).await
}

async fn replica_with(host: &FakeCluster, lease: Duration, renew: Duration) -> Server {
    let kubeconfig = host.kubeconfig_path();
    Server::start_configured(
        |_, _| {},
        |args| {
            args.source = None;
            args.kubeconfig = Some(kubeconfig);
            args.probe_period = Some(Duration::from_millis(200));
            args.probe_timeout = Some(Duration::from_millis(300));
            args.sync_timeout = Some(Duration::from_secs(5));
            args.lease_duration = Some(lease);
            args.lease_renew_deadline = Some(renew);
            args.lease_retry_period = Some(Duration::from_millis(500));
        },
    )
    .await
}

fn leads(server: &Server) -> bool {
    server
        .running
        .as_ref()
        .is_some_and(|r| r.leadership().is_leader())
}

async fn metric_leader(server: &Server) -> String {
    let metrics = server.admin_get("/metrics").await.1;
    metrics
        .lines()
        .find(|l| l.starts_with("fedns_leader "))
        .unwrap_or("fedns_leader missing")
        .to_owned()
}

/// The identity this replica elects with, from `/status`.
async fn identity(server: &Server) -> String {
    let status = server.admin_get("/status").await.1;
    let line = status
        .lines()
        .find(|l| l.starts_with("leader:"))
        .unwrap_or_else(|| panic!("no leader line: {status}"));
    line.rsplit_once(" as ")
        .map(|(_, id)| id.trim_end_matches(')').to_owned())
        .unwrap_or_else(|| panic!("no identity: {line}"))
}

fn lease(host: &FakeCluster) -> Value {
    host.get_json(LEASE, "Lease", Some(NS), "fedns")
        .unwrap_or(Value::Null)
}

fn holder(host: &FakeCluster) -> String {
    lease(host)["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn status(host: &FakeCluster, name: &str) -> Value {
    host.get_json(SDR, "ServiceDNSRecord", Some("test"), name)
        .map(|r| r["status"].clone())
        .unwrap_or(Value::Null)
}

/// The IPs of `name`'s status, as written.
fn status_ips(host: &FakeCluster, name: &str) -> Vec<String> {
    status(host, name)["dns"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["loadBalancer"]["ingress"].as_array().cloned())
        .flatten()
        .filter_map(|i| i["ip"].as_str().map(str::to_owned))
        .collect()
}

async fn answers(server: &Server, name: &str, want: &str, limit: Duration) {
    let mut client = server.udp_client().await;
    let mut last = String::new();
    let found = eventually(limit, async || {
        last = summary(&ask(&mut client, name, RecordType::A).await);
        last == want
    })
    .await;
    assert!(found.is_some(), "{name}: {last:?}, want {want:?}");
}

/// Writes the `fedns` Lease as held by `holder`, renewed now, straight into the store (so the
/// request counters see only fedns).
fn hold(host: &FakeCluster, holder: &str, transitions: i32) {
    let now = serde_json::to_value(MicroTime(k8s_openapi::jiff::Timestamp::now())).unwrap();
    host.apply_json(json!({
        "apiVersion": LEASE, "kind": "Lease",
        "metadata": {"name": "fedns", "namespace": NS},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 2,
                 "acquireTime": now, "renewTime": now, "leaseTransitions": transitions},
    }));
}

/// Another replica, faked: renews the Lease as `holder` every 300 ms while `renewing` is set.
fn fake_holder(host: &FakeCluster, holder: &'static str, renewing: Arc<AtomicBool>) {
    let host = host.clone();
    tokio::spawn(async move {
        while renewing.load(Ordering::Relaxed) {
            hold(&host, holder, 7);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
}

/// Nothing fedns could write to the host while following.
fn host_writes(host: &FakeCluster) -> u64 {
    host.writes() - host.requests("update", "leases") - host.requests("create", "leases")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_dns_but_writes_nothing_until_the_holder_stops_renewing() {
    if harness::Clusters::kubeconfigs_from_env().is_some() {
        eprintln!("skipping: this test fakes a lease holder on the harness");
        return;
    }
    let (host, member) = federation().await;
    let renewing = Arc::new(AtomicBool::new(true));
    hold(&host, "someone-else", 7);
    fake_holder(&host, "someone-else", renewing.clone());
    host.reset_requests();

    let server = replica(&host).await;
    answers(&server, G, "NoError A 10.0.0.1", Duration::from_secs(10)).await;
    // Well past a lease duration and several renewals: the Lease is someone else's throughout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder(&host), "someone-else");
    assert!(!leads(&server));
    assert_eq!(metric_leader(&server).await, "fedns_leader 0");
    assert!(
        server
            .admin_get("/status")
            .await
            .1
            .contains("leader:           false"),
        "status says it follows"
    );
    assert!(
        host.requests("get", "leases") >= 4,
        "it keeps reading the Lease"
    );
    assert_eq!(status(&host, "nginx"), Value::Null, "no status written");
    assert_eq!(host_writes(&host), 0, "{:?}", host.request_counts());
    assert_eq!(
        host.requests("update", "leases"),
        0,
        "a valid Lease is not taken"
    );

    // The holder stops renewing: within its lease duration plus a retry, fedns takes over and
    // writes what it had been holding back.
    renewing.store(false, Ordering::Relaxed);
    let stopped = Instant::now();
    let took = eventually(Duration::from_secs(5), async || leads(&server))
        .await
        .expect("fedns never took over the expired Lease");
    eprintln!("took over {took:?} after the holder stopped renewing");
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "not before expiry"
    );
    let me = identity(&server).await;
    assert_eq!(holder(&host), me);
    assert_eq!(lease(&host)["spec"]["leaseTransitions"], 8);
    assert_eq!(metric_leader(&server).await, "fedns_leader 1");
    eventually(Duration::from_secs(3), async || {
        status_ips(&host, "nginx") == ["10.0.0.1"]
            && host
                .get_json(SDR, "DNSEndpoint", Some("test"), "service-nginx")
                .is_some()
    })
    .await
    .unwrap_or_else(|| panic!("status not written: {}", status(&host, "nginx")));
    // The member's readiness, probed all along, is written too.
    eventually(Duration::from_secs(3), async || {
        host.get_json("core.kubefed.io/v1beta1", "KubeFedCluster", Some(NS), "c1")
            .is_some_and(|c| c["status"]["conditions"][0]["status"] == "True")
    })
    .await
    .expect("KubeFedCluster conditions written by the new leader");

    // Another holder appears (a split brain fixed by the API server): fedns steps down on its
    // next renewal and writes nothing more, though the answer changes.
    let renewing = Arc::new(AtomicBool::new(true));
    fake_holder(&host, "usurper", renewing.clone());
    eventually(Duration::from_secs(2), async || !leads(&server))
        .await
        .expect("fedns kept leading under another holder");
    let writes = host_writes(&host);
    service(&member, "nginx", "10.0.0.2");
    answers(&server, G, "NoError A 10.0.0.2", Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        status_ips(&host, "nginx"),
        ["10.0.0.1"],
        "stale, as it must be"
    );
    assert_eq!(host_writes(&host), writes, "{:?}", host.request_counts());
    // ...and once that holder is gone, fedns leads again and writes the change it saw.
    renewing.store(false, Ordering::Relaxed);
    eventually(Duration::from_secs(5), async || {
        status_ips(&host, "nginx") == ["10.0.0.2"]
    })
    .await
    .unwrap_or_else(|| panic!("status not rewritten: {}", status(&host, "nginx")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_writer_and_the_standby_takes_over_on_shutdown() {
    if harness::Clusters::kubeconfigs_from_env().is_some() {
        eprintln!("skipping: this test counts requests on the harness");
        return;
    }
    let (host, member) = federation().await;
    // A 4 s lease: a standby that leads within 2 s of the leader's shutdown did not wait for it
    // to expire (its last renewal was at most a retry period before).
    let (lease_duration, renew) = (Duration::from_secs(4), Duration::from_secs(3));
    let a = replica_with(&host, lease_duration, renew).await;
    let b = replica_with(&host, lease_duration, renew).await;
    for server in [&a, &b] {
        answers(server, G, "NoError A 10.0.0.1", Duration::from_secs(10)).await;
    }
    eventually(Duration::from_secs(3), async || leads(&a) || leads(&b))
        .await
        .expect("nobody leads");
    // Exactly one leads, and it is the Lease's holder, for several renewals.
    for _ in 0..6 {
        assert!(leads(&a) != leads(&b), "exactly one leader");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (leader, standby) = if leads(&a) { (a, b) } else { (b, a) };
    assert_eq!(holder(&host), identity(&leader).await);
    assert_ne!(identity(&leader).await, identity(&standby).await);
    assert_eq!(metric_leader(&leader).await, "fedns_leader 1");
    assert_eq!(metric_leader(&standby).await, "fedns_leader 0");
    eventually(Duration::from_secs(3), async || {
        status_ips(&host, "nginx") == ["10.0.0.1"]
    })
    .await
    .expect("first status written");

    // One change, one status write: two writers would patch twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    host.reset_requests();
    service(&member, "nginx", "10.0.0.2");
    for server in [&leader, &standby] {
        answers(server, G, "NoError A 10.0.0.2", Duration::from_secs(3)).await;
    }
    eventually(Duration::from_secs(3), async || {
        status_ips(&host, "nginx") == ["10.0.0.2"]
    })
    .await
    .expect("change written");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        host.requests(STATUS_WRITES.0, STATUS_WRITES.1),
        1,
        "{:?}",
        host.request_counts()
    );

    // The leader shuts down: it releases the Lease, so the standby takes over well within a
    // lease duration and writes status for a record created afterwards.
    let transitions = lease(&host)["spec"]["leaseTransitions"].as_i64().unwrap();
    let leader_id = identity(&leader).await;
    let stopped = Instant::now();
    leader.stop().await;
    assert_ne!(holder(&host), leader_id, "released on shutdown");
    eventually(Duration::from_secs(6), async || leads(&standby))
        .await
        .expect("the standby never took over");
    let took = stopped.elapsed();
    eprintln!("standby leads {took:?} after the leader began stopping");
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}: waited for expiry"
    );
    assert_eq!(holder(&host), identity(&standby).await);
    assert_eq!(
        lease(&host)["spec"]["leaseTransitions"].as_i64(),
        Some(transitions + 1)
    );
    service(&member, "web", "10.0.0.3");
    record(&host, "web");
    eventually(Duration::from_secs(3), async || {
        status_ips(&host, "web") == ["10.0.0.3"]
    })
    .await
    .unwrap_or_else(|| panic!("new record's status: {}", status(&host, "web")));
    standby.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_steps_down_within_the_renew_deadline() {
    if harness::Clusters::kubeconfigs_from_env().is_some() {
        eprintln!("skipping: this test partitions the host on the harness");
        return;
    }
    let (host, member) = federation().await;
    let server = replica(&host).await;
    eventually(Duration::from_secs(10), async || {
        leads(&server) && status_ips(&host, "nginx") == ["10.0.0.1"]
    })
    .await
    .expect("a lone replica leads and writes");

    // Requests hang from now on: renewals cannot succeed, and the leader must not wait for an
    // answer to stop leading. Its last renewal was at most a retry period (0.5 s) ago.
    host.partition(true);
    let cut = Instant::now();
    eventually(Duration::from_secs(3), async || !leads(&server))
        .await
        .expect("still leading without renewals");
    let took = cut.elapsed();
    eprintln!("stepped down {took:?} after the partition");
    assert!(
        took < Duration::from_secs(2),
        "renew deadline is 1.5 s, took {took:?}"
    );
    assert_eq!(metric_leader(&server).await, "fedns_leader 0");
    // DNS answers go on from the last good view.
    answers(&server, G, "NoError A 10.0.0.1", Duration::from_secs(1)).await;

    // Healed: the Lease is still ours by identity, so it is renewed at once, a new term starts,
    // and a change made meanwhile is written.
    service(&member, "nginx", "10.0.0.4");
    host.partition(false);
    eventually(Duration::from_secs(5), async || {
        leads(&server) && status_ips(&host, "nginx") == ["10.0.0.4"]
    })
    .await
    .unwrap_or_else(|| panic!("after healing: {}", status(&host, "nginx")));
    server.stop().await;
}
