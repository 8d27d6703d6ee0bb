//! The answer path allocates nothing once its output buffer has grown: measured with a counting
//! global allocator (this test binary only).

use std::sync::Arc;
use std::time::Instant;

use fedns::dns::responder::{Limits, Transport, respond};
use fedns::dns::rrl::{Action, RateLimiter, RrlSettings};
use fedns::dns::store::RecordStore;
use fedns::federation::engine::{Engine, Settings};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

fn demo_store() -> Arc<RecordStore> {
    let store = Arc::new(RecordStore::new());
    let mut engine = Engine::new(store.clone(), Settings::default());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let snapshot = fedns::source::dir::load(root.join("deploy/demo")).unwrap();
    // The demo zone, and the conformance test's zone with delegations, wildcards and DNAMEs.
    let mut static_zones = Vec::new();
    for dir in ["zones", "tests/zones"] {
        let mut zones = fedns::dns::zonefile::ZoneDir::new(Some(root.join(dir)));
        zones.refresh();
        static_zones.extend(zones.zones());
    }
    engine.set_static_zones(static_zones);
    let now = Instant::now();
    for event in snapshot.initial_events() {
        engine.apply(event, now);
    }
    engine.flush(now);
    store
}

fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        m.set_edns(Edns::new());
    }
    m.to_vec().unwrap()
}

#[test]
fn every_kind_of_answer_is_built_without_allocating() {
    let store = demo_store();
    let limits = Limits::default();
    let mut formerr = query("example.com.", RecordType::A, false);
    formerr[5] = 2; // two questions
    // (what, query, the response: rcode then each answer record's type and data).
    let packets = [
        (
            "hit",
            query("nginx.test.galactic.svc.example.com.", RecordType::A, false),
        ),
        (
            "hit with EDNS",
            query(
                "nginx.test.galactic.svc.us1.us.example.com.",
                RecordType::A,
                true,
            ),
        ),
        (
            "CNAME chain",
            query(
                "nginx.test.galactic.svc.ap1.ap.example.com.",
                RecordType::A,
                true,
            ),
        ),
        (
            "static vanity chain",
            query("NGINX.acme.com.", RecordType::A, false),
        ),
        ("NXDOMAIN", query("nope.example.com.", RecordType::A, false)),
        (
            "NODATA",
            query(
                "nginx.test.galactic.svc.us1.us.example.com.",
                RecordType::AAAA,
                false,
            ),
        ),
        (
            "empty non-terminal",
            query("svc.example.com.", RecordType::A, false),
        ),
        ("apex SOA", query("example.com.", RecordType::SOA, false)),
        ("REFUSED", query("www.elsewhere.org.", RecordType::A, false)),
        (
            "referral",
            query("www.sub.zonetest.org.", RecordType::A, true),
        ),
        (
            "wildcard",
            query("a.b.wild.zonetest.org.", RecordType::A, false),
        ),
        (
            "wildcard CNAME",
            query("x.cname.zonetest.org.", RecordType::A, false),
        ),
        (
            "wildcard blocked",
            query("x.host.wild.zonetest.org.", RecordType::A, false),
        ),
        ("DNAME", query("x.old.zonetest.org.", RecordType::A, false)),
        (
            "NS with addresses",
            query("zonetest.org.", RecordType::NS, false),
        ),
        ("FORMERR", formerr),
    ];
    let mut out = Vec::with_capacity(65_535);
    // Response rate limiting as the UDP workers run it, at a rate this loop exceeds: sends,
    // slips and drops are all exercised.
    let mut limiter = RateLimiter::new(RrlSettings {
        rate: 20,
        ..RrlSettings::default()
    });
    let client = "192.0.2.1".parse().unwrap();
    let mut actions = [0usize; 3];
    for (what, packet) in &packets {
        // Warm-up (first touch of the zone table guard etc.), then measure.
        respond(packet, &store, Transport::Udp, &limits, &mut out).unwrap();
        let info = allocation_counter::measure(|| {
            for _ in 0..100 {
                let mut answered =
                    respond(packet, &store, Transport::Udp, &limits, &mut out).unwrap();
                match limiter.check(client, answered.class, &out, 0) {
                    Action::Send => actions[0] += 1,
                    Action::Slip => {
                        answered.truncate(&mut out);
                        actions[1] += 1;
                    }
                    Action::Drop => actions[2] += 1,
                }
            }
        });
        assert_eq!(info.count_total, 0, "{what} allocated {info:?}");
        // What was measured is the right answer, not a cheap error (answered again: the last
        // measured one may have been slipped, i.e. truncated, by the rate limiter).
        respond(packet, &store, Transport::Udp, &limits, &mut out).unwrap();
        let want = expected(what);
        assert_eq!(answer(&out), want, "{what}");
    }
    assert!(
        actions.iter().all(|n| *n > 0),
        "send, slip, drop: {actions:?}"
    );
}

/// The response each case must get: the demo federation, whose eu-central shard (10.3.0.10 behind
/// the load-balancer hostname lb-eu.elb.acme.com) is not served here, as this test resolves no
/// hostnames.
fn expected(what: &str) -> &'static str {
    match what {
        "hit" => "NoError A 10.1.0.10 A 10.2.0.10",
        "hit with EDNS" => "NoError A 10.1.0.10",
        "CNAME chain" => concat!(
            "NoError CNAME nginx.test.galactic.svc.ap.example.com. ",
            "CNAME nginx.test.galactic.svc.example.com. ",
            "A 10.1.0.10 A 10.2.0.10"
        ),
        "static vanity chain" => concat!(
            "NoError CNAME nginx.test.galactic.svc.example.com. ",
            "A 10.1.0.10 A 10.2.0.10"
        ),
        "NXDOMAIN" => "NXDomain",
        "NODATA" | "empty non-terminal" => "NoError",
        "apex SOA" => "NoError SOA",
        "REFUSED" => "Refused",
        "referral" => "NoError authority NS NS additional A AAAA",
        "wildcard" => "NoError A 192.0.2.20",
        "wildcard CNAME" => "NoError CNAME www.zonetest.org. A 192.0.2.10",
        "wildcard blocked" => "NXDomain",
        "DNAME" => "NoError DNAME CNAME x.new.zonetest.org. A 192.0.2.30",
        "NS with addresses" => "NoError NS additional A AAAA",
        "FORMERR" => "FormErr",
        other => panic!("no expected answer for {other}"),
    }
}

/// The response as one line: rcode, then each answer record's type and data (SOA by type only).
fn answer(wire: &[u8]) -> String {
    let m = Message::from_vec(wire).expect("a response that parses");
    let mut parts = vec![format!("{:?}", m.metadata.response_code)];
    for r in &m.answers {
        parts.push(match &r.data {
            RData::A(a) => format!("A {a}"),
            RData::AAAA(a) => format!("AAAA {a}"),
            RData::CNAME(c) => format!("CNAME {}", c.0),
            _ => format!("{}", r.record_type()),
        });
    }
    // Referrals (NS in authority) and additional data; SOA in negative answers is left out.
    for (title, records) in [
        ("authority", &m.authorities),
        ("additional", &m.additionals),
    ] {
        let mut types: Vec<String> = records
            .iter()
            .filter(|r| r.record_type() != RecordType::SOA)
            .map(|r| r.record_type().to_string())
            .collect();
        if !types.is_empty() {
            types.sort();
            parts.push(format!("{title} {}", types.join(" ")));
        }
    }
    parts.join(" ")
}

/// A query for `name` (A) with an OPT carrying an EDNS Client Subnet option.
fn with_ecs(name: &str, family: u16, source: u8, address: &[u8]) -> Vec<u8> {
    let mut p = query(name, RecordType::A, false);
    p[11] = 1;
    let option_len = 4 + address.len() as u16;
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
    p.extend_from_slice(&(4 + option_len).to_be_bytes());
    p.extend_from_slice(&[0, 8]);
    p.extend_from_slice(&option_len.to_be_bytes());
    p.extend_from_slice(&family.to_be_bytes());
    p.extend_from_slice(&[source, 0]);
    p.extend_from_slice(address);
    p
}

#[test]
fn per_client_answers_are_picked_without_allocating() {
    use fedns::dns::responder::respond_from;
    use fedns::federation::locality::{ClientNetwork, LocationTable, Strategy};
    use fedns::federation::model::{FederationObject, ObjectKey, ServiceRecordSpec, SourceEvent};

    // The demo's us-east (zone us1) serves nginx at 10.1.0.10, us-west (us2) at 10.2.0.10.
    let row = |network: &str, zone: &str| ClientNetwork {
        network: network.into(),
        region: "us".into(),
        zone: Some(zone.into()),
    };
    // And a GeoIP database network, 198.51.100.0/24 in the US (region us, no zone).
    use fedns::federation::geoip::{GeoipRegions, mapped};
    let regions = [("US".to_owned(), "us".to_owned())].into_iter().collect();
    let regions = GeoipRegions::new(&regions).unwrap();
    let geoip = mapped(
        [("198.51.100.0/24".parse().unwrap(), Some("US"), Some("NA"))],
        &regions,
    );
    let table = Arc::new(
        LocationTable::new(
            &[row("192.0.2.0/24", "us1"), row("2001:db8::/32", "us2")],
            Default::default(),
        )
        .unwrap()
        .with_geoip(&regions, &geoip),
    );
    // The demo with nginx's ServiceDNSRecord given `strategy`.
    let demo_with = |strategy: Strategy| {
        let store = Arc::new(RecordStore::new());
        let mut engine = Engine::new(
            store.clone(),
            Settings {
                locality: table.clone(),
                ..Settings::default()
            },
        );
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let snapshot = fedns::source::dir::load(root.join("deploy/demo")).unwrap();
        let now = Instant::now();
        for event in snapshot.initial_events() {
            engine.apply(event, now);
        }
        let nginx = ServiceRecordSpec {
            key: ObjectKey::new("test", "nginx"),
            domain_ref: "galactic".into(),
            record_ttl: 300,
            dns_prefix: None,
            external_name: None,
            allow_service_without_endpoints: false,
            strategy: Some(strategy),
            uid: None,
        };
        engine.apply(
            SourceEvent::ApplyFederation(FederationObject::ServiceRecord(nginx)),
            now,
        );
        engine.flush(now);
        store
    };
    let nearest = demo_with(Strategy::Nearest);
    let weights = [("us-east".to_owned(), 1), ("us-west".to_owned(), 1)];
    let weighted = demo_with(Strategy::Weighted {
        weights: weights.into_iter().collect(),
    });
    let limits = Limits {
        locality: Some(table),
        ..Limits::default()
    };
    let nginx = "nginx.test.galactic.svc.example.com.";
    let us_client = Some("192.0.2.1".parse().unwrap());
    // (what, store, query, client, the answers it may get).
    let cases = [
        (
            "nearest by ECS (IPv4)",
            &nearest,
            with_ecs(nginx, 1, 24, &[192, 0, 2]),
            None,
            &["NoError A 10.1.0.10"][..],
        ),
        (
            "nearest by ECS (IPv6)",
            &nearest,
            with_ecs(nginx, 2, 48, &[0x20, 0x01, 0x0d, 0xb8, 0, 0]),
            None,
            &["NoError A 10.2.0.10"][..],
        ),
        (
            "nearest by source address",
            &nearest,
            query(nginx, RecordType::A, false),
            us_client,
            &["NoError A 10.1.0.10"][..],
        ),
        (
            "nearest by a GeoIP network",
            &nearest,
            with_ecs(nginx, 1, 24, &[198, 51, 100]),
            None,
            &["NoError A 10.1.0.10 A 10.2.0.10"][..],
        ),
        (
            "an ECS source shorter than a GeoIP network",
            &nearest,
            with_ecs(nginx, 1, 16, &[198, 51]),
            None,
            &["NoError A 10.1.0.10 A 10.2.0.10"][..],
        ),
        (
            "nowhere",
            &nearest,
            query(nginx, RecordType::A, false),
            None,
            &["NoError A 10.1.0.10 A 10.2.0.10"][..],
        ),
        (
            "weighted",
            &weighted,
            query(nginx, RecordType::A, true),
            us_client,
            &["NoError A 10.1.0.10", "NoError A 10.2.0.10"][..],
        ),
    ];
    let mut out = Vec::with_capacity(65_535);
    for (what, store, packet, client, want) in &cases {
        respond_from(packet, store, Transport::Udp, &limits, *client, &mut out).unwrap();
        let info = allocation_counter::measure(|| {
            for _ in 0..100 {
                respond_from(packet, store, Transport::Udp, &limits, *client, &mut out).unwrap();
            }
        });
        assert_eq!(info.count_total, 0, "{what} allocated {info:?}");
        // What was measured is the right answer: every answer of 100 more is one allowed.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            respond_from(packet, store, Transport::Udp, &limits, *client, &mut out).unwrap();
            seen.insert(answer(&out));
        }
        for got in &seen {
            assert!(want.contains(&got.as_str()), "{what}: {got}");
        }
        assert_eq!(
            seen.len(),
            want.len(),
            "{what}: every allowed answer drawn: {seen:?}"
        );
    }
}

#[test]
fn the_counter_does_count() {
    let info = allocation_counter::measure(|| {
        std::hint::black_box(vec![1u8; 10]);
    });
    assert!(info.count_total > 0);
}
