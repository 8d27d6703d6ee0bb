//! Client locality: where a query comes from, and which clusters the global name answers it with.
//!
//! - [`LocationTable`]: the config's `clientNetworks` (longest prefix wins, IPv4 and IPv6), below
//!   them the GeoIP database's mapped networks ([`crate::federation::geoip`]), and
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

use rustc_hash::FxHashMap;

use crate::dns::rrl::Prefix;
use crate::federation::geoip::{GeoipCode, GeoipNetwork, GeoipRegions};
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
    /// Index of the matched row (see [`LocationTable::row`]), for `explain`.
    pub row: Option<u32>,
}

/// Where a row of the table comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A `clientNetworks` row of the config file (its index there).
    ClientNetwork(u16),
    /// A network of the GeoIP database, mapped by `geoipRegions` through this code.
    Geoip(GeoipCode),
}

/// One network of the table: a `clientNetworks` row or a mapped GeoIP database network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub network: Prefix,
    pub location: u16,
    pub origin: Origin,
}

impl std::fmt::Display for Row {
    /// How `explain` names it: `clientNetworks 10.1.0.0/16`, `GeoIP country DE 192.0.2.0/24`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.origin {
            Origin::ClientNetwork(_) => write!(f, "clientNetworks {}", self.network),
            Origin::Geoip(code) => write!(f, "GeoIP {code} {}", self.network),
        }
    }
}

/// The `clientNetworks` table, the GeoIP database's mapped networks and the
/// `regionPreferences`, as loaded at startup.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct LocationTable {
    /// Location `id` is `locations[id - 1]`; id 0 is nowhere.
    locations: Vec<Location>,
    /// `clientNetworks` in file order, then the GeoIP networks none of them covers.
    rows: Vec<Row>,
    /// Longest-prefix indexes of `rows`, per family.
    v4: PrefixIndex<u32>,
    v6: PrefixIndex<u128>,
    preferences: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for LocationTable {
    /// The rows by count: a GeoIP database gives hundreds of thousands.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocationTable")
            .field("locations", &self.locations)
            .field("rows", &self.rows.len())
            .field("preferences", &self.preferences)
            .finish_non_exhaustive()
    }
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
            let location = Location {
                region: row.region.clone(),
                zone: row.zone.clone().filter(|z| !z.is_empty()),
            };
            let id = table.intern(location);
            table.push(Row {
                network: masked(network),
                location: id,
                origin: Origin::ClientNetwork(i as u16),
            });
        }
        Ok(table)
    }

    /// Adds the GeoIP database's mapped networks (see [`crate::federation::geoip`]) below the
    /// `clientNetworks`: a client any `clientNetworks` row matches is placed by it, whatever the
    /// database says; the others by the longest database network holding them.
    pub fn with_geoip(mut self, regions: &GeoipRegions, networks: &[GeoipNetwork]) -> Self {
        let mut ids: BTreeMap<GeoipCode, u16> = BTreeMap::new();
        let first = self.rows.len();
        for n in networks {
            let network = masked(n.network);
            // Covered by a clientNetworks row (all rows so far are): that row decides.
            let (found, _) = self.index_locate(network.addr, network.len);
            if found.is_some() {
                continue;
            }
            let Some(region) = regions.region(n.code) else {
                continue;
            };
            let location = match ids.get(&n.code) {
                Some(id) => *id,
                None => {
                    let id = self.intern(Location {
                        region: region.to_owned(),
                        zone: None,
                    });
                    ids.insert(n.code, id);
                    id
                }
            };
            self.rows.push(Row {
                network,
                location,
                origin: Origin::Geoip(n.code),
            });
        }
        // Index the GeoIP rows only now, so the coverage check above saw clientNetworks alone.
        for i in first..self.rows.len() {
            self.index(i);
        }
        self
    }

    fn push(&mut self, row: Row) {
        self.rows.push(row);
        self.index(self.rows.len() - 1);
    }

    /// Indexes `rows[i]`; for equal networks the first row keeps them.
    fn index(&mut self, i: usize) {
        let row = &self.rows[i];
        match row.network.addr {
            IpAddr::V4(a) => self.v4.insert(u32::from(a), row.network.len, i as u32),
            IpAddr::V6(a) => self.v6.insert(u128::from(a), row.network.len, i as u32),
        }
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
        self.rows.is_empty()
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

    /// A row of the table ([`Located::row`]), for `explain`.
    pub fn row(&self, row: u32) -> Option<&Row> {
        self.rows.get(row as usize)
    }

    /// The network of a row, for `explain`.
    pub fn network(&self, row: u32) -> Option<Prefix> {
        self.row(row).map(|r| r.network)
    }

    /// Whether some rows come from the GeoIP database.
    pub fn has_geoip(&self) -> bool {
        self.rows
            .last()
            .is_some_and(|r| matches!(r.origin, Origin::Geoip(_)))
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
    /// source). Allocates nothing; costs one hash probe per distinct row length up to
    /// `source_len`, and a binary search per longer one.
    pub fn locate(&self, addr: IpAddr, source_len: u8) -> Located {
        let (found, longer) = self.index_locate(addr, source_len);
        match found {
            Some(row) => Located {
                location: self.rows[row as usize].location,
                scope: self.rows[row as usize].network.len.max(longer),
                row: Some(row),
            },
            None => {
                let max = if canonical(addr).is_ipv4() { 32 } else { 128 };
                Located {
                    location: NOWHERE,
                    scope: source_len.min(max).max(longer),
                    row: None,
                }
            }
        }
    }

    /// The matched row and the longest row inside the client's prefix too long to match.
    #[inline]
    fn index_locate(&self, addr: IpAddr, source_len: u8) -> (Option<u32>, u8) {
        match canonical(addr) {
            IpAddr::V4(a) => self.v4.locate(u32::from(a), source_len.min(32)),
            IpAddr::V6(a) => self.v6.locate(u128::from(a), source_len.min(128)),
        }
    }
}

/// An address family's addresses as an integer.
trait Bits: Copy + Eq + Ord + std::hash::Hash + std::fmt::Debug + Default {
    const WIDTH: u8;
    /// The first `len` bits, the rest cleared.
    fn masked(self, len: u8) -> Self;
    /// The last address of the `/len` network starting at `self`.
    fn last(self, len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn masked(self, len: u8) -> Self {
        self & u32::MAX.checked_shl(32 - len as u32).unwrap_or(0)
    }
    fn last(self, len: u8) -> Self {
        self | u32::MAX.checked_shr(len as u32).unwrap_or(0)
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn masked(self, len: u8) -> Self {
        self & u128::MAX.checked_shl(128 - len as u32).unwrap_or(0)
    }
    fn last(self, len: u8) -> Self {
        self | u128::MAX.checked_shr(len as u32).unwrap_or(0)
    }
}

/// Longest-prefix index of one family: per distinct prefix length, longest first, the networks
/// of that length (masked) and their rows. A lookup probes one hash map per length.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct PrefixIndex<K: Bits> {
    levels: Vec<Level<K>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Level<K: Bits> {
    len: u8,
    rows: FxHashMap<K, u32>,
    /// The same networks, sorted: finds rows inside a shorter client prefix.
    sorted: Vec<K>,
}

impl<K: Bits> PrefixIndex<K> {
    fn insert(&mut self, network: K, len: u8, row: u32) {
        let network = network.masked(len);
        let at = match self.levels.binary_search_by(|l| len.cmp(&l.len)) {
            Ok(at) => at,
            Err(at) => {
                self.levels.insert(
                    at,
                    Level {
                        len,
                        rows: FxHashMap::default(),
                        sorted: Vec::new(),
                    },
                );
                at
            }
        };
        let level = &mut self.levels[at];
        if let std::collections::hash_map::Entry::Vacant(e) = level.rows.entry(network) {
            e.insert(row);
            let i = level.sorted.partition_point(|n| *n < network);
            level.sorted.insert(i, network);
        }
    }

    /// The row of the longest network no longer than `source_len` holding `addr`, and the
    /// longest network longer than `source_len` inside `addr/source_len` (0 when none, or when
    /// `source_len` is 0: a /0 source asks for no tailoring at all, RFC 7871 section 7.1.2).
    #[inline]
    fn locate(&self, addr: K, source_len: u8) -> (Option<u32>, u8) {
        let mut longer = 0;
        for level in &self.levels {
            if level.len > source_len {
                // Levels run longest first: the first one with a row inside is the longest.
                if longer == 0 && source_len > 0 {
                    let first = addr.masked(source_len);
                    let last = first.last(source_len);
                    let i = level.sorted.partition_point(|n| *n < first);
                    if level.sorted.get(i).is_some_and(|n| *n <= last) {
                        longer = level.len;
                    }
                }
            } else if let Some(row) = level.rows.get(&addr.masked(level.len)) {
                return (Some(*row), longer);
            }
        }
        debug_assert!(source_len <= K::WIDTH);
        (None, longer)
    }
}

/// IPv4-mapped IPv6 addresses count as IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The prefix with its host bits cleared, so `10.1.2.3/8` prints as `10.0.0.0/8`; an
/// IPv4-mapped IPv6 prefix of at least /96 becomes the IPv4 prefix it covers.
fn masked(p: Prefix) -> Prefix {
    match p.addr {
        IpAddr::V4(a) => {
            let len = p.len.min(32);
            Prefix {
                addr: IpAddr::V4(Ipv4Addr::from(u32::from(a).masked(len))),
                len,
            }
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) if p.len >= 96 => masked(Prefix {
                addr: IpAddr::V4(v4),
                len: p.len - 96,
            }),
            _ => Prefix {
                addr: IpAddr::V6(Ipv6Addr::from(u128::from(a).masked(p.len.min(128)))),
                len: p.len.min(128),
            },
        },
    }
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

    /// clientNetworks us /8, eu /16, eu/eu1 /25, and a database with DE -> eu, JP -> ap and the
    /// continent NA -> us mapped.
    fn geoip_table() -> LocationTable {
        use crate::federation::geoip::{GeoipRegions, mapped};
        let t = LocationTable::new(
            &[
                row("10.0.0.0/8", "us", None),
                row("10.1.0.0/16", "eu", None),
                row("192.0.2.128/25", "eu", Some("eu1")),
            ],
            BTreeMap::new(),
        )
        .unwrap();
        let regions = [("DE", "eu"), ("JP", "ap"), ("NA", "us")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let regions = GeoipRegions::new(&regions).unwrap();
        let networks = mapped(
            [
                // Inside clientNetworks rows: dropped, the rows decide.
                ("10.1.128.0/17", Some("JP"), Some("AS")),
                ("10.200.0.0/16", Some("JP"), Some("AS")),
                // Holds the clientNetworks /25.
                ("192.0.2.0/24", Some("DE"), Some("EU")),
                ("198.51.100.0/22", Some("CA"), Some("NA")),
                ("203.0.113.0/24", Some("BR"), Some("SA")),
                ("2001:db9::/32", Some("DE"), Some("EU")),
            ]
            .map(|(n, c, k)| (n.parse().unwrap(), c, k)),
            &regions,
        );
        assert_eq!(networks.len(), 5, "BR/SA is not mapped");
        t.with_geoip(&regions, &networks)
    }

    fn explained(t: &LocationTable, addr: &str, len: u8) -> Option<String> {
        let found = t.locate(addr.parse().unwrap(), len);
        found.row.map(|r| t.row(r).unwrap().to_string())
    }

    #[test]
    fn geoip_networks_place_clients_no_client_network_matches_with_their_length_as_scope() {
        let t = geoip_table();
        assert!(t.has_geoip());
        assert_eq!(at(&t, "192.0.2.7", 32), (loc("eu", None), 24));
        assert_eq!(
            explained(&t, "192.0.2.7", 32).as_deref(),
            Some("GeoIP country DE 192.0.2.0/24")
        );
        assert_eq!(at(&t, "198.51.101.1", 32), (loc("us", None), 22));
        assert_eq!(
            explained(&t, "198.51.101.1", 32).as_deref(),
            Some("GeoIP continent NA 198.51.100.0/22")
        );
        assert_eq!(at(&t, "2001:db9:1::", 56), (loc("eu", None), 32));
        // An unmapped country is nowhere; so is what the database does not hold.
        assert_eq!(at(&t, "203.0.113.9", 32), (None, 32));
        assert_eq!(at(&t, "233.252.0.1", 32), (None, 32));
        // The database's regions share location ids with the clientNetworks rows of the same
        // place; the dropped JP networks add none.
        assert_eq!(t.len(), 3, "us, eu, eu/eu1");
    }

    #[test]
    fn client_networks_override_the_geoip_database() {
        let t = geoip_table();
        // Database networks inside clientNetworks rows, even longer ones, never decide.
        assert_eq!(at(&t, "10.1.200.1", 32), (loc("eu", None), 16));
        assert_eq!(
            explained(&t, "10.1.200.1", 32).as_deref(),
            Some("clientNetworks 10.1.0.0/16")
        );
        assert_eq!(at(&t, "10.200.0.1", 32), (loc("us", None), 8));
        // A clientNetworks row inside a database network decides for its own clients, and an
        // ECS /24 that cannot tell them apart gets the /25 as its scope.
        assert_eq!(at(&t, "192.0.2.130", 32), (loc("eu", Some("eu1")), 25));
        assert_eq!(at(&t, "192.0.2.0", 24), (loc("eu", None), 25));
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

    /// The linear scan `locate` replaced: every row, longest first (ties in file order).
    fn locate_by_scan(t: &LocationTable, addr: IpAddr, source_len: u8) -> Located {
        let addr = canonical(addr);
        let source_len = source_len.min(if addr.is_ipv4() { 32 } else { 128 });
        let mut rows: Vec<(usize, &Row)> = t.rows.iter().enumerate().collect();
        rows.sort_by(|a, b| b.1.network.len.cmp(&a.1.network.len).then(a.0.cmp(&b.0)));
        let mut longer = 0;
        for (i, row) in rows {
            let net = row.network;
            if net.len > source_len {
                let known = Prefix {
                    addr: net.addr,
                    len: source_len,
                };
                if source_len > 0 && known.contains(addr) {
                    longer = longer.max(net.len);
                }
            } else if net.contains(addr) {
                return Located {
                    location: row.location,
                    scope: net.len.max(longer),
                    row: Some(i as u32),
                };
            }
        }
        Located {
            location: NOWHERE,
            scope: source_len.max(longer),
            row: None,
        }
    }

    proptest::proptest! {
        #[test]
        fn the_prefix_index_finds_what_a_scan_of_every_row_finds(
            rows in proptest::collection::vec((0u32..4, proptest::prelude::any::<u32>(), 0u8..=32, 0u8..3), 0..40),
            queries in proptest::collection::vec((0u32..4, proptest::prelude::any::<u32>(), 0u8..=40), 50),
        ) {
            // Addresses packed into 10.0.0.0/14 so that rows overlap; some rows are IPv6
            // (the same bits under 2001:db8::/32).
            let addr = |top: u32, low: u32, v6: bool| -> IpAddr {
                let v4 = (10 << 24) | (top << 22) | (low >> 10);
                if v6 {
                    IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | ((v4 as u128) << 64)))
                } else {
                    IpAddr::V4(Ipv4Addr::from(v4))
                }
            };
            let config: Vec<ClientNetwork> = rows
                .iter()
                .map(|(top, low, len, region)| {
                    let v6 = low % 5 == 0;
                    let len = if v6 { 32 + *len * 2 } else { *len };
                    row(&format!("{}/{len}", addr(*top, *low, v6)), &format!("r{region}"), None)
                })
                .collect();
            let t = LocationTable::new(&config, BTreeMap::new()).unwrap();
            for (top, low, len) in queries {
                let v6 = low % 3 == 0;
                let a = addr(top, low, v6);
                let len = if v6 { 32 + len * 2 } else { len };
                proptest::prop_assert_eq!(t.locate(a, len), locate_by_scan(&t, a, len), "{}/{}", a, len);
            }
        }
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
