//! Response rate limiting for UDP answers, as NSD, Knot and BIND do it: responses are counted per
//! client prefix (/24 for IPv4, /56 for IPv6) and per response class (answers for one name and
//! type, NXDOMAIN, errors, referrals), and a bucket over its rate drops its responses, except that
//! every `slip`th is sent truncated so a real client behind the prefix retries over TCP.
//!
//! Each UDP worker owns its [`RateLimiter`] (a fixed table, no lock, no shared cache line, no
//! allocation per query). With N workers a flood is split across N tables by the kernel's
//! SO_REUSEPORT hash of the client's address and port; one client's queries mostly land on one.

use std::hash::Hasher;
use std::net::IpAddr;
use std::time::Duration;

use rustc_hash::FxHasher;

use crate::dns::responder::ResponseClass;
use crate::dns::wire;

/// Rate limiting settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlSettings {
    /// Responses per second per bucket; 0 turns rate limiting off.
    pub rate: u32,
    /// Every `slip`th limited response is sent truncated instead of dropped; 0 drops all, 1
    /// truncates all.
    pub slip: u32,
    /// How long a bucket's debt is remembered: a client that flooded stays limited for up to this
    /// long after it stops.
    pub window: Duration,
    /// Client prefixes never limited (e.g. the cluster resolvers that forward to fedns).
    pub exempt: Vec<Prefix>,
}

impl Default for RrlSettings {
    fn default() -> Self {
        Self {
            rate: 200,
            slip: 2,
            window: Duration::from_secs(15),
            exempt: Vec::new(),
        }
    }
}

/// An address prefix, `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::str::FromStr for Prefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address prefix (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Self { addr, len })
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Prefix {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.len as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.len as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Send,
    /// Send it truncated (TC, no records): a real client retries over TCP.
    Slip,
    Drop,
}

/// Buckets per worker: direct-mapped, a collision takes the bucket over (as NSD's table does).
const BUCKETS: usize = 1 << 14;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    key: u64,
    /// Second (since the limiter started) of the last update.
    second: u32,
    /// Responses still allowed; negative: debt.
    balance: i32,
    /// Limited responses so far, for the slip count.
    limited: u32,
}

/// One worker's rate limiter.
#[derive(Debug)]
pub struct RateLimiter {
    settings: RrlSettings,
    buckets: Box<[Bucket]>,
}

impl RateLimiter {
    pub fn new(settings: RrlSettings) -> Self {
        let size = if settings.rate == 0 { 0 } else { BUCKETS };
        Self {
            settings,
            buckets: vec![Bucket::default(); size].into_boxed_slice(),
        }
    }

    /// Decides about a response of `class` to `client`, at `second` (whole seconds on any
    /// monotonic clock); `question` is the response up to the end of its question section.
    #[inline]
    pub fn check(
        &mut self,
        client: IpAddr,
        class: ResponseClass,
        question: &[u8],
        second: u32,
    ) -> Action {
        if self.settings.rate == 0 || self.settings.exempt.iter().any(|p| p.contains(client)) {
            return Action::Send;
        }
        let key = bucket_key(client, class, question);
        let rate = self.settings.rate.min(i32::MAX as u32 / 2) as i32;
        let window = self.settings.window.as_secs().clamp(1, 3600) as i32;
        let debt_limit = -rate.saturating_mul(window);
        let bucket = &mut self.buckets[(key as usize) & (BUCKETS - 1)];
        if bucket.key != key {
            *bucket = Bucket {
                key,
                second,
                balance: rate,
                limited: 0,
            };
        } else {
            let elapsed = second.wrapping_sub(bucket.second).min(3600) as i32;
            bucket.balance = bucket
                .balance
                .saturating_add(elapsed.saturating_mul(rate))
                .min(rate);
            bucket.second = second;
        }
        bucket.balance = (bucket.balance - 1).max(debt_limit);
        if bucket.balance >= 0 {
            return Action::Send;
        }
        bucket.limited = bucket.limited.wrapping_add(1);
        match self.settings.slip {
            0 => Action::Drop,
            slip if bucket.limited.is_multiple_of(slip) => Action::Slip,
            _ => Action::Drop,
        }
    }
}

/// Bit 5 of every byte: set on a name's bytes, it folds ASCII letters to lowercase.
const FOLD: u64 = 0x2020_2020_2020_2020;

/// The bucket of a response: the client's prefix and the response class, plus the question name
/// and type for answers (so a flood for one name does not limit the others). NXDOMAIN, errors and
/// referrals share one bucket per prefix and class, whatever the name: random names must not
/// escape the limit. `question` is the response up to the end of its question section.
///
/// The name is hashed eight bytes at a time with bit 5 of each byte set, so names differing only
/// in case share a bucket; a few other byte values fold together as well, which can only let two
/// names share a bucket (more limiting, never less).
fn bucket_key(client: IpAddr, class: ResponseClass, question: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    match client {
        IpAddr::V4(ip) => h.write_u32(u32::from(ip) & 0xFFFF_FF00),
        IpAddr::V6(ip) => h.write_u64((u128::from(ip) >> 72) as u64),
    }
    h.write_u8(class as u8);
    // Name and type: the question without its class.
    let name_and_type = question.get(wire::QNAME_OFFSET..question.len().saturating_sub(2));
    if class == ResponseClass::Answer
        && let Some(name_and_type) = name_and_type
        && name_and_type.len() >= 3
    {
        let (name, qtype) = name_and_type.split_at(name_and_type.len() - 2);
        let mut words = name.chunks_exact(8);
        for word in &mut words {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            h.write_u64(u64::from_le_bytes(bytes) | FOLD);
        }
        let rest = words.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h.write_u64(u64::from_le_bytes(last) | FOLD);
        h.write_u16(u16::from_be_bytes([qtype[0], qtype[1]]));
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(name: &[u8], qtype: u16) -> Vec<u8> {
        let mut p = vec![0, 1, 0x84, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p
    }

    fn limiter(rate: u32, slip: u32) -> RateLimiter {
        RateLimiter::new(RrlSettings {
            rate,
            slip,
            window: Duration::from_secs(15),
            exempt: vec!["10.9.0.0/16".parse().unwrap()],
        })
    }

    fn run(l: &mut RateLimiter, client: &str, r: &[u8], n: usize, second: u32) -> [usize; 3] {
        let mut counts = [0; 3];
        for _ in 0..n {
            match l.check(client.parse().unwrap(), ResponseClass::Answer, r, second) {
                Action::Send => counts[0] += 1,
                Action::Slip => counts[1] += 1,
                Action::Drop => counts[2] += 1,
            }
        }
        counts
    }

    #[test]
    fn over_the_rate_every_second_limited_response_slips() {
        let mut l = limiter(10, 2);
        let r = response(b"\x03www\x00", 1);
        assert_eq!(run(&mut l, "192.0.2.1", &r, 30, 0), [10, 10, 10]);
    }

    #[test]
    fn a_slip_of_zero_drops_everything_over_the_rate() {
        let mut l = limiter(10, 0);
        let r = response(b"\x03www\x00", 1);
        assert_eq!(run(&mut l, "192.0.2.1", &r, 30, 0), [10, 0, 20]);
    }

    #[test]
    fn clients_in_one_slash_24_share_a_bucket_others_do_not() {
        let mut l = limiter(10, 0);
        let r = response(b"\x03www\x00", 1);
        assert_eq!(run(&mut l, "192.0.2.1", &r, 10, 0), [10, 0, 0]);
        assert_eq!(run(&mut l, "192.0.2.200", &r, 1, 0), [0, 0, 1]);
        assert_eq!(run(&mut l, "192.0.3.1", &r, 1, 0), [1, 0, 0]);
        assert_eq!(run(&mut l, "2001:db8:0:100::1", &r, 10, 0), [10, 0, 0]);
        assert_eq!(
            run(&mut l, "2001:db8:0:1ff::9", &r, 1, 0),
            [0, 0, 1],
            "same /56"
        );
        assert_eq!(run(&mut l, "2001:db8:0:200::1", &r, 1, 0), [1, 0, 0]);
    }

    #[test]
    fn names_and_types_have_their_own_buckets_but_nxdomains_share_one() {
        let mut l = limiter(5, 0);
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        for name in [&b"\x01a\x00"[..], b"\x01b\x00", b"\x01c\x00"] {
            assert_eq!(
                run(&mut l, "192.0.2.1", &response(name, 1), 5, 0),
                [5, 0, 0]
            );
        }
        let sent = (0..10u8)
            .filter(|i| {
                let name = [1, b'a' + i, 0];
                l.check(client, ResponseClass::Nxdomain, &response(&name, 1), 0) == Action::Send
            })
            .count();
        assert_eq!(sent, 5, "random names do not escape the NXDOMAIN limit");
    }

    #[test]
    fn names_differing_only_in_case_share_a_bucket() {
        let mut l = limiter(5, 0);
        let long = b"\x0bLongerLabel\x07Example\x03COM\x00";
        assert_eq!(
            run(&mut l, "192.0.2.1", &response(long, 1), 5, 0),
            [5, 0, 0]
        );
        let lower = long.to_ascii_lowercase();
        assert_eq!(
            run(&mut l, "192.0.2.1", &response(&lower, 1), 1, 0),
            [0, 0, 1]
        );
        // The type still counts: AAAA has its own bucket.
        assert_eq!(
            run(&mut l, "192.0.2.1", &response(&lower, 28), 1, 0),
            [1, 0, 0]
        );
    }

    #[test]
    fn the_rate_refills_each_second_and_debt_is_paid_off() {
        let mut l = limiter(10, 0);
        let r = response(b"\x03www\x00", 1);
        assert_eq!(run(&mut l, "192.0.2.1", &r, 10, 0), [10, 0, 0]);
        assert_eq!(run(&mut l, "192.0.2.1", &r, 10, 1), [10, 0, 0]);
        // Three seconds' worth in one second: two seconds of debt.
        assert_eq!(run(&mut l, "192.0.2.1", &r, 30, 2), [10, 0, 20]);
        assert_eq!(
            run(&mut l, "192.0.2.1", &r, 1, 3),
            [0, 0, 1],
            "still paying"
        );
        assert_eq!(run(&mut l, "192.0.2.1", &r, 1, 5), [1, 0, 0]);
    }

    #[test]
    fn exempt_prefixes_and_rate_zero_are_never_limited() {
        let mut l = limiter(1, 0);
        let r = response(b"\x03www\x00", 1);
        assert_eq!(run(&mut l, "10.9.3.4", &r, 100, 0), [100, 0, 0]);
        let mut off = limiter(0, 2);
        assert_eq!(run(&mut off, "192.0.2.1", &r, 100, 0), [100, 0, 0]);
    }

    #[test]
    fn prefixes_parse_and_match() {
        let p: Prefix = "10.0.0.0/8".parse().unwrap();
        assert!(p.contains("10.200.1.1".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        let p: Prefix = "2001:db8::/32".parse().unwrap();
        assert!(p.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!p.contains("10.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("nonsense".parse::<Prefix>().is_err());
        assert_eq!("192.0.2.1".parse::<Prefix>().unwrap().len, 32);
    }
}
