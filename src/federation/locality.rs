//! Client locality: where a query comes from, and which clusters the global name answers it with.
//!
//! - [`LocationTable`]: the config's `clientNetworks` (longest prefix wins, IPv4 and IPv6) and
//!   `regionPreferences`; [`LocationTable::locate`] maps a client address (or an EDNS Client Subnet,
//!   RFC 7871) to a location id and the prefix length the finding depended on (the ECS scope).
//! - [`Strategy`]: a ServiceDNSRecord's `spec.strategy` (`all`, `nearest`, `failover`, `weighted`);
//!   [`choose`] picks the clusters for one location, [`localize`] pre-computes the answers of every
//!   location (and the weighted split) when a record changes, so the answer path only picks one.
//!
//! Pure: no I/O, nothing here runs per query except [`LocationTable::locate`], which allocates
//! nothing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::dns::rrl::Prefix;
use crate::federation::records::{ShardHealth, ShardReport};

/// Location id of a client found nowhere.
pub const NOWHERE: u16 = 0;

/// Where a client is: a region, and a zone inside it when the table says so.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub region: String,
    pub zone: Option<String>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.zone {
            Some(zone) => write!(f, "region {}, zone {zone}", self.region),
            None => write!(f, "region {}", self.region),
        }
    }
}

/// A location found for a client: its id (see [`LocationTable::location`]) and the prefix length
/// the finding depended on, sent back as the ECS SCOPE PREFIX-LENGTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub location: u16,
    pub scope: u8,
    /// Index of the matched `clientNetworks` row, for `explain`.
    pub row: Option<u16>,
}

/// The `clientNetworks` table and the `regionPreferences`, as loaded from the config file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocationTable {
    /// Location `id` is `locations[id - 1]`; id 0 is nowhere.
    locations: Vec<Location>,
    /// (network, location id, row in the config), longest prefix first.
    networks: Vec<(Prefix, u16, u16)>,
    preferences: BTreeMap<String, Vec<String>>,
}

/// One `clientNetworks` row as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientNetwork {
    pub network: String,
    pub region: String,
    #[serde(default)]
    pub zone: Option<String>,
}

impl LocationTable {
    /// Builds the table; a bad network or an empty region is an error naming the row.
    pub fn new(
        rows: &[ClientNetwork],
        preferences: BTreeMap<String, Vec<String>>,
    ) -> Result<Self, String> {
        let mut table = Self {
            preferences,
            ..Self::default()
        };
        for (i, row) in rows.iter().enumerate() {
            let at = |m: String| format!("clientNetworks[{i}]: {m}");
            let network: Prefix = row.network.parse().map_err(at)?;
            if row.region.trim().is_empty() {
                return Err(at("region must not be empty".into()));
            }
            let network = masked(network);
            let location = Location {
                region: row.region.clone(),
                zone: row.zone.clone().filter(|z| !z.is_empty()),
            };
            let id = table.intern(location);
            table.networks.push((network, id, i as u16));
        }
        // Longest prefix first; for equal prefixes the first row in the file wins.
        table
            .networks
            .sort_by(|a, b| b.0.len.cmp(&a.0.len).then(a.2.cmp(&b.2)));
        Ok(table)
    }

    fn intern(&mut self, location: Location) -> u16 {
        match self.locations.iter().position(|l| *l == location) {
            Some(i) => i as u16 + 1,
            None => {
                self.locations.push(location);
                self.locations.len() as u16
            }
        }
    }

    /// Whether no client can be found anywhere.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Number of locations: ids run from 1 to this.
    pub fn len(&self) -> usize {
        self.locations.len()
    }

    /// The location of an id; `None` for [`NOWHERE`].
    pub fn location(&self, id: u16) -> Option<&Location> {
        (id as usize)
            .checked_sub(1)
            .and_then(|i| self.locations.get(i))
    }

    /// The network of a `clientNetworks` row, for `explain`.
    pub fn network(&self, row: u16) -> Option<Prefix> {
        self.networks
            .iter()
            .find(|(_, _, r)| *r == row)
            .map(|(p, _, _)| *p)
    }

    /// The regions to try, in order, after `region` itself (`regionPreferences`).
    pub fn preferences(&self, region: &str) -> &[String] {
        self.preferences.get(region).map_or(&[], Vec::as_slice)
    }

    /// Finds the client `addr` whose first `source_len` bits are known (the ECS SOURCE
    /// PREFIX-LENGTH, or the full length for a query's own source address). Only rows no longer
    /// than `source_len` can match; the scope is the matched row's length, or `source_len` when
    /// nothing matched, raised to the longest row that would need more bits than the client gave
    /// (RFC 7871 section 7.2.1: the source prefix was not specific enough; never for a /0
    /// source). Allocates nothing.
    pub fn locate(&self, addr: IpAddr, source_len: u8) -> Located {
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let source_len = source_len.min(max);
        let mut found = None;
        let mut longer = 0u8;
        for (net, id, row) in &self.networks {
            if net.len > source_len {
                // A /0 source asks for no tailoring at all (RFC 7871 section 7.1.2).
                if source_len == 0 {
                    continue;
                }
                let known = Prefix {
                    addr: net.addr,
                    len: source_len,
                };
                if known.contains(addr) {
                    longer = longer.max(net.len);
                }
            } else if net.contains(addr) {
                found = Some((*id, net.len, *row));
                break;
            }
        }
        match found {
            Some((location, len, row)) => Located {
                location,
                scope: len.max(longer),
                row: Some(row),
            },
            None => Located {
                location: NOWHERE,
                scope: source_len.max(longer),
                row: None,
            },
        }
    }
}

/// IPv4-mapped IPv6 addresses count as IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The prefix with its host bits cleared, so `10.1.2.3/8` prints as `10.0.0.0/8`.
fn masked(p: Prefix) -> Prefix {
    let addr = match canonical(p.addr) {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - p.len.min(32) as u32).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - p.len as u32).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    };
    Prefix { addr, len: p.len }
}

/// How a global name picks its clusters for a client (`spec.strategy` of a ServiceDNSRecord, or
/// the Domain's default).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Every healthy cluster (KubeFed's behaviour).
    #[default]
    All,
    /// The client's zone, else its region, else the preferred regions, else all.
    Nearest,
    /// The primary regions' healthy clusters; the others only when none of them is healthy.
    Failover { primary_regions: Vec<String> },
    /// One healthy cluster per answer, in proportion to its weight.
    Weighted { weights: BTreeMap<String, u32> },
}

/// The strategies' label values, by [`Strategy::code`].
pub const STRATEGY_LABELS: [&str; 4] = ["all", "nearest", "failover", "weighted"];

impl Strategy {
    /// Index into [`STRATEGY_LABELS`].
    pub fn code(&self) -> u8 {
        match self {
            Strategy::All => 0,
            Strategy::Nearest => 1,
            Strategy::Failover { .. } => 2,
            Strategy::Weighted { .. } => 3,
        }
    }

    pub fn label(&self) -> &'static str {
        STRATEGY_LABELS[self.code() as usize]
    }
}

/// Why an answer holds the clusters it holds (the `outcome` label of
/// `fedns_dns_locality_answers_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Every healthy cluster: nothing nearer was healthy, or the strategy is `all`.
    All,
    /// Clusters in the client's zone.
    Zone,
    /// Clusters in the client's region.
    Region,
    /// Clusters in one of the client region's preferred regions.
    Preferred,
    /// The client was found nowhere: every healthy cluster.
    Nowhere,
    /// The primary regions' clusters.
    Primary,
    /// No primary was healthy: the other clusters.
    Secondary,
    /// One cluster picked by weight.
    Weighted,
}

/// The outcomes' label values, by [`Outcome::code`].
pub const OUTCOME_LABELS: [&str; 8] = [
    "all",
    "zone",
    "region",
    "preferred",
    "nowhere",
    "primary",
    "secondary",
    "weighted",
];

impl Outcome {
    /// Index into [`OUTCOME_LABELS`].
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn label(self) -> &'static str {
        OUTCOME_LABELS[self as usize]
    }
}

/// The clusters chosen for one location (indices into the shards given to [`choose`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub clusters: Vec<usize>,
    pub outcome: Outcome,
}

fn healthy(s: &ShardReport) -> bool {
    s.health == ShardHealth::Healthy && !s.targets.is_empty()
}

/// The clusters `strategy` answers a client at `location` with (`None`: nowhere). Weighted
/// strategies answer one cluster at a time: here they give the clusters that take part (see
/// [`weighted_split`]).
pub fn choose(
    strategy: &Strategy,
    shards: &[ShardReport],
    location: Option<&Location>,
    table: &LocationTable,
) -> Choice {
    let pick = |keep: &dyn Fn(&ShardReport) -> bool| -> Vec<usize> {
        (0..shards.len())
            .filter(|i| healthy(&shards[*i]) && keep(&shards[*i]))
            .collect()
    };
    let all = || pick(&|_| true);
    let in_region = |region: &str| pick(&|s| s.region.as_deref() == Some(region));
    let choice = |clusters, outcome| Choice { clusters, outcome };
    match strategy {
        Strategy::All => choice(all(), Outcome::All),
        Strategy::Nearest => {
            let Some(location) = location else {
                return choice(all(), Outcome::Nowhere);
            };
            if let Some(zone) = &location.zone {
                let found = pick(&|s| s.zones.iter().any(|z| z == zone));
                if !found.is_empty() {
                    return choice(found, Outcome::Zone);
                }
            }
            let found = in_region(&location.region);
            if !found.is_empty() {
                return choice(found, Outcome::Region);
            }
            for region in table.preferences(&location.region) {
                let found = in_region(region);
                if !found.is_empty() {
                    return choice(found, Outcome::Preferred);
                }
            }
            choice(all(), Outcome::All)
        }
        Strategy::Failover { primary_regions } => {
            let found = pick(&|s| {
                s.region
                    .as_deref()
                    .is_some_and(|r| primary_regions.iter().any(|p| p == r))
            });
            if found.is_empty() {
                choice(all(), Outcome::Secondary)
            } else {
                choice(found, Outcome::Primary)
            }
        }
        Strategy::Weighted { .. } => {
            let split = weighted_split(strategy, shards);
            if split.is_empty() {
                choice(all(), Outcome::All)
            } else {
                choice(split.iter().map(|(i, _)| *i).collect(), Outcome::Weighted)
            }
        }
    }
}

/// The healthy clusters of a weighted strategy with a weight above 0, and their weights; empty
/// when none (the answer is then like `all`).
pub fn weighted_split(strategy: &Strategy, shards: &[ShardReport]) -> Vec<(usize, u32)> {
    let Strategy::Weighted { weights } = strategy else {
        return Vec::new();
    };
    (0..shards.len())
        .filter(|i| healthy(&shards[*i]))
        .filter_map(|i| {
            let w = weights.get(&shards[i].cluster).copied().unwrap_or(0);
            (w > 0).then_some((i, w))
        })
        .collect()
}

/// Picks an index from cumulative weights (the last is the total) with a uniform `draw`.
/// Allocates nothing; an empty list gives 0.
#[inline]
pub fn pick_weighted(cumulative: impl Iterator<Item = u32> + Clone, draw: u32) -> usize {
    let total = cumulative.clone().last().unwrap_or(0);
    if total == 0 {
        return 0;
    }
    // Multiply-shift maps the draw onto [0, total) without a division's bias toward low values.
    let point = ((draw as u64 * total as u64) >> 32) as u32;
    cumulative.take_while(|c| *c <= point).count()
}

/// One pre-computed answer of a localized name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub outcome: Outcome,
    /// Weight of this answer (weighted strategies); 0 otherwise.
    pub weight: u32,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// Every answer a global name can give under its strategy, computed when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Localized {
    pub strategy: u8,
    /// Whether the answer depends on where the client is (`nearest`): the response then carries
    /// the location's ECS scope, else scope 0.
    pub scoped: bool,
    /// Variant per location id (index 0: nowhere); empty for weighted strategies, one entry (for
    /// everyone) when not scoped.
    pub by_location: Vec<u16>,
    pub variants: Vec<Variant>,
}

/// Pre-computes the answers of `strategy` over `shards` for every location of `table`. `None`
/// for `all` (the plain record set is the answer).
pub fn localize(
    strategy: &Strategy,
    shards: &[ShardReport],
    table: &LocationTable,
) -> Option<Localized> {
    let variant = |clusters: &[usize], outcome, weight| {
        let mut v4 = std::collections::BTreeSet::new();
        let mut v6 = std::collections::BTreeSet::new();
        for i in clusters {
            for t in &shards[*i].targets {
                match canonical(*t) {
                    IpAddr::V4(a) => v4.insert(a),
                    IpAddr::V6(a) => v6.insert(a),
                };
            }
        }
        Variant {
            outcome,
            weight,
            v4: v4.into_iter().collect(),
            v6: v6.into_iter().collect(),
        }
    };
    let mut out = Localized {
        strategy: strategy.code(),
        scoped: false,
        by_location: Vec::new(),
        variants: Vec::new(),
    };
    match strategy {
        Strategy::All => return None,
        Strategy::Weighted { .. } => {
            let split = weighted_split(strategy, shards);
            if split.is_empty() {
                let c = choose(&Strategy::All, shards, None, table);
                out.by_location.push(0);
                out.variants.push(variant(&c.clusters, Outcome::All, 0));
            }
            for (i, w) in split {
                out.variants.push(variant(&[i], Outcome::Weighted, w));
            }
        }
        Strategy::Failover { .. } => {
            let c = choose(strategy, shards, None, table);
            out.by_location.push(0);
            out.variants.push(variant(&c.clusters, c.outcome, 0));
        }
        Strategy::Nearest => {
            out.scoped = true;
            for id in 0..=table.len() as u16 {
                let c = choose(strategy, shards, table.location(id), table);
                let v = variant(&c.clusters, c.outcome, 0);
                let index = match out.variants.iter().position(|x| *x == v) {
                    Some(i) => i,
                    None => {
                        out.variants.push(v);
                        out.variants.len() - 1
                    }
                };
                out.by_location.push(index as u16);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(network: &str, region: &str, zone: Option<&str>) -> ClientNetwork {
        ClientNetwork {
            network: network.into(),
            region: region.into(),
            zone: zone.map(Into::into),
        }
    }

    fn table() -> LocationTable {
        let mut prefs = BTreeMap::new();
        prefs.insert("us".to_owned(), vec!["eu".to_owned(), "ap".to_owned()]);
        LocationTable::new(
            &[
                row("10.0.0.0/8", "us", None),
                row("10.1.0.0/16", "eu", None),
                row("10.1.2.0/24", "eu", Some("eu1")),
                row("2001:db8::/32", "us", None),
                row("2001:db8:1::/48", "ap", None),
            ],
            prefs,
        )
        .unwrap()
    }

    fn at(t: &LocationTable, addr: &str, len: u8) -> (Option<Location>, u8) {
        let found = t.locate(addr.parse().unwrap(), len);
        (t.location(found.location).cloned(), found.scope)
    }

    fn loc(region: &str, zone: Option<&str>) -> Option<Location> {
        Some(Location {
            region: region.into(),
            zone: zone.map(Into::into),
        })
    }

    #[test]
    fn longest_prefix_wins_on_ipv4() {
        let t = table();
        assert_eq!(at(&t, "10.9.9.9", 32), (loc("us", None), 8));
        assert_eq!(at(&t, "10.1.9.9", 32), (loc("eu", None), 16));
        assert_eq!(at(&t, "10.1.2.9", 32), (loc("eu", Some("eu1")), 24));
        assert_eq!(at(&t, "::ffff:10.1.2.9", 128), (loc("eu", Some("eu1")), 24));
    }

    #[test]
    fn longest_prefix_wins_on_ipv6() {
        let t = table();
        assert_eq!(at(&t, "2001:db8:9::1", 128), (loc("us", None), 32));
        assert_eq!(at(&t, "2001:db8:1::1", 128), (loc("ap", None), 48));
        assert_eq!(at(&t, "2001:db8:1::", 56), (loc("ap", None), 48));
    }

    #[test]
    fn unknown_clients_are_nowhere_with_their_source_prefix_as_scope() {
        let t = table();
        assert_eq!(at(&t, "192.0.2.1", 32), (None, 32));
        assert_eq!(at(&t, "192.0.2.0", 24), (None, 24));
        assert_eq!(at(&t, "2001:db9::", 56), (None, 56));
        assert_eq!(at(&t, "0.0.0.0", 0), (None, 0), "ECS /0: nowhere, scope 0");
    }

    #[test]
    fn an_ecs_source_prefix_shorter_than_the_tables_does_not_match_it() {
        let t = table();
        // 10.1.0.0/12 cannot tell the /16 (eu) from the rest of the /8 (us): the /8 answers, and
        // the scope says the answer needed 24 bits (the longest row inside the client's /12).
        assert_eq!(at(&t, "10.0.0.0", 12), (loc("us", None), 24));
        // A /20 inside the eu /16 knows the /16; the one holding the /24 zone row cannot tell.
        assert_eq!(at(&t, "10.1.16.0", 20), (loc("eu", None), 16));
        assert_eq!(at(&t, "10.1.0.0", 20), (loc("eu", None), 24));
        // Too short for any row: nowhere, scope = the longest row it would need.
        assert_eq!(at(&t, "0.0.0.0", 4), (None, 24));
    }

    #[test]
    fn bad_rows_are_errors_naming_the_row() {
        let err = LocationTable::new(&[row("10.0.0.0/33", "us", None)], BTreeMap::new());
        assert!(err.unwrap_err().starts_with("clientNetworks[0]:"));
        let err = LocationTable::new(
            &[row("10.0.0.0/8", "us", None), row("10.0.0.0/8", "", None)],
            BTreeMap::new(),
        );
        assert!(err.unwrap_err().contains("clientNetworks[1]: region"));
    }

    fn shard(cluster: &str, region: &str, zone: &str, ip: &str, ok: bool) -> ShardReport {
        ShardReport {
            cluster: cluster.into(),
            zones: vec![zone.into()],
            region: Some(region.into()),
            health: if ok {
                ShardHealth::Healthy
            } else {
                ShardHealth::NoReadyEndpoints
            },
            load_balancer: Default::default(),
            targets: if ok {
                vec![ip.parse().unwrap()]
            } else {
                vec![]
            },
            unresolved: vec![],
        }
    }

    fn shards() -> Vec<ShardReport> {
        vec![
            shard("ap-1", "ap", "ap1", "10.30.0.1", true),
            shard("eu-1", "eu", "eu1", "10.20.0.1", true),
            shard("eu-2", "eu", "eu2", "10.20.0.2", true),
            shard("us-1", "us", "us1", "10.10.0.1", true),
        ]
    }

    fn names(shards: &[ShardReport], c: &Choice) -> Vec<String> {
        c.clusters
            .iter()
            .map(|i| shards[*i].cluster.clone())
            .collect()
    }

    #[test]
    fn nearest_prefers_zone_then_region_then_preferences_then_all() {
        let t = table();
        let s = shards();
        let pick = |s: &[ShardReport], l: Option<Location>| {
            let c = choose(&Strategy::Nearest, s, l.as_ref(), &t);
            (names(s, &c), c.outcome)
        };
        assert_eq!(
            pick(&s, loc("eu", Some("eu1"))),
            (vec!["eu-1".into()], Outcome::Zone)
        );
        assert_eq!(
            pick(&s, loc("eu", Some("eu9"))),
            (vec!["eu-1".into(), "eu-2".into()], Outcome::Region)
        );
        let mut no_us = s.clone();
        no_us[3] = shard("us-1", "us", "us1", "", false);
        assert_eq!(
            pick(&no_us, loc("us", None)),
            (vec!["eu-1".into(), "eu-2".into()], Outcome::Preferred)
        );
        assert_eq!(pick(&s, None).1, Outcome::Nowhere);
        assert_eq!(pick(&s, None).0.len(), 4);
        assert_eq!(pick(&s, loc("mars", None)).1, Outcome::All);
    }

    #[test]
    fn failover_serves_primaries_until_none_is_healthy() {
        let t = table();
        let strategy = Strategy::Failover {
            primary_regions: vec!["eu".into()],
        };
        let s = shards();
        let c = choose(&strategy, &s, None, &t);
        assert_eq!(names(&s, &c), ["eu-1", "eu-2"]);
        assert_eq!(c.outcome, Outcome::Primary);
        let mut down = s.clone();
        down[1] = shard("eu-1", "eu", "eu1", "", false);
        down[2] = shard("eu-2", "eu", "eu2", "", false);
        let c = choose(&strategy, &down, None, &t);
        assert_eq!(names(&down, &c), ["ap-1", "us-1"]);
        assert_eq!(c.outcome, Outcome::Secondary);
    }

    fn weighted(pairs: &[(&str, u32)]) -> Strategy {
        Strategy::Weighted {
            weights: pairs.iter().map(|(c, w)| (c.to_string(), *w)).collect(),
        }
    }

    #[test]
    fn weighted_drops_unhealthy_and_unlisted_clusters_and_falls_back_to_all() {
        let mut s = shards();
        s[1] = shard("eu-1", "eu", "eu1", "", false);
        let strategy = weighted(&[("eu-1", 5), ("us-1", 3), ("ap-1", 0)]);
        let split = weighted_split(&strategy, &s);
        assert_eq!(split, [(3, 3)]);
        let none = weighted(&[("eu-1", 5)]);
        let c = choose(&none, &s, None, &table());
        assert_eq!(c.outcome, Outcome::All);
        assert_eq!(c.clusters.len(), 3);
    }

    #[test]
    fn nearest_is_pre_computed_per_location_and_shares_equal_answers() {
        let t = table();
        let l = localize(&Strategy::Nearest, &shards(), &t).unwrap();
        assert!(l.scoped);
        assert_eq!(l.by_location.len(), t.len() + 1);
        // Locations: us, eu, eu/eu1, ap; nowhere shares nothing with them.
        let outcome = |id: u16| l.variants[l.by_location[id as usize] as usize].outcome;
        assert_eq!(outcome(NOWHERE), Outcome::Nowhere);
        let eu1 = t.locate("10.1.2.3".parse().unwrap(), 32).location;
        assert_eq!(outcome(eu1), Outcome::Zone);
        assert_eq!(
            l.variants[l.by_location[eu1 as usize] as usize].v4,
            ["10.20.0.1".parse::<Ipv4Addr>().unwrap()]
        );
        assert!(localize(&Strategy::All, &shards(), &t).is_none());
    }

    /// A small deterministic generator for the property test (xorshift64*).
    fn draws(seed: u64) -> impl Iterator<Item = u32> {
        let mut x = seed | 1;
        std::iter::from_fn(move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            Some((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32)
        })
    }

    proptest::proptest! {
        #[test]
        fn weighted_split_holds_within_three_percent_over_10000_draws(
            weights in proptest::collection::vec(1u32..100, 1..6),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let mut cumulative = Vec::new();
            let mut total = 0;
            for w in &weights {
                total += w;
                cumulative.push(total);
            }
            let mut counts = vec![0u32; weights.len()];
            for draw in draws(seed).take(10_000) {
                counts[pick_weighted(cumulative.iter().copied(), draw)] += 1;
            }
            for (w, n) in weights.iter().zip(&counts) {
                let share = *w as f64 / total as f64;
                let got = *n as f64 / 10_000.0;
                proptest::prop_assert!((got - share).abs() <= 0.03, "share {share} got {got}");
            }
        }
    }
}
