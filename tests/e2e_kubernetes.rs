//! End to end through the Kubernetes API: 1 host + 3 member clusters (2 regions) on the harness,
//! or the real clusters named by `FEDNS_E2E_KUBECONFIGS` (host first, then members; failure
//! injection steps are skipped there). fedns runs in-process on 127.0.0.1:0.

mod common;
mod harness;

use std::time::{Duration, Instant};

use common::federation::{
    endpoints, federation, node, service, until, until_empty_relist_held, until_metric,
};
use common::{Server, apply, ask, namespace, summary};
use harness::Clusters;
use hickory_proto::rr::RecordType;
use kube::Api;
use serde_json::json;

use common::federation::{G, NS};
const US: &str = "nginx.test.galactic.svc.us.example.com.";
const US1: &str = "nginx.test.galactic.svc.us1.us.example.com.";
const EU1: &str = "nginx.test.galactic.svc.eu1.eu.example.com.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_end_to_end() {
    let Some(clusters) = Clusters::start_named("host", &["c1", "c2", "c3"]).await else {
        return;
    };
    let host = clusters.host.client().await;

    // Host: CRDs, the control-plane namespace, the Domain and the ServiceDNSRecord.
    federation(&host).await;

    // Members: c1 (us/us1) and c2 (us/us2) by node labels, c3 (eu/eu1) by KubeFedCluster status.
    let topo = [
        ("c1", "us1", "us"),
        ("c2", "us2", "us"),
        ("c3", "eu1", "eu"),
    ];
    for (i, (name, zone, region)) in topo.iter().enumerate() {
        let member = clusters.members[i].client().await;
        namespace(&member, "test").await;
        if *name != "c3" {
            node(&member, zone, region).await;
        }
        service(&member, &format!("10.0.0.{}", i + 1), true).await;
    }
    let mut config_members = Vec::new();
    for (i, (name, zone, region)) in topo.iter().enumerate() {
        let cluster = &clusters.members[i];
        match cluster.as_fake() {
            Some(fake) => {
                // KubeFedCluster + token Secret, as `kubefedctl join` leaves them.
                apply(
                    &host,
                    json!({
                        "apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": format!("{name}-token"), "namespace": NS},
                        "stringData": {"token": fake.token()},
                    }),
                )
                .await;
                let mut kfc = json!({
                    "apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {"apiEndpoint": fake.url(), "secretRef": {"name": format!("{name}-token")}},
                });
                if *name == "c3" {
                    kfc["status"] = json!({"conditions": [], "zones": [zone], "region": region});
                }
                apply(&host, kfc).await;
            }
            None => config_members.push(format!(
                "- {{name: {name}, context: {ctx}, kubeconfig: {path}{topo}}}",
                ctx = cluster.context(),
                path = cluster.kubeconfig_path().display(),
                topo = if *name == "c3" {
                    format!(", zones: [{zone}], region: {region}")
                } else {
                    String::new()
                },
            )),
        }
    }

    let config = tempfile::NamedTempFile::new().unwrap();
    let members_yaml = if config_members.is_empty() {
        String::new()
    } else {
        format!("members:\n{}\n", config_members.join("\n"))
    };
    std::fs::write(config.path(), members_yaml).unwrap();
    let host_kubeconfig = clusters.host.kubeconfig_path().to_owned();
    let host_context = clusters.host.context().to_owned();
    let server = Server::start_configured(
        |_, _| {},
        |args| {
            args.source = None;
            args.config = Some(config.path().to_owned());
            args.kubeconfig = Some(host_kubeconfig);
            args.context = Some(host_context);
            args.grace_period = Some(Duration::from_secs(2));
            args.probe_period = Some(Duration::from_millis(200));
            args.probe_timeout = Some(Duration::from_millis(300));
            args.probe_failure_threshold = Some(2);
            args.sync_timeout = Some(Duration::from_secs(20));
        },
    )
    .await;

    // Ready after the first full listing; then the spec's names answer.
    let started = Instant::now();
    while server.admin_get("/ready").await.0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(20), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("ready after {:?}", started.elapsed());
    for (name, want, limit) in [
        (G, "NoError A 10.0.0.1 A 10.0.0.2 A 10.0.0.3", 5),
        (US, "NoError A 10.0.0.1 A 10.0.0.2", 2),
        (US1, "NoError A 10.0.0.1", 2),
        (EU1, "NoError A 10.0.0.3", 2),
    ] {
        until(&server, name, Duration::from_secs(limit), |a| a == want).await;
    }

    // Unready endpoints in c1: its zone name becomes a CNAME to the region within a second.
    let c1 = clusters.members[0].client().await;
    endpoints(&c1, false).await;
    let took = until(&server, US1, Duration::from_secs(3), |a| {
        a.starts_with(&format!("NoError CNAME {US}"))
    })
    .await;
    eprintln!("endpoint change -> CNAME in {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // Status and DNSEndpoint on the host, KubeFed-shaped.
    let records: Api<kube::api::DynamicObject> = Api::namespaced_with(
        host.clone(),
        "test",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "multiclusterdns.kubefed.io",
            "v1alpha1",
            "ServiceDNSRecord",
        )),
    );
    let started = Instant::now();
    let status = loop {
        let sdr = records.get("nginx").await.unwrap();
        let status = sdr.data["status"].clone();
        if status["dns"].as_array().is_some_and(|d| d.len() == 3)
            && status["dns"][0]["loadBalancer"] == json!({})
        {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "status not written: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["domain"], "example.com");
    let clusters_in_status: Vec<&str> = status["dns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(clusters_in_status, ["c1", "c2", "c3"]);
    assert_eq!(
        status["dns"][1]["loadBalancer"]["ingress"][0]["ip"],
        "10.0.0.2"
    );
    assert_eq!(status["dns"][2]["region"], "eu");
    let endpoints_api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        host.clone(),
        "test",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "multiclusterdns.kubefed.io",
            "v1alpha1",
            "DNSEndpoint",
        )),
    );
    // The DNSEndpoint is written after the status: wait for the one without c1's address.
    let started = Instant::now();
    let dnsendpoint = loop {
        let e = endpoints_api.get("service-nginx").await.unwrap();
        let text = e.data["spec"]["endpoints"].to_string();
        if text.contains("CNAME") || started.elapsed() > Duration::from_secs(5) {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sdr_uid = records.get("nginx").await.unwrap().metadata.uid;
    let owners = dnsendpoint
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert_eq!(owners.len(), 1, "owned by its record");
    assert_eq!(owners[0].kind, "ServiceDNSRecord");
    assert_eq!(Some(owners[0].uid.clone()), sdr_uid);
    let rows: Vec<String> = dnsendpoint.data["spec"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["dnsName"].as_str().unwrap(),
                e["recordType"].as_str().unwrap(),
                e["targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    assert!(rows.contains(&"nginx.test.galactic.svc.us1.us.example.com CNAME nginx.test.galactic.svc.us.example.com".to_string()), "{rows:?}");
    assert!(
        rows.contains(&"nginx.test.galactic.svc.example.com A 10.0.0.2,10.0.0.3".to_string()),
        "{rows:?}"
    );

    // Events follow the record's Ready condition: its first write (answering) is a Normal event.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(host.clone(), "test");
    let started = Instant::now();
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some("RecordsServed")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("nginx")
        }) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no event: {:?}",
            list.items
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Members' topology is written into their KubeFedCluster status (c1's from its nodes).
    if clusters.members[0].as_fake().is_some() {
        let kfcs: Api<kube::api::DynamicObject> = Api::namespaced_with(
            host.clone(),
            NS,
            &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "core.kubefed.io",
                "v1beta1",
                "KubeFedCluster",
            )),
        );
        let started = Instant::now();
        loop {
            let c1 = kfcs.get("c1").await.unwrap();
            let status = &c1.data["status"];
            if status["region"] == "us" && status["zones"] == json!(["us1"]) {
                assert_eq!(status["conditions"][0]["type"], "Ready");
                assert_eq!(status["conditions"][0]["status"], "True");
                assert_eq!(status["topologySource"], "nodes");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "c1 status: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The topology fedns reported never overrides what the nodes say later: relabel c1's node.
    let c1_client = clusters.members[0].client().await;
    apply(
        &c1_client,
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-us1", "labels": {
                "topology.kubernetes.io/zone": "us9", "topology.kubernetes.io/region": "us"}},
        }),
    )
    .await;
    until(
        &server,
        "nginx.test.galactic.svc.us9.us.example.com.",
        Duration::from_secs(3),
        |a| a.starts_with(&format!("NoError CNAME {US}")),
    )
    .await;

    // Nodes without topology labels: the zones and region fedns reported are cleared.
    if clusters.members[0].as_fake().is_some() {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c1_client.clone());
        nodes
            .patch(
                "node-us1",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"labels": {
                    "topology.kubernetes.io/zone": null, "topology.kubernetes.io/region": null}}})),
            )
            .await
            .unwrap();
        let kfcs: Api<kube::api::DynamicObject> = Api::namespaced_with(
            host.clone(),
            NS,
            &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "core.kubefed.io",
                "v1beta1",
                "KubeFedCluster",
            )),
        );
        let started = Instant::now();
        loop {
            let status = kfcs.get("c1").await.unwrap().data["status"].clone();
            let zones_gone = status["zones"].as_array().is_none_or(|z| z.is_empty());
            if zones_gone && status["region"].is_null() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "c1 topology not cleared: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // fedns never writes to members.
    for m in &clusters.members {
        if let Some(fake) = m.as_fake() {
            let seeded_writes = fake.writes();
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(
                fake.writes(),
                seeded_writes,
                "no writes to member {}",
                m.name()
            );
        }
    }

    // 410 Gone (compaction) loses no records: wait until c2 has relisted its Services and
    // EndpointSlices and the engine has applied what came since, then check the answer.
    if let Some(c2) = clusters.members[1].controls("compact c2's watch history") {
        let lists = |c: &harness::FakeCluster| {
            (
                c.requests("list", "services"),
                c.requests("list", "endpointslices"),
            )
        };
        let before = lists(c2);
        let applied = programmed(&server).await;
        c2.compact();
        let started = Instant::now();
        while {
            let now = lists(c2);
            now.0 <= before.0 || now.1 <= before.1
        } {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "c2 never relisted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        until_metric(
            &server,
            "fedns_dns_programming_duration_seconds_count",
            &[],
            applied + 1.0,
            Duration::from_secs(5),
        )
        .await;
        let answer = summary(&ask(&mut server.udp_client().await, US, RecordType::A).await);
        assert_eq!(answer, "NoError A 10.0.0.2", "after the 410 relist");
    }
    // Services deleted while c2's watch was down: the relist is empty, which is held back (the
    // records stay) until a second listing 30 s later confirms it.
    if let Some(c2) = clusters.members[1].controls("empty c2's Services while it is down") {
        c2.empty_services_while_down().await;
        until_empty_relist_held(&server, "c2", "services").await;
        until(&server, US, Duration::from_secs(2), |a| {
            a == "NoError A 10.0.0.2"
        })
        .await;
    }

    let metrics = server.admin_get("/metrics").await.1;
    for name in [
        "fedns_member_last_sync_timestamp_seconds{cluster=\"c1\"}",
        "fedns_member_ready{cluster=\"c3\"} 1",
        "fedns_dns_programming_duration_seconds_count",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    if clusters.members[1].as_fake().is_some() {
        assert!(
            metrics.contains("fedns_watch_restarts_total{cluster=\"c2\""),
            "restarts counted"
        );
    }

    // A member down: answers unchanged during the grace period, withdrawn after it, back after.
    if let Some(c3) = clusters.members[2].controls("stop c3") {
        c3.stop().await;
        let down = Instant::now();
        tokio::time::sleep(Duration::from_millis(900)).await;
        until(&server, EU1, Duration::from_millis(200), |a| {
            a == "NoError A 10.0.0.3"
        })
        .await;
        until(&server, EU1, Duration::from_secs(5), |a| {
            a.starts_with("NoError CNAME")
        })
        .await;
        eprintln!("c3 withdrawn {:?} after it stopped", down.elapsed());
        assert!(
            down.elapsed() >= Duration::from_secs(2),
            "not before the grace period"
        );
        c3.restart().await;
        let back = until(&server, EU1, Duration::from_secs(10), |a| {
            a == "NoError A 10.0.0.3"
        })
        .await;
        eprintln!("c3 answers restored {back:?} after restart");
    }
    // The Domain goes: the record's status loses its domain and says why it has no answer.
    let domains: Api<kube::api::DynamicObject> = Api::namespaced_with(
        host.clone(),
        NS,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "multiclusterdns.kubefed.io",
            "v1alpha1",
            "Domain",
        )),
    );
    domains
        .delete("galactic", &Default::default())
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let status = records.get("nginx").await.unwrap().data["status"].clone();
        if status["conditions"][0]["reason"] == "DomainNotFound" {
            assert!(status.get("domain").is_none(), "stale domain: {status}");
            assert_eq!(status["conditions"][0]["status"], "False");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "status: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_member_is_trusted_through_its_ca_bundle_and_removal_withdraws_it() {
    if Clusters::kubeconfigs_from_env().is_some() {
        eprintln!("skipping: this test builds TLS members on the harness");
        return;
    }
    let host_cluster = harness::FakeCluster::start("host").await;
    let member = harness::FakeCluster::start_tls("secure").await;
    let host = host_cluster.client().await;
    federation(&host).await;
    let member_client = member.client().await;
    namespace(&member_client, "test").await;
    node(&member_client, "z1", "r1").await;
    service(&member_client, "10.0.0.7", true).await;

    apply(
        &host,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "secure-token", "namespace": NS},
            "stringData": {"token": member.token()},
        }),
    )
    .await;
    for (name, ca) in [("secure", member.ca_bundle()), ("no-ca", None)] {
        let mut spec = json!({"apiEndpoint": member.url(), "secretRef": {"name": "secure-token"}});
        if let Some(ca) = ca {
            spec["caBundle"] = json!(ca);
        }
        apply(
            &host,
            json!({
                "apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
                "metadata": {"name": name, "namespace": NS}, "spec": spec,
            }),
        )
        .await;
    }
    let kubeconfig = host_cluster.kubeconfig_path();
    let server = Server::start_configured(
        |_, _| {},
        |args| {
            args.source = None;
            args.kubeconfig = Some(kubeconfig);
            args.probe_period = Some(Duration::from_millis(200));
            args.probe_timeout = Some(Duration::from_millis(300));
            args.probe_failure_threshold = Some(2);
            args.sync_timeout = Some(Duration::from_secs(3));
        },
    )
    .await;
    until(&server, G, Duration::from_secs(10), |a| {
        a == "NoError A 10.0.0.7"
    })
    .await;
    // Without the CA the same server is not trusted: that member never becomes ready.
    let started = Instant::now();
    loop {
        let metrics = server.admin_get("/metrics").await.1;
        if metrics.contains("fedns_member_ready{cluster=\"no-ca\"} 0")
            && metrics.contains("fedns_member_ready{cluster=\"secure\"} 1")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "readiness: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Deleting the KubeFedCluster stops its watchers and withdraws its names.
    let kfcs: Api<kube::api::DynamicObject> = Api::namespaced_with(
        host.clone(),
        NS,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "core.kubefed.io",
            "v1beta1",
            "KubeFedCluster",
        )),
    );
    kfcs.delete("secure", &Default::default()).await.unwrap();
    until(&server, G, Duration::from_secs(5), |a| a == "NXDomain").await;
    until(
        &server,
        "nginx.test.galactic.svc.z1.r1.example.com.",
        Duration::from_secs(2),
        |a| a == "NXDomain",
    )
    .await;
    // ...and a Warning Event says why the record no longer answers.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(host.clone(), "test");
    let started = Instant::now();
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        if let Some(e) = list
            .items
            .iter()
            .find(|e| e.reason.as_deref() == Some("NoHealthyShard"))
        {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            assert!(e.note.as_deref().unwrap_or("").contains("no-ca"), "{e:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no warning: {:?}",
            list.items
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// How many engine batches have been applied so far.
async fn programmed(server: &Server) -> f64 {
    let text = server.admin_get("/metrics").await.1;
    common::federation::metric(&text, "fedns_dns_programming_duration_seconds_count", &[])
        .unwrap_or(0.0)
}
