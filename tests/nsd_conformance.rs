//! Differential conformance against NSD: the same zone files served by fedns and by NSD (Debian
//! package `nsd`), the same query table sent to both over UDP, and the responses compared: rcode,
//! header flags, the answer section, the authority section of negative answers, OPT presence.
//! The demo's `zones/acme.com.zone` carries the protocol cases; `tests/zones/zonetest.org.zone`
//! the zone cases (delegations, wildcards, DNAME, record types beyond the common ones), where
//! referrals, NS answers and negative answers are compared with their authority and additional
//! sections too (glue included).
//!
//! Intended differences (each case states which applies):
//! - **minimal responses**: NSD adds the apex NS set to the authority section (and its addresses
//!   to the additional section) of positive answers; fedns sends only what answers the question,
//!   so authority is compared for negative answers only and additional records not at all.
//! - **OPT on errors**: fedns answers an EDNS query with an OPT record whatever the rcode
//!   (NOTIMP, FORMERR, RFC 6891 section 7); NSD leaves it out of NOTIMP and FORMERR.
//! - **CD**: fedns copies CD into every response (RFC 4035 section 3.2.2); NSD clears it in
//!   answers (it copies it into NOTIMP).
//! - **Z**: fedns clears the Z bit in responses (RFC 1035 section 4.1.1: "must be zero"); NSD
//!   echoes it in NOTIMP.
//! - **question on REFUSED**: for classes other than IN, CH and ANY, fedns echoes the question
//!   with REFUSED; NSD sends none.
//! - **SOA serial**: the serial is fedns's own (see the README's rule), so SOA records are compared
//!   without it.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RData;

/// How a case's responses are compared.
#[derive(Clone, Copy, PartialEq)]
enum Compare {
    /// Everything.
    All,
    /// Everything but OPT presence (the "OPT on errors" difference).
    NoOpt,
    /// Everything but these header flag bits (the "CD" and "Z" differences).
    IgnoreFlags(u16),
    /// Everything but the question count (the "question on REFUSED" difference).
    IgnoreQuestion,
    /// Everything, the authority and additional sections included (referrals, NS answers).
    Sections,
}

struct Case {
    what: &'static str,
    packet: Vec<u8>,
    compare: Compare,
}

fn name(dotted: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in dotted.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A query: header flags, name, type, class, and an OPT with `opt` = (flags, options, version).
fn packet(
    flags: u16,
    qname: &str,
    qtype: u16,
    qclass: u16,
    opt: Option<(u16, &[u8], u8)>,
) -> Vec<u8> {
    let mut p = vec![0x51, 0x7A];
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(opt.is_some())]);
    p.extend_from_slice(&name(qname));
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&qclass.to_be_bytes());
    if let Some((flags, options, version)) = opt {
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, version]);
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&(options.len() as u16).to_be_bytes());
        p.extend_from_slice(options);
    }
    p
}

fn cases() -> Vec<Case> {
    const RD: u16 = 0x0100;
    const CD: u16 = 0x0010;
    let edns = Some((0u16, &[][..], 0u8));
    let case = |what, packet, compare| Case {
        what,
        packet,
        compare,
    };
    let q = |qname: &str, qtype: u16| packet(0, qname, qtype, 1, None);
    let mut two_questions = q("ns1.acme.com", 1);
    two_questions[5] = 2;
    let mut opcode15 = packet(RD | CD, "ns1.acme.com", 1, 1, edns);
    opcode15[2] |= 15 << 3;
    let mut header_only = vec![0x51, 0x7A, 0x79, 0xF0, 0, 0, 0, 0, 0, 0, 0, 0];
    header_only[2] |= 0x01;
    use Compare::*;
    vec![
        case("A", q("ns1.acme.com", 1), All),
        case("A, query case kept", q("NS1.Acme.COM", 1), All),
        case("A with RD", packet(RD, "ns1.acme.com", 1, 1, None), All),
        case(
            "A with CD",
            packet(CD, "ns1.acme.com", 1, 1, None),
            IgnoreFlags(CD),
        ),
        case("CNAME leaving the zone", q("nginx.acme.com", 1), All),
        case("CNAME asked for", q("nginx.acme.com", 5), All),
        case("ANY at a CNAME", q("nginx.acme.com", 255), All),
        case("NODATA", q("ns1.acme.com", 28), All),
        case("NODATA for an unknown type", q("ns1.acme.com", 666), All),
        case("NXDOMAIN", q("nope.acme.com", 1), All),
        case("NXDOMAIN below a name", q("a.b.ns1.acme.com", 1), All),
        case("empty non-terminal", q("elb.acme.com", 1), All),
        case(
            "name below the empty non-terminal",
            q("lb-eu.elb.acme.com", 1),
            All,
        ),
        case("apex SOA", q("acme.com", 6), All),
        case("apex NS", q("acme.com", 2), All),
        case("apex A (NODATA)", q("acme.com", 1), All),
        case("outside the zone", q("www.example.org", 1), All),
        case("the root", q("", 2), All),
        case("class ANY", packet(0, "ns1.acme.com", 1, 255, None), All),
        case(
            "class ANY NXDOMAIN",
            packet(0, "nope.acme.com", 1, 255, None),
            All,
        ),
        case(
            "class ANY NODATA",
            packet(0, "ns1.acme.com", 28, 255, None),
            All,
        ),
        case(
            "class CH id.server",
            packet(0, "id.server", 16, 3, None),
            All,
        ),
        case(
            "class CH hostname.bind",
            packet(0, "hostname.bind", 16, 3, None),
            All,
        ),
        case(
            "class CH version.bind",
            packet(0, "version.bind", 16, 3, None),
            All,
        ),
        case(
            "class CH version.server",
            packet(0, "version.server", 16, 3, None),
            All,
        ),
        case(
            "class CH other name",
            packet(0, "authors.bind", 16, 3, None),
            All,
        ),
        case("class CH A", packet(0, "id.server", 1, 3, None), All),
        case(
            "class HS",
            packet(0, "ns1.acme.com", 1, 4, None),
            IgnoreQuestion,
        ),
        case("EDNS", packet(0, "ns1.acme.com", 1, 1, edns), All),
        case(
            "EDNS with DO",
            packet(0, "ns1.acme.com", 1, 1, Some((0x8000, &[], 0))),
            All,
        ),
        case(
            "EDNS NXDOMAIN with DO",
            packet(0, "nope.acme.com", 1, 1, Some((0x8000, &[], 0))),
            All,
        ),
        case(
            "EDNS REFUSED",
            packet(0, "www.example.org", 1, 1, edns),
            All,
        ),
        case(
            "EDNS NSID",
            packet(0, "ns1.acme.com", 1, 1, Some((0, &[0, 3, 0, 0], 0))),
            All,
        ),
        case(
            "EDNS unknown option",
            packet(0, "ns1.acme.com", 1, 1, Some((0, &[0, 100, 0, 1, 7], 0))),
            All,
        ),
        case(
            "EDNS version 1",
            packet(0, "ns1.acme.com", 6, 1, Some((0, &[], 1))),
            All,
        ),
        case(
            "EDNS option overrunning the OPT",
            packet(0, "ns1.acme.com", 1, 1, Some((0, &[0, 10, 0, 10], 0))),
            NoOpt,
        ),
        case("AXFR over UDP", q("acme.com", 252), All),
        case("IXFR over UDP", q("acme.com", 251), All),
        case("unknown opcode with RD and CD", opcode15, NoOpt),
        case(
            "unknown opcode, header only, every flag",
            header_only,
            IgnoreFlags(0x0040),
        ),
        case("two questions", two_questions, All),
        case("truncated header", vec![0x51, 0x7A, 0x01], All),
        case(
            "a response (QR set)",
            {
                let mut p = q("ns1.acme.com", 1);
                p[2] |= 0x80;
                p
            },
            All,
        ),
        case(
            "compressed question name",
            vec![
                0x51, 0x7A, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1,
            ],
            All,
        ),
        case(
            "label overrunning the packet",
            vec![0x51, 0x7A, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 40, b'a', b'b'],
            All,
        ),
    ]
    .into_iter()
    .chain(zone_cases())
    .collect()
}

/// RFC 1034/4592/6672 zone behaviour, on `tests/zones/zonetest.org.zone`.
fn zone_cases() -> Vec<Case> {
    let q = |qname: &str, qtype: u16| packet(0, qname, qtype, 1, None);
    let edns = |qname: &str, qtype: u16| packet(0, qname, qtype, 1, Some((0, &[][..], 0)));
    let case = |what, packet, compare| Case {
        what,
        packet,
        compare,
    };
    use Compare::*;
    vec![
        case("apex NS with addresses", q("zonetest.org", 2), Sections),
        case("MX", q("mx.zonetest.org", 15), All),
        // Delegations.
        case("referral at the cut", q("sub.zonetest.org", 1), Sections),
        case(
            "referral below the cut",
            q("www.sub.zonetest.org", 1),
            Sections,
        ),
        case(
            "referral deep below the cut",
            q("a.b.sub.zonetest.org", 28),
            Sections,
        ),
        case(
            "referral for the glue name",
            q("ns1.sub.zonetest.org", 1),
            Sections,
        ),
        case(
            "referral for NS at the cut",
            q("sub.zonetest.org", 2),
            Sections,
        ),
        case("referral, EDNS", edns("www.sub.zonetest.org", 1), Sections),
        case(
            "DS at the cut (parent side)",
            q("sub.zonetest.org", 43),
            Sections,
        ),
        case(
            "referral to an in-zone server",
            q("x.other.zonetest.org", 1),
            Sections,
        ),
        // Wildcards.
        case("wildcard A", q("a.wild.zonetest.org", 1), All),
        case(
            "wildcard, query case kept",
            q("A.Wild.zonetest.org", 1),
            All,
        ),
        case("wildcard deep", q("a.b.c.wild.zonetest.org", 1), All),
        case("wildcard TXT", q("a.wild.zonetest.org", 16), All),
        case("wildcard NODATA", q("a.wild.zonetest.org", 28), Sections),
        case("wildcard ANY", q("a.wild.zonetest.org", 255), All),
        case(
            "existing name beats the wildcard",
            q("host.wild.zonetest.org", 1),
            All,
        ),
        case(
            "existing name blocks the wildcard",
            q("x.host.wild.zonetest.org", 1),
            Sections,
        ),
        case(
            "empty non-terminal blocks the wildcard",
            q("x.ent.wild.zonetest.org", 1),
            Sections,
        ),
        case(
            "empty non-terminal under the wildcard",
            q("ent.wild.zonetest.org", 1),
            Sections,
        ),
        case("the wildcard's parent", q("wild.zonetest.org", 1), Sections),
        case(
            "the wildcard asked literally",
            q("*.wild.zonetest.org", 1),
            All,
        ),
        case("wildcard CNAME followed", q("a.cname.zonetest.org", 1), All),
        case(
            "wildcard CNAME asked for",
            q("a.cname.zonetest.org", 5),
            All,
        ),
        case("no wildcard: NXDOMAIN", q("nope.zonetest.org", 1), Sections),
        // DNAME.
        case("DNAME synthesis", q("x.old.zonetest.org", 1), All),
        case(
            "DNAME synthesis, case kept",
            q("X.Old.zonetest.org", 1),
            All,
        ),
        case(
            "DNAME to a missing name",
            q("y.old.zonetest.org", 1),
            Sections,
        ),
        case("DNAME, CNAME asked for", q("x.old.zonetest.org", 5), All),
        case("DNAME leaving the zone", q("a.b.far.zonetest.org", 1), All),
        case("DNAME asked for", q("old.zonetest.org", 39), All),
        case("at the DNAME owner", q("old.zonetest.org", 1), Sections),
        case(
            "DNAME target too long: YXDOMAIN",
            q(
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.long.zonetest.org",
                1,
            ),
            Sections,
        ),
        case(
            "CNAME into a delegation",
            q("tocut.zonetest.org", 1),
            Sections,
        ),
        // Record types served as data.
        case("LOC", q("loc.zonetest.org", 29), All),
        case("RP", q("rp.zonetest.org", 17), All),
        case("SPF", q("spf.zonetest.org", 99), All),
        case("URI", q("uri.zonetest.org", 256), All),
        case("AFSDB", q("afsdb.zonetest.org", 18), All),
        case("APL", q("apl.zonetest.org", 42), All),
        case("NULL", q("null.zonetest.org", 10), All),
        case("TYPE65534", q("unknown.zonetest.org", 65534), All),
        case("A in RFC 3597 form", q("generic.zonetest.org", 1), All),
        case("CAA", q("caa.zonetest.org", 257), All),
        case("TXT with two strings", q("txt.zonetest.org", 16), All),
        case("unknown type at a name", q("loc.zonetest.org", 1), All),
    ]
}

/// What is compared of one response.
fn digest(raw: Option<&[u8]>, compare: Compare) -> String {
    let Some(raw) = raw else {
        return "no response".into();
    };
    if raw.len() < 12 {
        return format!("short response {raw:?}");
    }
    let flags = u16::from_be_bytes([raw[2], raw[3]]);
    // QR, opcode, AA, TC, RD, CD and the rcode; RA (never set by either) and AD/Z as they come.
    let ignored = match compare {
        Compare::IgnoreFlags(bits) => bits,
        _ => 0,
    };
    let qd = if compare == Compare::IgnoreQuestion {
        "-".to_string()
    } else {
        raw[5].to_string()
    };
    let mut out = format!("flags {:04x} qd {qd}", flags & !0x0080 & !ignored);
    let Ok(m) = Message::from_vec(raw) else {
        return out + " (unparsable)";
    };
    let record = |r: &hickory_proto::rr::Record| match &r.data {
        RData::SOA(soa) => format!(
            "{} {} {:?} SOA {} {} (serial) {} {} {} {}",
            r.name,
            r.ttl,
            r.dns_class,
            soa.mname,
            soa.rname,
            soa.refresh,
            soa.retry,
            soa.expire,
            soa.minimum
        ),
        data => format!(
            "{} {} {:?} {} {}",
            r.name,
            r.ttl,
            r.dns_class,
            r.record_type(),
            data
        ),
    };
    let mut answers: Vec<String> = m.answers.iter().map(record).collect();
    answers.sort();
    out += &format!(" answer [{}]", answers.join("; "));
    if m.answers.is_empty() || compare == Compare::Sections {
        let mut authority: Vec<String> = m.authorities.iter().map(record).collect();
        authority.sort();
        out += &format!(" authority [{}]", authority.join("; "));
    }
    if compare == Compare::Sections {
        let mut additional: Vec<String> = m.additionals.iter().map(record).collect();
        additional.sort();
        out += &format!(" additional [{}]", additional.join("; "));
    }
    if compare != Compare::NoOpt {
        out += &match &m.edns {
            Some(e) => format!(
                " OPT do={} nsid={:?}",
                e.flags().dnssec_ok,
                e.option(hickory_proto::rr::rdata::opt::EdnsCode::NSID)
            ),
            None => " no OPT".into(),
        };
    }
    out
}

/// The zones both servers serve: the demo's `acme.com` and the test's `zonetest.org`.
fn copy_zones(dir: &std::path::Path) {
    for (from, to) in [
        ("zones/acme.com.zone", "acme.com.zone"),
        ("tests/zones/zonetest.org.zone", "zonetest.org.zone"),
    ] {
        std::fs::copy(repo().join(from), dir.join(to)).unwrap();
    }
}

fn exchange(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    raw_udp(server, packet, Duration::from_millis(500))
}

/// NSD serving `zones/acme.com.zone` on a free loopback port, with fedns's identity settings.
struct Nsd {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nsd {
    fn start() -> Self {
        let nsd = ["/usr/sbin/nsd", "nsd"]
            .into_iter()
            .find(|p| Command::new(p).arg("-v").output().is_ok())
            .unwrap_or_else(|| tools::missing("nsd", "apt-get install nsd"));
        let dir = tempfile::tempdir().unwrap();
        copy_zones(dir.path());
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("nsd.conf"),
            format!(
                "server:\n  ip-address: 127.0.0.1@{port}\n  zonesdir: {d}\n  username: \"\"\n  chroot: \"\"\n  \
                 pidfile: {d}/nsd.pid\n  database: \"\"\n  zonelistfile: {d}/zone.list\n  xfrdfile: {d}/xfrd.state\n  \
                 xfrdir: {d}\n  logfile: {d}/nsd.log\n  server-count: 1\n  identity: \"conformance\"\n  \
                 nsid: \"ascii_conformance\"\n  version: \"fedns-conformance\"\n  minimal-responses: no\n  \
                 refuse-any: no\n  rrl-ratelimit: 0\nremote-control:\n  control-enable: no\n\
                 zone:\n  name: acme.com\n  zonefile: acme.com.zone\n\
                 zone:\n  name: zonetest.org\n  zonefile: zonetest.org.zone\n"
            ),
        )
        .unwrap();
        let child = Command::new(nsd)
            .arg("-d")
            .arg("-c")
            .arg(dir.path().join("nsd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nsd");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut nsd = Self {
            child,
            addr,
            _dir: dir,
        };
        let probe = packet(0, "acme.com", 6, 1, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while exchange(addr, &probe).is_none() {
            if let Ok(Some(status)) = nsd.child.try_wait() {
                panic!("nsd exited: {status}");
            }
            assert!(Instant::now() < deadline, "nsd did not answer on {addr}");
        }
        nsd
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_nsd,
    ignore = "nsd is missing (apt-get install nsd) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn fedns_answers_the_query_table_as_nsd_does() {
    let nsd = Nsd::start();
    let fedns = Server::start_configured(
        |_source, zones| copy_zones(zones),
        |args| {
            args.nsid = Some("conformance".into());
            args.version_string = Some("fedns-conformance".into());
        },
    )
    .await;
    let mut differences = Vec::new();
    for case in cases() {
        let theirs = digest(exchange(nsd.addr, &case.packet).as_deref(), case.compare);
        let ours = digest(exchange(fedns.dns, &case.packet).as_deref(), case.compare);
        if theirs != ours {
            differences.push(format!(
                "{}:\n  nsd:   {theirs}\n  fedns: {ours}",
                case.what
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
    fedns.stop().await;
}
