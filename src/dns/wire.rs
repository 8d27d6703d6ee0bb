//! DNS wire format for the answer path: a strict, allocation-free query parser and the encoders
//! that pre-render resource records for the [`crate::dns::store`]. Everything here is pure byte work.

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;
/// Offset of the question name in every message.
pub const QNAME_OFFSET: usize = HEADER_LEN;
/// Payload we advertise and accept by default over UDP (DNS flag day 2020).
pub const DEFAULT_EDNS_PAYLOAD: u16 = 1232;
/// Longest name in wire form.
pub const MAX_NAME_WIRE: usize = 255;

/// Record types the answer path knows by number.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const TXT: u16 = 16;
    pub const DNAME: u16 = 39;
    pub const DS: u16 = 43;
    pub const AAAA: u16 = 28;
    pub const OPT: u16 = 41;
    pub const TSIG: u16 = 250;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
}

/// Response codes (the low 4 bits in the header; BADVERS lives in the OPT record).
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    pub const YXDOMAIN: u8 = 6;
    pub const BADVERS: u16 = 16;
}

pub const CLASS_IN: u16 = 1;
/// The CHAOS class: `id.server`, `version.bind` and friends.
pub const CLASS_CH: u16 = 3;
/// Class ANY (QCLASS only).
pub const CLASS_ANY: u16 = 255;
pub const OPCODE_QUERY: u8 = 0;

/// EDNS option codes we read or write.
pub mod option {
    /// RFC 5001 name server identifier.
    pub const NSID: u16 = 3;
    /// RFC 7828 TCP keepalive.
    pub const TCP_KEEPALIVE: u16 = 11;
    /// RFC 7871 EDNS Client Subnet.
    pub const CLIENT_SUBNET: u16 = 8;
}

/// The EDNS Client Subnet option of a query (RFC 7871 section 6): the client's network as the
/// resolver chose to reveal it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    /// 1: IPv4, 2: IPv6.
    pub family: u16,
    /// SOURCE PREFIX-LENGTH: how many leading bits of `address` are the client's.
    pub source: u8,
    /// The address, zero past `source` bits (IPv4 in the first 4 octets).
    pub address: [u8; 16],
}

impl ClientSubnet {
    pub fn addr(&self) -> std::net::IpAddr {
        if self.family == 1 {
            let a = &self.address;
            std::net::IpAddr::from([a[0], a[1], a[2], a[3]])
        } else {
            std::net::IpAddr::from(self.address)
        }
    }

    /// Octets of ADDRESS on the wire: just enough for `source` bits.
    pub fn address_len(&self) -> usize {
        (self.source as usize).div_ceil(8)
    }

    /// Parses the option body; `None` for a bad family, a source prefix longer than the family's
    /// addresses, an ADDRESS of the wrong length or with bits set past the prefix (RFC 7871
    /// section 7.1.1 and 6: FORMERR).
    pub fn parse(body: &[u8]) -> Option<Self> {
        let family = read_u16(body, 0)?;
        let source = *body.get(2)?;
        let max = match family {
            1 => 32,
            2 => 128,
            _ => return None,
        };
        if source > max {
            return None;
        }
        let ecs = Self {
            family,
            source,
            address: [0; 16],
        };
        let address = body.get(4..)?;
        if address.len() != ecs.address_len() {
            return None;
        }
        let spare = (8 - source % 8) % 8;
        if let Some(last) = address.last()
            && last & ((1u16 << spare) - 1) as u8 != 0
        {
            return None;
        }
        let mut ecs = ecs;
        ecs.address[..address.len()].copy_from_slice(address);
        Some(ecs)
    }
}

/// The EDNS(0) options of a query that matter to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    /// The DO bit (RFC 3225), echoed in the response.
    pub dnssec_ok: bool,
    /// The query carried an (empty) NSID option (RFC 5001).
    pub nsid: bool,
    /// The query's EDNS Client Subnet option (RFC 7871), well-formed.
    pub ecs: Option<ClientSubnet>,
}

/// A parsed query. The question name is borrowed from the packet at [`QNAME_OFFSET`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    pub id: u16,
    /// Header flags as received (opcode, RD, CD ...).
    pub flags: u16,
    pub qname: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
    /// The query ends with a TSIG record (RFC 8945): the transfer layer verifies it and signs
    /// the answer.
    pub signed: bool,
}

impl Query<'_> {
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }

    /// The question section as received (name, type, class), to echo in the answer.
    pub fn question_len(&self) -> usize {
        self.qname.len() + 4
    }
}

/// Why a packet is not a query we can answer normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not worth an answer: shorter than a header, or a response (QR set) — never reflect.
    Drop,
    /// Answer with this rcode and no question (the question could not be trusted); with an OPT
    /// record when the query's OPT record could be read (RFC 6891 section 7).
    Error {
        id: u16,
        flags: u16,
        rcode: u8,
        edns: Option<Edns>,
    },
}

/// Reads a big-endian u16 at `at`.
#[inline]
pub fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

/// Parses a query strictly: one question with an uncompressed name, then any records in the other
/// sections (skipped, compression allowed, loops rejected), of which only OPT is read.
pub fn parse_query(packet: &[u8]) -> Result<Query<'_>, Reject> {
    if packet.len() < HEADER_LEN {
        return Err(Reject::Drop);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & 0x8000 != 0 {
        return Err(Reject::Drop);
    }
    let error = |rcode, edns| Reject::Error {
        id,
        flags,
        rcode,
        edns,
    };
    let count = |i: usize| u16::from_be_bytes([packet[4 + 2 * i], packet[5 + 2 * i]]);
    let (qd, an, ns, ar) = (count(0), count(1), count(2), count(3));
    let opcode = ((flags >> 11) & 0xF) as u8;
    if opcode != OPCODE_QUERY || qd != 1 {
        // Still find the OPT record, so the error carries one when the query had it.
        let rcode = if opcode != OPCODE_QUERY {
            rcode::NOTIMP
        } else {
            rcode::FORMERR
        };
        let mut at = Some(QNAME_OFFSET);
        for _ in 0..qd {
            at = at.and_then(|at| skip_name(packet, at)).map(|end| end + 4);
        }
        let edns = at.and_then(|at| {
            scan_records(packet, at, [an, ns, ar])
                .ok()
                .and_then(|r| r.0)
        });
        return Err(error(rcode, edns));
    }
    let formerr = error(rcode::FORMERR, None);
    let name_end = uncompressed_name_end(packet, QNAME_OFFSET).ok_or(formerr)?;
    let qtype = read_u16(packet, name_end).ok_or(formerr)?;
    let qclass = read_u16(packet, name_end + 2).ok_or(formerr)?;
    let (edns, signed) = match scan_records(packet, name_end + 4, [an, ns, ar]) {
        Ok(found) => found,
        Err(edns) => return Err(error(rcode::FORMERR, edns)),
    };
    Ok(Query {
        id,
        flags,
        qname: &packet[QNAME_OFFSET..name_end],
        qtype,
        qclass,
        edns,
        signed,
    })
}

/// Walks the answer, authority and additional records from `at` and reads the OPT record. A
/// malformed message is `Err`, carrying the OPT record when that much could be read (options that
/// overrun the OPT RDATA are FORMERR with an OPT, RFC 6891 section 7). Also says whether a TSIG
/// record was seen.
fn scan_records(
    packet: &[u8],
    mut at: usize,
    counts: [u16; 3],
) -> Result<(Option<Edns>, bool), Option<Edns>> {
    let mut edns = None;
    let mut signed = false;
    let additional = counts.len() - 1;
    for (section, count) in counts.into_iter().enumerate() {
        for _ in 0..count {
            let owner_start = at;
            at = skip_name(packet, at).ok_or(edns)?;
            let rr_type = read_u16(packet, at).ok_or(edns)?;
            let class = read_u16(packet, at + 2).ok_or(edns)?;
            let ttl_hi = read_u16(packet, at + 4).ok_or(edns)?;
            let ttl_lo = read_u16(packet, at + 6).ok_or(edns)?;
            let rdlen = read_u16(packet, at + 8).ok_or(edns)? as usize;
            let rdata_at = at + 10;
            at = rdata_at + rdlen;
            if at > packet.len() {
                return Err(edns);
            }
            signed |= rr_type == rtype::TSIG;
            if rr_type == rtype::OPT {
                // RFC 6891: one OPT, owned by the root, in the additional section.
                if edns.is_some() || packet[owner_start] != 0 || section != additional {
                    return Err(edns);
                }
                let mut found = Edns {
                    payload: class.max(512),
                    version: (ttl_hi & 0xFF) as u8,
                    dnssec_ok: ttl_lo & 0x8000 != 0,
                    nsid: false,
                    ecs: None,
                };
                let malformed = !read_options(&packet[rdata_at..at], &mut found);
                edns = Some(found);
                if malformed {
                    return Err(edns);
                }
            }
        }
    }
    Ok((edns, signed))
}

/// Reads the options of an OPT RDATA into `edns`; `false` when one overruns the RDATA.
fn read_options(mut rdata: &[u8], edns: &mut Edns) -> bool {
    while !rdata.is_empty() {
        let (Some(code), Some(len)) = (read_u16(rdata, 0), read_u16(rdata, 2)) else {
            return false;
        };
        let Some(rest) = rdata.get(4 + len as usize..) else {
            return false;
        };
        if code == option::NSID {
            edns.nsid = true;
        }
        if code == option::CLIENT_SUBNET {
            match ClientSubnet::parse(&rdata[4..4 + len as usize]) {
                Some(ecs) => edns.ecs = Some(ecs),
                None => return false,
            }
        }
        rdata = rest;
    }
    true
}

/// End (exclusive) of an uncompressed name starting at `at`, or `None` if it is malformed, uses
/// compression, or is longer than 255 octets.
pub fn uncompressed_name_end(buf: &[u8], mut at: usize) -> Option<usize> {
    let start = at;
    loop {
        let len = *buf.get(at)? as usize;
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
        if at - start >= MAX_NAME_WIRE {
            return None;
        }
    }
    (at <= buf.len()).then_some(at)
}

/// Skips a possibly compressed name; pointers must point strictly backwards (no loops).
pub fn skip_name(buf: &[u8], mut at: usize) -> Option<usize> {
    let mut end = None;
    let mut limit = at;
    let mut total = 0usize;
    loop {
        let len = *buf.get(at)? as usize;
        match len {
            0 => return Some(end.unwrap_or(at + 1)),
            1..=63 => {
                at += 1 + len;
                total += 1 + len;
                if total >= MAX_NAME_WIRE || at > buf.len() {
                    return None;
                }
            }
            0xC0..=0xFF => {
                let target = ((len & 0x3F) << 8) | *buf.get(at + 1)? as usize;
                if end.is_none() {
                    end = Some(at + 2);
                }
                if target >= limit {
                    return None;
                }
                limit = target;
                at = target;
            }
            _ => return None,
        }
    }
}

/// Lowercases a wire name into `out`, returning the key slice.
#[inline]
pub fn lowercase_into<'b>(name: &[u8], out: &'b mut [u8; MAX_NAME_WIRE]) -> &'b [u8] {
    let n = name.len().min(MAX_NAME_WIRE);
    for (dst, src) in out[..n].iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    &out[..n]
}

/// Appends one resource record whose owner is a compression pointer placeholder (patched by the
/// answer path), in the layout the store keeps: `C0 00 | type | class IN | ttl | rdlen | rdata`.
pub fn push_rr(out: &mut Vec<u8>, rtype: u16, ttl: u32, rdata: &[u8]) {
    out.extend_from_slice(&[0xC0, 0x00]);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// Patches the owner pointer of every record in a rendered set to `owner_offset`, starting at `at`.
/// Returns `false` if the rendered bytes are inconsistent (never expected).
pub fn patch_owners(buf: &mut [u8], mut at: usize, end: usize, owner_offset: u16) -> bool {
    let ptr = (0xC000 | owner_offset).to_be_bytes();
    while at < end {
        if at + 12 > end {
            return false;
        }
        buf[at] = ptr[0];
        buf[at + 1] = ptr[1];
        let rdlen = u16::from_be_bytes([buf[at + 10], buf[at + 11]]) as usize;
        at += 12 + rdlen;
    }
    at == end
}

/// Writes the header of a response.
#[allow(clippy::too_many_arguments)]
pub fn write_header(
    out: &mut [u8],
    id: u16,
    query_flags: u16,
    aa: bool,
    tc: bool,
    rcode: u8,
    counts: [u16; 4],
) {
    // QR, opcode copied, AA, TC, RD copied, RA clear, Z clear, AD clear, CD copied.
    let mut flags: u16 =
        0x8000 | (query_flags & 0x7800) | (query_flags & 0x0100) | (query_flags & 0x0010);
    if aa {
        flags |= 0x0400;
    }
    if tc {
        flags |= 0x0200;
    }
    flags |= (rcode & 0xF) as u16;
    out[0..2].copy_from_slice(&id.to_be_bytes());
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    for (i, c) in counts.iter().enumerate() {
        out[4 + 2 * i..6 + 2 * i].copy_from_slice(&c.to_be_bytes());
    }
}

/// What our OPT record carries besides the payload size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OptOut<'a> {
    /// Upper 8 bits of the extended rcode (1 for BADVERS).
    pub extended_rcode: u8,
    /// Echo of the query's DO bit (RFC 3225).
    pub dnssec_ok: bool,
    /// NSID payload, when asked for and configured (RFC 5001).
    pub nsid: Option<&'a [u8]>,
    /// TCP idle timeout in units of 100 ms (RFC 7828), on TCP only.
    pub keepalive: Option<u16>,
    /// The query's client subnet echoed with this SCOPE PREFIX-LENGTH (RFC 7871 section 7.2).
    pub ecs: Option<(ClientSubnet, u8)>,
}

impl OptOut<'_> {
    /// Bytes [`push_opt`] will append.
    pub fn len(&self) -> usize {
        11 + self.nsid.map_or(0, |n| 4 + n.len())
            + self.keepalive.map_or(0, |_| 6)
            + self.ecs.map_or(0, |(e, _)| 8 + e.address_len())
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Appends our OPT record: root owner, payload, extended rcode, version 0, DO as asked, options.
pub fn push_opt(out: &mut Vec<u8>, payload: u16, opt: &OptOut<'_>) {
    out.push(0);
    out.extend_from_slice(&rtype::OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    let flags: u16 = if opt.dnssec_ok { 0x8000 } else { 0 };
    out.extend_from_slice(&[opt.extended_rcode, 0]);
    out.extend_from_slice(&flags.to_be_bytes());
    let rdlen = opt.len() - 11;
    out.extend_from_slice(&(rdlen as u16).to_be_bytes());
    if let Some(nsid) = opt.nsid {
        out.extend_from_slice(&option::NSID.to_be_bytes());
        out.extend_from_slice(&(nsid.len() as u16).to_be_bytes());
        out.extend_from_slice(nsid);
    }
    if let Some(timeout) = opt.keepalive {
        out.extend_from_slice(&option::TCP_KEEPALIVE.to_be_bytes());
        out.extend_from_slice(&2u16.to_be_bytes());
        out.extend_from_slice(&timeout.to_be_bytes());
    }
    if let Some((ecs, scope)) = opt.ecs {
        let address = &ecs.address[..ecs.address_len()];
        out.extend_from_slice(&option::CLIENT_SUBNET.to_be_bytes());
        out.extend_from_slice(&(4 + address.len() as u16).to_be_bytes());
        out.extend_from_slice(&ecs.family.to_be_bytes());
        out.extend_from_slice(&[ecs.source, scope]);
        out.extend_from_slice(address);
    }
}

/// Cuts a response back to its header and question, sets TC and zeroes the other counts: the reply
/// that makes a client retry over TCP (a truncated answer, or a rate limiter's slip).
pub fn truncate_to_question(out: &mut Vec<u8>) -> bool {
    let qd = read_u16(out, 4).unwrap_or(0);
    let end = if qd == 1 {
        match uncompressed_name_end(out, QNAME_OFFSET) {
            Some(end) if end + 4 <= out.len() => end + 4,
            _ => return false,
        }
    } else {
        HEADER_LEN
    };
    if out.len() < end {
        return false;
    }
    out.truncate(end);
    out[2] |= 0x02;
    out[6..12].fill(0);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p
    }

    #[test]
    fn parses_a_plain_query() {
        let p = query(b"\x03www\x07example\x03com\x00", rtype::A);
        let q = parse_query(&p).unwrap();
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.qname, b"\x03www\x07example\x03com\x00");
        assert_eq!(q.qtype, rtype::A);
        assert!(q.edns.is_none());
    }

    #[test]
    fn reads_edns_payload_version_and_do() {
        let mut p = query(b"\x03www\x00", rtype::A);
        p[11] = 1;
        p.extend_from_slice(&[0, 0, 41, 0x10, 0x00, 0, 1, 0x80, 0, 0, 0]);
        let edns = parse_query(&p).unwrap().edns.unwrap();
        assert_eq!(edns.payload, 4096);
        assert_eq!(edns.version, 1);
        assert!(edns.dnssec_ok);
    }

    #[test]
    fn tiny_edns_payload_counts_as_512() {
        let mut p = query(b"\x00", rtype::NS);
        p[11] = 1;
        p.extend_from_slice(&[0, 0, 41, 0, 10, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_query(&p).unwrap().edns.unwrap().payload, 512);
    }

    #[test]
    fn short_packets_and_responses_are_dropped() {
        assert_eq!(parse_query(&[0; 11]), Err(Reject::Drop));
        let mut p = query(b"\x00", rtype::A);
        p[2] |= 0x80;
        assert_eq!(parse_query(&p), Err(Reject::Drop));
    }

    #[test]
    fn compressed_or_truncated_question_is_formerr() {
        let p = query(b"\xC0\x0C", rtype::A);
        assert!(matches!(
            parse_query(&p),
            Err(Reject::Error { rcode: 1, .. })
        ));
        let p = query(b"\x05ab", rtype::A);
        assert!(matches!(
            parse_query(&p[..15]),
            Err(Reject::Error { rcode: 1, .. })
        ));
    }

    #[test]
    fn self_pointing_compression_in_additional_is_formerr() {
        let mut p = query(b"\x00", rtype::A);
        p[11] = 1;
        let at = p.len() as u8;
        p.extend_from_slice(&[0xC0, at, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            parse_query(&p),
            Err(Reject::Error { rcode: 1, .. })
        ));
    }

    #[test]
    fn names_over_255_octets_are_formerr() {
        let mut name = Vec::new();
        for _ in 0..5 {
            name.push(63);
            name.extend_from_slice(&[b'a'; 63]);
        }
        name.push(0);
        assert!(parse_query(&query(&name, rtype::A)).is_err());
    }

    #[test]
    fn other_opcodes_are_notimp() {
        let mut p = query(b"\x00", rtype::A);
        p[2] = 0x28; // UPDATE
        assert!(matches!(
            parse_query(&p),
            Err(Reject::Error { rcode: 4, .. })
        ));
    }

    #[test]
    fn two_questions_are_formerr() {
        let mut p = query(b"\x00", rtype::A);
        p[5] = 2;
        assert!(matches!(
            parse_query(&p),
            Err(Reject::Error { rcode: 1, .. })
        ));
    }

    fn with_ecs(body: &[u8]) -> Vec<u8> {
        let mut p = query(b"\x00", rtype::A);
        p[11] = 1;
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
        p.extend_from_slice(&(4 + body.len() as u16).to_be_bytes());
        p.extend_from_slice(&option::CLIENT_SUBNET.to_be_bytes());
        p.extend_from_slice(&(body.len() as u16).to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn reads_a_client_subnet() {
        let q = with_ecs(&[0, 1, 24, 0, 192, 0, 2]);
        let ecs = parse_query(&q).unwrap().edns.unwrap().ecs.unwrap();
        assert_eq!(ecs.addr(), "192.0.2.0".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(ecs.source, 24);
        let q = with_ecs(&[0, 2, 56, 0, 0x20, 1, 0x0d, 0xb8, 0, 0, 0]);
        let ecs = parse_query(&q).unwrap().edns.unwrap().ecs.unwrap();
        assert_eq!(
            ecs.addr(),
            "2001:db8::".parse::<std::net::IpAddr>().unwrap()
        );
        let q = with_ecs(&[0, 1, 0, 0]);
        assert_eq!(
            parse_query(&q).unwrap().edns.unwrap().ecs.unwrap().source,
            0
        );
    }

    #[test]
    fn a_bad_client_subnet_is_formerr_with_an_opt() {
        for body in [
            &[0, 3, 24, 0, 192, 0, 2][..],       // unknown family
            &[0, 1, 33, 0, 192, 0, 2, 1, 0][..], // prefix longer than IPv4
            &[0, 2, 129, 0][..],                 // prefix longer than IPv6 (and no address)
            &[0, 1, 24, 0, 192, 0][..],          // too few address octets
            &[0, 1, 24, 0, 192, 0, 2, 0][..],    // too many
            &[0, 1, 23, 0, 192, 0, 3][..],       // a bit set past the prefix
            &[0, 1][..],                         // truncated
        ] {
            match parse_query(&with_ecs(body)) {
                Err(Reject::Error {
                    rcode: 1,
                    edns: Some(edns),
                    ..
                }) => assert!(edns.ecs.is_none()),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn patch_owners_walks_every_record() {
        let mut buf = Vec::new();
        push_rr(&mut buf, rtype::A, 60, &[1, 2, 3, 4]);
        push_rr(&mut buf, rtype::A, 60, &[5, 6, 7, 8]);
        let len = buf.len();
        assert!(patch_owners(&mut buf, 0, len, 12));
        assert_eq!(&buf[0..2], &[0xC0, 12]);
        assert_eq!(&buf[16..18], &[0xC0, 12]);
    }
}
