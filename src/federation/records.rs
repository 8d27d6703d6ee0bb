//! Record computation (the README's *DNS behaviour reference*: shard health, record sets, TTLs): from one ServiceDNSRecord or
//! IngressDNSRecord and the member clusters' shards to the record sets its names carry. Pure: the
//! caller passes the members, their liveness and the resolved load-balancer hostnames.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

use crate::federation::model::{DomainSpec, IngressRecordSpec, LoadBalancer, ServiceRecordSpec};
use crate::federation::naming::{self, NameError, ServiceBase};

/// TTL rules: `recordTTL` if > 0 else the default, clamped by server-wide caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    pub default_ttl: u32,
    pub min_ttl: u32,
    pub max_ttl: u32,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        Self {
            default_ttl: 180,
            min_ttl: 0,
            max_ttl: 86_400,
        }
    }
}

impl TtlPolicy {
    pub fn positive(&self, record_ttl: u32) -> u32 {
        let ttl = if record_ttl > 0 {
            record_ttl
        } else {
            self.default_ttl
        };
        ttl.clamp(self.min_ttl, self.max_ttl.max(self.min_ttl))
    }
}

/// Addresses a load-balancer hostname resolved to, with the upstream TTL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedHost {
    pub addrs: Vec<IpAddr>,
    pub ttl: u32,
}

/// Looks up the last good resolution of a load-balancer hostname.
pub trait HostLookup {
    fn lookup(&self, hostname: &str) -> Option<&ResolvedHost>;
}

impl HostLookup for BTreeMap<String, ResolvedHost> {
    fn lookup(&self, hostname: &str) -> Option<&ResolvedHost> {
        self.get(hostname)
    }
}

impl<S: std::hash::BuildHasher> HostLookup for std::collections::HashMap<String, ResolvedHost, S> {
    fn lookup(&self, hostname: &str) -> Option<&ResolvedHost> {
        self.get(hostname)
    }
}

/// One member cluster as record computation sees it.
#[derive(Debug, Clone)]
pub struct MemberInput<'a> {
    pub cluster: &'a str,
    pub zones: &'a BTreeSet<String>,
    pub region: Option<&'a str>,
    /// Ready, or unreachable but still inside its grace period: its targets may be served.
    pub serving: bool,
    pub shard: Option<ShardInput<'a>>,
}

/// The Service (or Ingress) of one record in one member cluster.
#[derive(Debug, Clone, Copy)]
pub struct ShardInput<'a> {
    pub load_balancer: &'a LoadBalancer,
    /// Ready endpoints over all EndpointSlices (or the Endpoints fallback) of the Service.
    pub ready_endpoints: u32,
}

/// Why a shard does or does not contribute targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShardHealth {
    Healthy,
    ClusterNotReady,
    ServiceAbsent,
    NoLoadBalancer,
    NoReadyEndpoints,
    /// Load-balancer hostnames only, none resolved yet.
    HostnameUnresolved,
}

impl ShardHealth {
    pub fn describe(self) -> &'static str {
        match self {
            ShardHealth::Healthy => "healthy",
            ShardHealth::ClusterNotReady => "cluster not ready (grace period over)",
            ShardHealth::ServiceAbsent => "service absent in this cluster",
            ShardHealth::NoLoadBalancer => "service has no load-balancer address",
            ShardHealth::NoReadyEndpoints => "no ready endpoints",
            ShardHealth::HostnameUnresolved => "load-balancer hostname not resolved",
        }
    }
}

/// What one cluster contributed to a record, for `explain` and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardReport {
    pub cluster: String,
    pub zones: Vec<String>,
    pub region: Option<String>,
    pub health: ShardHealth,
    /// The load balancer as the member reports it (empty when the Service is absent).
    pub load_balancer: LoadBalancer,
    pub targets: Vec<IpAddr>,
    /// Hostnames whose resolution failed or is pending (the shard keeps what did resolve).
    pub unresolved: Vec<String>,
}

/// The data one name carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    Address {
        v4: Vec<Ipv4Addr>,
        v6: Vec<Ipv6Addr>,
        ttl: u32,
    },
    Cname {
        target: Name,
        ttl: u32,
    },
}

/// One computed name and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedRecord {
    pub name: Name,
    pub data: RecordData,
}

/// A value that could not become a name; the rest of the record is still served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameProblem {
    pub cluster: Option<String>,
    pub error: NameError,
}

/// Which members a computation reports in [`Computed::shards`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// Every member, those without the object included (`ServiceAbsent`): what the record's
    /// status and `fedns explain` show.
    EveryMember,
    /// Only members that hold the object. The records and the per-client answers are the same
    /// (they read healthy shards only); publishing every record of a large federation this way
    /// skips one report per member without the object (97% of them in the 100-cluster bench).
    Holders,
}

impl Reported {
    fn includes(self, member: &MemberInput<'_>) -> bool {
        self == Reported::EveryMember || member.shard.is_some()
    }
}

/// Everything computed for one record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Computed {
    pub records: Vec<NamedRecord>,
    pub shards: Vec<ShardReport>,
    pub problems: Vec<NameProblem>,
    /// The global name's per-client answers, when its strategy is not `all` (filled in by the
    /// engine, which knows the client locations).
    pub localized: Option<(Name, crate::federation::locality::Localized)>,
}

/// Sorted, deduplicated targets; IPv4-mapped IPv6 counts as IPv4.
#[derive(Debug, Clone, Default)]
struct Targets {
    v4: BTreeSet<Ipv4Addr>,
    v6: BTreeSet<Ipv6Addr>,
    /// Lowest upstream TTL of a resolved hostname among the targets.
    ttl_cap: Option<u32>,
}

impl Targets {
    fn add(&mut self, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => {
                self.v4.insert(a);
            }
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => {
                    self.v4.insert(v4);
                }
                None => {
                    self.v6.insert(a);
                }
            },
        }
    }

    fn merge(&mut self, other: &Targets) {
        self.v4.extend(other.v4.iter().copied());
        self.v6.extend(other.v6.iter().copied());
        self.ttl_cap = min_opt(self.ttl_cap, other.ttl_cap);
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    fn into_record(self, ttl: u32) -> RecordData {
        RecordData::Address {
            v4: self.v4.into_iter().collect(),
            v6: self.v6.into_iter().collect(),
            ttl: self.ttl_cap.map_or(ttl, |cap| ttl.min(cap)),
        }
    }

    fn addrs(&self) -> Vec<IpAddr> {
        let v4 = self.v4.iter().copied().map(IpAddr::V4);
        v4.chain(self.v6.iter().copied().map(IpAddr::V6)).collect()
    }
}

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Resolves one load balancer into targets; returns the hostnames that have no resolution.
fn lb_targets(lb: &LoadBalancer, hosts: &dyn HostLookup) -> (Targets, Vec<String>) {
    let mut targets = Targets::default();
    let mut unresolved = Vec::new();
    for ip in &lb.ips {
        targets.add(*ip);
    }
    for host in &lb.hostnames {
        match hosts.lookup(host) {
            Some(resolved) if !resolved.addrs.is_empty() => {
                for addr in &resolved.addrs {
                    targets.add(*addr);
                }
                targets.ttl_cap = min_opt(targets.ttl_cap, Some(resolved.ttl));
            }
            _ => unresolved.push(host.clone()),
        }
    }
    (targets, unresolved)
}

/// Health of one shard and the targets it contributes (spec section 3).
fn shard_targets(
    member: &MemberInput<'_>,
    allow_without_endpoints: bool,
    hosts: &dyn HostLookup,
) -> (ShardHealth, Targets, Vec<String>) {
    let Some(shard) = member.shard else {
        return (ShardHealth::ServiceAbsent, Targets::default(), Vec::new());
    };
    if !member.serving {
        return (ShardHealth::ClusterNotReady, Targets::default(), Vec::new());
    }
    if shard.load_balancer.is_empty() {
        return (ShardHealth::NoLoadBalancer, Targets::default(), Vec::new());
    }
    if shard.ready_endpoints == 0 && !allow_without_endpoints {
        return (
            ShardHealth::NoReadyEndpoints,
            Targets::default(),
            Vec::new(),
        );
    }
    let (targets, unresolved) = lb_targets(shard.load_balancer, hosts);
    if targets.is_empty() {
        return (ShardHealth::HostnameUnresolved, targets, unresolved);
    }
    (ShardHealth::Healthy, targets, unresolved)
}

fn shard_report(
    member: &MemberInput<'_>,
    health: ShardHealth,
    targets: &Targets,
    unresolved: Vec<String>,
) -> ShardReport {
    ShardReport {
        cluster: member.cluster.to_owned(),
        zones: member.zones.iter().cloned().collect(),
        region: member.region.map(str::to_owned),
        health,
        load_balancer: member
            .shard
            .map(|s| s.load_balancer.clone())
            .unwrap_or_default(),
        targets: targets.addrs(),
        unresolved,
    }
}

/// The zone, the name base and the global name of a ServiceDNSRecord.
fn service_names<'a>(
    record: &'a ServiceRecordSpec,
    domain: &'a DomainSpec,
) -> Result<(Name, ServiceBase<'a>, Name), NameError> {
    let zone = naming::parse_dotted("domain", &domain.zone)?;
    let label = record.external_name.as_deref().unwrap_or(&record.key.name);
    let base = ServiceBase::new(label, &record.key.namespace, &domain.federation)?;
    let global = base.global(&zone)?;
    Ok((zone, base, global))
}

/// The global name of a ServiceDNSRecord (`<service>.<namespace>.<federation>.svc.<zone>`).
pub fn global_name(record: &ServiceRecordSpec, domain: &DomainSpec) -> Result<Name, NameError> {
    service_names(record, domain).map(|(_, _, global)| global)
}

/// Computes every name of a ServiceDNSRecord (spec section 4). A record-level error (an invalid
/// service label or zone) yields no names; a bad zone or region label of one cluster only drops
/// that cluster from the zone/region level, reported in `problems`.
pub fn compute_service(
    record: &ServiceRecordSpec,
    domain: &DomainSpec,
    members: &[MemberInput<'_>],
    hosts: &dyn HostLookup,
    ttl: &TtlPolicy,
    reported: Reported,
) -> Result<Computed, NameError> {
    let (zone, base, global_name) = service_names(record, domain)?;
    let ttl = ttl.positive(record.record_ttl);

    let mut out = Computed::default();
    let mut global = Targets::default();
    let mut regions: BTreeMap<&str, Targets> = BTreeMap::new();
    let mut zones: BTreeMap<(&str, &str), Targets> = BTreeMap::new();

    for member in members {
        let (health, targets, unresolved) =
            shard_targets(member, record.allow_service_without_endpoints, hosts);
        global.merge(&targets);
        if let Some(region) = member.region {
            match naming::validate_label("region", region) {
                Ok(()) => {
                    regions.entry(region).or_default().merge(&targets);
                    for az in member.zones {
                        match naming::validate_label("zone", az) {
                            Ok(()) => zones.entry((region, az)).or_default().merge(&targets),
                            Err(error) => out.problems.push(NameProblem {
                                cluster: Some(member.cluster.to_owned()),
                                error,
                            }),
                        }
                    }
                }
                Err(error) => out.problems.push(NameProblem {
                    cluster: Some(member.cluster.to_owned()),
                    error,
                }),
            }
        }
        if reported.includes(member) {
            out.shards
                .push(shard_report(member, health, &targets, unresolved));
        }
    }
    out.shards.sort_by(|a, b| a.cluster.cmp(&b.cluster));

    // Zonal names fall back to their region, regional names to the global name: each level is
    // (its name, the region of the level above or None for the global name, its targets).
    let zonal = zones
        .into_iter()
        .map(|((region, az), targets)| (base.zonal(az, region, &zone), Some(region), targets));
    let regional = regions
        .into_iter()
        .map(|(region, targets)| (base.regional(region, &zone), None, targets));
    for (name, parent_region, targets) in zonal.chain(regional) {
        let name = match name {
            Ok(name) => name,
            Err(error) => {
                out.problems.push(NameProblem {
                    cluster: None,
                    error,
                });
                continue;
            }
        };
        let data = if targets.is_empty() {
            let parent = match parent_region {
                Some(region) => base.regional(region, &zone),
                None => Ok(global_name.clone()),
            };
            let Ok(target) = parent else { continue };
            RecordData::Cname { target, ttl }
        } else {
            targets.into_record(ttl)
        };
        out.records.push(NamedRecord { name, data });
    }
    if let Some(prefix) = &record.dns_prefix {
        match naming::prefixed(prefix, &zone) {
            Ok(name) => out.records.push(NamedRecord {
                name,
                data: RecordData::Cname {
                    target: global_name.clone(),
                    ttl,
                },
            }),
            Err(error) => out.problems.push(NameProblem {
                cluster: None,
                error,
            }),
        }
    }
    if !global.is_empty() {
        out.records.push(NamedRecord {
            name: global_name,
            data: global.into_record(ttl),
        });
    }
    Ok(out)
}

/// Computes the host names of an IngressDNSRecord: each host carries the union of the serving
/// clusters' Ingress load-balancer targets; no record when there are none. Hosts that are not valid
/// names are reported in `problems`. Whether a host is inside a served zone is the caller's call.
pub fn compute_ingress(
    record: &IngressRecordSpec,
    members: &[MemberInput<'_>],
    hosts: &dyn HostLookup,
    ttl: &TtlPolicy,
    reported: Reported,
) -> Computed {
    let ttl = ttl.positive(record.record_ttl);
    let mut out = Computed::default();
    let mut all = Targets::default();
    for member in members {
        let (health, targets, unresolved) = shard_targets(member, true, hosts);
        all.merge(&targets);
        if reported.includes(member) {
            out.shards
                .push(shard_report(member, health, &targets, unresolved));
        }
    }
    out.shards.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    let mut seen = BTreeSet::new();
    for host in &record.hosts {
        match naming::parse_dotted("ingress host", host) {
            Ok(name) => {
                if seen.insert(naming::wire_key(&name)) && !all.is_empty() {
                    out.records.push(NamedRecord {
                        name,
                        data: all.clone().into_record(ttl),
                    });
                }
            }
            Err(error) => out.problems.push(NameProblem {
                cluster: None,
                error,
            }),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::federation::model::ObjectKey;

    /// A member cluster fixture: `Member::new("c1").region("us").zone("us1").lb("10.0.0.1")`.
    #[derive(Debug, Clone)]
    pub struct Member {
        name: String,
        zones: BTreeSet<String>,
        region: Option<String>,
        serving: bool,
        lb: Option<LoadBalancer>,
        ready: u32,
    }

    impl Member {
        pub fn new(name: &str) -> Self {
            Self {
                name: name.into(),
                zones: BTreeSet::new(),
                region: None,
                serving: true,
                lb: None,
                ready: 1,
            }
        }
        pub fn region(mut self, r: &str) -> Self {
            self.region = Some(r.into());
            self
        }
        pub fn zone(mut self, z: &str) -> Self {
            self.zones.insert(z.into());
            self
        }
        pub fn lb(mut self, ip: &str) -> Self {
            self.lb
                .get_or_insert_with(Default::default)
                .ips
                .push(ip.parse().unwrap());
            self
        }
        pub fn lb_hostname(mut self, host: &str) -> Self {
            self.lb
                .get_or_insert_with(Default::default)
                .hostnames
                .push(host.into());
            self
        }
        pub fn service_without_lb(mut self) -> Self {
            self.lb = Some(LoadBalancer::default());
            self
        }
        pub fn not_ready(mut self) -> Self {
            self.ready = 0;
            self
        }
        pub fn offline(mut self) -> Self {
            self.serving = false;
            self
        }
        pub fn input(&self) -> MemberInput<'_> {
            MemberInput {
                cluster: &self.name,
                zones: &self.zones,
                region: self.region.as_deref(),
                serving: self.serving,
                shard: self.lb.as_ref().map(|lb| ShardInput {
                    load_balancer: lb,
                    ready_endpoints: self.ready,
                }),
            }
        }
    }

    pub fn record(name: &str) -> ServiceRecordSpec {
        ServiceRecordSpec {
            key: ObjectKey::new("test", name),
            domain_ref: "galactic".into(),
            record_ttl: 0,
            dns_prefix: None,
            external_name: None,
            allow_service_without_endpoints: false,
            strategy: None,
            uid: None,
        }
    }

    pub fn domain() -> DomainSpec {
        DomainSpec {
            federation: "galactic".into(),
            namespace: "kube-federation-system".into(),
            zone: "example.com".into(),
            name_server: None,
            default_strategy: None,
            name_server_addresses: Vec::new(),
        }
    }

    fn compute(record: &ServiceRecordSpec, members: &[Member]) -> Vec<(String, String)> {
        compute_with(record, members, &BTreeMap::new())
    }

    fn compute_with(
        record: &ServiceRecordSpec,
        members: &[Member],
        hosts: &BTreeMap<String, ResolvedHost>,
    ) -> Vec<(String, String)> {
        let inputs: Vec<_> = members.iter().map(Member::input).collect();
        let out = compute_service(
            record,
            &domain(),
            &inputs,
            hosts,
            &TtlPolicy::default(),
            Reported::EveryMember,
        )
        .unwrap();
        let mut rows: Vec<_> = out
            .records
            .iter()
            .map(|r| (r.name.to_ascii(), show(&r.data)))
            .collect();
        rows.sort();
        rows
    }

    fn show(data: &RecordData) -> String {
        match data {
            RecordData::Address { v4, v6, ttl } => {
                let mut parts: Vec<String> = v4.iter().map(|a| format!("A {a}")).collect();
                parts.extend(v6.iter().map(|a| format!("AAAA {a}")));
                format!("{} ttl {ttl}", parts.join(" "))
            }
            RecordData::Cname { target, ttl } => format!("CNAME {target} ttl {ttl}"),
        }
    }

    const G: &str = "nginx.test.galactic.svc.example.com.";
    const US: &str = "nginx.test.galactic.svc.us.example.com.";
    const US1: &str = "nginx.test.galactic.svc.us1.us.example.com.";
    const EU: &str = "nginx.test.galactic.svc.eu.example.com.";
    const EU1: &str = "nginx.test.galactic.svc.eu1.eu.example.com.";

    fn rows(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut rows: Vec<_> = expected
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_string()))
            .collect();
        rows.sort();
        rows
    }

    fn c1() -> Member {
        Member::new("c1").region("us").zone("us1")
    }
    fn c2() -> Member {
        Member::new("c2").region("eu").zone("eu1")
    }

    #[test]
    fn one_healthy_cluster_answers_at_every_level() {
        let got = compute(&record("nginx"), &[c1().lb("10.20.30.1")]);
        assert_eq!(
            got,
            rows(&[
                (G, "A 10.20.30.1 ttl 180"),
                (US, "A 10.20.30.1 ttl 180"),
                (US1, "A 10.20.30.1 ttl 180"),
            ])
        );
    }

    #[test]
    fn two_healthy_clusters_union_globally_and_split_by_region() {
        let got = compute(
            &record("nginx"),
            &[c1().lb("10.20.30.1"), c2().lb("10.20.30.2")],
        );
        assert_eq!(
            got,
            rows(&[
                (G, "A 10.20.30.1 A 10.20.30.2 ttl 180"),
                (US, "A 10.20.30.1 ttl 180"),
                (US1, "A 10.20.30.1 ttl 180"),
                (EU, "A 10.20.30.2 ttl 180"),
                (EU1, "A 10.20.30.2 ttl 180"),
            ])
        );
    }

    #[test]
    fn cluster_without_load_balancer_falls_back_by_cname() {
        let got = compute(
            &record("nginx"),
            &[c1().lb("10.20.30.1"), c2().service_without_lb()],
        );
        assert_eq!(
            got,
            rows(&[
                (G, "A 10.20.30.1 ttl 180"),
                (US, "A 10.20.30.1 ttl 180"),
                (US1, "A 10.20.30.1 ttl 180"),
                (EU, &format!("CNAME {G} ttl 180")),
                (EU1, &format!("CNAME {EU} ttl 180")),
            ])
        );
    }

    #[test]
    fn no_healthy_cluster_leaves_only_cnames_and_no_global_name() {
        let got = compute(
            &record("nginx"),
            &[c1().lb("10.20.30.1").not_ready(), c2().service_without_lb()],
        );
        assert_eq!(
            got,
            rows(&[
                (US, &format!("CNAME {G} ttl 180")),
                (US1, &format!("CNAME {US} ttl 180")),
                (EU, &format!("CNAME {G} ttl 180")),
                (EU1, &format!("CNAME {EU} ttl 180")),
            ])
        );
    }

    #[test]
    fn cluster_in_two_zones_gives_both_zone_names_its_whole_target_set() {
        let got = compute(&record("nginx"), &[c1().zone("us2").lb("10.20.30.1")]);
        assert!(got.contains(&(US1.into(), "A 10.20.30.1 ttl 180".into())));
        assert!(got.contains(&(
            "nginx.test.galactic.svc.us2.us.example.com.".into(),
            "A 10.20.30.1 ttl 180".into()
        )));
    }

    #[test]
    fn dns_prefix_adds_a_cname_to_the_global_name() {
        let mut rec = record("nginx");
        rec.dns_prefix = Some("foo".into());
        let got = compute(&rec, &[c1().lb("10.20.30.1")]);
        assert!(got.contains(&("foo.example.com.".into(), format!("CNAME {G} ttl 180"))));
    }

    #[test]
    fn external_name_replaces_the_service_name_everywhere() {
        let mut rec = record("nginx");
        rec.external_name = Some("foo".into());
        let got = compute(&rec, &[c1().lb("10.20.30.1")]);
        assert_eq!(got.len(), 3);
        assert!(
            got.iter()
                .all(|(n, _)| n.starts_with("foo.test.galactic.svc."))
        );
    }

    #[test]
    fn record_ttl_applies_to_every_record_and_zero_means_180() {
        let mut rec = record("nginx");
        rec.record_ttl = 300;
        let got = compute(&rec, &[c1().lb("10.20.30.1"), c2().service_without_lb()]);
        assert!(got.iter().all(|(_, d)| d.ends_with("ttl 300")), "{got:?}");
    }

    #[test]
    fn ttl_caps_clamp_the_record_ttl() {
        let policy = TtlPolicy {
            default_ttl: 180,
            min_ttl: 60,
            max_ttl: 120,
        };
        assert_eq!(policy.positive(0), 120);
        assert_eq!(policy.positive(10), 60);
        assert_eq!(policy.positive(90), 90);
    }

    #[test]
    fn ipv6_targets_go_to_aaaa_and_mapped_ipv4_to_a() {
        let got = compute(
            &record("nginx"),
            &[c1().lb("2001:db8::1").lb("::ffff:10.0.0.9").lb("10.0.0.9")],
        );
        assert!(got.contains(&(G.into(), "A 10.0.0.9 AAAA 2001:db8::1 ttl 180".into())));
    }

    #[test]
    fn unlabeled_cluster_counts_globally_and_never_blocks_others() {
        let got = compute(
            &record("nginx"),
            &[Member::new("bare").lb("10.0.0.7"), c1().lb("10.20.30.1")],
        );
        assert_eq!(
            got,
            rows(&[
                (G, "A 10.0.0.7 A 10.20.30.1 ttl 180"),
                (US, "A 10.20.30.1 ttl 180"),
                (US1, "A 10.20.30.1 ttl 180"),
            ])
        );
    }

    #[test]
    fn cluster_with_zone_but_no_region_counts_at_global_only() {
        let got = compute(
            &record("nginx"),
            &[Member::new("z").zone("z1").lb("10.0.0.7")],
        );
        assert_eq!(got, rows(&[(G, "A 10.0.0.7 ttl 180")]));
    }

    #[test]
    fn invalid_zone_label_is_reported_and_only_drops_that_zone_name() {
        let members = [Member::new("odd").region("us").zone("us.1").lb("10.0.0.7")];
        let inputs: Vec<_> = members.iter().map(Member::input).collect();
        let out = compute_service(
            &record("nginx"),
            &domain(),
            &inputs,
            &BTreeMap::new(),
            &TtlPolicy::default(),
            Reported::EveryMember,
        )
        .unwrap();
        assert_eq!(out.records.len(), 2, "global and region still served");
        assert_eq!(out.problems.len(), 1);
        assert_eq!(out.problems[0].cluster.as_deref(), Some("odd"));
    }

    #[test]
    fn offline_cluster_past_grace_contributes_names_but_no_targets() {
        let got = compute(
            &record("nginx"),
            &[c1().lb("10.20.30.1").offline(), c2().lb("10.0.0.2")],
        );
        assert!(got.contains(&(US1.into(), format!("CNAME {US} ttl 180"))));
        assert!(got.contains(&(G.into(), "A 10.0.0.2 ttl 180".into())));
    }

    #[test]
    fn service_without_endpoints_is_healthy_when_allowed() {
        let mut rec = record("nginx");
        rec.allow_service_without_endpoints = true;
        let got = compute(&rec, &[c1().lb("10.20.30.1").not_ready()]);
        assert!(got.contains(&(G.into(), "A 10.20.30.1 ttl 180".into())));
    }

    #[test]
    fn absent_service_still_contributes_its_clusters_zone_names() {
        let got = compute(&record("nginx"), &[c1(), c2().lb("10.0.0.2")]);
        assert!(got.contains(&(US1.into(), format!("CNAME {US} ttl 180"))));
        assert!(got.contains(&(US.into(), format!("CNAME {G} ttl 180"))));
    }

    #[test]
    fn reporting_holders_only_keeps_every_record_and_drops_only_absent_shards() {
        let members = [
            c1(),
            c2().lb("10.0.0.2"),
            Member::new("c3")
                .region("eu")
                .zone("eu1")
                .service_without_lb(),
        ];
        let inputs: Vec<_> = members.iter().map(Member::input).collect();
        let run = |reported| {
            let ttl = TtlPolicy::default();
            let hosts = BTreeMap::new();
            compute_service(&record("nginx"), &domain(), &inputs, &hosts, &ttl, reported).unwrap()
        };
        let (every, holders) = (run(Reported::EveryMember), run(Reported::Holders));
        assert_eq!(holders.records, every.records);
        let clusters =
            |c: &Computed| -> Vec<String> { c.shards.iter().map(|s| s.cluster.clone()).collect() };
        assert_eq!(clusters(&every), ["c1", "c2", "c3"]);
        assert_eq!(clusters(&holders), ["c2", "c3"]);
        assert_eq!(holders.shards[..], every.shards[1..]);
    }

    #[test]
    fn resolved_hostname_contributes_and_caps_the_ttl() {
        let hosts = BTreeMap::from([(
            "lb.aws.example".to_string(),
            ResolvedHost {
                addrs: vec!["192.0.2.5".parse().unwrap()],
                ttl: 60,
            },
        )]);
        let got = compute_with(
            &record("nginx"),
            &[c1().lb_hostname("lb.aws.example")],
            &hosts,
        );
        assert!(got.contains(&(G.into(), "A 192.0.2.5 ttl 60".into())));
    }

    #[test]
    fn unresolved_hostname_makes_only_that_shard_unhealthy() {
        let got = compute(
            &record("nginx"),
            &[c1().lb_hostname("pending.example"), c2().lb("10.0.0.2")],
        );
        assert!(got.contains(&(US1.into(), format!("CNAME {US} ttl 180"))));
        assert!(got.contains(&(G.into(), "A 10.0.0.2 ttl 180".into())));
    }

    #[test]
    fn invalid_namespace_rejects_the_whole_record() {
        let mut rec = record("nginx");
        rec.key.namespace = "bad.ns".into();
        let members = [c1().lb("10.0.0.1")];
        let inputs: Vec<_> = members.iter().map(Member::input).collect();
        let err = compute_service(
            &rec,
            &domain(),
            &inputs,
            &BTreeMap::new(),
            &TtlPolicy::default(),
            Reported::EveryMember,
        )
        .unwrap_err();
        assert_eq!(err.reason(), "InvalidLabel");
    }

    fn ingress(record: &IngressRecordSpec, members: &[Member]) -> Computed {
        let inputs: Vec<_> = members.iter().map(Member::input).collect();
        let hosts = BTreeMap::new();
        compute_ingress(
            record,
            &inputs,
            &hosts,
            &TtlPolicy::default(),
            Reported::EveryMember,
        )
    }

    #[test]
    fn ingress_hosts_carry_the_union_of_serving_clusters() {
        let rec = IngressRecordSpec {
            key: ObjectKey::new("test", "web"),
            hosts: vec!["web.example.com".into(), "WEB.example.com".into()],
            record_ttl: 0,
            uid: None,
        };
        let out = ingress(&rec, &[c1().lb("10.0.0.1"), c2().lb("10.0.0.2").offline()]);
        assert_eq!(
            out.records.len(),
            1,
            "duplicate host differing in case is one name"
        );
        assert_eq!(show(&out.records[0].data), "A 10.0.0.1 ttl 180");
    }

    #[test]
    fn ingress_without_targets_has_no_record() {
        let rec = IngressRecordSpec {
            key: ObjectKey::new("test", "web"),
            hosts: vec!["web.example.com".into()],
            record_ttl: 0,
            uid: None,
        };
        let out = ingress(&rec, &[c1().service_without_lb()]);
        assert!(out.records.is_empty());
    }
}
