//! The answer path: one query packet in, one response packet out, from the [`RecordStore`] alone.
//! No locks held beyond a single map read, no allocation when `out` has capacity, no logging.
//! Protocol behaviour: the README's *DNS behaviour reference* ("Protocol") and *Concepts*.

use crate::dns::store::{self, RecordStore};
use crate::dns::wire::{self, Query, Reject, rcode, rtype};

/// Longest CNAME chain we follow inside our zones.
const MAX_CHAIN: usize = 8;

/// How the query arrived: UDP answers are limited in size, TCP answers are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Answer-path settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest UDP payload we send and advertise with EDNS.
    pub max_udp_payload: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_udp_payload: wire::DEFAULT_EDNS_PAYLOAD,
        }
    }
}

/// What was sent, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// Full (extended) rcode.
    pub rcode: u16,
    pub truncated: bool,
}

/// Builds the response to `packet` in `out` (cleared first). Returns `None` when the packet must
/// be dropped (not a query, or too short to answer).
pub fn respond(
    packet: &[u8],
    store: &RecordStore,
    transport: Transport,
    limits: &Limits,
    out: &mut Vec<u8>,
) -> Option<Answered> {
    out.clear();
    let query = match wire::parse_query(packet) {
        Ok(q) => q,
        Err(Reject::Drop) => return None,
        Err(Reject::Error { id, flags, rcode }) => {
            out.resize(wire::HEADER_LEN, 0);
            wire::write_header(out, id, flags, false, false, rcode, [0; 4]);
            return Some(Answered {
                rcode: rcode as u16,
                truncated: false,
            });
        }
    };
    Some(answer_query(&query, store, transport, limits, out))
}

fn answer_query(
    query: &Query<'_>,
    store: &RecordStore,
    transport: Transport,
    limits: &Limits,
    out: &mut Vec<u8>,
) -> Answered {
    // Header placeholder, then the question exactly as received (keeps 0x20 case).
    out.resize(wire::HEADER_LEN, 0);
    out.extend_from_slice(query.qname);
    out.extend_from_slice(&query.qtype.to_be_bytes());
    out.extend_from_slice(&query.qclass.to_be_bytes());
    let question_end = out.len();

    let finish = |out: &mut Vec<u8>, aa: bool, rc: u16, counts: [u16; 2]| {
        finish_response(query, transport, limits, out, question_end, aa, rc, counts)
    };

    if let Some(edns) = query.edns
        && edns.version > 0
    {
        return finish(out, false, rcode::BADVERS, [0, 0]);
    }
    if !store.is_synced() {
        return finish(out, false, rcode::SERVFAIL as u16, [0, 0]);
    }
    let mut key_buf = [0u8; wire::MAX_NAME_WIRE];
    let key = wire::lowercase_into(query.qname, &mut key_buf);
    let zones = store.zones();
    if query.qclass != wire::CLASS_IN || zones.find(key).is_none() {
        return finish(out, false, rcode::REFUSED as u16, [0, 0]);
    }
    if matches!(query.qtype, rtype::AXFR | rtype::IXFR) {
        return finish(out, false, rcode::REFUSED as u16, [0, 0]);
    }

    let mut answers: u16 = 0;
    let mut name_at = wire::QNAME_OFFSET;
    let mut name_len = query.qname.len();
    for _ in 0..MAX_CHAIN {
        let key = wire::lowercase_into(&out[name_at..name_at + name_len], &mut key_buf);
        let step = store.with_entry(key, |entry| {
            append_for_type(entry, query.qtype, name_at as u16, out, &zones, key)
        });
        match step {
            None => {
                // Not in the store: NXDOMAIN if inside one of our zones, else the chain left them.
                return match zones.find(key) {
                    Some(zone) => {
                        push_soa_for(out, zone, name_at, name_len);
                        finish(out, true, rcode::NXDOMAIN as u16, [answers, 1])
                    }
                    None => finish(out, true, rcode::NOERROR as u16, [answers, 0]),
                };
            }
            Some(Step::Done(n)) => return finish(out, true, 0, [answers + n, 0]),
            Some(Step::NoData) => {
                if let Some(zone) = zones.find(key) {
                    push_soa_for(out, zone, name_at, name_len);
                    return finish(out, true, 0, [answers, 1]);
                }
                return finish(out, true, 0, [answers, 0]);
            }
            Some(Step::Cname { target_at }) => {
                answers += 1;
                name_at = target_at;
                name_len =
                    wire::uncompressed_name_end(out, target_at).map_or(0, |end| end - target_at);
                if name_len == 0 || target_at > 0x3FFF {
                    break;
                }
            }
        }
    }
    // Chain too long (a loop in static data): answer what we have.
    finish(out, true, rcode::NOERROR as u16, [answers, 0])
}

enum Step {
    /// Records appended; the answer is complete.
    Done(u16),
    /// The name exists without data of this type.
    NoData,
    /// A CNAME was appended; its target name starts at this offset of `out`.
    Cname { target_at: usize },
}

/// Appends the records of `entry` answering `qtype`, owned by the name at `owner_at`.
#[inline]
fn append_for_type(
    entry: &[u8],
    qtype: u16,
    owner_at: u16,
    out: &mut Vec<u8>,
    zones: &store::ZoneTable,
    key: &[u8],
) -> Step {
    let mut chosen = None;
    let mut cname = None;
    for set in store::sets(entry) {
        if set.rtype == rtype::CNAME {
            cname = Some(set);
        }
        if set.rtype == qtype || (qtype == rtype::ANY && chosen.is_none()) {
            chosen = Some(set);
        }
    }
    if let (Some(set), false) = (cname, qtype == rtype::CNAME) {
        let start = out.len();
        out.extend_from_slice(set.records);
        let end = out.len();
        wire::patch_owners(out, start, end, owner_at);
        return Step::Cname {
            target_at: start + 12,
        };
    }
    match chosen {
        Some(set) if set.rtype == rtype::SOA && set.count == 0 => {
            // Apex SOA: rendered live so the serial is current.
            let Some(zone) = zones.find(key) else {
                return Step::NoData;
            };
            let start = out.len();
            zone.push_soa(out, zone.soa.ttl);
            let end = out.len();
            wire::patch_owners(out, start, end, owner_at);
            Step::Done(1)
        }
        Some(set) => {
            let start = out.len();
            out.extend_from_slice(set.records);
            let end = out.len();
            wire::patch_owners(out, start, end, owner_at);
            Step::Done(set.count)
        }
        None => Step::NoData,
    }
}

/// Appends the zone's SOA for a negative answer, its owner pointing at the apex suffix of the name
/// at `name_at`.
fn push_soa_for(out: &mut Vec<u8>, zone: &store::Zone, name_at: usize, name_len: usize) {
    let apex_at = name_at + name_len - zone.key().len();
    let start = out.len();
    zone.push_soa(out, zone.negative_ttl());
    let end = out.len();
    wire::patch_owners(out, start, end, apex_at as u16);
}

/// Writes the header and OPT, truncating to the transport's limit.
#[allow(clippy::too_many_arguments)]
fn finish_response(
    query: &Query<'_>,
    transport: Transport,
    limits: &Limits,
    out: &mut Vec<u8>,
    question_end: usize,
    aa: bool,
    rc: u16,
    counts: [u16; 2],
) -> Answered {
    let opt_len = if query.edns.is_some() { 11 } else { 0 };
    let limit = match (transport, query.edns) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, Some(edns)) => edns.payload.min(limits.max_udp_payload).max(512) as usize,
        (Transport::Udp, None) => 512,
    };
    let mut counts = counts;
    let truncated = out.len() + opt_len > limit;
    if truncated {
        out.truncate(question_end);
        counts = [0, 0];
    }
    let mut arcount = 0;
    if query.edns.is_some() {
        wire::push_opt(out, limits.max_udp_payload, (rc >> 4) as u8);
        arcount = 1;
    }
    wire::write_header(
        out,
        query.id,
        query.flags,
        aa,
        truncated,
        (rc & 0xF) as u8,
        [1, counts[0], counts[1], arcount],
    );
    Answered {
        rcode: rc,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::store::{EntryBuilder, SoaFields, Zone, ZoneTable};
    use crate::federation::naming::{parse_dotted, wire_key};
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};
    use std::sync::Arc;

    fn name(s: &str) -> Name {
        parse_dotted("test", s).unwrap()
    }

    fn store() -> RecordStore {
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
        store.set_zones(ZoneTable::new(vec![Arc::new(Zone::new(
            name("example.com"),
            soa,
            7,
        ))]));
        let put = |n: &str, b: &mut EntryBuilder| store.insert(wire_key(&name(n)), b.finish());
        put("example.com", EntryBuilder::new().apex_soa());
        put("svc.example.com", &mut EntryBuilder::new());
        put(
            "web.svc.example.com",
            EntryBuilder::new().addresses(&["10.0.0.1".parse().unwrap()], &[], 180),
        );
        put(
            "web.us.example.com",
            EntryBuilder::new().cname(&name("web.svc.example.com"), 180),
        );
        put("us.example.com", &mut EntryBuilder::new());
        put(
            "gone.us.example.com",
            EntryBuilder::new().cname(&name("gone.svc.example.com"), 180),
        );
        put(
            "out.us.example.com",
            EntryBuilder::new().cname(&name("www.elsewhere.org"), 180),
        );
        store.mark_synced();
        store
    }

    fn ask(store: &RecordStore, qname: &str, qtype: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(hickory_proto::op::Query::query(
            Name::from_ascii(qname).unwrap(),
            qtype,
        ));
        let bytes = q.to_vec().unwrap();
        let mut out = Vec::new();
        respond(&bytes, store, Transport::Udp, &Limits::default(), &mut out).unwrap();
        Message::from_vec(&out).unwrap()
    }

    #[test]
    fn hit_is_authoritative_and_keeps_query_case() {
        let r = ask(&store(), "WeB.SvC.example.COM.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].name.to_ascii(), "WeB.SvC.example.COM.");
    }

    #[test]
    fn cname_chain_is_followed_in_one_answer() {
        let r = ask(&store(), "web.us.example.com.", RecordType::A);
        assert_eq!(r.answers.len(), 2);
        assert!(matches!(r.answers[0].data, RData::CNAME(_)));
        assert_eq!(r.answers[1].name.to_ascii(), "web.svc.example.com.");
        assert!(matches!(r.answers[1].data, RData::A(_)));
    }

    #[test]
    fn cname_query_returns_only_the_cname() {
        let r = ask(&store(), "web.us.example.com.", RecordType::CNAME);
        assert_eq!(r.answers.len(), 1);
    }

    #[test]
    fn chain_ending_in_a_missing_name_is_nxdomain_with_soa() {
        let r = ask(&store(), "gone.us.example.com.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.authorities.len(), 1);
        assert_eq!(r.authorities[0].ttl, 30);
    }

    #[test]
    fn chain_leaving_our_zones_is_noerror_with_the_cname() {
        let r = ask(&store(), "out.us.example.com.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
    }

    #[test]
    fn empty_non_terminal_is_nodata_not_nxdomain() {
        let r = ask(&store(), "svc.example.com.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities.len(), 1);
    }

    #[test]
    fn missing_type_is_nodata_with_soa() {
        let r = ask(&store(), "web.svc.example.com.", RecordType::AAAA);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert!(matches!(r.authorities[0].data, RData::SOA(_)));
    }

    #[test]
    fn apex_soa_carries_the_live_serial() {
        let s = store();
        s.zones().iter().next().unwrap().bump_serial();
        let r = ask(&s, "example.com.", RecordType::SOA);
        let RData::SOA(soa) = &r.answers[0].data else {
            panic!("not a SOA")
        };
        assert_eq!(soa.serial, 8);
    }

    #[test]
    fn outside_our_zones_is_refused() {
        let r = ask(&store(), ".", RecordType::NS);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert!(!r.metadata.authoritative);
    }

    #[test]
    fn servfail_until_synced() {
        let s = RecordStore::new();
        let r = ask(&s, "web.svc.example.com.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    }

    #[test]
    fn any_gets_one_rrset() {
        let r = ask(&store(), "web.svc.example.com.", RecordType::ANY);
        assert_eq!(r.answers.len(), 1);
    }
}
