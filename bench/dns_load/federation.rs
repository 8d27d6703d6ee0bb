//! The generated federation and its oracle: which clusters exist where, which service shards are
//! placed and healthy, and, computed from that by the rules of `spec/dns.md` sections 2–4, the record
//! set of every name. The zone file for Knot/NSD, the query mix and the answer checks all come from
//! this one model, so the peers and fedns are held to the same expected answers. Pure: no I/O.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Shape of the generated federation.
#[derive(Debug, Clone)]
pub struct Params {
    pub clusters: usize,
    pub services: usize,
    pub regions: usize,
    pub zones_per_region: usize,
    /// Member clusters each service is placed in.
    pub placement: usize,
    /// Probability that a placed shard has no ready endpoint.
    pub unhealthy: f64,
    pub seed: u64,
}

pub const DOMAIN: &str = "example.com";
pub const FEDERATION: &str = "galactic";
pub const NAMESPACE: &str = "bench";
pub const NAME_SERVER: &str = "ns1.example.com";
pub const TTL: u32 = 180;

/// Deterministic generator (SplitMix64): the same seed gives the same federation and query file.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Address families of a cluster's load balancers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    Dual,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub region: usize,
    pub zone: usize,
    pub family: Family,
}

#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    pub region: usize,
}

/// One service in one member cluster.
#[derive(Debug, Clone)]
pub struct Shard {
    pub cluster: usize,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    pub healthy: bool,
}

/// The rrset a name owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rrset {
    Addrs {
        v4: Vec<Ipv4Addr>,
        v6: Vec<Ipv6Addr>,
    },
    Cname(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Global,
    Region,
    Zone,
}

/// Why a name is a CNAME: its clusters have the service but no healthy shard, or do not have the
/// service at all (every member contributes its zone/region names, spec section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fallback {
    Unhealthy,
    Absent,
}

#[derive(Debug, Clone)]
pub struct NameRecord {
    pub name: String,
    pub level: Level,
    pub rrset: Rrset,
    pub fallback: Option<Fallback>,
}

/// The shard whose readiness the update-latency step flips: the only healthy shard of its service
/// in its zone, so the zonal name alternates between addresses and a CNAME.
#[derive(Debug, Clone)]
pub struct FlipTarget {
    pub service: usize,
    pub cluster: usize,
    pub zonal_name: String,
    pub qtype: QType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QType {
    A,
    Aaaa,
}

impl QType {
    pub fn code(self) -> u16 {
        match self {
            QType::A => 1,
            QType::Aaaa => 28,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QType::A => "A",
            QType::Aaaa => "AAAA",
        }
    }
}

#[derive(Debug)]
pub struct Federation {
    pub params: Params,
    pub regions: Vec<String>,
    pub zones: Vec<Zone>,
    pub clusters: Vec<Cluster>,
    /// Shards per service, sorted by cluster.
    pub shards: Vec<Vec<Shard>>,
}

const REGION_NAMES: [&str; 8] = [
    "us-east1",
    "us-west1",
    "eu-west1",
    "eu-north1",
    "ap-south1",
    "ap-east1",
    "sa-east1",
    "me-west1",
];

pub fn service_name(service: usize) -> String {
    format!("svc-{service}")
}

pub fn global_name(label: &str) -> String {
    format!("{label}.{NAMESPACE}.{FEDERATION}.svc.{DOMAIN}")
}

pub fn region_name(label: &str, region: &str) -> String {
    format!("{label}.{NAMESPACE}.{FEDERATION}.svc.{region}.{DOMAIN}")
}

pub fn zone_name(label: &str, zone: &str, region: &str) -> String {
    format!("{label}.{NAMESPACE}.{FEDERATION}.svc.{zone}.{region}.{DOMAIN}")
}

impl Federation {
    pub fn generate(params: &Params) -> Self {
        let mut rng = Rng::new(params.seed);
        let regions: Vec<String> = (0..params.regions)
            .map(|r| match REGION_NAMES.get(r) {
                Some(name) => (*name).to_owned(),
                None => format!("region{r}"),
            })
            .collect();
        let zones: Vec<Zone> = (0..params.regions * params.zones_per_region)
            .map(|z| {
                let region = z / params.zones_per_region;
                let index = z % params.zones_per_region;
                let suffix = if index < 26 {
                    char::from(b'a' + index as u8).to_string()
                } else {
                    format!("z{index}")
                };
                Zone {
                    name: format!("{}-{suffix}", regions[region]),
                    region,
                }
            })
            .collect();
        let width = params.clusters.to_string().len().max(3);
        let clusters: Vec<Cluster> = (0..params.clusters)
            .map(|i| {
                // Round-robin: consecutive clusters land in different regions, then zones.
                let region = i % params.regions;
                let zone = region * params.zones_per_region
                    + (i / params.regions) % params.zones_per_region;
                let family = match i % 4 {
                    0 | 1 => Family::V4,
                    2 => Family::V6,
                    _ => Family::Dual,
                };
                Cluster {
                    name: format!("c{:0width$}", i + 1),
                    region,
                    zone,
                    family,
                }
            })
            .collect();

        let placement = params.placement.min(params.clusters);
        let mut shards = Vec::with_capacity(params.services);
        for service in 0..params.services {
            let mut placed: Vec<usize> = Vec::with_capacity(placement);
            while placed.len() < placement {
                let c = rng.below(params.clusters);
                if !placed.contains(&c) {
                    placed.push(c);
                }
            }
            placed.sort_unstable();
            let service_shards = placed
                .into_iter()
                .map(|cluster| {
                    let index = (cluster * params.services + service) as u32;
                    let family = clusters[cluster].family;
                    let v4 = (family != Family::V6).then(|| Ipv4Addr::from(0x0A00_0001 + index));
                    let v6 = (family != Family::V4).then(|| {
                        Ipv6Addr::new(
                            0xfd00,
                            0x0fed,
                            0,
                            0,
                            0,
                            0,
                            (index >> 16) as u16,
                            index as u16,
                        )
                    });
                    Shard {
                        cluster,
                        v4,
                        v6,
                        healthy: rng.unit() >= params.unhealthy,
                    }
                })
                .collect();
            shards.push(service_shards);
        }
        Self {
            params: params.clone(),
            regions,
            zones,
            clusters,
            shards,
        }
    }

    /// Zones and regions that hold at least one member cluster (only those get names).
    fn populated(&self) -> (Vec<bool>, Vec<bool>) {
        let mut zones = vec![false; self.zones.len()];
        let mut regions = vec![false; self.regions.len()];
        for c in &self.clusters {
            zones[c.zone] = true;
            regions[c.region] = true;
        }
        (zones, regions)
    }

    /// Every name of one service with its rrset, by the rules of spec section 4.
    pub fn service_records(&self, service: usize) -> Vec<NameRecord> {
        let label = service_name(service);
        let shards = &self.shards[service];
        let (zones_populated, regions_populated) = self.populated();
        let collect = |filter: &dyn Fn(&Cluster) -> bool| {
            let mut present = false;
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            for shard in shards {
                if !filter(&self.clusters[shard.cluster]) {
                    continue;
                }
                present = true;
                if shard.healthy {
                    v4.extend(shard.v4);
                    v6.extend(shard.v6);
                }
            }
            v4.sort_unstable();
            v4.dedup();
            v6.sort_unstable();
            v6.dedup();
            (present, v4, v6)
        };
        let record = |name: String, level: Level, parent: Option<String>, found| {
            let (present, v4, v6): (bool, Vec<Ipv4Addr>, Vec<Ipv6Addr>) = found;
            if !v4.is_empty() || !v6.is_empty() {
                return Some(NameRecord {
                    name,
                    level,
                    rrset: Rrset::Addrs { v4, v6 },
                    fallback: None,
                });
            }
            parent.map(|target| NameRecord {
                name,
                level,
                rrset: Rrset::Cname(target),
                fallback: Some(if present {
                    Fallback::Unhealthy
                } else {
                    Fallback::Absent
                }),
            })
        };

        let global = global_name(&label);
        let mut out = Vec::new();
        out.extend(record(
            global.clone(),
            Level::Global,
            None,
            collect(&|_| true),
        ));
        for (r, region) in self.regions.iter().enumerate() {
            if !regions_populated[r] {
                continue;
            }
            out.extend(record(
                region_name(&label, region),
                Level::Region,
                Some(global.clone()),
                collect(&|c| c.region == r),
            ));
        }
        for (z, zone) in self.zones.iter().enumerate() {
            if !zones_populated[z] {
                continue;
            }
            let region = &self.regions[zone.region];
            out.extend(record(
                zone_name(&label, &zone.name, region),
                Level::Zone,
                Some(region_name(&label, region)),
                collect(&|c| c.zone == z),
            ));
        }
        out
    }

    /// All names of all services.
    pub fn all_records(&self) -> Vec<NameRecord> {
        (0..self.params.services)
            .flat_map(|s| self.service_records(s))
            .collect()
    }

    /// The shard the update-latency step flips, if the federation has one.
    pub fn flip_target(&self) -> Option<FlipTarget> {
        for (service, shards) in self.shards.iter().enumerate() {
            for shard in shards.iter().filter(|s| s.healthy) {
                let zone = self.clusters[shard.cluster].zone;
                let alone = shards
                    .iter()
                    .filter(|s| s.healthy && self.clusters[s.cluster].zone == zone)
                    .count()
                    == 1;
                if !alone {
                    continue;
                }
                let z = &self.zones[zone];
                return Some(FlipTarget {
                    service,
                    cluster: shard.cluster,
                    zonal_name: zone_name(&service_name(service), &z.name, &self.regions[z.region]),
                    qtype: if shard.v4.is_some() {
                        QType::A
                    } else {
                        QType::Aaaa
                    },
                });
            }
        }
        None
    }
}

/// One resource record of an expected or observed answer, in comparable form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AnswerRecord {
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    pub rdata: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: String,
    /// Sorted.
    pub records: Vec<AnswerRecord>,
}

/// Name → rrset lookup over the whole federation: what an authoritative server must answer.
#[derive(Debug)]
pub struct Oracle {
    names: HashMap<String, Rrset>,
}

impl Oracle {
    pub fn new(records: &[NameRecord]) -> Self {
        Self {
            names: records
                .iter()
                .map(|r| (r.name.clone(), r.rrset.clone()))
                .collect(),
        }
    }

    /// The answer to `name`/`qtype`, following in-zone CNAME chains (spec section 4).
    pub fn answer(&self, name: &str, qtype: QType) -> Answer {
        let mut records = Vec::new();
        let mut current = name.to_ascii_lowercase();
        let mut rcode = "NXDOMAIN";
        for _ in 0..8 {
            match self.names.get(&current) {
                None => {
                    rcode = "NXDOMAIN";
                    break;
                }
                Some(Rrset::Cname(target)) => {
                    records.push(AnswerRecord {
                        name: format!("{current}."),
                        rtype: "CNAME".into(),
                        ttl: TTL,
                        rdata: format!("{target}."),
                    });
                    current = target.clone();
                }
                Some(Rrset::Addrs { v4, v6 }) => {
                    rcode = "NOERROR";
                    let owner = format!("{current}.");
                    match qtype {
                        QType::A => records.extend(v4.iter().map(|a| AnswerRecord {
                            name: owner.clone(),
                            rtype: "A".into(),
                            ttl: TTL,
                            rdata: a.to_string(),
                        })),
                        QType::Aaaa => records.extend(v6.iter().map(|a| AnswerRecord {
                            name: owner.clone(),
                            rtype: "AAAA".into(),
                            ttl: TTL,
                            rdata: a.to_string(),
                        })),
                    }
                    break;
                }
            }
        }
        records.sort();
        Answer {
            rcode: rcode.into(),
            records,
        }
    }
}

/// What a query of the mix exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    HitGlobal,
    HitRegion,
    HitZone,
    CnameUnhealthy,
    CnameAbsent,
    Nxdomain,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::HitGlobal => "hit-global",
            Category::HitRegion => "hit-region",
            Category::HitZone => "hit-zone",
            Category::CnameUnhealthy => "cname-unhealthy",
            Category::CnameAbsent => "cname-absent",
            Category::Nxdomain => "nxdomain",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Query {
    pub name: String,
    pub qtype: QType,
    pub category: Category,
}

/// Percentages of hits, CNAME fallbacks and NXDOMAIN names in the query mix.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub hits: u32,
    pub cnames: u32,
    pub nxdomain: u32,
}

/// A shuffled, seeded query mix. Hits are split evenly over global/regional/zonal names (A or AAAA,
/// whichever the name has); CNAME fallbacks evenly over unhealthy-shard and absent-service names
/// (A or AAAA at random); NXDOMAIN names are services that do not exist, at all three levels.
pub fn query_mix(fed: &Federation, records: &[NameRecord], mix: Mix, count: usize) -> Vec<Query> {
    let mut rng = Rng::new(fed.params.seed ^ 0x5157_4552_5953);
    let mut pools: HashMap<Category, Vec<&NameRecord>> = HashMap::new();
    for r in records {
        pools.entry(category_of(r)).or_default().push(r);
    }
    let total = (mix.hits + mix.cnames + mix.nxdomain).max(1);
    let pick_from = |rng: &mut Rng, options: &[Category]| -> Option<&NameRecord> {
        let available: Vec<&Vec<&NameRecord>> = options
            .iter()
            .filter_map(|c| pools.get(c))
            .filter(|p| !p.is_empty())
            .collect();
        if available.is_empty() {
            return None;
        }
        let pool = available[rng.below(available.len())];
        Some(pool[rng.below(pool.len())])
    };

    let mut queries = Vec::with_capacity(count);
    while queries.len() < count {
        let roll = rng.below(total as usize) as u32;
        let wanted: &[Category] = if roll < mix.hits {
            &[Category::HitGlobal, Category::HitRegion, Category::HitZone]
        } else if roll < mix.hits + mix.cnames {
            &[Category::CnameUnhealthy, Category::CnameAbsent]
        } else {
            &[Category::Nxdomain]
        };
        if wanted == [Category::Nxdomain] {
            let label = format!("nosvc-{}", rng.below(1_000_000));
            let name = match rng.below(3) {
                0 => global_name(&label),
                1 => region_name(&label, &fed.regions[rng.below(fed.regions.len())]),
                _ => {
                    let zone = &fed.zones[rng.below(fed.zones.len())];
                    zone_name(&label, &zone.name, &fed.regions[zone.region])
                }
            };
            let qtype = if rng.below(4) == 0 {
                QType::Aaaa
            } else {
                QType::A
            };
            queries.push(Query {
                name,
                qtype,
                category: Category::Nxdomain,
            });
            continue;
        }
        let Some(record) = pick_from(&mut rng, wanted) else {
            // The federation has no name of this kind (e.g. no unhealthy shard): count it as a hit.
            if let Some(record) = pick_from(
                &mut rng,
                &[Category::HitGlobal, Category::HitRegion, Category::HitZone],
            ) {
                queries.push(hit_query(&mut rng, record, category_of(record)));
                continue;
            }
            break;
        };
        let category = category_of(record);
        let query = match &record.rrset {
            Rrset::Addrs { .. } => hit_query(&mut rng, record, category),
            Rrset::Cname(_) => Query {
                name: record.name.clone(),
                qtype: if rng.below(2) == 0 {
                    QType::A
                } else {
                    QType::Aaaa
                },
                category,
            },
        };
        queries.push(query);
    }
    queries
}

/// `count` queries for global names with healthy targets only (the names a strategy picks
/// among clusters for), drawn at random (seeded) with the address type of each.
pub fn global_queries(records: &[NameRecord], count: usize, seed: u64) -> Vec<Query> {
    let mut rng = Rng::new(seed ^ 0x474c_4f42_414c);
    let global: Vec<&NameRecord> = records
        .iter()
        .filter(|r| category_of(r) == Category::HitGlobal)
        .collect();
    if global.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|_| {
            let record = global[rng.below(global.len())];
            hit_query(&mut rng, record, Category::HitGlobal)
        })
        .collect()
}

fn category_of(record: &NameRecord) -> Category {
    match (&record.rrset, record.level, record.fallback) {
        (Rrset::Addrs { .. }, Level::Global, _) => Category::HitGlobal,
        (Rrset::Addrs { .. }, Level::Region, _) => Category::HitRegion,
        (Rrset::Addrs { .. }, Level::Zone, _) => Category::HitZone,
        (Rrset::Cname(_), _, Some(Fallback::Unhealthy)) => Category::CnameUnhealthy,
        (Rrset::Cname(_), _, _) => Category::CnameAbsent,
    }
}

fn hit_query(rng: &mut Rng, record: &NameRecord, category: Category) -> Query {
    let qtype = match &record.rrset {
        Rrset::Addrs { v4, v6 } if !v4.is_empty() && !v6.is_empty() => {
            if rng.below(2) == 0 {
                QType::A
            } else {
                QType::Aaaa
            }
        }
        Rrset::Addrs { v4, .. } if !v4.is_empty() => QType::A,
        _ => QType::Aaaa,
    };
    Query {
        name: record.name.clone(),
        qtype,
        category,
    }
}
