//! TSIG (RFC 8945): HMAC-signed DNS messages for zone transfers and NOTIFY. Verifies the TSIG of
//! a request, signs responses (every message of a multi-message transfer, each MAC chained to the
//! one before) and signs our own NOTIFY requests. Keys come from the config file
//! (`tsigKeys: [{name, algorithm, secret}]`), algorithms spelled as BIND and NSD spell them.

use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::Name;
use ring::hmac;

use crate::dns::wire;

/// The TSIG record type.
pub const TSIG: u16 = 250;
/// NOTAUTH: the rcode of a request whose TSIG failed (RFC 8945 section 5.2).
pub const NOTAUTH: u8 = 9;
/// TSIG error codes (in the TSIG record, not the header).
pub mod error {
    pub const BADSIG: u16 = 16;
    pub const BADKEY: u16 = 17;
    pub const BADTIME: u16 = 18;
    pub const BADTRUNC: u16 = 22;
}
/// Allowed clock difference, as BIND, NSD and Knot send it.
pub const FUDGE: u16 = 300;

/// A supported HMAC algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    /// Parses `hmac-sha256` (BIND/NSD/Knot spelling), with or without a trailing dot.
    pub fn parse(text: &str) -> Option<Self> {
        match text
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase()
            .as_str()
        {
            "hmac-sha256" => Some(Self::HmacSha256),
            "hmac-sha384" => Some(Self::HmacSha384),
            "hmac-sha512" => Some(Self::HmacSha512),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha384 => "hmac-sha384",
            Self::HmacSha512 => "hmac-sha512",
        }
    }

    /// The algorithm name in wire form: one label, `hmac-sha256.`.
    fn wire_name(self) -> Vec<u8> {
        let name = self.as_str();
        let mut out = Vec::with_capacity(name.len() + 2);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            Self::HmacSha256 => hmac::HMAC_SHA256,
            Self::HmacSha384 => hmac::HMAC_SHA384,
            Self::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    fn mac_len(self) -> usize {
        match self {
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }
}

/// One shared secret.
#[derive(Clone)]
pub struct Key {
    /// The key name as configured (for messages).
    pub name: String,
    /// Lowercase wire form of the name: how it is matched (with or without the trailing dot).
    wire: Vec<u8>,
    pub algorithm: Algorithm,
    key: hmac::Key,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A key from its name, algorithm and base64 secret; the error says which part is wrong.
    pub fn new(name: &str, algorithm: &str, secret_base64: &str) -> Result<Self, String> {
        let parsed = Name::from_ascii(name.trim())
            .map_err(|e| format!("key name {name:?} is not a domain name: {e}"))?;
        let algorithm = Algorithm::parse(algorithm).ok_or_else(|| {
            format!(
                "key {name}: algorithm {algorithm:?} is not supported (use hmac-sha256, hmac-sha384 or hmac-sha512)"
            )
        })?;
        use base64::Engine as _;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret_base64.trim())
            .map_err(|e| format!("key {name}: secret is not base64: {e}"))?;
        if secret.is_empty() {
            return Err(format!("key {name}: secret is empty"));
        }
        let mut wire = Vec::new();
        crate::dns::store::push_name(&mut wire, &parsed.to_lowercase());
        Ok(Self {
            name: name.trim().trim_end_matches('.').to_owned(),
            wire,
            algorithm,
            key: hmac::Key::new(algorithm.ring(), &secret),
        })
    }

    /// Whether `name` (any case, with or without the trailing dot) names this key.
    pub fn is_named(&self, name: &str) -> bool {
        self.name
            .eq_ignore_ascii_case(name.trim().trim_end_matches('.'))
    }
}

/// A parsed TSIG record of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsigRecord<'a> {
    /// Offset of the TSIG record in the message (the message signed ends here).
    pub at: usize,
    /// The key name, lowercase wire form.
    pub key_name: Vec<u8>,
    /// The algorithm name, lowercase wire form.
    pub algorithm: Vec<u8>,
    pub time_signed: u64,
    pub fudge: u16,
    pub mac: &'a [u8],
    pub original_id: u16,
    pub error: u16,
    pub other: &'a [u8],
}

/// A message too malformed to find its TSIG in, or with a TSIG that is not its last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Finds the TSIG record: the last record of the additional section. `Ok(None)` without one.
pub fn find(message: &[u8]) -> Result<Option<TsigRecord<'_>>, Malformed> {
    if message.len() < wire::HEADER_LEN {
        return Err(Malformed);
    }
    let count = |i: usize| u16::from_be_bytes([message[4 + 2 * i], message[5 + 2 * i]]) as usize;
    let (qd, records) = (count(0), count(1) + count(2) + count(3));
    let mut at = wire::HEADER_LEN;
    for _ in 0..qd {
        at = wire::skip_name(message, at).ok_or(Malformed)? + 4;
    }
    let mut found = None;
    for i in 0..records {
        let start = at;
        let name_end = wire::skip_name(message, at).ok_or(Malformed)?;
        let header = message.get(name_end..name_end + 10).ok_or(Malformed)?;
        let rtype = u16::from_be_bytes([header[0], header[1]]);
        let rdlen = u16::from_be_bytes([header[8], header[9]]) as usize;
        let rdata = message
            .get(name_end + 10..name_end + 10 + rdlen)
            .ok_or(Malformed)?;
        at = name_end + 10 + rdlen;
        if rtype == TSIG {
            if i != records - 1 || count(3) == 0 {
                return Err(Malformed);
            }
            let key_name = lower_name(message, start).ok_or(Malformed)?;
            found = Some(parse_rdata(start, key_name, rdata).ok_or(Malformed)?);
        }
    }
    Ok(found)
}

/// The lowercase uncompressed wire form of the (possibly compressed) name at `at`.
fn lower_name(message: &[u8], at: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = at;
    let mut jumps = 0;
    loop {
        let len = *message.get(at)? as usize;
        if len & 0xC0 == 0xC0 {
            jumps += 1;
            if jumps > 16 {
                return None;
            }
            at = ((len & 0x3F) << 8) | *message.get(at + 1)? as usize;
            continue;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        out.push(len as u8);
        if len == 0 {
            return (out.len() <= wire::MAX_NAME_WIRE).then_some(out);
        }
        out.extend(
            message
                .get(at + 1..at + 1 + len)?
                .iter()
                .map(u8::to_ascii_lowercase),
        );
        at += 1 + len;
    }
}

fn parse_rdata<'a>(at: usize, key_name: Vec<u8>, rdata: &'a [u8]) -> Option<TsigRecord<'a>> {
    let alg_end = wire::uncompressed_name_end(rdata, 0)?;
    let algorithm: Vec<u8> = rdata[..alg_end]
        .iter()
        .map(u8::to_ascii_lowercase)
        .collect();
    let r = &rdata[alg_end..];
    let time = r.get(..6)?;
    let time_signed = time.iter().fold(0u64, |t, b| (t << 8) | *b as u64);
    let fudge = u16::from_be_bytes([*r.get(6)?, *r.get(7)?]);
    let mac_len = u16::from_be_bytes([*r.get(8)?, *r.get(9)?]) as usize;
    let mac = r.get(10..10 + mac_len)?;
    let r = &r[10 + mac_len..];
    let original_id = u16::from_be_bytes([*r.first()?, *r.get(1)?]);
    let error = u16::from_be_bytes([*r.get(2)?, *r.get(3)?]);
    let other_len = u16::from_be_bytes([*r.get(4)?, *r.get(5)?]) as usize;
    let other = r.get(6..6 + other_len)?;
    if r.len() != 6 + other_len {
        return None;
    }
    Some(TsigRecord {
        at,
        key_name,
        algorithm,
        time_signed,
        fudge,
        mac,
        original_id,
        error,
        other,
    })
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a request's TSIG was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Unknown key or algorithm (BADKEY).
    BadKey,
    /// Wrong MAC (BADSIG).
    BadSig,
    /// Signed too long ago or in the future (BADTIME); carries the MAC to chain the answer to.
    BadTime,
    /// MAC shorter than allowed (BADTRUNC).
    BadTrunc,
    /// A malformed TSIG (FORMERR).
    Malformed,
}

impl Failure {
    pub fn code(self) -> u16 {
        match self {
            Self::BadKey => error::BADKEY,
            Self::BadSig => error::BADSIG,
            Self::BadTime => error::BADTIME,
            Self::BadTrunc => error::BADTRUNC,
            Self::Malformed => 0,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::BadKey => "badkey",
            Self::BadSig => "badsig",
            Self::BadTime => "badtime",
            Self::BadTrunc => "badtrunc",
            Self::Malformed => "formerr",
        }
    }
}

/// Verifies the TSIG `tsig` of `message` against `keys` at `now`: the key it used, or why not.
pub fn verify<'k>(
    message: &[u8],
    tsig: &TsigRecord<'_>,
    keys: &'k [Key],
    now: u64,
) -> Result<&'k Key, (Failure, Option<&'k Key>)> {
    let key = keys
        .iter()
        .find(|k| k.wire == tsig.key_name)
        .ok_or((Failure::BadKey, None))?;
    if key.algorithm.wire_name() != tsig.algorithm {
        return Err((Failure::BadKey, None));
    }
    let full = key.algorithm.mac_len();
    if tsig.mac.len() > full || tsig.mac.len() < 10 {
        return Err((Failure::Malformed, None));
    }
    if tsig.mac.len() < full / 2 {
        return Err((Failure::BadTrunc, None));
    }
    let mut ctx = hmac::Context::with_key(&key.key);
    signed_message(&mut ctx, message, tsig.at, tsig.original_id);
    variables(
        &mut ctx,
        key,
        tsig.time_signed,
        tsig.fudge,
        tsig.error,
        tsig.other,
    );
    let mac = ctx.sign();
    if !constant_time_eq(&mac.as_ref()[..tsig.mac.len()], tsig.mac) {
        return Err((Failure::BadSig, None));
    }
    if now.abs_diff(tsig.time_signed) > tsig.fudge as u64 {
        return Err((Failure::BadTime, Some(key)));
    }
    Ok(key)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Feeds the message up to the TSIG at `tsig_at`, with ARCOUNT one less and the original ID.
fn signed_message(ctx: &mut hmac::Context, message: &[u8], tsig_at: usize, original_id: u16) {
    let mut header = [0u8; wire::HEADER_LEN];
    header.copy_from_slice(&message[..wire::HEADER_LEN]);
    header[0..2].copy_from_slice(&original_id.to_be_bytes());
    let ar = u16::from_be_bytes([header[10], header[11]]).saturating_sub(1);
    header[10..12].copy_from_slice(&ar.to_be_bytes());
    ctx.update(&header);
    ctx.update(&message[wire::HEADER_LEN..tsig_at]);
}

/// The TSIG variables of RFC 8945 section 4.3.3.
fn variables(ctx: &mut hmac::Context, key: &Key, time: u64, fudge: u16, error: u16, other: &[u8]) {
    ctx.update(&key.wire);
    ctx.update(&255u16.to_be_bytes());
    ctx.update(&0u32.to_be_bytes());
    ctx.update(&key.algorithm.wire_name());
    ctx.update(&time.to_be_bytes()[2..]);
    ctx.update(&fudge.to_be_bytes());
    ctx.update(&error.to_be_bytes());
    ctx.update(&(other.len() as u16).to_be_bytes());
    ctx.update(other);
}

/// Appends a TSIG record to `message` and bumps its ARCOUNT.
#[allow(clippy::too_many_arguments)]
fn append(
    message: &mut Vec<u8>,
    key: &Key,
    time: u64,
    mac: &[u8],
    original_id: u16,
    error: u16,
    other: &[u8],
) {
    let alg = key.algorithm.wire_name();
    message.extend_from_slice(&key.wire);
    message.extend_from_slice(&TSIG.to_be_bytes());
    message.extend_from_slice(&255u16.to_be_bytes());
    message.extend_from_slice(&0u32.to_be_bytes());
    let rdlen = alg.len() + 6 + 2 + 2 + mac.len() + 2 + 2 + 2 + other.len();
    message.extend_from_slice(&(rdlen as u16).to_be_bytes());
    message.extend_from_slice(&alg);
    message.extend_from_slice(&time.to_be_bytes()[2..]);
    message.extend_from_slice(&FUDGE.to_be_bytes());
    message.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    message.extend_from_slice(mac);
    message.extend_from_slice(&original_id.to_be_bytes());
    message.extend_from_slice(&error.to_be_bytes());
    message.extend_from_slice(&(other.len() as u16).to_be_bytes());
    message.extend_from_slice(other);
    let ar = u16::from_be_bytes([message[10], message[11]]) + 1;
    message[10..12].copy_from_slice(&ar.to_be_bytes());
}

/// Room a TSIG record with `key` takes at the end of a message.
pub fn overhead(key: &Key) -> usize {
    key.wire.len() + 10 + key.algorithm.wire_name().len() + 16 + key.algorithm.mac_len() + 6
}

/// Signs the messages of one response to a request signed with `request_mac`: the first with
/// the full TSIG variables, each later one chained to the MAC before it with the timers only
/// (RFC 8945 section 5.3.1).
#[derive(Debug)]
pub struct ResponseSigner<'k> {
    key: &'k Key,
    prior_mac: Vec<u8>,
    first: bool,
    time: u64,
}

impl<'k> ResponseSigner<'k> {
    pub fn new(key: &'k Key, request_mac: &[u8], time: u64) -> Self {
        Self {
            key,
            prior_mac: request_mac.to_vec(),
            first: true,
            time,
        }
    }

    /// Appends the TSIG of the next message (with TSIG error `error`, and `other` data).
    pub fn sign(&mut self, message: &mut Vec<u8>, error: u16, other: &[u8]) {
        let mut ctx = hmac::Context::with_key(&self.key.key);
        ctx.update(&(self.prior_mac.len() as u16).to_be_bytes());
        ctx.update(&self.prior_mac);
        ctx.update(message);
        if self.first {
            variables(&mut ctx, self.key, self.time, FUDGE, error, other);
        } else {
            ctx.update(&self.time.to_be_bytes()[2..]);
            ctx.update(&FUDGE.to_be_bytes());
        }
        let mac = ctx.sign();
        let id = u16::from_be_bytes([message[0], message[1]]);
        append(message, self.key, self.time, mac.as_ref(), id, error, other);
        self.prior_mac = mac.as_ref().to_vec();
        self.first = false;
    }
}

/// Signs a request (our NOTIFY); returns its MAC, to verify the answer with.
pub fn sign_request(message: &mut Vec<u8>, key: &Key, time: u64) -> Vec<u8> {
    let mut ctx = hmac::Context::with_key(&key.key);
    ctx.update(message);
    variables(&mut ctx, key, time, FUDGE, 0, &[]);
    let mac = ctx.sign();
    let id = u16::from_be_bytes([message[0], message[1]]);
    append(message, key, time, mac.as_ref(), id, 0, &[]);
    mac.as_ref().to_vec()
}

/// Verifies the TSIG of a response to a request we signed with MAC `request_mac`.
pub fn verify_response(message: &[u8], key: &Key, request_mac: &[u8]) -> bool {
    let Ok(Some(tsig)) = find(message) else {
        return false;
    };
    if tsig.key_name != key.wire || tsig.mac.len() != key.algorithm.mac_len() {
        return false;
    }
    let mut ctx = hmac::Context::with_key(&key.key);
    ctx.update(&(request_mac.len() as u16).to_be_bytes());
    ctx.update(request_mac);
    signed_message(&mut ctx, message, tsig.at, tsig.original_id);
    variables(
        &mut ctx,
        key,
        tsig.time_signed,
        tsig.fudge,
        tsig.error,
        tsig.other,
    );
    constant_time_eq(ctx.sign().as_ref(), tsig.mac)
}

/// Turns `response` (a header and question, nothing else) into a TSIG error answer: rcode
/// NOTAUTH, with an unsigned TSIG carrying `failure` (BADKEY, BADSIG, BADTRUNC) or, for BADTIME,
/// a signed one carrying our time (RFC 8945 section 5.2).
pub fn error_response(
    response: &mut Vec<u8>,
    tsig: &TsigRecord<'_>,
    failure: Failure,
    key: Option<&Key>,
    now: u64,
) {
    response[3] = (response[3] & 0xF0) | NOTAUTH;
    match (failure, key) {
        (Failure::BadTime, Some(key)) => {
            let mut signer = ResponseSigner::new(key, tsig.mac, tsig.time_signed);
            signer.sign(response, error::BADTIME, &now.to_be_bytes()[2..]);
        }
        _ => {
            // The request's key name and algorithm echoed, no MAC.
            response.extend_from_slice(&tsig.key_name);
            response.extend_from_slice(&TSIG.to_be_bytes());
            response.extend_from_slice(&255u16.to_be_bytes());
            response.extend_from_slice(&0u32.to_be_bytes());
            let rdlen = tsig.algorithm.len() + 16;
            response.extend_from_slice(&(rdlen as u16).to_be_bytes());
            response.extend_from_slice(&tsig.algorithm);
            response.extend_from_slice(&tsig.time_signed.to_be_bytes()[2..]);
            response.extend_from_slice(&tsig.fudge.to_be_bytes());
            response.extend_from_slice(&0u16.to_be_bytes());
            response.extend_from_slice(&tsig.original_id.to_be_bytes());
            response.extend_from_slice(&failure.code().to_be_bytes());
            response.extend_from_slice(&0u16.to_be_bytes());
            let ar = u16::from_be_bytes([response[10], response[11]]) + 1;
            response[10..12].copy_from_slice(&ar.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(
            "xfr-key.",
            "hmac-sha256",
            "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
        )
        .unwrap()
    }

    fn query() -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x07example\x03com\x00\x00\xfc\x00\x01");
        q
    }

    #[test]
    fn a_signed_request_verifies_and_a_changed_one_does_not() {
        let k = key();
        let mut q = query();
        sign_request(&mut q, &k, 1000);
        let tsig = find(&q).unwrap().unwrap();
        assert_eq!(
            verify(&q, &tsig, std::slice::from_ref(&k), 1000)
                .unwrap()
                .name,
            "xfr-key"
        );
        // Stale: BADTIME after the MAC checked out.
        let stale = verify(&q, &tsig, std::slice::from_ref(&k), 1000 + 301).unwrap_err();
        assert_eq!(stale.0, Failure::BadTime);
        let mut changed = q.clone();
        changed[14] ^= 1;
        let tsig = find(&changed).unwrap().unwrap();
        assert_eq!(
            verify(&changed, &tsig, std::slice::from_ref(&k), 1000)
                .unwrap_err()
                .0,
            Failure::BadSig
        );
        let other = Key::new("other", "hmac-sha256", "c2VjcmV0").unwrap();
        let tsig = find(&q).unwrap().unwrap();
        assert_eq!(
            verify(&q, &tsig, std::slice::from_ref(&other), 1000)
                .unwrap_err()
                .0,
            Failure::BadKey
        );
    }

    #[test]
    fn responses_chain_to_the_request_mac() {
        let k = key();
        let mut q = query();
        let mac = sign_request(&mut q, &k, 1000);
        let mut r = query();
        r[2] |= 0x80;
        ResponseSigner::new(&k, &mac, 1000).sign(&mut r, 0, &[]);
        assert!(verify_response(&r, &k, &mac));
        assert!(!verify_response(&r, &k, &[0; 32]));
    }

    #[test]
    fn truncated_or_garbled_tsig_is_rejected_not_a_panic() {
        let k = key();
        let mut q = query();
        sign_request(&mut q, &k, 1000);
        for cut in 1..40 {
            let short = &q[..q.len() - cut];
            let _ =
                find(short).map(|t| t.map(|t| verify(short, &t, std::slice::from_ref(&k), 1000)));
        }
        assert!(find(&q[..q.len() - 1]).is_err());
    }

    #[test]
    fn the_algorithm_is_one_label_on_the_wire() {
        assert_eq!(Algorithm::HmacSha256.wire_name(), b"\x0bhmac-sha256\x00");
    }

    #[test]
    fn names_and_algorithms_match_as_bind_spells_them() {
        assert_eq!(
            Algorithm::parse("HMAC-SHA512."),
            Some(Algorithm::HmacSha512)
        );
        assert!(Algorithm::parse("hmac-md5").is_none());
        assert!(key().is_named("XFR-KEY"));
        assert!(Key::new("k", "hmac-sha256", "not base64!").is_err());
    }
}
