//! The answer path: one query packet in, one response packet out, from the [`RecordStore`] alone.
//! No locks held beyond a single map read, no allocation when `out` has capacity, no logging.
//! Protocol behaviour: the README's *DNS behaviour reference* ("Protocol") and *Concepts*.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;

use crate::dns::store::{self, RecordStore};
use crate::dns::variants;
use crate::dns::wire::{self, Edns, OptOut, Query, Reject, rcode, rtype};
use crate::federation::locality::{LocationTable, NOWHERE};

/// Longest CNAME chain we follow inside our zones.
const MAX_CHAIN: usize = 8;

/// How the query arrived: UDP answers are limited in size, TCP answers are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Answer-path settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest UDP payload we send and advertise with EDNS.
    pub max_udp_payload: u16,
    /// The server's identity: sent as NSID (RFC 5001) to queries asking for it, and the answer
    /// to CH TXT `id.server` / `hostname.bind`. `None`: neither.
    pub nsid: Option<Arc<[u8]>>,
    /// Answer to CH TXT `version.bind` / `version.server`. `None`: those are REFUSED.
    pub version: Option<Arc<[u8]>>,
    /// TCP idle timeout advertised with EDNS keepalive (RFC 7828), in units of 100 ms; set by the
    /// TCP listener per connection, `None` on UDP.
    pub tcp_keepalive: Option<u16>,
    /// Where clients are (`clientNetworks`), for names whose answer depends on it. `None`: every
    /// client is nowhere.
    pub locality: Option<Arc<LocationTable>>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_udp_payload: wire::DEFAULT_EDNS_PAYLOAD,
            nsid: None,
            version: None,
            tcp_keepalive: None,
            locality: None,
        }
    }
}

/// Which kind of response this was, for response rate limiting (the classes NSD, Knot and BIND
/// limit separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseClass {
    /// Data, NODATA or a CNAME chain.
    Answer,
    /// A referral to a delegated child zone.
    Referral,
    Nxdomain,
    /// FORMERR, REFUSED, NOTIMP, BADVERS, SERVFAIL.
    Error,
}

/// What was sent, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// Full (extended) rcode.
    pub rcode: u16,
    pub truncated: bool,
    pub class: ResponseClass,
    /// End of the question section in the response.
    pub question_end: u16,
    /// Length of the OPT record ending the response (0 without EDNS).
    pub opt_len: u16,
    /// Strategy and outcome codes ([`crate::federation::locality`]) of a per-client answer.
    pub locality: Option<(u8, u8)>,
    /// For the transfer layer ([`crate::dns::xfr`]): the query was TSIG-signed (its answer must
    /// be signed or rejected) or asked for IXFR.
    pub transfer: bool,
}

impl Answered {
    /// Cuts the response in `out` down to header, question and OPT, with TC set: what a rate
    /// limiter's slip sends so that a real client retries over TCP.
    pub fn truncate(&mut self, out: &mut Vec<u8>) {
        let (question_end, opt_len) = (self.question_end as usize, self.opt_len as usize);
        if out.len() < question_end + opt_len || out.len() < wire::HEADER_LEN {
            return;
        }
        let opt_at = out.len() - opt_len;
        out.copy_within(opt_at.., question_end);
        out.truncate(question_end + opt_len);
        out[2] |= 0x02;
        out[6..10].fill(0);
        out[10..12].copy_from_slice(&u16::from(opt_len > 0).to_be_bytes());
        self.truncated = true;
    }
}

/// Builds the response to `packet` in `out` (cleared first). Returns `None` when the packet must
/// be dropped (not a query, or too short to answer). Names whose answer depends on the client
/// treat it as found nowhere unless the query carries a client subnet (see [`respond_from`]).
pub fn respond(
    packet: &[u8],
    store: &RecordStore,
    transport: Transport,
    limits: &Limits,
    out: &mut Vec<u8>,
) -> Option<Answered> {
    respond_from(packet, store, transport, limits, None, out)
}

/// [`respond`] to a query from `client` (the source address): names whose answer depends on the
/// client use the query's EDNS Client Subnet when present, else this address.
pub fn respond_from(
    packet: &[u8],
    store: &RecordStore,
    transport: Transport,
    limits: &Limits,
    client: Option<IpAddr>,
    out: &mut Vec<u8>,
) -> Option<Answered> {
    out.clear();
    let query = match wire::parse_query(packet) {
        Ok(q) => q,
        Err(Reject::Drop) => return None,
        Err(Reject::Error {
            id,
            flags,
            rcode,
            edns,
        }) => {
            out.resize(wire::HEADER_LEN, 0);
            let arcount = match edns {
                Some(edns) => {
                    let opt = opt_for(&edns, transport, limits, 0, 0);
                    wire::push_opt(out, limits.max_udp_payload, &opt);
                    1
                }
                None => 0,
            };
            wire::write_header(out, id, flags, false, false, rcode, [0, 0, 0, arcount]);
            return Some(Answered {
                rcode: rcode as u16,
                truncated: false,
                class: ResponseClass::Error,
                question_end: wire::HEADER_LEN as u16,
                opt_len: (out.len() - wire::HEADER_LEN) as u16,
                locality: None,
                transfer: false,
            });
        }
    };
    Some(answer_query(&query, store, transport, limits, client, out))
}

/// What per-client answers contributed to a response: the ECS scope, and the strategy and
/// outcome for metrics.
#[derive(Debug, Clone, Copy, Default)]
struct Local {
    scope: u8,
    counted: Option<(u8, u8)>,
}

fn answer_query(
    query: &Query<'_>,
    store: &RecordStore,
    transport: Transport,
    limits: &Limits,
    client: Option<IpAddr>,
    out: &mut Vec<u8>,
) -> Answered {
    // Header placeholder, then the question exactly as received (keeps 0x20 case).
    out.resize(wire::HEADER_LEN, 0);
    out.extend_from_slice(query.qname);
    out.extend_from_slice(&query.qtype.to_be_bytes());
    out.extend_from_slice(&query.qclass.to_be_bytes());
    let question_end = out.len();

    let local = Cell::new(Local::default());
    // Every response is finished here: the per-client scope and outcome go with it.
    let finish_local = |out: &mut Vec<u8>, aa: bool, rc: u16, counts: [u16; 3]| {
        let now = local.get();
        let mut answered = finish_response(
            query,
            transport,
            limits,
            out,
            question_end,
            aa,
            rc,
            counts,
            now.scope,
        );
        answered.locality = now.counted;
        answered
    };
    let finish = |out: &mut Vec<u8>, aa: bool, rc: u16, counts: [u16; 2]| {
        finish_local(out, aa, rc, [counts[0], counts[1], 0])
    };
    let refused = |out: &mut Vec<u8>| finish(out, false, rcode::REFUSED as u16, [0, 0]);

    if let Some(edns) = query.edns
        && edns.version > 0
    {
        return finish(out, false, rcode::BADVERS, [0, 0]);
    }
    if query.qclass == wire::CLASS_CH {
        return match chaos_answer(query, limits, out) {
            true => finish(out, false, rcode::NOERROR as u16, [1, 0]),
            false => refused(out),
        };
    }
    // Class ANY is answered from IN data, not authoritatively and without negative-caching SOA
    // (as NSD does: an ANY-class answer is not the complete truth for any one class).
    let class_any = query.qclass == wire::CLASS_ANY;
    if query.qclass != wire::CLASS_IN && !class_any {
        return refused(out);
    }
    if !store.is_synced() {
        return finish(out, false, rcode::SERVFAIL as u16, [0, 0]);
    }
    let mut key_buf = [0u8; wire::MAX_NAME_WIRE];
    let key = wire::lowercase_into(query.qname, &mut key_buf);
    // One snapshot for the whole answer: a flush is seen whole or not at all.
    let snap = store.snapshot();
    let zones = snap.zones();
    if query.qtype == rtype::AXFR && transport == Transport::Udp {
        // A zone transfer needs TCP (as NSD and Knot answer it).
        return finish(out, false, rcode::NOTIMP as u16, [0, 0]);
    }
    let Some(first_zone) = zones.find(key) else {
        return refused(out);
    };
    let zone = first_zone;
    if zone.shape.broken.is_some() {
        // A zone whose file cannot be loaded: SERVFAIL, never REFUSED (which tells resolvers
        // the server is lame for the zone).
        return finish(out, false, rcode::SERVFAIL as u16, [0, 0]);
    }
    if matches!(query.qtype, rtype::AXFR | rtype::IXFR) {
        return refused(out);
    }
    let aa = !class_any;
    // The SOA of a negative answer, unless the class is ANY.
    let negative_soa = |out: &mut Vec<u8>, zone: &store::Zone, name_at: usize, name_len: usize| {
        if class_any {
            return 0;
        }
        push_soa_for(out, zone, name_at, name_len);
        1
    };

    let mut answers: u16 = 0;
    let mut name_at = wire::QNAME_OFFSET;
    let mut name_len = query.qname.len();
    let mut wild_buf = [0u8; wire::MAX_NAME_WIRE];
    for _ in 0..MAX_CHAIN {
        let key = wire::lowercase_into(&out[name_at..name_at + name_len], &mut key_buf);
        // The question's zone is known; a chain step looks its name's up.
        let zone = match answers {
            0 => Some(first_zone),
            _ => zones.find(key),
        };
        let Some(zone) = zone else {
            // The chain left our zones.
            return finish(out, aa, rcode::NOERROR as u16, [answers, 0]);
        };
        if zone.shape.broken.is_some() {
            out.truncate(question_end);
            return finish(out, false, rcode::SERVFAIL as u16, [0, 0]);
        }
        match find_break(zone, key, query.qtype) {
            Some((store::Break::Cut, cut_len)) => {
                let cut_at = name_at + name_len - cut_len;
                let cut = &key[key.len() - cut_len..];
                let (ns, extra) = snap
                    .get(cut)
                    .map(|entry| append_referral(entry, cut_at as u16, out))
                    .unwrap_or((0, 0));
                let mut answered = finish_local(
                    out,
                    aa && answers > 0,
                    rcode::NOERROR as u16,
                    [answers, ns, extra],
                );
                if answers == 0 && answered.rcode == 0 {
                    answered.class = ResponseClass::Referral;
                }
                return answered;
            }
            Some((store::Break::Dname, owner_len)) => {
                let (prefix, owner) = key.split_at(key.len() - owner_len);
                let owner_at = name_at + name_len - owner_len;
                let synthesized = snap
                    .get(owner)
                    .and_then(|entry| synthesize_from_dname(entry, name_at, prefix, owner_at, out));
                match synthesized {
                    Some(Ok(target_at)) => {
                        answers += 2;
                        if matches!(query.qtype, rtype::CNAME | rtype::ANY) {
                            return finish(out, aa, rcode::NOERROR as u16, [answers, 0]);
                        }
                        name_len = out.len() - target_at;
                        name_at = target_at;
                        if target_at > 0x3FFF {
                            break;
                        }
                        continue;
                    }
                    // The synthesized name would be too long (RFC 6672 section 2.2).
                    Some(Err(())) => {
                        return finish(out, aa, rcode::YXDOMAIN as u16, [answers + 1, 0]);
                    }
                    None => {}
                }
            }
            None => {}
        }
        let mut step = snap.get(key).map(|entry| {
            let entry = localize(entry, query, client, limits, &local);
            append_for_type(entry, query.qtype, name_at as u16, out, zone)
        });
        if step.is_none() && zone.shape.wildcards {
            // RFC 4592: the wildcard child of the closest encloser answers, owner rewritten.
            if let Some(source) = wildcard_source(&snap, key, zone.key().len(), &mut wild_buf) {
                step = snap
                    .get(source)
                    .map(|entry| append_for_type(entry, query.qtype, name_at as u16, out, zone));
            }
        }
        match step {
            None => {
                let soa = negative_soa(out, zone, name_at, name_len);
                return finish(out, aa, rcode::NXDOMAIN as u16, [answers, soa]);
            }
            Some(Step::Done(n, extra)) => {
                return finish_local(out, aa, 0, [answers + n, 0, extra]);
            }
            Some(Step::NoData) => {
                let soa = negative_soa(out, zone, name_at, name_len);
                return finish(out, aa, 0, [answers, soa]);
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
    finish(out, aa, rcode::NOERROR as u16, [answers, 0])
}

/// The sets of `entry` that answer this client: its per-client variant when it has variants,
/// else the entry itself.
#[inline]
fn localize<'a>(
    entry: &'a [u8],
    query: &Query<'_>,
    client: Option<IpAddr>,
    limits: &Limits,
    local: &Cell<Local>,
) -> &'a [u8] {
    let Some(table) = variants::table(entry) else {
        return entry;
    };
    let mut scope = 0;
    let locate = || {
        let ecs = query.edns.and_then(|e| e.ecs);
        let found = match (limits.locality.as_deref(), ecs, client) {
            (Some(t), Some(ecs), _) => t.locate(ecs.addr(), ecs.source),
            (Some(t), None, Some(ip)) => t.locate(ip, 128),
            // Nowhere; with a client subnet, the answer holds for that whole subnet.
            _ => crate::federation::locality::Located {
                location: NOWHERE,
                scope: ecs.map_or(0, |e| e.source),
                row: None,
            },
        };
        scope = found.scope;
        found.location
    };
    let Some(picked) = variants::pick(table, locate, variants::draw) else {
        return entry;
    };
    let mut now = local.get();
    now.scope = now.scope.max(scope);
    now.counted = Some((picked.strategy, picked.outcome));
    local.set(now);
    picked.sets
}

/// The highest zone cut or DNAME owner at or above `key` inside `zone` (a cut at `key` itself
/// too, except for DS, which the parent side answers; a DNAME only strictly above `key`), with
/// the length of its key.
#[inline]
fn find_break(zone: &store::Zone, key: &[u8], qtype: u16) -> Option<(store::Break, usize)> {
    let breaks = &zone.shape.breaks;
    if breaks.is_empty() {
        return None;
    }
    let apex_len = zone.key().len();
    let mut found = None;
    let mut at = 0;
    while at < key.len() && key.len() - at >= apex_len {
        let suffix = &key[at..];
        match breaks.get(suffix) {
            Some(store::Break::Cut) if !(at == 0 && qtype == rtype::DS) => {
                found = Some((store::Break::Cut, suffix.len()));
            }
            Some(store::Break::Dname) if at > 0 => {
                found = Some((store::Break::Dname, suffix.len()));
            }
            _ => {}
        }
        at += 1 + key[at] as usize;
    }
    found
}

/// The key of the wildcard that covers the missing name `key` (RFC 4592 section 3.3.1): `*.`
/// the closest encloser, when that exists.
fn wildcard_source<'b>(
    store: &store::Snapshot,
    key: &[u8],
    apex_len: usize,
    buf: &'b mut [u8; wire::MAX_NAME_WIRE],
) -> Option<&'b [u8]> {
    let mut at = 1 + *key.first()? as usize;
    while at < key.len() && key.len() - at >= apex_len {
        let encloser = &key[at..];
        if store.contains(encloser) {
            let len = 2 + encloser.len();
            buf[0] = 1;
            buf[1] = b'*';
            buf[2..len].copy_from_slice(encloser);
            return Some(&buf[..len]);
        }
        at += 1 + key[at] as usize;
    }
    None
}

/// Appends a referral from the delegation point's entry: its NS set in authority (owner at
/// `owner_at`), then its glue in additional. Returns the two counts.
fn append_referral(entry: &[u8], owner_at: u16, out: &mut Vec<u8>) -> (u16, u16) {
    let (mut ns, mut extra) = (0, 0);
    if let Some(set) = store::sets(entry).find(|s| s.rtype == rtype::NS) {
        let start = out.len();
        out.extend_from_slice(set.records);
        let end = out.len();
        wire::patch_owners(out, start, end, owner_at);
        ns = set.count;
    }
    if let Some(set) = store::sets(entry).find(|s| s.rtype == store::ADDITIONAL) {
        out.extend_from_slice(set.records);
        extra = set.count;
    }
    (ns, extra)
}

/// RFC 6672: appends the DNAME of `entry` (owner at `owner_at`) and the CNAME it synthesizes for
/// the name at `name_at` (owner pointing there), whose target (`prefix`, the name's labels below
/// the DNAME owner in lowercase as NSD writes them, then the DNAME target) ends `out`. Returns
/// the target's offset, `Err` when the target would exceed 255 octets (the DNAME alone
/// appended), `None` without a DNAME.
fn synthesize_from_dname(
    entry: &[u8],
    name_at: usize,
    prefix: &[u8],
    owner_at: usize,
    out: &mut Vec<u8>,
) -> Option<Result<usize, ()>> {
    let set = store::sets(entry).find(|s| s.rtype == rtype::DNAME)?;
    let start = out.len();
    out.extend_from_slice(set.records);
    let end = out.len();
    wire::patch_owners(out, start, end, owner_at as u16);
    // The first DNAME record: owner(2) type(2) class(2) ttl(4) rdlen(2) target.
    let ttl = start + 6..start + 10;
    let rdlen = wire::read_u16(out, start + 10)? as usize;
    let target = start + 12..start + 12 + rdlen;
    let new_len = prefix.len() + rdlen;
    if new_len > wire::MAX_NAME_WIRE {
        return Some(Err(()));
    }
    out.extend_from_slice(&[0xC0 | (name_at >> 8) as u8, name_at as u8]);
    out.extend_from_slice(&rtype::CNAME.to_be_bytes());
    out.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
    out.extend_from_within(ttl);
    out.extend_from_slice(&(new_len as u16).to_be_bytes());
    let target_at = out.len();
    out.extend_from_slice(prefix);
    out.extend_from_within(target);
    debug_assert_eq!(out.len() - target_at, new_len);
    Some(Ok(target_at))
}

/// CH TXT `id.server` / `hostname.bind` (the NSID) and `version.bind` / `version.server` (the
/// version string), when configured; appends the TXT record and returns `true`, else `false`
/// (REFUSED).
fn chaos_answer(query: &Query<'_>, limits: &Limits, out: &mut Vec<u8>) -> bool {
    if !matches!(query.qtype, rtype::TXT | rtype::ANY) {
        return false;
    }
    let mut key_buf = [0u8; wire::MAX_NAME_WIRE];
    let text = match wire::lowercase_into(query.qname, &mut key_buf) {
        b"\x02id\x06server\x00" | b"\x08hostname\x04bind\x00" => limits.nsid.as_deref(),
        b"\x07version\x04bind\x00" | b"\x07version\x06server\x00" => limits.version.as_deref(),
        _ => None,
    };
    let Some(text) = text else {
        return false;
    };
    // One character-string per 255 octets.
    let strings = text.len().div_ceil(255).max(1);
    let rdlen = text.len() + strings;
    out.extend_from_slice(&[0xC0, wire::QNAME_OFFSET as u8]);
    out.extend_from_slice(&rtype::TXT.to_be_bytes());
    out.extend_from_slice(&wire::CLASS_CH.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&(rdlen as u16).to_be_bytes());
    if text.is_empty() {
        out.push(0);
    }
    for chunk in text.chunks(255) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    true
}

enum Step {
    /// Records appended (answers, then additional records); the answer is complete.
    Done(u16, u16),
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
    zone: &store::Zone,
) -> Step {
    let mut chosen = None;
    let mut cname = None;
    let mut additional = None;
    for set in store::sets(entry) {
        if set.rtype == store::ADDITIONAL {
            additional = Some(set);
            continue;
        }
        if set.rtype == rtype::CNAME {
            cname = Some(set);
        }
        if set.rtype == qtype || (qtype == rtype::ANY && chosen.is_none()) {
            chosen = Some(set);
        }
    }
    if let Some(set) = cname
        && qtype != rtype::CNAME
    {
        let start = out.len();
        out.extend_from_slice(set.records);
        let end = out.len();
        wire::patch_owners(out, start, end, owner_at);
        // ANY at a CNAME is the CNAME alone (RFC 1034 section 4.3.2, step 3a).
        if qtype == rtype::ANY {
            return Step::Done(1, 0);
        }
        return Step::Cname {
            target_at: start + 12,
        };
    }
    match chosen {
        Some(set) if set.is_apex_marker() => {
            // Apex SOA: rendered live so the serial is current (the entry is the apex of `zone`).
            let start = out.len();
            zone.push_soa(out, zone.soa.ttl, Some(owner_at));
            let end = out.len();
            wire::patch_owners(out, start, end, owner_at);
            Step::Done(1, 0)
        }
        Some(set) => {
            let start = out.len();
            out.extend_from_slice(set.records);
            let end = out.len();
            wire::patch_owners(out, start, end, owner_at);
            // The addresses of in-zone name servers go with an NS answer.
            let extra = match additional {
                Some(more) if set.rtype == rtype::NS => {
                    out.extend_from_slice(more.records);
                    more.count
                }
                _ => 0,
            };
            Step::Done(set.count, extra)
        }
        None => Step::NoData,
    }
}

/// Appends the zone's SOA for a negative answer, its owner pointing at the apex suffix of the name
/// at `name_at`.
fn push_soa_for(out: &mut Vec<u8>, zone: &store::Zone, name_at: usize, name_len: usize) {
    let apex_at = name_at + name_len - zone.key().len();
    let start = out.len();
    zone.push_soa(out, zone.negative_ttl(), Some(apex_at as u16));
    let end = out.len();
    wire::patch_owners(out, start, end, apex_at as u16);
}

/// Our OPT record's contents for a query with `edns`; a client subnet is echoed with `scope`.
fn opt_for<'a>(
    edns: &Edns,
    transport: Transport,
    limits: &'a Limits,
    rc: u16,
    scope: u8,
) -> OptOut<'a> {
    OptOut {
        extended_rcode: (rc >> 4) as u8,
        dnssec_ok: edns.dnssec_ok,
        nsid: limits.nsid.as_deref().filter(|_| edns.nsid),
        keepalive: limits.tcp_keepalive.filter(|_| transport == Transport::Tcp),
        ecs: edns.ecs.map(|ecs| (ecs, scope)),
    }
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
    counts: [u16; 3],
    scope: u8,
) -> Answered {
    let opt = query
        .edns
        .map(|edns| opt_for(&edns, transport, limits, rc, scope));
    let opt_len = opt.map_or(0, |o| o.len());
    let limit = match (transport, query.edns) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, Some(edns)) => edns.payload.min(limits.max_udp_payload).max(512) as usize,
        (Transport::Udp, None) => 512,
    };
    let mut counts = counts;
    let truncated = out.len() + opt_len > limit;
    if truncated {
        out.truncate(question_end);
        counts = [0, 0, 0];
    }
    let mut arcount = 0;
    if let Some(opt) = &opt {
        wire::push_opt(out, limits.max_udp_payload, opt);
        arcount = 1;
    }
    wire::write_header(
        out,
        query.id,
        query.flags,
        aa,
        truncated,
        (rc & 0xF) as u8,
        [1, counts[0], counts[1], counts[2] + arcount],
    );
    let class = match rc as u8 {
        _ if rc > 0xF => ResponseClass::Error,
        rcode::NOERROR => ResponseClass::Answer,
        rcode::NXDOMAIN => ResponseClass::Nxdomain,
        _ => ResponseClass::Error,
    };
    Answered {
        rcode: rc,
        truncated,
        class,
        question_end: question_end as u16,
        opt_len: opt_len as u16,
        locality: None,
        transfer: query.signed || query.qtype == rtype::IXFR,
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

    /// A raw query: `name` in wire form, with an OPT record carrying `flags` and `options` when
    /// `edns` is set.
    fn raw(name: &[u8], qtype: u16, qclass: u16, edns: Option<(u16, &[u8])>) -> Vec<u8> {
        let mut p = vec![0xAB, 0xCD, 0x01, 0x10, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&qclass.to_be_bytes());
        if let Some((flags, options)) = edns {
            p[11] = 1;
            p.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0]);
            p.extend_from_slice(&flags.to_be_bytes());
            p.extend_from_slice(&(options.len() as u16).to_be_bytes());
            p.extend_from_slice(options);
        }
        p
    }

    fn send(store: &RecordStore, packet: &[u8], transport: Transport, limits: &Limits) -> Message {
        let mut out = Vec::new();
        respond(packet, store, transport, limits, &mut out).unwrap();
        Message::from_vec(&out).unwrap()
    }

    const WEB: &[u8] = b"\x03web\x03svc\x07example\x03com\x00";

    #[test]
    fn do_bit_is_echoed() {
        let s = store();
        let r = send(
            &s,
            &raw(WEB, 1, 1, Some((0x8000, &[]))),
            Transport::Udp,
            &Limits::default(),
        );
        assert!(r.edns.as_ref().unwrap().flags().dnssec_ok);
        let r = send(
            &s,
            &raw(WEB, 1, 1, Some((0, &[]))),
            Transport::Udp,
            &Limits::default(),
        );
        assert!(!r.edns.as_ref().unwrap().flags().dnssec_ok);
    }

    #[test]
    fn option_overrunning_the_opt_rdata_is_formerr_with_an_opt() {
        // An option claiming 10 bytes in a 4-byte RDATA.
        let packet = raw(WEB, 1, 1, Some((0, &[0, 10, 0, 10])));
        let r = send(&store(), &packet, Transport::Udp, &Limits::default());
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        assert!(r.edns.is_some());
    }

    #[test]
    fn notimp_and_refused_carry_an_opt_for_edns_queries() {
        let mut packet = raw(WEB, 1, 1, Some((0, &[])));
        packet[2] = (packet[2] & 0x87) | (15 << 3) | 0x01; // opcode 15, RD
        packet[3] |= 0x10; // CD
        let mut out = Vec::new();
        respond(
            &packet,
            &store(),
            Transport::Udp,
            &Limits::default(),
            &mut out,
        )
        .unwrap();
        assert_eq!(out[3] & 0x0F, rcode::NOTIMP);
        assert_eq!(out[2] & 0x01, 0x01, "RD copied as NSD does");
        assert_eq!(out[3] & 0x10, 0x10, "CD copied as NSD does");
        assert_eq!(
            &out[4..12],
            &[0, 0, 0, 0, 0, 0, 0, 1],
            "no question, one OPT"
        );
        let r = send(
            &store(),
            &raw(b"\x03www\x06google\x03com\x00", 1, 1, Some((0, &[]))),
            Transport::Udp,
            &Limits::default(),
        );
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert!(r.edns.is_some());
    }

    fn identified() -> Limits {
        Limits {
            nsid: Some(b"fedns-1".to_vec().into()),
            ..Limits::default()
        }
    }

    #[test]
    fn nsid_is_sent_when_asked_for_and_configured() {
        let s = store();
        let asked = raw(WEB, 1, 1, Some((0, &[0, 3, 0, 0])));
        let mut out = Vec::new();
        respond(&asked, &s, Transport::Udp, &identified(), &mut out).unwrap();
        assert!(out.ends_with(b"\x00\x03\x00\x07fedns-1"), "{out:?}");
        respond(&asked, &s, Transport::Udp, &Limits::default(), &mut out).unwrap();
        assert!(out.ends_with(&[0, 0]), "empty OPT RDATA without --nsid");
        let not_asked = raw(WEB, 1, 1, Some((0, &[])));
        respond(&not_asked, &s, Transport::Udp, &identified(), &mut out).unwrap();
        assert!(out.ends_with(&[0, 0]), "no NSID unless asked");
    }

    #[test]
    fn chaos_identity_and_version_only_when_configured() {
        let s = store();
        let id = raw(b"\x02id\x06server\x00", rtype::TXT, 3, None);
        let host = raw(b"\x08HOSTNAME\x04bind\x00", rtype::TXT, 3, None);
        let version = raw(b"\x07version\x04bind\x00", rtype::TXT, 3, None);
        for q in [&id, &host, &version] {
            let r = send(&s, q, Transport::Udp, &Limits::default());
            assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        }
        let limits = Limits {
            version: Some(b"fedns 1.0".to_vec().into()),
            ..identified()
        };
        for (q, text) in [
            (&id, "fedns-1"),
            (&host, "fedns-1"),
            (&version, "fedns 1.0"),
        ] {
            let r = send(&s, q, Transport::Udp, &limits);
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            assert!(!r.metadata.authoritative);
            assert_eq!(r.answers.len(), 1);
            assert_eq!(r.answers[0].data.to_string(), text);
        }
        let other = raw(b"\x07authors\x04bind\x00", rtype::TXT, 3, None);
        let r = send(&s, &other, Transport::Udp, &limits);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn keepalive_is_advertised_on_tcp_only() {
        let s = store();
        let limits = Limits {
            tcp_keepalive: Some(100),
            ..Limits::default()
        };
        let q = raw(WEB, 1, 1, Some((0, &[])));
        let mut out = Vec::new();
        respond(&q, &s, Transport::Tcp, &limits, &mut out).unwrap();
        assert!(out.ends_with(&[0, 6, 0, 11, 0, 2, 0, 100]), "{out:?}");
        respond(&q, &s, Transport::Udp, &limits, &mut out).unwrap();
        assert!(out.ends_with(&[0, 0]));
    }

    #[test]
    fn any_at_a_cname_is_the_cname_alone() {
        let r = ask(&store(), "web.us.example.com.", RecordType::ANY);
        assert_eq!(r.answers.len(), 1);
        assert!(matches!(r.answers[0].data, RData::CNAME(_)));
    }

    #[test]
    fn class_any_is_answered_from_in_data_without_aa_or_soa() {
        let s = store();
        let r = send(
            &s,
            &raw(WEB, 1, 255, None),
            Transport::Udp,
            &Limits::default(),
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(!r.metadata.authoritative);
        assert_eq!(r.answers.len(), 1);
        let missing = raw(b"\x04nope\x07example\x03com\x00", 1, 255, None);
        let r = send(&s, &missing, Transport::Udp, &Limits::default());
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(r.authorities.is_empty());
        let outside = raw(b"\x03www\x06google\x03com\x00", 1, 255, None);
        let r = send(&s, &outside, Transport::Udp, &Limits::default());
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn soa_rdata_names_are_compressed_against_the_apex() {
        let s = store();
        let q = raw(b"\x07example\x03com\x00", rtype::SOA, 1, None);
        let mut out = Vec::new();
        respond(&q, &s, Transport::Udp, &Limits::default(), &mut out).unwrap();
        // mname ns1 + pointer to the question name (offset 12), rname hostmaster + pointer.
        assert!(out.windows(6).any(|w| w == b"\x03ns1\xC0\x0C"), "{out:?}");
        assert!(out.windows(13).any(|w| w == b"\x0Ahostmaster\xC0\x0C"));
        let r = Message::from_vec(&out).unwrap();
        let RData::SOA(soa) = &r.answers[0].data else {
            panic!("not a SOA")
        };
        assert_eq!(soa.mname.to_ascii(), "ns1.example.com.");
        // Negative answers compress against the apex suffix of the query name.
        let r = ask(&s, "nope.example.com.", RecordType::A);
        let RData::SOA(soa) = &r.authorities[0].data else {
            panic!("not a SOA")
        };
        assert_eq!(soa.rname.to_ascii(), "hostmaster.example.com.");
    }
}
