//! Record data from master-file text to wire form (names uncompressed, case kept): the RFC 3597
//! generic form `\# len hex` for any type, our own encoders for the types the answer path looks
//! into or hickory does not read (A, AAAA, NS, CNAME, PTR, DNAME, MX, AFSDB, RP, TXT, SPF, HINFO,
//! SRV, URI, SOA, LOC, APL, NULL), and hickory's parsers for the rest (CAA, SSHFP, TLSA, SVCB, …).

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use crate::dns::masterfile::{Token, parse_name, parse_ttl};
use crate::dns::store::push_name;

/// The wire RDATA of one record of type `rtype` from its master-file tokens.
pub fn encode(rtype: u16, tokens: &[&Token], origin: Option<&Name>) -> Result<Vec<u8>, String> {
    if let Some(first) = tokens.first()
        && !first.quoted
        && first.text == "\\#"
    {
        return generic(&tokens[1..]);
    }
    let mut out = Vec::new();
    let mut args = Args {
        tokens,
        at: 0,
        origin,
    };
    match rtype {
        1 => out.extend_from_slice(&args.parse::<Ipv4Addr>("IPv4 address")?.octets()),
        28 => out.extend_from_slice(&args.parse::<Ipv6Addr>("IPv6 address")?.octets()),
        // NS, CNAME, PTR, DNAME
        2 | 5 | 12 | 39 => push_name(&mut out, &args.name()?),
        // MX, AFSDB
        15 | 18 => {
            out.extend_from_slice(&args.parse::<u16>("number")?.to_be_bytes());
            push_name(&mut out, &args.name()?);
        }
        // RP
        17 => {
            push_name(&mut out, &args.name()?);
            push_name(&mut out, &args.name()?);
        }
        // TXT, SPF
        16 | 99 => {
            if tokens.is_empty() {
                return Err("no text".into());
            }
            while let Some(t) = args.next() {
                push_string(&mut out, &t.text)?;
            }
        }
        // HINFO
        13 => {
            push_string(&mut out, &args.word("CPU")?.text)?;
            push_string(&mut out, &args.word("OS")?.text)?;
        }
        // SRV
        33 => {
            for what in ["priority", "weight", "port"] {
                out.extend_from_slice(&args.parse::<u16>(what)?.to_be_bytes());
            }
            push_name(&mut out, &args.name()?);
        }
        // URI (RFC 7553): the target is the rest of the RDATA, no length octet.
        256 => {
            for what in ["priority", "weight"] {
                out.extend_from_slice(&args.parse::<u16>(what)?.to_be_bytes());
            }
            let target = unescape(&args.word("target")?.text)?;
            if target.is_empty() {
                return Err("empty URI target".into());
            }
            out.extend_from_slice(&target);
        }
        6 => {
            push_name(&mut out, &args.name()?);
            push_name(&mut out, &args.name()?);
            let serial = args.parse::<u32>("serial")?;
            out.extend_from_slice(&serial.to_be_bytes());
            for what in ["refresh", "retry", "expire", "minimum"] {
                let t = args.word(what)?;
                let v = parse_ttl(&t.text).ok_or_else(|| format!("bad {what} {:?}", t.text))?;
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        29 => loc(&mut args, &mut out)?,
        42 => {
            while let Some(t) = args.next() {
                apl_item(&mut out, &t.text)?;
            }
        }
        10 => return Err("NULL data can only be given as \\# length hex (RFC 3597)".into()),
        _ => {
            let t = RecordType::from(rtype);
            if let RecordType::Unknown(_) = t {
                return Err("give the data of this type as \\# length hex (RFC 3597)".into());
            }
            let text: Vec<String> = tokens
                .iter()
                .map(|t| match t.quoted {
                    true => format!("\"{}\"", t.text),
                    false => t.text.clone(),
                })
                .collect();
            let rdata = RData::try_from_str(t, &text.join(" ")).map_err(|e| e.to_string())?;
            let mut encoder = BinEncoder::new(&mut out);
            encoder.set_name_encoding(NameEncoding::Uncompressed);
            rdata.emit(&mut encoder).map_err(|e| e.to_string())?;
            return Ok(out);
        }
    }
    if let Some(extra) = args.next() {
        return Err(format!("unexpected {:?}", extra.text));
    }
    if out.len() > u16::MAX as usize {
        return Err("data longer than 65535 octets".into());
    }
    Ok(out)
}

struct Args<'a, 't> {
    tokens: &'a [&'t Token],
    at: usize,
    origin: Option<&'a Name>,
}

impl<'t> Args<'_, 't> {
    fn next(&mut self) -> Option<&'t Token> {
        let t = self.tokens.get(self.at)?;
        self.at += 1;
        Some(t)
    }

    fn word(&mut self, what: &str) -> Result<&'t Token, String> {
        self.next().ok_or_else(|| format!("missing {what}"))
    }

    fn parse<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, String> {
        let t = self.word(what)?;
        t.text
            .parse()
            .map_err(|_| format!("bad {what} {:?}", t.text))
    }

    fn name(&mut self) -> Result<Name, String> {
        let t = self.word("name")?;
        parse_name(&t.text, self.origin)
    }
}

/// RFC 3597: `\# <length> <hex>…`.
fn generic(tokens: &[&Token]) -> Result<Vec<u8>, String> {
    let len: usize = tokens
        .first()
        .and_then(|t| t.text.parse().ok())
        .ok_or("\\# needs a length")?;
    let hex: String = tokens[1..].iter().map(|t| t.text.as_str()).collect();
    if !hex.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| "bad hex digits".to_string())?;
    if bytes.len() != len {
        return Err(format!(
            "\\# says {len} octets, the data has {}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Decodes master-file escapes: `\DDD` (decimal) and `\X`.
fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let digits = bytes.get(i + 1..i + 4);
        match digits {
            Some(d) if d.iter().all(u8::is_ascii_digit) => {
                let v: u32 = std::str::from_utf8(d)
                    .unwrap_or("999")
                    .parse()
                    .unwrap_or(999);
                out.push(u8::try_from(v).map_err(|_| format!("bad escape in {text:?}"))?);
                i += 4;
            }
            _ => {
                let c = bytes.get(i + 1).ok_or("a lone \\ at the end")?;
                out.push(*c);
                i += 2;
            }
        }
    }
    Ok(out)
}

/// One character-string (RFC 1035 3.3): a length octet and up to 255 octets.
fn push_string(out: &mut Vec<u8>, text: &str) -> Result<(), String> {
    let bytes = unescape(text)?;
    let len = u8::try_from(bytes.len()).map_err(|_| "a string longer than 255 octets")?;
    out.push(len);
    out.extend_from_slice(&bytes);
    Ok(())
}

/// RFC 1876 LOC: `d [m [s]] N|S d [m [s]] E|W alt[m] [size[m] [hp[m] [vp[m]]]]`.
fn loc(args: &mut Args<'_, '_>, out: &mut Vec<u8>) -> Result<(), String> {
    let mut angle = |hemis: [&str; 2], max_deg: u32| -> Result<u32, String> {
        let mut parts = Vec::new();
        let sign = loop {
            let t = args.word("coordinate")?;
            if hemis[0].eq_ignore_ascii_case(&t.text) {
                break 1i64;
            }
            if hemis[1].eq_ignore_ascii_case(&t.text) {
                break -1i64;
            }
            if parts.len() == 3 {
                return Err(format!("expected {} or {}", hemis[0], hemis[1]));
            }
            parts.push(t.text.clone());
        };
        let deg: u32 = parts
            .first()
            .and_then(|d| d.parse().ok())
            .filter(|d| *d <= max_deg)
            .ok_or("bad degrees")?;
        let min: u32 = match parts.get(1) {
            Some(m) => m.parse().ok().filter(|m| *m < 60).ok_or("bad minutes")?,
            None => 0,
        };
        let msec = match parts.get(2) {
            Some(s) => thousandths(s)
                .filter(|s| *s < 60_000)
                .ok_or("bad seconds")?,
            None => 0,
        };
        let total = ((deg * 60 + min) * 60_000 + msec) as i64;
        Ok(((1i64 << 31) + sign * total) as u32)
    };
    let lat = angle(["N", "S"], 90)?;
    let lon = angle(["E", "W"], 180)?;
    let alt = args.word("altitude")?;
    let alt_cm = centimetres(&alt.text).ok_or("bad altitude")?;
    let alt = u32::try_from(alt_cm + 10_000_000).map_err(|_| "altitude out of range")?;
    let mut precision = [100i64, 1_000_000, 1_000];
    for p in &mut precision {
        match args.next() {
            Some(t) => {
                *p = centimetres(&t.text)
                    .filter(|v| *v >= 0)
                    .ok_or("bad precision")?
            }
            None => break,
        }
    }
    out.push(0);
    for p in precision {
        let mut exponent = 0;
        let mut power = 1i64;
        while exponent < 9 && p >= power * 10 {
            exponent += 1;
            power *= 10;
        }
        let mantissa = (p / power).min(9) as u8;
        out.push((mantissa << 4) | exponent);
    }
    out.extend_from_slice(&lat.to_be_bytes());
    out.extend_from_slice(&lon.to_be_bytes());
    out.extend_from_slice(&alt.to_be_bytes());
    Ok(())
}

/// A decimal with up to `places` fractional digits, scaled by 10^places.
fn scaled(text: &str, places: u32) -> Option<i64> {
    let (neg, text) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > places as usize || (int.is_empty() && frac.is_empty()) {
        return None;
    }
    let int: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut f: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    f *= 10i64.pow(places - frac.len() as u32);
    let v = int.checked_mul(10i64.pow(places))? + f;
    Some(if neg { -v } else { v })
}

fn thousandths(text: &str) -> Option<u32> {
    scaled(text, 3).and_then(|v| u32::try_from(v).ok())
}

fn centimetres(text: &str) -> Option<i64> {
    scaled(text.strip_suffix(['m', 'M']).unwrap_or(text), 2)
}

/// One APL item (RFC 3123): `[!]afi:address/prefix`.
fn apl_item(out: &mut Vec<u8>, text: &str) -> Result<(), String> {
    let bad = || format!("bad APL item {text:?}");
    let (negate, rest) = match text.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (afi, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (address, prefix) = rest.split_once('/').ok_or_else(bad)?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let (afi, mut bytes, max) = match afi {
        "1" => (
            1u16,
            address
                .parse::<Ipv4Addr>()
                .map_err(|_| bad())?
                .octets()
                .to_vec(),
            32,
        ),
        "2" => (
            2u16,
            address
                .parse::<Ipv6Addr>()
                .map_err(|_| bad())?
                .octets()
                .to_vec(),
            128,
        ),
        _ => return Err(bad()),
    };
    if prefix > max {
        return Err(bad());
    }
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    out.extend_from_slice(&afi.to_be_bytes());
    out.push(prefix);
    out.push(bytes.len() as u8 | if negate { 0x80 } else { 0 });
    out.extend_from_slice(&bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(rtype: u16, text: &[&str]) -> Result<Vec<u8>, String> {
        let tokens: Vec<Token> = text
            .iter()
            .map(|t| match t.strip_prefix('"') {
                Some(q) => Token {
                    text: q.strip_suffix('"').unwrap_or(q).into(),
                    quoted: true,
                },
                None => Token {
                    text: (*t).into(),
                    quoted: false,
                },
            })
            .collect();
        let refs: Vec<&Token> = tokens.iter().collect();
        encode(rtype, &refs, Some(&Name::from_ascii("acme.com.").unwrap()))
    }

    #[test]
    fn generic_form_works_for_any_type() {
        assert_eq!(
            enc(65534, &["\\#", "3", "abcd", "ef"]).unwrap(),
            [0xAB, 0xCD, 0xEF]
        );
        assert_eq!(enc(1, &["\\#", "4", "c0000201"]).unwrap(), [192, 0, 2, 1]);
        assert_eq!(enc(10, &["\\#", "0"]).unwrap(), Vec::<u8>::new());
        assert!(enc(65534, &["\\#", "2", "ab"]).is_err());
        assert!(enc(65534, &["00"]).is_err());
    }

    #[test]
    fn names_are_relative_to_the_origin_and_keep_case() {
        assert_eq!(enc(39, &["Other.org."]).unwrap(), b"\x05Other\x03org\x00");
        assert_eq!(
            enc(17, &["mbox", "@"]).unwrap(),
            b"\x04mbox\x04acme\x03com\x00\x04acme\x03com\x00"
        );
        assert_eq!(
            enc(18, &["1", "db"]).unwrap(),
            b"\x00\x01\x02db\x04acme\x03com\x00"
        );
    }

    #[test]
    fn text_strings_decode_escapes() {
        assert_eq!(enc(99, &["\"v=spf1 -all\""]).unwrap(), b"\x0bv=spf1 -all");
        assert_eq!(
            enc(16, &["a\\032b", "\"q\\\"\""]).unwrap(),
            b"\x03a b\x02q\""
        );
        assert_eq!(
            enc(256, &["10", "1", "\"ftp://ftp1.example.com/public\""]).unwrap()[..4],
            [0, 10, 0, 1]
        );
    }

    #[test]
    fn loc_matches_rfc_1876_encoding() {
        // From RFC 1876 / BIND: 42 21 54 N 71 06 18 W -24m 30m
        let wire = enc(
            29,
            &["42", "21", "54", "N", "71", "06", "18", "W", "-24m", "30m"],
        )
        .unwrap();
        assert_eq!(
            wire,
            [
                0x00, 0x33, 0x16, 0x13, 0x89, 0x17, 0x2d, 0xd0, 0x70, 0xbe, 0x15, 0xf0, 0x00, 0x98,
                0x8d, 0x20
            ]
        );
    }

    #[test]
    fn apl_items() {
        let wire = enc(42, &["1:192.168.32.0/21", "!1:192.168.38.0/28"]).unwrap();
        assert_eq!(
            wire,
            [0, 1, 21, 3, 192, 168, 32, 0, 1, 28, 0x83, 192, 168, 38]
        );
    }

    #[test]
    fn other_types_go_through_hickory() {
        let wire = enc(257, &["0", "issue", "\"ca.example.net\""]).unwrap();
        assert!(wire.ends_with(b"ca.example.net"));
    }
}
