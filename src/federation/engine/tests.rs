//! Engine tests: events in, DNS answers out through the real answer path.

use super::*;
use crate::dns::responder::{Limits, Transport, respond};
use crate::dns::wire::rtype;
use crate::federation::model::{
    EndpointsState, LoadBalancer, MemberKind, MemberObject, MemberObjectId, NodeTopology,
    ServiceState,
};
use crate::federation::naming;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

const G: &str = "nginx.test.galactic.svc.example.com.";
const US: &str = "nginx.test.galactic.svc.us.example.com.";
const US1: &str = "nginx.test.galactic.svc.us1.us.example.com.";
const EU1: &str = "nginx.test.galactic.svc.eu1.eu.example.com.";

/// A running engine with helpers to feed events and ask questions.
struct Fixture {
    engine: Engine,
    now: Instant,
    /// The wall clock serials are derived from; each flush is a second later.
    unix: u32,
}

impl Fixture {
    fn new() -> Self {
        Self::with_settings(Settings::default())
    }

    fn with_settings(settings: Settings) -> Self {
        Self::at(settings, 1_800_000_000)
    }

    /// A fixture whose wall clock starts at `unix`.
    fn at(settings: Settings, unix: u32) -> Self {
        let mut f = Self {
            engine: Engine::new(Arc::new(RecordStore::new()), settings),
            now: Instant::now(),
            unix,
        };
        f.domain(None);
        f.member("c1", "us", "us1");
        f.member("c2", "eu", "eu1");
        f.send(SourceEvent::ApplyFederation(
            FederationObject::ServiceRecord(crate::federation::records::tests::record("nginx")),
        ));
        f.send(SourceEvent::Synced);
        f
    }

    /// The Domain `galactic` (zone example.com) with a default strategy.
    fn domain(&mut self, default_strategy: Option<crate::federation::locality::Strategy>) {
        self.send(SourceEvent::ApplyFederation(FederationObject::Domain(
            DomainSpec {
                federation: "galactic".into(),
                namespace: "kube-federation-system".into(),
                zone: "example.com".into(),
                name_server: Some("ns1.example.com".into()),
                name_server_addresses: Vec::new(),
                default_strategy,
            },
        )));
    }

    fn send(&mut self, event: SourceEvent) {
        self.engine.apply(event, self.now);
        self.flush();
    }

    fn flush(&mut self) {
        self.unix += 1;
        self.engine.flush_at(self.now, self.unix);
    }

    fn member(&mut self, name: &str, region: &str, zone: &str) {
        self.send(SourceEvent::ApplyFederation(FederationObject::Member(
            MemberSpec {
                name: name.into(),
                zones: vec![zone.into()],
                region: Some(region.into()),
                ready: true,
            },
        )));
    }

    fn service(&mut self, cluster: &str, name: &str, ip: &str) {
        self.send(SourceEvent::ApplyMember(
            cluster.into(),
            MemberObject::Service(
                ObjectKey::new("test", name),
                ServiceState {
                    load_balancer: LoadBalancer {
                        ips: vec![ip.parse().unwrap()],
                        hostnames: vec![],
                    },
                },
            ),
        ));
    }

    /// `nginx` with an AWS-style hostname load balancer.
    fn service_with_hostname(&mut self, cluster: &str, host: &str) {
        self.send(SourceEvent::ApplyMember(
            cluster.into(),
            MemberObject::Service(
                ObjectKey::new("test", "nginx"),
                ServiceState {
                    load_balancer: LoadBalancer {
                        ips: vec![],
                        hostnames: vec![host.into()],
                    },
                },
            ),
        ));
    }

    fn endpoints(&mut self, cluster: &str, service: &str, ready: u32) {
        self.send(SourceEvent::ApplyMember(
            cluster.into(),
            MemberObject::EndpointSlice(
                ObjectKey::new("test", format!("{service}-abc")),
                EndpointsState {
                    service: service.into(),
                    ready,
                },
            ),
        ));
    }

    fn healthy(&mut self, cluster: &str, ip: &str) {
        self.service(cluster, "nginx", ip);
        self.endpoints(cluster, "nginx", 2);
    }

    fn ask(&self, name: &str, qtype: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        let mut out = Vec::new();
        respond(
            &q.to_vec().unwrap(),
            self.engine.store(),
            Transport::Tcp,
            &Limits::default(),
            &mut out,
        )
        .unwrap();
        Message::from_vec(&out).unwrap()
    }

    /// The answer as text: rcode and the final records.
    fn answer(&self, name: &str) -> String {
        let m = self.ask(name, RecordType::A);
        let mut parts = vec![format!("{:?}", m.metadata.response_code)];
        for r in &m.answers {
            match &r.data {
                RData::A(a) => parts.push(format!("A {a}")),
                RData::CNAME(c) => parts.push(format!("CNAME {}", c.0)),
                other => parts.push(format!("{other:?}")),
            }
        }
        parts.join(" ")
    }

    /// A zone file defining the global name as `A 192.0.2.1`: it beats the computed name.
    fn static_a_record_on_the_global_name(&mut self) {
        let set = StaticSet {
            rtype: rtype::A,
            ttl: 60,
            rdatas: vec![vec![192, 0, 2, 1]],
        };
        self.engine.set_static_zones(vec![static_zone(&[(G, set)])]);
        self.flush();
    }

    fn serial(&self) -> u32 {
        let m = self.ask("example.com.", RecordType::SOA);
        match &m.answers[0].data {
            RData::SOA(soa) => soa.serial,
            _ => panic!("no SOA"),
        }
    }
}

#[test]
fn healthy_service_answers_global_regional_and_zonal_names() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    assert_eq!(f.answer(G), "NoError A 10.20.30.1");
    assert_eq!(f.answer(US), "NoError A 10.20.30.1");
    assert_eq!(f.answer(US1), "NoError A 10.20.30.1");
}

#[test]
fn unready_member_falls_back_to_region_then_global_by_cname() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    f.healthy("c2", "10.20.30.2");
    f.endpoints("c2", "nginx", 0);
    assert_eq!(
        f.answer(EU1),
        format!("NoError CNAME nginx.test.galactic.svc.eu.example.com. CNAME {G} A 10.20.30.1")
    );
}

#[test]
fn no_healthy_shard_ends_the_chain_in_nxdomain() {
    let mut f = Fixture::new();
    f.service("c1", "nginx", "10.20.30.1");
    assert_eq!(f.answer(US1), format!("NXDomain CNAME {US} CNAME {G}"));
}

#[test]
fn service_deleted_everywhere_removes_every_name_and_empty_non_terminal() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    f.send(SourceEvent::DeleteFederation(
        FederationObjectId::ServiceRecord(ObjectKey::new("test", "nginx")),
    ));
    assert_eq!(f.answer(G), "NXDomain");
    assert_eq!(f.answer(US1), "NXDomain");
    assert_eq!(f.answer("test.galactic.svc.example.com."), "NXDomain");
    assert_eq!(f.engine.store().len(), 1, "only the apex is left");
}

#[test]
fn empty_non_terminals_answer_nodata() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    for ent in [
        "svc.example.com.",
        "galactic.svc.example.com.",
        "test.galactic.svc.example.com.",
        "us.example.com.",
        "us1.us.example.com.",
    ] {
        assert_eq!(f.answer(ent), "NoError", "{ent}");
    }
}

#[test]
fn relist_of_one_cluster_replaces_only_that_cluster() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    f.healthy("c2", "10.20.30.2");
    f.send(SourceEvent::ResetMember("c2".into(), vec![]));
    assert_eq!(f.answer(G), "NoError A 10.20.30.1");
    assert_eq!(f.answer(US1), "NoError A 10.20.30.1");
}

#[test]
fn serial_increases_on_every_change_and_not_without_one() {
    let mut f = Fixture::new();
    let s0 = f.serial();
    f.healthy("c1", "10.20.30.1");
    let s1 = f.serial();
    assert!(s1 > s0);
    f.send(SourceEvent::ApplyMember(
        "c1".into(),
        MemberObject::Node("n1".into(), Default::default()),
    ));
    assert_eq!(f.serial(), s1, "a node without topology changes nothing");
}

#[test]
fn unreachable_member_keeps_targets_during_grace_then_withdraws_them() {
    let mut f = Fixture::with_settings(Settings {
        grace: Duration::from_secs(30),
        ..Settings::default()
    });
    f.healthy("c1", "10.20.30.1");
    f.healthy("c2", "10.20.30.2");
    f.send(SourceEvent::MemberReachable("c1".into(), false));
    assert_eq!(f.answer(US1), "NoError A 10.20.30.1");
    let deadline = f.engine.next_deadline().unwrap();
    f.now = deadline;
    f.engine.expire(f.now);
    f.flush();
    assert!(f.answer(US1).starts_with("NoError CNAME"));
    assert_eq!(f.engine.next_deadline(), None, "no wake-up once withdrawn");
    f.send(SourceEvent::MemberReachable("c1".into(), true));
    assert_eq!(f.answer(US1), "NoError A 10.20.30.1");
}

#[test]
fn zero_grace_withdraws_at_once() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    f.healthy("c2", "10.20.30.2");
    f.send(SourceEvent::MemberReachable("c1".into(), false));
    assert!(f.answer(US1).starts_with("NoError CNAME"));
    assert_eq!(f.answer(G), "NoError A 10.20.30.2");
}

#[test]
fn endpoints_fallback_is_used_when_no_slice_exists() {
    let mut f = Fixture::new();
    f.service("c1", "nginx", "10.20.30.1");
    f.send(SourceEvent::ApplyMember(
        "c1".into(),
        MemberObject::Endpoints(
            ObjectKey::new("test", "nginx"),
            EndpointsState {
                service: "nginx".into(),
                ready: 1,
            },
        ),
    ));
    assert_eq!(f.answer(G), "NoError A 10.20.30.1");
}

#[test]
fn node_labels_give_topology_when_the_member_declares_none() {
    let mut f = Fixture::new();
    f.send(SourceEvent::ApplyFederation(FederationObject::Member(
        MemberSpec {
            name: "c3".into(),
            ready: true,
            ..Default::default()
        },
    )));
    f.send(SourceEvent::ApplyMember(
        "c3".into(),
        MemberObject::Node(
            "n1".into(),
            NodeTopology {
                zone: Some("ap1".into()),
                region: Some("ap".into()),
            },
        ),
    ));
    f.healthy("c3", "10.20.30.3");
    assert_eq!(
        f.answer("nginx.test.galactic.svc.ap1.ap.example.com."),
        "NoError A 10.20.30.3"
    );
}

fn static_zone(names: &[(&str, StaticSet)]) -> StaticZone {
    let apex = naming::parse_dotted("z", "example.com").unwrap();
    let mut map: BTreeMap<Name, Vec<StaticSet>> = BTreeMap::new();
    for (n, set) in names {
        map.entry(naming::parse_dotted("n", n).unwrap())
            .or_default()
            .push(set.clone());
    }
    StaticZone {
        soa: SoaFields {
            mname: naming::parse_dotted("n", "ns1.example.com").unwrap(),
            rname: naming::parse_dotted("n", "admin.example.com").unwrap(),
            refresh: 1,
            retry: 2,
            expire: 3,
            minimum: 10,
            ttl: 60,
        },
        serial: 42,
        apex,
        names: map,
        error: None,
    }
}

#[test]
fn static_name_wins_over_a_computed_one_and_the_conflict_is_reported() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    f.static_a_record_on_the_global_name();
    assert_eq!(f.answer(G), "NoError A 192.0.2.1");
    assert_eq!(f.answer(US1), "NoError A 10.20.30.1");
    let conflicts = f.engine.conflicts();
    assert_eq!(conflicts.len(), 1);
    assert!(matches!(conflicts[0].loser, Owner::Service(_)));
    // Removing the static zone gives the name back to the service.
    f.engine.set_static_zones(vec![]);
    f.flush();
    assert_eq!(f.answer(G), "NoError A 10.20.30.1");
}

#[test]
fn static_vanity_cname_into_the_federation_is_followed() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    let mut rdata = Vec::new();
    crate::dns::store::push_name(&mut rdata, &naming::parse_dotted("n", G).unwrap());
    let set = StaticSet {
        rtype: rtype::CNAME,
        ttl: 60,
        rdatas: vec![rdata],
    };
    f.engine
        .set_static_zones(vec![static_zone(&[("www.example.com", set)])]);
    f.flush();
    assert_eq!(
        f.answer("www.example.com."),
        format!("NoError CNAME {G} A 10.20.30.1")
    );
    let m = f.ask("example.com.", RecordType::SOA);
    let RData::SOA(soa) = &m.answers[0].data else {
        panic!("no SOA")
    };
    assert_eq!(
        soa.rname.to_ascii(),
        "admin.example.com.",
        "the zone file's SOA wins"
    );
}

#[test]
fn static_only_zone_starts_at_the_file_serial() {
    let mut f = Fixture::new();
    f.send(SourceEvent::DeleteFederation(FederationObjectId::Domain(
        "galactic".into(),
    )));
    f.engine.set_static_zones(vec![static_zone(&[])]);
    f.flush();
    assert_eq!(f.serial(), 42);
}

#[test]
fn domain_removal_withdraws_the_zone() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    f.send(SourceEvent::DeleteFederation(FederationObjectId::Domain(
        "galactic".into(),
    )));
    assert_eq!(f.answer(G), "Refused");
    assert!(f.engine.store().is_empty());
}

#[test]
fn record_with_unknown_domain_is_reported_not_silently_dropped() {
    let mut f = Fixture::new();
    let mut rec = crate::federation::records::tests::record("web");
    rec.domain_ref = "nope".into();
    f.send(SourceEvent::ApplyFederation(
        FederationObject::ServiceRecord(rec),
    ));
    let problems = f.engine.problems();
    let p = &problems[&Owner::Service(ObjectKey::new("test", "web"))];
    assert!(p[0].contains("no Domain"), "{p:?}");
}

#[test]
fn explain_names_the_owner_and_each_shard() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    f.service("c2", "nginx", "10.20.30.2");
    let e = f.engine.explain(G, f.now);
    assert!(matches!(e.served, Some((Owner::Service(_), _))));
    let shards = e.computed.unwrap().shards;
    assert_eq!(shards.len(), 2);
    assert_eq!(
        shards[1].health,
        crate::federation::records::ShardHealth::NoReadyEndpoints
    );
}

#[test]
fn ingress_host_inside_a_zone_is_served_and_outside_is_reported() {
    let mut f = Fixture::new();
    f.send(SourceEvent::ApplyFederation(
        FederationObject::IngressRecord(IngressRecordSpec {
            key: ObjectKey::new("test", "web"),
            hosts: vec!["web.example.com".into(), "web.other.org".into()],
            record_ttl: 0,
            uid: None,
        }),
    ));
    f.send(SourceEvent::ApplyMember(
        "c1".into(),
        MemberObject::Ingress(
            ObjectKey::new("test", "web"),
            LoadBalancer {
                ips: vec!["10.9.9.9".parse().unwrap()],
                hostnames: vec![],
            },
        ),
    ));
    assert_eq!(f.answer("web.example.com."), "NoError A 10.9.9.9");
    let p = &f.engine.problems()[&Owner::Ingress(ObjectKey::new("test", "web"))];
    assert!(p[0].contains("outside every served zone"));
}

#[test]
fn nxdomain_carries_soa_with_negative_ttl() {
    let f = Fixture::new();
    let m = f.ask("nothing.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].ttl, 30);
}

#[test]
fn hostnames_are_tracked_as_services_come_and_go() {
    let mut f = Fixture::new();
    f.service_with_hostname("c1", "a.elb.example");
    assert_eq!(
        f.engine.hostnames().into_iter().collect::<Vec<_>>(),
        ["a.elb.example"]
    );
    f.service_with_hostname("c1", "b.elb.example");
    assert_eq!(
        f.engine.hostnames().into_iter().collect::<Vec<_>>(),
        ["b.elb.example"]
    );
    f.send(SourceEvent::DeleteMember(
        "c1".into(),
        MemberObjectId::Service(ObjectKey::new("test", "nginx")),
    ));
    assert!(f.engine.hostnames().is_empty());
}

#[test]
fn resolved_hostname_makes_the_shard_healthy() {
    let mut f = Fixture::new();
    f.service_with_hostname("c1", "a.elb.example");
    f.endpoints("c1", "nginx", 1);
    assert_eq!(f.answer(G), "NXDomain");
    f.engine.set_host(
        "a.elb.example".into(),
        Some(ResolvedHost {
            addrs: vec!["192.0.2.8".parse().unwrap()],
            ttl: 60,
        }),
    );
    f.flush();
    assert_eq!(f.answer(G), "NoError A 192.0.2.8");
    // A failed re-resolution keeps the last good set.
    f.engine.set_host("a.elb.example".into(), None);
    f.flush();
    assert_eq!(f.answer(G), "NoError A 192.0.2.8");
}

#[test]
fn synced_is_published_only_with_the_records_it_covers() {
    let mut engine = Engine::new(Arc::new(RecordStore::new()), Settings::default());
    let now = Instant::now();
    engine.apply(SourceEvent::Synced, now);
    assert!(!engine.store().is_synced(), "not before the flush");
    engine.flush(now);
    assert!(engine.store().is_synced());
}

/// The first load of many records is computed in parallel batches (with two cores or more) and
/// claimed in order: every record gets its own names and data, none another's.
#[test]
fn a_large_first_load_gives_every_record_its_own_answer() {
    const RECORDS: usize = 1_500;
    let mut f = Fixture {
        engine: Engine::new(Arc::new(RecordStore::new()), Settings::default()),
        now: Instant::now(),
        unix: 1_800_000_000,
    };
    f.domain(None);
    f.member("c1", "us", "us1");
    f.member("c2", "eu", "eu1");
    let ip = |i: usize| format!("10.{}.{}.1", i / 256, i % 256);
    for i in 0..RECORDS {
        let name = format!("svc-{i}");
        let record = crate::federation::records::tests::record(&name);
        f.engine.apply(
            SourceEvent::ApplyFederation(FederationObject::ServiceRecord(record)),
            f.now,
        );
        let cluster = ["c1", "c2"][i % 2];
        let service = MemberObject::Service(
            ObjectKey::new("test", &name),
            ServiceState {
                load_balancer: LoadBalancer {
                    ips: vec![ip(i).parse().unwrap()],
                    hostnames: vec![],
                },
            },
        );
        let slice = MemberObject::EndpointSlice(
            ObjectKey::new("test", format!("{name}-abc")),
            EndpointsState {
                service: name.clone(),
                ready: 1,
            },
        );
        for object in [service, slice] {
            f.engine
                .apply(SourceEvent::ApplyMember(cluster.into(), object), f.now);
        }
    }
    f.engine.apply(SourceEvent::Synced, f.now);
    assert!(!f.engine.store().is_synced());
    f.flush();
    assert!(f.engine.store().is_synced());
    for i in (0..RECORDS).step_by(7) {
        let global = format!("svc-{i}.test.galactic.svc.example.com.");
        assert_eq!(
            f.answer(&global),
            format!("NoError A {}", ip(i)),
            "{global}"
        );
        let served = f
            .engine
            .explain(&global, f.now)
            .served
            .map(|(owner, _)| owner);
        let owner = Owner::Service(ObjectKey::new("test", format!("svc-{i}")));
        assert_eq!(served, Some(owner), "{global}");
        let region = ["us", "eu"][i % 2];
        let regional = format!("svc-{i}.test.galactic.svc.{region}.example.com.");
        assert_eq!(f.answer(&regional), format!("NoError A {}", ip(i)));
    }
    assert_eq!(f.engine.counts().service_records, RECORDS);
}

/// A Service with several EndpointSlices is healthy while any of them has a ready endpoint; each
/// slice's update and deletion counts on its own.
#[test]
fn a_service_is_healthy_while_any_of_its_slices_has_ready_endpoints() {
    let mut f = Fixture::new();
    f.service("c1", "nginx", "10.20.30.1");
    let slice = |f: &mut Fixture, name: &str, ready: u32| {
        f.send(SourceEvent::ApplyMember(
            "c1".into(),
            MemberObject::EndpointSlice(
                ObjectKey::new("test", name),
                EndpointsState {
                    service: "nginx".into(),
                    ready,
                },
            ),
        ))
    };
    slice(&mut f, "nginx-a", 0);
    slice(&mut f, "nginx-b", 2);
    assert_eq!(f.answer(G), "NoError A 10.20.30.1");
    slice(&mut f, "nginx-a", 0);
    assert_eq!(
        f.answer(G),
        "NoError A 10.20.30.1",
        "nginx-b is still ready"
    );
    slice(&mut f, "nginx-b", 0);
    assert_eq!(f.answer(G), "NXDomain", "no slice has a ready endpoint");
    slice(&mut f, "nginx-a", 1);
    assert_eq!(f.answer(G), "NoError A 10.20.30.1");
    f.send(SourceEvent::DeleteMember(
        "c1".into(),
        MemberObjectId::EndpointSlice(ObjectKey::new("test", "nginx-a")),
    ));
    assert_eq!(f.answer(G), "NXDomain", "the ready slice is gone");
    slice(&mut f, "nginx-b", 3);
    assert_eq!(f.answer(G), "NoError A 10.20.30.1");
}

#[test]
fn relist_of_one_kind_replaces_only_that_kind() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    // Endpoints relisted (say after 410 Gone) without the slice: the Service stays.
    f.send(SourceEvent::ResetMemberKind(
        "c1".into(),
        MemberKind::EndpointSlice,
        vec![MemberObject::EndpointSlice(
            ObjectKey::new("test", "nginx-new"),
            EndpointsState {
                service: "nginx".into(),
                ready: 0,
            },
        )],
    ));
    assert_eq!(f.answer(G), "NXDomain", "the old ready slice is gone");
    f.send(SourceEvent::ResetMemberKind(
        "c1".into(),
        MemberKind::EndpointSlice,
        vec![MemberObject::EndpointSlice(
            ObjectKey::new("test", "nginx-new"),
            EndpointsState {
                service: "nginx".into(),
                ready: 3,
            },
        )],
    ));
    assert_eq!(
        f.answer(G),
        "NoError A 10.20.30.1",
        "service kept across the relist"
    );
}

#[test]
fn relist_of_one_federation_kind_keeps_the_other_kinds() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    f.send(SourceEvent::ResetFederationKind(
        crate::federation::model::FederationKind::IngressRecord,
        vec![],
    ));
    assert_eq!(
        f.answer(G),
        "NoError A 10.20.30.1",
        "records and domains untouched"
    );
    f.send(SourceEvent::ResetFederationKind(
        crate::federation::model::FederationKind::ServiceRecord,
        vec![],
    ));
    assert_eq!(f.answer(G), "NXDomain", "the record was not relisted");
}

fn stamp() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-01-01T00:00:00Z".parse().unwrap())
}

#[test]
fn recomputed_records_are_handed_to_the_status_writer_once() {
    let mut f = Fixture::new();
    f.engine.take_status_dirty();
    f.healthy("c1", "10.20.30.1");
    let dirty = f.engine.take_status_dirty();
    assert_eq!(dirty, [Owner::Service(ObjectKey::new("test", "nginx"))]);
    assert!(f.engine.take_status_dirty().is_empty());
    let out = f.engine.outputs(&dirty[0], f.now, stamp()).unwrap();
    assert_eq!(out.status["domain"], "example.com");
    assert_eq!(out.status["dns"][0]["cluster"], "c1");
    assert_eq!(out.status["conditions"][0]["status"], "True");
    assert!(
        out.endpoint
            .endpoints
            .iter()
            .any(|e| e.dns_name == G.trim_end_matches('.'))
    );
}

#[test]
fn a_deleted_record_has_no_outputs_and_a_lost_name_is_a_condition() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    f.static_a_record_on_the_global_name();
    let owner = Owner::Service(ObjectKey::new("test", "nginx"));
    let out = f.engine.outputs(&owner, f.now, stamp()).unwrap();
    assert_eq!(out.status["conditions"][0]["reason"], "NameConflict");
    f.send(SourceEvent::DeleteFederation(
        FederationObjectId::ServiceRecord(ObjectKey::new("test", "nginx")),
    ));
    assert!(f.engine.outputs(&owner, f.now, stamp()).is_none());
}

/// A fixture whose clients in 192.0.2.0/24 are in `us` and in 198.51.100.0/24 in `eu`, with the
/// Domain's default strategy `nearest`.
fn nearest_fixture() -> Fixture {
    use crate::federation::locality::{ClientNetwork, LocationTable, Strategy};
    let row = |network: &str, region: &str| ClientNetwork {
        network: network.into(),
        region: region.into(),
        zone: None,
    };
    let table = LocationTable::new(
        &[row("192.0.2.0/24", "us"), row("198.51.100.0/24", "eu")],
        Default::default(),
    )
    .unwrap();
    let mut f = Fixture::with_settings(Settings {
        locality: Arc::new(table),
        ..Settings::default()
    });
    f.domain(Some(Strategy::Nearest));
    f
}

impl Fixture {
    /// The A records `client` gets for `name`, as text.
    fn answer_for(&self, name: &str, client: &str) -> String {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let limits = Limits {
            locality: Some(self.engine.settings.locality.clone()),
            ..Limits::default()
        };
        let mut out = Vec::new();
        crate::dns::responder::respond_from(
            &q.to_vec().unwrap(),
            self.engine.store(),
            Transport::Udp,
            &limits,
            Some(client.parse().unwrap()),
            &mut out,
        )
        .unwrap();
        let m = Message::from_vec(&out).unwrap();
        let addrs: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        addrs.join(" ")
    }
}

#[test]
fn the_domains_default_strategy_answers_each_client_its_region_and_follows_health() {
    let mut f = nearest_fixture();
    f.healthy("c1", "10.20.30.1");
    f.healthy("c2", "10.20.30.2");
    assert_eq!(f.answer_for(G, "192.0.2.9"), "10.20.30.1");
    assert_eq!(f.answer_for(G, "198.51.100.9"), "10.20.30.2");
    assert_eq!(f.answer_for(G, "203.0.113.9"), "10.20.30.1 10.20.30.2");
    // Every other reader sees the `all` set.
    let key = naming::wire_key(&naming::parse_dotted("n", G).unwrap());
    let all = f.engine.store().with_entry(&key, |e| {
        crate::dns::store::sets(e)
            .map(|s| (s.rtype, s.count))
            .collect::<Vec<_>>()
    });
    assert_eq!(all, Some(vec![(rtype::A, 2)]));
    // eu's cluster turns unhealthy: eu clients get every healthy cluster (no preference set).
    f.endpoints("c2", "nginx", 0);
    assert_eq!(f.answer_for(G, "198.51.100.9"), "10.20.30.1");
    let e = f.engine.explain_for(G, Some("198.51.100.9"), f.now);
    let text = crate::federation::explain::render(&e);
    assert!(
        text.contains("location: region eu (clientNetworks 198.51.100.0/24; ECS scope /24)"),
        "{text}"
    );
    assert!(text.contains("strategy: nearest -> all"), "{text}");
    assert!(
        text.contains("out c2               unhealthy: no ready endpoints"),
        "{text}"
    );
    // Regional names are not affected.
    assert_eq!(f.answer_for(US, "198.51.100.9"), "10.20.30.1");
}

fn soa_serial_of(f: &Fixture, zone: &str) -> u32 {
    let m = f.ask(zone, RecordType::SOA);
    match &m.answers[0].data {
        RData::SOA(soa) => soa.serial,
        _ => panic!("no SOA for {zone}"),
    }
}

/// A static-only zone `static.test.` with serial 42 and one A record.
fn static_only_zone() -> StaticZone {
    let mut zone = static_zone(&[]);
    zone.apex = naming::parse_dotted("z", "static.test").unwrap();
    zone.names.insert(
        naming::parse_dotted("n", "www.static.test").unwrap(),
        vec![StaticSet {
            rtype: rtype::A,
            ttl: 60,
            rdatas: vec![vec![192, 0, 2, 7]],
        }],
    );
    zone
}

#[test]
fn a_static_zone_keeps_its_file_serial_while_other_zones_change() {
    let mut f = Fixture::new();
    f.engine.set_static_zones(vec![static_only_zone()]);
    f.flush();
    assert_eq!(soa_serial_of(&f, "static.test."), 42);
    let before = f.serial();
    f.healthy("c1", "10.20.30.1");
    // A Domain change rebuilds every zone; the static zone's content is unchanged.
    f.send(SourceEvent::ApplyFederation(FederationObject::Domain(
        DomainSpec {
            federation: "galactic".into(),
            namespace: "kube-federation-system".into(),
            zone: "example.com".into(),
            name_server: Some("ns2.example.com".into()),
            name_server_addresses: vec![],
            default_strategy: None,
        },
    )));
    assert!(serial_gt(f.serial(), before), "the Domain zone changed");
    assert_eq!(soa_serial_of(&f, "static.test."), 42);
    // Its own content changing (a new file with a new serial) gives the file's serial.
    let mut edited = static_only_zone();
    edited.serial = 43;
    edited.names.values_mut().next().unwrap()[0].rdatas = vec![vec![192, 0, 2, 8]];
    f.engine.set_static_zones(vec![edited]);
    f.flush();
    assert_eq!(soa_serial_of(&f, "static.test."), 43);
}

#[test]
fn serials_never_pass_the_clock_so_a_restart_never_takes_them_back() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    let clock = f.unix + 1;
    // A burst of changes within one second: content is served at once, the serial moves once.
    for i in 0..20 {
        f.engine.apply(
            SourceEvent::ApplyMember(
                "c1".into(),
                MemberObject::Service(
                    ObjectKey::new("test", "nginx"),
                    ServiceState {
                        load_balancer: LoadBalancer {
                            ips: vec![format!("10.0.0.{}", i + 1).parse().unwrap()],
                            hostnames: vec![],
                        },
                    },
                ),
            ),
            f.now,
        );
        f.engine.flush_at(f.now, clock);
    }
    let serial = f.serial();
    assert!(
        !serial_gt(serial, clock),
        "{serial} is past the clock {clock}"
    );
    // A restart (the clock has moved on by at least a second) starts at the clock: not behind
    // what was served.
    let restarted = Fixture::at(Settings::default(), clock);
    assert!(
        serial_gt(restarted.serial(), serial),
        "{serial} then {} after a restart",
        restarted.serial()
    );
}

#[test]
fn a_change_within_the_second_is_numbered_in_the_next() {
    let mut f = Fixture::new();
    let clock = f.unix;
    f.healthy("c1", "10.20.30.1");
    let first = f.serial();
    f.engine.apply(
        SourceEvent::ApplyMember(
            "c1".into(),
            MemberObject::Service(
                ObjectKey::new("test", "nginx"),
                ServiceState {
                    load_balancer: LoadBalancer {
                        ips: vec!["10.9.9.9".parse().unwrap()],
                        hostnames: vec![],
                    },
                },
            ),
        ),
        f.now,
    );
    f.engine.flush_at(f.now, f.unix);
    assert_eq!(f.serial(), first, "same second: not numbered yet");
    assert!(f.engine.has_pending() && f.engine.next_deadline().is_some());
    f.engine.flush_at(f.now, f.unix + 1);
    assert!(serial_gt(f.serial(), first));
    assert!(!f.engine.has_pending());
    assert!(clock > 0);
}

fn domain_with_name_server(ns: &str, addresses: &[&str]) -> SourceEvent {
    SourceEvent::ApplyFederation(FederationObject::Domain(DomainSpec {
        federation: "galactic".into(),
        namespace: "kube-federation-system".into(),
        zone: "example.com".into(),
        name_server: Some(ns.into()),
        name_server_addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        default_strategy: None,
    }))
}

#[test]
fn in_zone_name_server_addresses_resolve_and_go_with_ns_answers() {
    let mut f = Fixture::new();
    let apex_owner = Owner::Apex("example.com.".into());
    assert!(
        f.engine.problems()[&apex_owner][0].contains("ns1.example.com."),
        "an in-zone name server without an address is a problem"
    );
    f.send(domain_with_name_server(
        "ns1.example.com",
        &["192.0.2.53", "2001:db8::53"],
    ));
    assert!(!f.engine.problems().contains_key(&apex_owner));
    assert_eq!(f.answer("ns1.example.com."), "NoError A 192.0.2.53");
    let m = f.ask("ns1.example.com.", RecordType::AAAA);
    assert_eq!(m.answers.len(), 1);
    let m = f.ask("example.com.", RecordType::NS);
    assert_eq!(m.answers.len(), 1);
    let extra: Vec<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    assert_eq!(
        extra,
        [
            "ns1.example.com. 192.0.2.53",
            "ns1.example.com. 2001:db8::53"
        ]
    );
    // A name server outside the zone needs no address here, and gets none.
    f.send(domain_with_name_server("ns.elsewhere.net", &["192.0.2.53"]));
    assert!(!f.engine.problems().contains_key(&apex_owner));
    assert!(f.ask("example.com.", RecordType::NS).additionals.is_empty());
    assert_eq!(f.answer("ns1.example.com."), "NXDomain");
}

#[test]
fn explain_of_a_zone_apex_gives_its_serial_and_other_names_do_not() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    let e = f.engine.explain("example.com.", f.now);
    assert_eq!(e.apex.map(|a| a.serial), Some(f.serial()));
    assert_eq!(f.engine.explain(G, f.now).apex, None);
    let text = crate::federation::explain::render(&f.engine.explain("Example.COM", f.now));
    assert!(
        text.contains(&format!("serial: {}\n", f.serial())),
        "{text}"
    );
}

/// Every name keeps one [`NameState`]: at 260,000 names each byte of it is 260 KB.
#[test]
fn a_name_state_stays_small() {
    let size = std::mem::size_of::<NameState>();
    assert!(size <= 32, "NameState is {size} bytes");
}

/// A name with one claimant keeps no copy of its entry: the store's is the only one.
#[test]
fn a_single_claimant_keeps_no_copy_of_its_entry() {
    let mut f = Fixture::new();
    f.healthy("c1", "10.20.30.1");
    assert_eq!(f.answer(G), "NoError A 10.20.30.1");
    let states: Vec<_> = f.engine.names.values().collect();
    assert!(states.iter().any(|s| s.published));
    for state in states {
        assert!(
            !matches!(state.claimants, Claimants::Many(_)),
            "{state:?} keeps entries for one claimant"
        );
    }
}

/// Two IngressDNSRecords claiming one host: the first owner is served, the other's latest data
/// is kept and served as soon as the first goes, and each change reaches the answer only when it
/// is the served owner's.
#[test]
fn a_contested_name_serves_the_first_owner_and_falls_to_the_next_with_its_latest_data() {
    const WEB: &str = "web.example.com.";
    let mut f = Fixture::new();
    let record = |f: &mut Fixture, name: &str| {
        f.send(SourceEvent::ApplyFederation(
            FederationObject::IngressRecord(IngressRecordSpec {
                key: ObjectKey::new("test", name),
                hosts: vec!["web.example.com".into()],
                record_ttl: 0,
                uid: None,
            }),
        ))
    };
    let address = |f: &mut Fixture, name: &str, ip: &str| {
        f.send(SourceEvent::ApplyMember(
            "c1".into(),
            MemberObject::Ingress(
                ObjectKey::new("test", name),
                LoadBalancer {
                    ips: vec![ip.parse().unwrap()],
                    hostnames: vec![],
                },
            ),
        ))
    };
    let delete = |f: &mut Fixture, name: &str| {
        f.send(SourceEvent::DeleteFederation(
            FederationObjectId::IngressRecord(ObjectKey::new("test", name)),
        ))
    };
    let kept_copies = |f: &Fixture| {
        f.engine
            .names
            .values()
            .filter(|s| matches!(s.claimants, Claimants::Many(_)))
            .count()
    };
    record(&mut f, "a");
    address(&mut f, "a", "10.0.0.1");
    record(&mut f, "b");
    address(&mut f, "b", "10.0.0.2");
    assert_eq!(f.answer(WEB), "NoError A 10.0.0.1");
    assert_eq!(f.engine.conflicts().len(), 1);
    assert_eq!(kept_copies(&f), 1);

    address(&mut f, "b", "10.0.0.3");
    assert_eq!(
        f.answer(WEB),
        "NoError A 10.0.0.1",
        "the loser's change is not served"
    );
    address(&mut f, "a", "10.0.0.4");
    assert_eq!(
        f.answer(WEB),
        "NoError A 10.0.0.4",
        "the winner's change is"
    );

    delete(&mut f, "a");
    assert_eq!(
        f.answer(WEB),
        "NoError A 10.0.0.3",
        "the loser's latest data"
    );
    assert!(f.engine.conflicts().is_empty());
    assert_eq!(
        kept_copies(&f),
        0,
        "one claimant left: the store's entry is the only copy"
    );
    let e = f.engine.explain(WEB, f.now);
    assert_eq!(
        e.served.map(|(owner, _)| owner),
        Some(Owner::Ingress(ObjectKey::new("test", "b")))
    );

    record(&mut f, "a");
    assert_eq!(
        f.answer(WEB),
        "NoError A 10.0.0.4",
        "the first owner takes it back"
    );
    assert_eq!(f.engine.conflicts().len(), 1);
    delete(&mut f, "b");
    assert_eq!(f.answer(WEB), "NoError A 10.0.0.4");
    assert_eq!(kept_copies(&f), 0);
    delete(&mut f, "a");
    assert_eq!(f.answer(WEB), "NXDomain");
    assert!(f.engine.names.is_empty() || !f.engine.names.keys().any(|k| key_to_text(k) == WEB));
}
