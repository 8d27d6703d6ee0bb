//! The engine: the one writer of the [`RecordStore`]. It holds the federation model (per-cluster
//! slices, so a relist of one cluster replaces only that cluster), applies [`SourceEvent`]s with
//! synchronous calls, recomputes only the records an event touches, and publishes their
//! pre-rendered entries. Names are *claimed* by owners; when two owners claim one name the lowest
//! [`Owner`] wins (static zone data first) and the others are reported as conflicts, never silently.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::rr::Name;

use crate::dns::store::{EntryBuilder, RecordStore, SoaFields, Zone, ZoneTable};
use crate::dns::wire::rtype;
use crate::federation::model::{
    DomainSpec, EndpointsState, FederationKind, FederationObject, FederationObjectId,
    IngressRecordSpec, LoadBalancer, MemberKind, MemberObject, MemberObjectId, MemberSpec,
    NodeTopology, ObjectKey, ServiceRecordSpec, ServiceState, SourceEvent, topology_from_nodes,
};
use crate::federation::naming::{self, NameError};
use crate::federation::records::{
    self, Computed, MemberInput, NameProblem, RecordData, ResolvedHost, ShardInput, TtlPolicy,
};

/// Who put a name in the store. Order is priority: the first claimant of a name wins.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// A name from a static zone file (keyed by the zone's apex).
    Static(String),
    /// The generated apex (SOA/NS) of a Domain zone.
    Apex(String),
    Service(ObjectKey),
    Ingress(ObjectKey),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Static(zone) => write!(f, "static zone {zone}"),
            Owner::Apex(zone) => write!(f, "apex of Domain zone {zone}"),
            Owner::Service(k) => write!(f, "ServiceDNSRecord {k}"),
            Owner::Ingress(k) => write!(f, "IngressDNSRecord {k}"),
        }
    }
}

/// One static record set from a zone file, rdata already in wire form (names uncompressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSet {
    pub rtype: u16,
    pub ttl: u32,
    pub rdatas: Vec<Vec<u8>>,
}

/// A zone loaded from a master file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticZone {
    pub apex: Name,
    pub soa: SoaFields,
    pub serial: u32,
    /// Every name of the zone (the apex included) and its sets; the SOA itself is not among them.
    pub names: BTreeMap<Name, Vec<StaticSet>>,
}

/// What a name carries, as claimed by one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Record(RecordData),
    Static { apex: bool, sets: Vec<StaticSet> },
    Apex { name_servers: Vec<Name>, ttl: u32 },
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ttl: TtlPolicy,
    /// How long an unreachable member keeps its targets.
    pub grace: Duration,
    /// Negative-caching TTL (SOA MINIMUM) of Domain zones.
    pub negative_ttl: u32,
    /// TTL of SOA and NS at the apex of Domain zones.
    pub apex_ttl: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ttl: TtlPolicy::default(),
            grace: Duration::ZERO,
            negative_ttl: 30,
            apex_ttl: 3600,
        }
    }
}

/// Everything one member cluster reported.
#[derive(Debug, Default, Clone)]
struct ClusterSlice {
    services: HashMap<ObjectKey, ServiceState>,
    endpoint_slices: HashMap<ObjectKey, EndpointsState>,
    endpoints: HashMap<ObjectKey, EndpointsState>,
    ingresses: HashMap<ObjectKey, LoadBalancer>,
    nodes: HashMap<String, NodeTopology>,
    /// Ready endpoints per Service from its EndpointSlices: slice name → ready.
    slices_by_service: HashMap<ObjectKey, HashMap<String, u32>>,
    zones: BTreeSet<String>,
    region: Option<String>,
    /// Load-balancer hostnames referenced by this slice's Services and Ingresses, with counts.
    hostnames: HashMap<String, u32>,
}

impl ClusterSlice {
    fn count_hosts(&mut self, lb: Option<&LoadBalancer>, delta: i32) {
        for host in lb.into_iter().flat_map(|lb| &lb.hostnames) {
            let n = self.hostnames.entry(host.clone()).or_insert(0);
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                self.hostnames.remove(host);
            }
        }
    }

    fn ready_endpoints(&self, service: &ObjectKey) -> u32 {
        match self.slices_by_service.get(service) {
            Some(slices) if !slices.is_empty() => slices.values().sum(),
            // Services without any EndpointSlice fall back to core/v1 Endpoints.
            _ => self.endpoints.get(service).map_or(0, |e| e.ready),
        }
    }

    fn service_of_slice(key: &ObjectKey, eps: &EndpointsState) -> ObjectKey {
        ObjectKey::new(key.namespace.clone(), eps.service.clone())
    }

    /// Applies one object; returns the record keys it may affect.
    fn apply(&mut self, object: MemberObject, touched: &mut Touched) {
        match object {
            MemberObject::Service(key, state) => {
                self.count_hosts(Some(&state.load_balancer), 1);
                let old = self.services.insert(key.clone(), state);
                self.count_hosts(old.as_ref().map(|s| &s.load_balancer), -1);
                touched.services.insert(key);
            }
            MemberObject::EndpointSlice(key, eps) => {
                if let Some(old) = self.endpoint_slices.remove(&key) {
                    self.unindex_slice(&key, &old, touched);
                }
                let service = Self::service_of_slice(&key, &eps);
                self.slices_by_service
                    .entry(service.clone())
                    .or_default()
                    .insert(key.name.clone(), eps.ready);
                touched.services.insert(service);
                self.endpoint_slices.insert(key, eps);
            }
            MemberObject::Endpoints(key, eps) => {
                touched
                    .services
                    .insert(ObjectKey::new(key.namespace.clone(), eps.service.clone()));
                self.endpoints.insert(key, eps);
            }
            MemberObject::Ingress(key, lb) => {
                self.count_hosts(Some(&lb), 1);
                let old = self.ingresses.insert(key.clone(), lb);
                self.count_hosts(old.as_ref(), -1);
                touched.ingresses.insert(key);
            }
            MemberObject::Node(name, topo) => {
                self.nodes.insert(name, topo);
                touched.topology = true;
            }
        }
    }

    fn unindex_slice(&mut self, key: &ObjectKey, eps: &EndpointsState, touched: &mut Touched) {
        let service = Self::service_of_slice(key, eps);
        if let Some(slices) = self.slices_by_service.get_mut(&service) {
            slices.remove(&key.name);
            if slices.is_empty() {
                self.slices_by_service.remove(&service);
            }
        }
        touched.services.insert(service);
    }

    fn delete(&mut self, id: &MemberObjectId, touched: &mut Touched) {
        match id {
            MemberObjectId::Service(key) => {
                let old = self.services.remove(key);
                self.count_hosts(old.as_ref().map(|s| &s.load_balancer), -1);
                touched.services.insert(key.clone());
            }
            MemberObjectId::EndpointSlice(key) => {
                if let Some(old) = self.endpoint_slices.remove(key) {
                    self.unindex_slice(key, &old, touched);
                }
            }
            MemberObjectId::Endpoints(key) => {
                if let Some(old) = self.endpoints.remove(key) {
                    touched
                        .services
                        .insert(ObjectKey::new(key.namespace.clone(), old.service));
                }
            }
            MemberObjectId::Ingress(key) => {
                let old = self.ingresses.remove(key);
                self.count_hosts(old.as_ref(), -1);
                touched.ingresses.insert(key.clone());
            }
            MemberObjectId::Node(name) => {
                self.nodes.remove(name);
                touched.topology = true;
            }
        }
    }

    /// Removes every object of `kind` (before a relist of that kind is applied).
    fn clear_kind(&mut self, kind: MemberKind, touched: &mut Touched) {
        let ids: Vec<MemberObjectId> = match kind {
            MemberKind::Service => self
                .services
                .keys()
                .map(|k| MemberObjectId::Service(k.clone()))
                .collect(),
            MemberKind::EndpointSlice => self
                .endpoint_slices
                .keys()
                .map(|k| MemberObjectId::EndpointSlice(k.clone()))
                .collect(),
            MemberKind::Endpoints => self
                .endpoints
                .keys()
                .map(|k| MemberObjectId::Endpoints(k.clone()))
                .collect(),
            MemberKind::Ingress => self
                .ingresses
                .keys()
                .map(|k| MemberObjectId::Ingress(k.clone()))
                .collect(),
            MemberKind::Node => self
                .nodes
                .keys()
                .map(|n| MemberObjectId::Node(n.clone()))
                .collect(),
        };
        for id in ids {
            self.delete(&id, touched);
        }
    }

    /// Every record key this slice may affect (used around a relist).
    fn all_keys(&self, touched: &mut Touched) {
        touched.services.extend(self.services.keys().cloned());
        touched
            .services
            .extend(self.slices_by_service.keys().cloned());
        touched.services.extend(
            self.endpoints
                .iter()
                .map(|(k, e)| ObjectKey::new(k.namespace.clone(), e.service.clone())),
        );
        touched.ingresses.extend(self.ingresses.keys().cloned());
    }
}

/// Record keys to recompute at the next flush.
#[derive(Debug, Default)]
struct Touched {
    services: HashSet<ObjectKey>,
    ingresses: HashSet<ObjectKey>,
    topology: bool,
    everything: bool,
    zones: bool,
    synced: bool,
}

/// Per-member liveness: declared readiness and observed reachability.
#[derive(Debug, Clone)]
struct Liveness {
    reachable: bool,
    /// When the member stopped being ready (declared or observed); grace runs from here.
    down_since: Option<Instant>,
    /// The grace period ran out and the member's targets were withdrawn.
    withdrawn: bool,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            reachable: true,
            down_since: None,
            withdrawn: false,
        }
    }
}

/// Why a name answers what it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub name: String,
    pub zone: Option<String>,
    /// The owner whose data is served, and its data.
    pub served: Option<(Owner, Claim)>,
    /// Other owners claiming the same name (conflicts).
    pub rejected: Vec<Owner>,
    /// The computation behind the served data, for computed owners.
    pub computed: Option<Computed>,
    /// Error that kept the owner from producing any name.
    pub record_error: Option<String>,
    pub empty_non_terminal: bool,
}

/// A name two owners claimed; the loser is reported here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub name: String,
    pub winner: Owner,
    pub loser: Owner,
}

/// The single writer of the record store.
#[derive(Debug)]
pub struct Engine {
    store: Arc<RecordStore>,
    settings: Settings,
    domains: BTreeMap<String, DomainSpec>,
    services: BTreeMap<ObjectKey, ServiceRecordSpec>,
    ingresses: BTreeMap<ObjectKey, IngressRecordSpec>,
    members: BTreeMap<String, MemberSpec>,
    liveness: HashMap<String, Liveness>,
    slices: BTreeMap<String, ClusterSlice>,
    static_zones: Vec<StaticZone>,
    hosts: HashMap<String, ResolvedHost>,
    /// name key → claims, sorted by owner.
    claims: HashMap<Box<[u8]>, Vec<(Owner, Claim)>>,
    owned: HashMap<Owner, Vec<Box<[u8]>>>,
    /// Names served with data (not empty non-terminals).
    present: HashSet<Box<[u8]>>,
    /// Empty non-terminals: name key → number of present descendants.
    ent_refs: HashMap<Box<[u8]>, u32>,
    /// Problems per owner (invalid labels, record errors) from the last computation.
    problems: BTreeMap<Owner, Vec<String>>,
    touched: Touched,
    dirty_zones: HashSet<Box<[u8]>>,
    /// Records recomputed since the status writer last looked.
    status_dirty: BTreeSet<Owner>,
}

impl Engine {
    pub fn new(store: Arc<RecordStore>, settings: Settings) -> Self {
        Self {
            store,
            settings,
            domains: BTreeMap::new(),
            services: BTreeMap::new(),
            ingresses: BTreeMap::new(),
            members: BTreeMap::new(),
            liveness: HashMap::new(),
            slices: BTreeMap::new(),
            static_zones: Vec::new(),
            hosts: HashMap::new(),
            claims: HashMap::new(),
            owned: HashMap::new(),
            present: HashSet::new(),
            ent_refs: HashMap::new(),
            problems: BTreeMap::new(),
            touched: Touched::default(),
            dirty_zones: HashSet::new(),
            status_dirty: BTreeSet::new(),
        }
    }

    pub fn store(&self) -> &Arc<RecordStore> {
        &self.store
    }

    /// Applies one source event to the model. Call [`Engine::flush`] to publish.
    pub fn apply(&mut self, event: SourceEvent, now: Instant) {
        match event {
            SourceEvent::ApplyFederation(object) => self.apply_federation(object, now),
            SourceEvent::DeleteFederation(id) => self.delete_federation(&id, now),
            SourceEvent::ResetFederation(objects) => self.reset_federation(None, objects, now),
            SourceEvent::ResetFederationKind(kind, objects) => {
                self.reset_federation(Some(kind), objects, now)
            }
            SourceEvent::ApplyMember(cluster, object) => {
                let slice = self.slices.entry(cluster).or_insert_with(|| {
                    self.touched.topology = true;
                    ClusterSlice::default()
                });
                slice.apply(object, &mut self.touched);
            }
            SourceEvent::DeleteMember(cluster, id) => {
                if let Some(slice) = self.slices.get_mut(&cluster) {
                    slice.delete(&id, &mut self.touched);
                }
            }
            SourceEvent::ResetMember(cluster, objects) => {
                let mut fresh = ClusterSlice::default();
                let old = self.slices.remove(&cluster);
                if let Some(old) = &old {
                    old.all_keys(&mut self.touched);
                }
                for object in objects {
                    fresh.apply(object, &mut self.touched);
                }
                self.slices.insert(cluster, fresh);
                self.touched.topology = true;
            }
            SourceEvent::ResetMemberKind(cluster, kind, objects) => {
                let slice = self.slices.entry(cluster).or_insert_with(|| {
                    self.touched.topology = true;
                    ClusterSlice::default()
                });
                slice.clear_kind(kind, &mut self.touched);
                for object in objects {
                    slice.apply(object, &mut self.touched);
                }
            }
            SourceEvent::MemberReachable(cluster, reachable) => {
                let live = self.liveness.entry(cluster.clone()).or_default();
                if live.reachable != reachable {
                    live.reachable = reachable;
                    self.touch_member(&cluster);
                }
                self.refresh_down_since(&cluster, now);
            }
            // Marked after the flush that publishes the synced state, never before it.
            SourceEvent::Synced => self.touched.synced = true,
        }
    }

    /// Replaces every federation object (of `kind`, or of all kinds) with `objects`.
    fn reset_federation(
        &mut self,
        kind: Option<FederationKind>,
        objects: Vec<FederationObject>,
        now: Instant,
    ) {
        let ids: Vec<_> = self
            .domains
            .keys()
            .map(|d| FederationObjectId::Domain(d.clone()))
            .chain(
                self.services
                    .keys()
                    .map(|k| FederationObjectId::ServiceRecord(k.clone())),
            )
            .chain(
                self.ingresses
                    .keys()
                    .map(|k| FederationObjectId::IngressRecord(k.clone())),
            )
            .chain(
                self.members
                    .keys()
                    .map(|m| FederationObjectId::Member(m.clone())),
            )
            .filter(|id| kind.is_none_or(|k| id.kind() == k))
            .collect();
        let keep: HashSet<_> = objects.iter().map(FederationObject::id).collect();
        for id in ids.into_iter().filter(|id| !keep.contains(id)) {
            self.delete_federation(&id, now);
        }
        for object in objects {
            self.apply_federation(object, now);
        }
    }

    fn apply_federation(&mut self, object: FederationObject, now: Instant) {
        match object {
            FederationObject::Domain(d) => {
                if self.domains.get(&d.federation) != Some(&d) {
                    self.domains.insert(d.federation.clone(), d);
                    self.touched.zones = true;
                }
            }
            // Status writes come back through the watch unchanged: nothing to recompute then.
            FederationObject::ServiceRecord(r) => {
                if self.services.get(&r.key) != Some(&r) {
                    self.touched.services.insert(r.key.clone());
                    self.services.insert(r.key.clone(), r);
                }
            }
            FederationObject::IngressRecord(r) => {
                if self.ingresses.get(&r.key) != Some(&r) {
                    self.touched.ingresses.insert(r.key.clone());
                    self.ingresses.insert(r.key.clone(), r);
                }
            }
            FederationObject::Member(m) => {
                if self.members.get(&m.name) != Some(&m) {
                    let name = m.name.clone();
                    self.slices.entry(name.clone()).or_default();
                    self.members.insert(name.clone(), m);
                    self.touched.everything = true;
                    self.refresh_down_since(&name, now);
                }
            }
        }
    }

    fn delete_federation(&mut self, id: &FederationObjectId, now: Instant) {
        match id {
            FederationObjectId::Domain(name) => {
                if self.domains.remove(name).is_some() {
                    self.touched.zones = true;
                }
            }
            FederationObjectId::ServiceRecord(key) => {
                self.services.remove(key);
                self.touched.services.insert(key.clone());
            }
            FederationObjectId::IngressRecord(key) => {
                self.ingresses.remove(key);
                self.touched.ingresses.insert(key.clone());
            }
            FederationObjectId::Member(name) => {
                if self.members.remove(name).is_some() {
                    self.touched.everything = true;
                }
                self.refresh_down_since(name, now);
            }
        }
    }

    /// Replaces the static zones (a reload of the zone files).
    pub fn set_static_zones(&mut self, zones: Vec<StaticZone>) {
        if self.static_zones != zones {
            self.static_zones = zones;
            self.touched.zones = true;
        }
    }

    /// Records a new resolution of a load-balancer hostname (or its failure: `None` keeps the last
    /// good set, as the spec asks).
    pub fn set_host(&mut self, host: String, resolved: Option<ResolvedHost>) {
        if let Some(resolved) = resolved
            && self.hosts.get(&host) != Some(&resolved)
        {
            self.hosts.insert(host, resolved);
            self.touched.everything = true;
        }
    }

    /// Every load-balancer hostname the model references, for the background resolver.
    pub fn hostnames(&self) -> BTreeSet<String> {
        self.slices
            .values()
            .flat_map(|s| s.hostnames.keys().cloned())
            .collect()
    }

    /// Marks the records with a shard in `cluster` for recomputation: its serving state changed.
    /// Records without a shard there only take its zone and region names, which do not depend
    /// on readiness.
    fn touch_member(&mut self, cluster: &str) {
        match self.slices.get(cluster) {
            Some(slice) => slice.all_keys(&mut self.touched),
            None => self.touched.everything = true,
        }
    }

    fn is_ready(&self, cluster: &str) -> bool {
        let declared = self.members.get(cluster).is_some_and(|m| m.ready);
        let reachable = self.liveness.get(cluster).is_none_or(|l| l.reachable);
        declared && reachable
    }

    fn refresh_down_since(&mut self, cluster: &str, now: Instant) {
        let ready = self.is_ready(cluster);
        let live = self.liveness.entry(cluster.to_owned()).or_default();
        match (ready, live.down_since) {
            (true, _) => {
                live.down_since = None;
                live.withdrawn = false;
            }
            (false, None) => live.down_since = Some(now),
            (false, Some(_)) => {}
        }
    }

    /// A member's targets may be served: ready, or down for less than the grace period.
    fn is_serving(&self, cluster: &str, now: Instant) -> bool {
        if self.is_ready(cluster) {
            return true;
        }
        match self.liveness.get(cluster).and_then(|l| l.down_since) {
            Some(since) => now.saturating_duration_since(since) < self.settings.grace,
            None => false,
        }
    }

    /// When the next grace period ends, so the caller can wake up and call [`Engine::expire`].
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.settings.grace.is_zero() {
            return None;
        }
        self.liveness
            .values()
            .filter(|l| !l.withdrawn)
            .filter_map(|l| l.down_since.map(|s| s + self.settings.grace))
            .min()
    }

    /// Withdraws the targets of members whose grace period has run out by `now`.
    pub fn expire(&mut self, now: Instant) {
        let grace = self.settings.grace;
        let mut expired = Vec::new();
        for (cluster, live) in &mut self.liveness {
            if !live.withdrawn && live.down_since.is_some_and(|s| s + grace <= now) {
                live.withdrawn = true;
                expired.push(cluster.clone());
            }
        }
        for cluster in expired {
            self.touch_member(&cluster);
        }
    }

    /// Whether any event is waiting to be published.
    pub fn has_pending(&self) -> bool {
        let t = &self.touched;
        !t.services.is_empty()
            || !t.ingresses.is_empty()
            || t.topology
            || t.everything
            || t.zones
            || t.synced
    }

    /// Recomputes what the applied events touched and publishes it to the store.
    pub fn flush(&mut self, now: Instant) {
        let touched = std::mem::take(&mut self.touched);
        // Node events are frequent; only a real change of some member's zones or region
        // recomputes every record.
        let topology_changed =
            (touched.topology || touched.everything || touched.zones) && self.refresh_topology();
        if touched.zones {
            self.rebuild(now);
        } else if touched.everything || topology_changed {
            for key in self.services.keys().cloned().collect::<Vec<_>>() {
                self.recompute(Owner::Service(key), now);
            }
            for key in self.ingresses.keys().cloned().collect::<Vec<_>>() {
                self.recompute(Owner::Ingress(key), now);
            }
            // Records deleted while everything was dirty.
            for key in touched.services {
                if !self.services.contains_key(&key) {
                    self.recompute(Owner::Service(key), now);
                }
            }
            for key in touched.ingresses {
                if !self.ingresses.contains_key(&key) {
                    self.recompute(Owner::Ingress(key), now);
                }
            }
        } else {
            for key in touched.services {
                self.recompute(Owner::Service(key), now);
            }
            for key in touched.ingresses {
                self.recompute(Owner::Ingress(key), now);
            }
        }
        let zones = self.store.zones();
        for key in self.dirty_zones.drain() {
            if let Some(zone) = zones.iter().find(|z| *z.key() == *key) {
                zone.bump_serial();
            }
        }
        if touched.synced {
            self.store.mark_synced();
        }
    }

    /// Recomputes each member's zones and region; returns whether any changed.
    fn refresh_topology(&mut self) -> bool {
        let mut changed = false;
        for (name, slice) in &mut self.slices {
            let (zones, region) = topology_from_nodes(slice.nodes.values());
            let declared = self.members.get(name);
            let zones = match declared {
                Some(m) if !m.zones.is_empty() => m.zones.iter().cloned().collect(),
                _ => zones,
            };
            let region = declared.and_then(|m| m.region.clone()).or(region);
            if slice.zones != zones || slice.region != region {
                slice.zones = zones;
                slice.region = region;
                changed = true;
            }
        }
        changed
    }

    /// Computes what `owner` claims now. `Ok(None)` means the owner no longer exists.
    fn compute(&self, owner: &Owner, now: Instant) -> Result<Option<Computed>, NameError> {
        let empty = ClusterSlice::default();
        let topologies: Vec<Topology<'_>> = self
            .members
            .keys()
            .map(|c| {
                let slice = self.slices.get(c).unwrap_or(&empty);
                (
                    c,
                    (&slice.zones, slice.region.as_deref()),
                    self.is_serving(c, now),
                )
            })
            .collect();
        match owner {
            Owner::Service(key) => {
                let Some(record) = self.services.get(key) else {
                    return Ok(None);
                };
                let Some(domain) = self.domains.get(&record.domain_ref) else {
                    return Err(NameError::UnknownDomain(record.domain_ref.clone()));
                };
                let inputs: Vec<MemberInput<'_>> = topologies
                    .iter()
                    .map(|(c, (zones, region), serving)| {
                        let slice = self.slices.get(*c);
                        MemberInput {
                            cluster: c,
                            zones,
                            region: *region,
                            serving: *serving,
                            shard: slice.and_then(|s| {
                                s.services.get(key).map(|svc| ShardInput {
                                    load_balancer: &svc.load_balancer,
                                    ready_endpoints: s.ready_endpoints(key),
                                })
                            }),
                        }
                    })
                    .collect();
                records::compute_service(record, domain, &inputs, &self.hosts, &self.settings.ttl)
                    .map(Some)
            }
            Owner::Ingress(key) => {
                let Some(record) = self.ingresses.get(key) else {
                    return Ok(None);
                };
                let inputs: Vec<MemberInput<'_>> = topologies
                    .iter()
                    .map(|(c, (zones, region), serving)| MemberInput {
                        cluster: c,
                        zones,
                        region: *region,
                        serving: *serving,
                        shard: self.slices.get(*c).and_then(|s| {
                            s.ingresses.get(key).map(|lb| ShardInput {
                                load_balancer: lb,
                                ready_endpoints: 1,
                            })
                        }),
                    })
                    .collect();
                Ok(Some(records::compute_ingress(
                    record,
                    &inputs,
                    &self.hosts,
                    &self.settings.ttl,
                )))
            }
            Owner::Static(_) | Owner::Apex(_) => Ok(None),
        }
    }

    /// Recomputes one computed owner and publishes the difference.
    fn recompute(&mut self, owner: Owner, now: Instant) {
        self.status_dirty.insert(owner.clone());
        let (claims, problems) = match self.compute(&owner, now) {
            Ok(Some(computed)) => {
                let zones = self.store.zones();
                let mut problems: Vec<String> =
                    computed.problems.iter().map(describe_problem).collect();
                let mut claims = Vec::with_capacity(computed.records.len());
                for record in computed.records {
                    let key = naming::wire_key(&record.name);
                    if zones.find(&key).is_none() {
                        problems.push(format!(
                            "{} is outside every served zone: not answered",
                            record.name
                        ));
                        continue;
                    }
                    claims.push((key, Claim::Record(record.data)));
                }
                (claims, problems)
            }
            Ok(None) => (Vec::new(), Vec::new()),
            Err(error) => (Vec::new(), vec![error.to_string()]),
        };
        if problems.is_empty() {
            self.problems.remove(&owner);
        } else {
            for p in &problems {
                tracing::warn!(%owner, problem = %p, "record problem");
            }
            self.problems.insert(owner.clone(), problems);
        }
        self.set_claims(owner, claims);
    }

    /// Replaces everything `owner` claims with `claims`, publishing each changed name.
    fn set_claims(&mut self, owner: Owner, claims: Vec<(Box<[u8]>, Claim)>) {
        let old = self.owned.remove(&owner).unwrap_or_default();
        let new_keys: HashSet<&[u8]> = claims.iter().map(|(k, _)| &**k).collect();
        let mut changed: Vec<Box<[u8]>> = Vec::new();
        for key in old {
            if !new_keys.contains(&*key) {
                if let Some(list) = self.claims.get_mut(&key) {
                    list.retain(|(o, _)| *o != owner);
                    if list.is_empty() {
                        self.claims.remove(&key);
                    }
                }
                changed.push(key);
            }
        }
        let mut keys = Vec::with_capacity(claims.len());
        for (key, claim) in claims {
            let list = self.claims.entry(key.clone()).or_default();
            match list.binary_search_by(|(o, _)| o.cmp(&owner)) {
                Ok(i) if list[i].1 == claim => {}
                Ok(i) => {
                    list[i].1 = claim;
                    changed.push(key.clone());
                }
                Err(i) => {
                    list.insert(i, (owner.clone(), claim));
                    changed.push(key.clone());
                }
            }
            keys.push(key);
        }
        if !keys.is_empty() {
            self.owned.insert(owner, keys);
        }
        for key in changed {
            self.publish(key);
        }
    }

    /// Writes the current winner of `key` to the store, maintaining empty non-terminals.
    fn publish(&mut self, key: Box<[u8]>) {
        let zones = self.store.zones();
        let Some(zone) = zones.find(&key).cloned() else {
            return;
        };
        drop(zones);
        self.dirty_zones.insert(zone.key().into());
        let winner = self.claims.get(&key).and_then(|l| l.first());
        match winner {
            Some((_, claim)) => {
                let entry = render(claim);
                self.store.insert(key.clone(), entry);
                if self.present.insert(key.clone()) {
                    self.adjust_ancestors(&key, zone.key(), 1);
                }
            }
            None => {
                if self.present.remove(&key) {
                    self.adjust_ancestors(&key, zone.key(), -1);
                }
                if self.ent_refs.get(&key).copied().unwrap_or(0) > 0 {
                    self.store.insert(key, Box::default());
                } else {
                    self.store.remove(&key);
                }
            }
        }
    }

    fn adjust_ancestors(&mut self, key: &[u8], apex: &[u8], delta: i32) {
        let mut at = 1 + key[0] as usize;
        while at < key.len() && key.len() - at > apex.len() {
            let ancestor = &key[at..];
            let refs = self.ent_refs.entry(ancestor.into()).or_insert(0);
            let before = *refs;
            *refs = refs.saturating_add_signed(delta);
            let after = *refs;
            if after == 0 {
                self.ent_refs.remove(ancestor);
            }
            if !self.present.contains(ancestor) {
                if before == 0 && after > 0 {
                    self.store.insert(ancestor.into(), Box::default());
                } else if before > 0 && after == 0 {
                    self.store.remove(ancestor);
                }
            }
            at += 1 + key[at] as usize;
        }
    }

    /// The zones fedns serves now: Domains and static zones (a static file's SOA wins).
    fn zone_table(&self) -> ZoneTable {
        let old = self.store.zones();
        let mut by_apex: BTreeMap<Box<[u8]>, Arc<Zone>> = BTreeMap::new();
        let serial_base = unix_serial();
        let keep_or_new = |apex: &Name, soa: SoaFields, serial: u32| {
            match old.by_apex(apex) {
                Some(z) if z.soa == soa => z.clone(),
                // Serials never go back: secondaries and caches compare them.
                Some(z) => Arc::new(Zone::new(
                    apex.clone(),
                    soa,
                    serial.max(z.serial().wrapping_add(1)),
                )),
                None => Arc::new(Zone::new(apex.clone(), soa, serial)),
            }
        };
        for domain in self.domains.values() {
            let Ok(apex) = naming::parse_dotted("domain", &domain.zone) else {
                tracing::warn!(domain = %domain.federation, zone = %domain.zone, "invalid Domain zone: not served");
                continue;
            };
            let soa = self.domain_soa(domain, &apex);
            let zone = keep_or_new(&apex, soa, serial_base);
            by_apex.insert(naming::wire_key(&apex), zone);
        }
        for zone in &self.static_zones {
            let z = keep_or_new(&zone.apex, zone.soa.clone(), zone.serial.max(1));
            // A zone file for a Domain's zone replaces its generated SOA and NS.
            by_apex.insert(naming::wire_key(&zone.apex), z);
        }
        ZoneTable::new(by_apex.into_values().collect())
    }

    fn domain_soa(&self, domain: &DomainSpec, apex: &Name) -> SoaFields {
        let mname = name_server(domain, apex);
        let rname = naming::under(&["hostmaster"], apex).unwrap_or_else(|_| apex.clone());
        SoaFields {
            mname,
            rname,
            refresh: 3600,
            retry: 600,
            expire: 1_209_600,
            minimum: self.settings.negative_ttl,
            ttl: self.settings.apex_ttl,
        }
    }

    /// Recomputes everything against a new zone table. Each name goes straight from its old to its
    /// new entry, so no name is ever missing in between.
    fn rebuild(&mut self, now: Instant) {
        let table = self.zone_table();
        // Zones created or re-created here start at their new serial: no extra bump for this load.
        let fresh: Vec<Box<[u8]>> = {
            let old = self.store.zones();
            table
                .iter()
                .filter(|z| !old.iter().any(|o| Arc::ptr_eq(o, z)))
                .map(|z| z.key().into())
                .collect()
        };
        self.store.set_zones(table);
        let before: HashSet<Box<[u8]>> = self
            .present
            .iter()
            .chain(self.ent_refs.keys())
            .cloned()
            .collect();
        self.claims.clear();
        self.owned.clear();
        self.present.clear();
        self.ent_refs.clear();
        self.problems.clear();

        for zone in self.static_zones.clone() {
            let owner = Owner::Static(zone.apex.to_ascii());
            let claims = zone
                .names
                .iter()
                .map(|(name, sets)| {
                    let apex = name == &zone.apex;
                    (
                        naming::wire_key(name),
                        Claim::Static {
                            apex,
                            sets: sets.clone(),
                        },
                    )
                })
                .chain(
                    // A zone file may omit every record at the apex but its SOA.
                    (!zone.names.contains_key(&zone.apex)).then(|| {
                        (
                            naming::wire_key(&zone.apex),
                            Claim::Static {
                                apex: true,
                                sets: Vec::new(),
                            },
                        )
                    }),
                )
                .collect();
            self.set_claims(owner, claims);
        }
        for domain in self.domains.values().cloned().collect::<Vec<_>>() {
            let Ok(apex) = naming::parse_dotted("domain", &domain.zone) else {
                continue;
            };
            let claim = Claim::Apex {
                name_servers: vec![name_server(&domain, &apex)],
                ttl: self.settings.apex_ttl,
            };
            self.set_claims(
                Owner::Apex(apex.to_ascii()),
                vec![(naming::wire_key(&apex), claim)],
            );
        }
        for key in self.services.keys().cloned().collect::<Vec<_>>() {
            self.recompute(Owner::Service(key), now);
        }
        for key in self.ingresses.keys().cloned().collect::<Vec<_>>() {
            self.recompute(Owner::Ingress(key), now);
        }
        for key in before {
            if !self.present.contains(&key) && !self.ent_refs.contains_key(&key) {
                self.store.remove(&key);
            }
        }
        for key in fresh {
            self.dirty_zones.remove(&key);
        }
        for c in self.conflicts() {
            tracing::warn!(name = %c.name, winner = %c.winner, loser = %c.loser, "name conflict: the loser's data is not served");
        }
    }

    /// Names claimed by more than one owner.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut out = Vec::new();
        for (key, list) in &self.claims {
            if let Some(((winner, _), rest)) = list.split_first() {
                // A static zone file replacing a Domain's generated apex is intended, not a conflict.
                for (loser, _) in rest.iter().filter(|(o, _)| !matches!(o, Owner::Apex(_))) {
                    out.push(Conflict {
                        name: key_to_text(key),
                        winner: winner.clone(),
                        loser: loser.clone(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Problems found during the last computation of each owner.
    pub fn problems(&self) -> &BTreeMap<Owner, Vec<String>> {
        &self.problems
    }

    /// Explains why `name` answers what it answers.
    pub fn explain(&self, name: &str, now: Instant) -> Explanation {
        let key = match naming::parse_dotted("name", name) {
            Ok(n) => naming::wire_key(&n),
            Err(e) => {
                return Explanation {
                    name: name.to_owned(),
                    zone: None,
                    served: None,
                    rejected: Vec::new(),
                    computed: None,
                    record_error: Some(e.to_string()),
                    empty_non_terminal: false,
                };
            }
        };
        let zones = self.store.zones();
        let zone = zones.find(&key).map(|z| z.apex.to_ascii());
        let list = self.claims.get(&key);
        let served = list.and_then(|l| l.first()).cloned();
        let rejected = list
            .map(|l| l.iter().skip(1).map(|(o, _)| o.clone()).collect())
            .unwrap_or_default();
        let (computed, record_error) = match &served {
            Some((owner @ (Owner::Service(_) | Owner::Ingress(_)), _)) => {
                match self.compute(owner, now) {
                    Ok(c) => (c, None),
                    Err(e) => (None, Some(e.to_string())),
                }
            }
            _ => (None, None),
        };
        Explanation {
            name: name.to_owned(),
            zone,
            served,
            rejected,
            computed,
            record_error,
            empty_non_terminal: self.ent_refs.contains_key(&key) && !self.present.contains(&key),
        }
    }

    /// Explains a ServiceDNSRecord by key, even when it produced no names.
    pub fn explain_record(
        &self,
        key: &ObjectKey,
        now: Instant,
    ) -> Result<Option<Computed>, String> {
        self.compute(&Owner::Service(key.clone()), now)
            .map_err(|e| e.to_string())
    }

    /// Zones and region of the members whose topology comes from node labels (not declared).
    pub fn node_topologies(&self) -> Vec<(String, Vec<String>, Option<String>)> {
        self.members
            .iter()
            .filter(|(_, m)| m.zones.is_empty() && m.region.is_none())
            .filter_map(|(name, _)| {
                // Empty too: labels removed from the Nodes clear what was reported before.
                let slice = self.slices.get(name)?;
                Some((
                    name.clone(),
                    slice.zones.iter().cloned().collect(),
                    slice.region.clone(),
                ))
            })
            .collect()
    }

    /// Each member and whether it is ready now.
    pub fn member_readiness(&self) -> Vec<(&str, bool)> {
        self.members
            .keys()
            .map(|m| (m.as_str(), self.is_ready(m)))
            .collect()
    }

    /// Every ServiceDNSRecord and IngressDNSRecord: what a new leader writes status for.
    pub fn record_owners(&self) -> Vec<Owner> {
        let services = self.services.keys().cloned().map(Owner::Service);
        let ingresses = self.ingresses.keys().cloned().map(Owner::Ingress);
        services.chain(ingresses).collect()
    }

    /// Records whose status and DNSEndpoint may have changed since the last call.
    pub fn take_status_dirty(&mut self) -> Vec<Owner> {
        std::mem::take(&mut self.status_dirty).into_iter().collect()
    }

    /// Names `owner` claims but another owner serves.
    fn lost_names(&self, owner: &Owner) -> Vec<String> {
        self.owned
            .get(owner)
            .into_iter()
            .flatten()
            .filter(|key| {
                self.claims
                    .get(*key)
                    .and_then(|l| l.first())
                    .is_some_and(|(winner, _)| winner != owner)
            })
            .map(|key| key_to_text(key))
            .collect()
    }

    /// What to write back for a record (`None`: the record is gone).
    pub fn outputs(
        &self,
        owner: &Owner,
        now: Instant,
        stamp: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    ) -> Option<crate::k8s::record_status::RecordOutputs> {
        match owner {
            Owner::Service(key) => {
                let record = self.services.get(key)?;
                let zone = self
                    .domains
                    .get(&record.domain_ref)
                    .map(|d| d.zone.as_str());
                let lost = self.lost_names(owner);
                let mut out = match self.compute(owner, now) {
                    Ok(Some(c)) => {
                        crate::k8s::record_status::service_outputs(zone, Ok(&c), &lost, stamp)
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        crate::k8s::record_status::service_outputs(zone, Err(&e), &lost, stamp)
                    }
                };
                out.owner_uid = record.uid.clone();
                Some(out)
            }
            Owner::Ingress(key) => match self.compute(owner, now) {
                Ok(Some(c)) => {
                    let mut out = crate::k8s::record_status::ingress_outputs(&c, stamp);
                    out.owner_uid = self.ingresses.get(key).and_then(|r| r.uid.clone());
                    Some(out)
                }
                _ => None,
            },
            Owner::Static(_) | Owner::Apex(_) => None,
        }
    }

    /// Counts for `/metrics` and `status`.
    pub fn counts(&self) -> EngineCounts {
        EngineCounts {
            members: self.members.len(),
            ready_members: self.members.keys().filter(|c| self.is_ready(c)).count(),
            service_records: self.services.len(),
            ingress_records: self.ingresses.len(),
            names: self.present.len(),
            conflicts: self
                .claims
                .values()
                .map(|l| {
                    l.iter()
                        .skip(1)
                        .filter(|(o, _)| !matches!(o, Owner::Apex(_)))
                        .count()
                })
                .sum(),
            problems: self.problems.values().map(Vec::len).sum(),
        }
    }
}

/// A member's name, zones and region, and whether its targets may be served.
type Topology<'a> = (&'a String, (&'a BTreeSet<String>, Option<&'a str>), bool);

/// Sizes of the model, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineCounts {
    pub members: usize,
    pub ready_members: usize,
    pub service_records: usize,
    pub ingress_records: usize,
    pub names: usize,
    pub conflicts: usize,
    pub problems: usize,
}

fn name_server(domain: &DomainSpec, apex: &Name) -> Name {
    domain
        .name_server
        .as_deref()
        .and_then(|ns| naming::parse_dotted("nameServer", ns).ok())
        .unwrap_or_else(|| naming::under(&["ns"], apex).unwrap_or_else(|_| apex.clone()))
}

fn describe_problem(p: &NameProblem) -> String {
    match &p.cluster {
        Some(c) => format!("cluster {c}: {}", p.error),
        None => p.error.to_string(),
    }
}

/// Renders one claim into a store entry.
fn render(claim: &Claim) -> Box<[u8]> {
    let mut b = EntryBuilder::new();
    match claim {
        Claim::Record(RecordData::Address { v4, v6, ttl }) => {
            b.addresses(v4, v6, *ttl);
        }
        Claim::Record(RecordData::Cname { target, ttl }) => {
            b.cname(target, *ttl);
        }
        Claim::Static { apex, sets } => {
            if *apex {
                b.apex_soa();
            }
            for set in sets {
                b.rrset(set.rtype, set.ttl, set.rdatas.iter().map(|r| &r[..]));
            }
        }
        Claim::Apex { name_servers, ttl } => {
            let rdatas: Vec<Vec<u8>> = name_servers
                .iter()
                .map(|n| {
                    let mut r = Vec::new();
                    crate::dns::store::push_name(&mut r, n);
                    r
                })
                .collect();
            b.rrset(rtype::NS, *ttl, rdatas.iter().map(|r| &r[..]));
            b.apex_soa();
        }
    }
    b.finish()
}

/// A lowercase wire key as presentation text.
pub fn key_to_text(key: &[u8]) -> String {
    let mut out = String::new();
    let mut at = 0;
    while at < key.len() && key[at] != 0 {
        let len = key[at] as usize;
        let label = key.get(at + 1..at + 1 + len).unwrap_or_default();
        out.push_str(&String::from_utf8_lossy(label));
        out.push('.');
        at += 1 + len;
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// A starting SOA serial: seconds since the epoch, so restarts keep serials increasing.
fn unix_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests;
