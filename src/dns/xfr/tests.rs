use super::*;
use crate::dns::store::{EntryBuilder, SoaFields, ZoneTable};
use crate::dns::xfr::config::{AllowFile, TransferFile, TsigKeyFile};
use crate::federation::naming::{parse_dotted, wire_key};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::time::Duration;

const SECRET: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0";

fn name(s: &str) -> Name {
    parse_dotted("test", s).unwrap()
}

fn transfers(allow: &[(&str, Option<&str>)]) -> Transfers {
    let file = TransferFile {
        allow: allow
            .iter()
            .map(|(n, k)| AllowFile {
                network: n.to_string(),
                key: k.map(str::to_owned),
            })
            .collect(),
        ..TransferFile::default()
    };
    let keys = vec![TsigKeyFile {
        name: "xfr".into(),
        algorithm: "hmac-sha256".into(),
        secret: SECRET.into(),
        secret_file: None,
    }];
    let config = TransferConfig::resolve(Some(&file), &keys, Duration::from_secs(1))
        .unwrap()
        .unwrap();
    Transfers::new(config, Metrics::new())
}

/// A store with zone example.com (serial 10) and `names` A records `hN.example.com`.
fn store(names: usize) -> (RecordStore, Arc<Zone>) {
    let store = RecordStore::new();
    let soa = SoaFields {
        mname: name("ns1.example.com"),
        rname: name("hostmaster.example.com"),
        refresh: 3600,
        retry: 600,
        expire: 86400,
        minimum: 30,
        ttl: 3600,
    };
    let zone = Arc::new(Zone::new(name("example.com"), soa, 10));
    store.set_zones(ZoneTable::new(vec![zone.clone()]));
    let mut ns = Vec::new();
    store::push_name(&mut ns, &name("ns1.example.com"));
    store.insert(
        wire_key(&name("example.com")),
        EntryBuilder::new()
            .apex_soa()
            .rrset(rtype::NS, 3600, [&ns[..]])
            .finish(),
    );
    for i in 0..names {
        let ip = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        store.insert(
            wire_key(&name(&format!("h{i}.example.com"))),
            EntryBuilder::new().rrset(rtype::A, 60, [&ip[..]]).finish(),
        );
    }
    store.mark_synced();
    (store, zone)
}

fn query(qtype: RecordType, serial: Option<u32>) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x07example\x03com\x00");
    q.extend_from_slice(&u16::from(qtype).to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    if let Some(serial) = serial {
        q[9] = 1;
        q.extend_from_slice(&[0xC0, 0x0C, 0, 6, 0, 1, 0, 0, 0, 0, 0, 22, 0, 0]);
        q.extend_from_slice(&serial.to_be_bytes());
        q.extend_from_slice(&[0; 16]);
    }
    q
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn parse(messages: &[Vec<u8>]) -> Vec<Message> {
    messages
        .iter()
        .map(|m| Message::from_vec(m).unwrap())
        .collect()
}

fn soa_serial(r: &hickory_proto::rr::Record) -> Option<u32> {
    match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    }
}

#[test]
fn nobody_may_transfer_by_default() {
    let (store, zone) = store(3);
    let t = transfers(&[]);
    t.commit(&store, &[zone]);
    let out = t
        .answer_transfer(&query(RecordType::AXFR, None), LOCAL)
        .unwrap();
    let m = parse(&out);
    assert_eq!(m[0].metadata.response_code, ResponseCode::Refused);
    assert!(
        t.metrics
            .render()
            .contains(r#"fedns_xfr_requests_total{kind="axfr",result="refused"} 1"#)
    );
    // Another network than the allowed one: refused too.
    let t = transfers(&[("192.0.2.0/24", None)]);
    t.commit(&store, &[store.zones().iter().next().unwrap().clone()]);
    let m = parse(
        &t.answer_transfer(&query(RecordType::AXFR, None), LOCAL)
            .unwrap(),
    );
    assert_eq!(m[0].metadata.response_code, ResponseCode::Refused);
}

#[test]
fn axfr_sends_soa_first_and_last_and_every_record_in_messages_under_64k() {
    let (store, zone) = store(6000);
    let t = transfers(&[("127.0.0.0/8", None)]);
    t.commit(&store, &[zone]);
    let out = t
        .answer_transfer(&query(RecordType::AXFR, None), LOCAL)
        .unwrap();
    assert!(out.len() > 1, "6,000 names take several messages");
    assert!(out.iter().all(|m| m.len() <= 65_535));
    let records: Vec<_> = parse(&out).into_iter().flat_map(|m| m.answers).collect();
    assert_eq!(records.len(), 6000 + 1 + 2, "A records, NS, SOA twice");
    assert_eq!(soa_serial(&records[0]), Some(10));
    assert_eq!(soa_serial(records.last().unwrap()), Some(10));
    assert_eq!(
        records
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count(),
        2
    );
    // Owner names are compressed: well under the uncompressed size.
    let bytes: usize = out.iter().map(Vec::len).sum();
    assert!(bytes < 6000 * 40, "{bytes} bytes");
}

#[test]
fn a_key_bound_rule_needs_the_key_and_a_bad_signature_is_notauth() {
    let (store, zone) = store(3);
    let t = transfers(&[("127.0.0.0/8", Some("xfr"))]);
    t.commit(&store, &[zone]);
    // No key: refused.
    let m = parse(
        &t.answer_transfer(&query(RecordType::AXFR, None), LOCAL)
            .unwrap(),
    );
    assert_eq!(m[0].metadata.response_code, ResponseCode::Refused);
    // The right key: the zone, every message signed.
    let key = tsig::Key::new("xfr.", "hmac-sha256", SECRET).unwrap();
    let mut q = query(RecordType::AXFR, None);
    let mac = tsig::sign_request(&mut q, &key, tsig::now());
    let out = t.answer_transfer(&q, LOCAL).unwrap();
    assert!(tsig::verify_response(&out[0], &key, &mac));
    // A wrong key: NOTAUTH with BADSIG.
    let wrong = tsig::Key::new("xfr.", "hmac-sha256", "d3Jvbmd3cm9uZw==").unwrap();
    let mut q = query(RecordType::AXFR, None);
    tsig::sign_request(&mut q, &wrong, tsig::now());
    let out = t.answer_transfer(&q, LOCAL).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0][3] & 0x0F, tsig::NOTAUTH);
    let record = tsig::find(&out[0]).unwrap().unwrap();
    assert_eq!(record.error, tsig::error::BADSIG);
    // An unknown key: BADKEY.
    let other = tsig::Key::new("other.", "hmac-sha256", SECRET).unwrap();
    let mut q = query(RecordType::AXFR, None);
    tsig::sign_request(&mut q, &other, tsig::now());
    let out = t.answer_transfer(&q, LOCAL).unwrap();
    assert_eq!(
        tsig::find(&out[0]).unwrap().unwrap().error,
        tsig::error::BADKEY
    );
    // Signed an hour ago: BADTIME, signed, with our time.
    let mut q = query(RecordType::AXFR, None);
    tsig::sign_request(&mut q, &key, tsig::now() - 3600);
    let out = t.answer_transfer(&q, LOCAL).unwrap();
    let record = tsig::find(&out[0]).unwrap().unwrap();
    assert_eq!(record.error, tsig::error::BADTIME);
    assert_eq!(record.other.len(), 6);
    assert!(
        t.metrics
            .render()
            .contains(r#"fedns_xfr_requests_total{kind="axfr",result="notauth"} 3"#)
    );
}

#[test]
fn ixfr_sends_only_the_changed_sets_and_falls_back_to_the_whole_zone() {
    let (store, zone) = store(3);
    let t = transfers(&[("127.0.0.0/8", None)]);
    // h1 also has a TXT set, which does not change.
    store.insert(
        wire_key(&name("h1.example.com")),
        EntryBuilder::new()
            .rrset(rtype::A, 60, [&[10u8, 0, 0, 1][..]])
            .rrset(rtype::TXT, 60, [&b"\x02hi"[..]])
            .finish(),
    );
    store.commit();
    t.commit(&store, std::slice::from_ref(&zone));
    // h1 changes address, h2 goes, h9 comes.
    store.insert(
        wire_key(&name("h1.example.com")),
        EntryBuilder::new()
            .rrset(rtype::A, 60, [&[192u8, 0, 2, 1][..]])
            .rrset(rtype::TXT, 60, [&b"\x02hi"[..]])
            .finish(),
    );
    store.remove(&wire_key(&name("h2.example.com")));
    store.insert(
        wire_key(&name("h9.example.com")),
        EntryBuilder::new()
            .rrset(rtype::A, 60, [&[192u8, 0, 2, 9][..]])
            .finish(),
    );
    publish(&store, &t, &zone, 11);
    let out = t
        .answer_transfer(&query(RecordType::IXFR, Some(10)), LOCAL)
        .unwrap();
    assert_eq!(
        rendered(&out),
        [
            "SOA 11",
            "SOA 10",
            "h1.example.com. 10.0.0.1",
            "h2.example.com. 10.0.0.2",
            "SOA 11",
            "h1.example.com. 192.0.2.1",
            "h9.example.com. 192.0.2.9",
            "SOA 11",
        ]
    );
    // Current: the SOA alone.
    let out = t
        .answer_transfer(&query(RecordType::IXFR, Some(11)), LOCAL)
        .unwrap();
    assert_eq!(parse(&out)[0].answers.len(), 1);
    // Unknown serial (before the journal): the whole zone, AXFR-style.
    let out = t
        .answer_transfer(&query(RecordType::IXFR, Some(3)), LOCAL)
        .unwrap();
    let records: Vec<_> = parse(&out).into_iter().flat_map(|m| m.answers).collect();
    assert_eq!(
        records.len(),
        3 + 1 + 1 + 2,
        "A records, TXT, NS, SOA twice"
    );
}

/// The answer records of a transfer, SOAs as `SOA <serial>`, others as `name rdata`.
fn rendered(out: &[Vec<u8>]) -> Vec<String> {
    parse(out)
        .into_iter()
        .flat_map(|m| m.answers)
        .map(|r| match soa_serial(&r) {
            Some(s) => format!("SOA {s}"),
            None => format!("{} {}", r.name, r.data),
        })
        .collect()
}

/// The rendered AXFR, or IXFR from `serial`, answered to loopback.
fn transfer(t: &Transfers, ixfr_from: Option<u32>) -> Vec<String> {
    let qtype = if ixfr_from.is_some() {
        RecordType::IXFR
    } else {
        RecordType::AXFR
    };
    rendered(&t.answer_transfer(&query(qtype, ixfr_from), LOCAL).unwrap())
}

/// Publishes what `store` has staged as serial `serial` of `zone`, as the engine does.
fn publish(store: &RecordStore, t: &Transfers, zone: &Arc<Zone>, serial: u32) {
    zone.set_serial(serial);
    store.commit();
    t.commit(store, std::slice::from_ref(zone));
}

fn set_a(store: &RecordStore, owner: &str, ip: [u8; 4]) {
    store.insert(
        wire_key(&name(owner)),
        EntryBuilder::new().rrset(rtype::A, 60, [&ip[..]]).finish(),
    );
}

#[test]
fn a_copy_stays_at_its_serial_while_the_store_moves_on() {
    let (store, zone) = store(2);
    let t = transfers(&[("127.0.0.0/8", None)]);
    t.commit(&store, std::slice::from_ref(&zone));
    // Published while the serial waits for the next second: no new copy.
    set_a(&store, "h0.example.com", [192, 0, 2, 1]);
    store.commit();
    t.commit(&store, &[]);
    let axfr = transfer(&t, None);
    assert!(
        axfr.contains(&"h0.example.com. 10.0.0.0".to_string()),
        "{axfr:?}"
    );
    assert!(
        !axfr.contains(&"h0.example.com. 192.0.2.1".to_string()),
        "{axfr:?}"
    );
    // The next serial holds both changes, and so does its delta.
    set_a(&store, "h1.example.com", [192, 0, 2, 2]);
    publish(&store, &t, &zone, 11);
    assert_eq!(
        transfer(&t, Some(10)),
        [
            "SOA 11",
            "SOA 10",
            "h0.example.com. 10.0.0.0",
            "h1.example.com. 10.0.0.1",
            "SOA 11",
            "h0.example.com. 192.0.2.1",
            "h1.example.com. 192.0.2.2",
            "SOA 11",
        ]
    );
}

#[test]
fn names_taken_by_a_new_zone_below_leave_the_parent_zone() {
    let (store, zone) = store(1);
    let t = transfers(&[("127.0.0.0/8", None)]);
    set_a(&store, "x.sub.example.com", [192, 0, 2, 7]);
    store.commit();
    t.commit(&store, std::slice::from_ref(&zone));
    let axfr = transfer(&t, None);
    assert!(
        axfr.contains(&"x.sub.example.com. 192.0.2.7".to_string()),
        "{axfr:?}"
    );
    // sub.example.com becomes a zone of its own: x.sub leaves example.com unchanged.
    let soa = zone.soa.clone();
    let sub = Arc::new(Zone::new(name("sub.example.com"), soa, 1));
    store.set_zones(ZoneTable::new(vec![zone.clone(), sub]));
    publish(&store, &t, &zone, 11);
    assert_eq!(
        transfer(&t, Some(10)),
        [
            "SOA 11",
            "SOA 10",
            "x.sub.example.com. 192.0.2.7",
            "SOA 11",
            "SOA 11"
        ]
    );
    let axfr = transfer(&t, None);
    assert!(
        !axfr.iter().any(|r| r.contains("sub.example.com")),
        "{axfr:?}"
    );
}

#[test]
fn the_journal_keeps_only_its_depth() {
    let (store, zone) = store(1);
    let mut t = transfers(&[("127.0.0.0/8", None)]);
    t.config.journal = 2;
    t.commit(&store, std::slice::from_ref(&zone));
    for serial in 11..15u32 {
        set_a(&store, "h0.example.com", [192, 0, 2, serial as u8]);
        publish(&store, &t, &zone, serial);
    }
    // From 12: two deltas (12→13→14) are kept: incremental.
    let out = t
        .answer_transfer(&query(RecordType::IXFR, Some(12)), LOCAL)
        .unwrap();
    let records: Vec<_> = parse(&out).into_iter().flat_map(|m| m.answers).collect();
    assert_eq!(soa_serial(&records[1]), Some(12), "an incremental answer");
    // From 11: out of the journal, the whole zone.
    let out = t
        .answer_transfer(&query(RecordType::IXFR, Some(11)), LOCAL)
        .unwrap();
    let records: Vec<_> = parse(&out).into_iter().flat_map(|m| m.answers).collect();
    assert_eq!(records.len(), 1 + 1 + 2);
}

#[test]
fn ixfr_over_udp_is_the_soa_when_current_else_truncated() {
    let (store, zone) = store(1);
    let t = transfers(&[]);
    t.commit(&store, &[zone]);
    let mut out = Vec::new();
    t.finish_signed(&query(RecordType::IXFR, Some(10)), &mut out, true);
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(m.answers.len(), 1);
    assert!(!m.metadata.truncation);
    t.finish_signed(&query(RecordType::IXFR, Some(9)), &mut out, true);
    let m = Message::from_vec(&out).unwrap();
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
}

#[test]
fn malformed_transfer_requests_get_an_error_never_a_panic() {
    let (store, zone) = store(2);
    let t = transfers(&[("127.0.0.0/8", None)]);
    t.commit(&store, &[zone]);
    let key = tsig::Key::new("xfr.", "hmac-sha256", SECRET).unwrap();
    let mut signed = query(RecordType::IXFR, Some(10));
    tsig::sign_request(&mut signed, &key, tsig::now());
    for base in [query(RecordType::IXFR, Some(10)), signed] {
        for cut in 0..base.len() {
            let _ = t.answer_transfer(&base[..cut], LOCAL);
            let mut out = Vec::new();
            t.finish_signed(&base[..cut], &mut out, true);
        }
        for i in 12..base.len() {
            let mut garbled = base.clone();
            garbled[i] ^= 0xFF;
            let _ = t.answer_transfer(&garbled, LOCAL);
        }
    }
    // IXFR without the SOA in authority: FORMERR.
    let m = parse(
        &t.answer_transfer(&query(RecordType::IXFR, None), LOCAL)
            .unwrap(),
    );
    assert_eq!(m[0].metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn axfr_sends_the_all_set_of_a_localized_name_never_its_variants_or_additional_data() {
    use crate::dns::variants::{self, VariantBody};
    let (store, zone) = store(0);
    let body = EntryBuilder::new()
        .rrset(rtype::A, 60, [&[10, 9, 9, 9][..]])
        .finish();
    let table = variants::encode(
        1,
        true,
        &[0],
        &[VariantBody {
            outcome: 0,
            weight: 1,
            sets: &body,
        }],
    )
    .unwrap();
    let mut glue = Vec::new();
    store::push_full_rr(
        &mut glue,
        &name("ns1.example.com"),
        rtype::A,
        60,
        &[192, 0, 2, 53],
    );
    store.insert(
        wire_key(&name("www.example.com")),
        EntryBuilder::new()
            .rrset(rtype::A, 60, [&[10, 0, 0, 1][..]])
            .rrset(store::ADDITIONAL, 0, [&glue[..]])
            .variants(&table)
            .finish(),
    );
    let t = transfers(&[("127.0.0.0/8", None)]);
    store.commit();
    t.commit(&store, &[zone]);
    let out = t
        .answer_transfer(&query(RecordType::AXFR, None), LOCAL)
        .unwrap();
    let records: Vec<String> = parse(&out)
        .into_iter()
        .flat_map(|m| m.answers)
        .filter(|r| r.record_type() != RecordType::SOA)
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect();
    assert_eq!(
        records,
        [
            "www.example.com. A 10.0.0.1",
            "example.com. NS ns1.example.com."
        ]
    );
}

#[test]
fn secondaries_are_the_notify_targets_and_every_client_seen_with_what_each_last_did() {
    let file = TransferFile {
        notify: vec![config::NotifyFile::Address("127.0.0.2:53".into())],
        ..TransferFile::default()
    };
    let config = TransferConfig::resolve(Some(&file), &[], Duration::from_secs(1))
        .unwrap()
        .unwrap();
    let t = Transfers::new(config, Metrics::new());
    let seen: IpAddr = [127, 0, 0, 1].into();
    t.note_peer(seen, |p| {
        p.last_transfer = Some(("example.com.".into(), "ixfr".into(), 7, 1_700_000_000));
        p.last_error = Some("not allowed by transfer.allow".into());
    });
    let lines: Vec<String> = t
        .secondaries()
        .iter()
        .map(|(peer, p)| format!("{peer}; {p}"))
        .collect();
    assert_eq!(
        lines,
        [
            "127.0.0.1; last transfer ixfr example.com. serial 7 at 1700000000; error: not allowed by transfer.allow",
            "127.0.0.2; no transfer or NOTIFY yet",
        ]
    );
}
