//! The engine: the one writer of the [`RecordStore`]. It holds the federation model (per-cluster
//! slices, so a relist of one cluster replaces only that cluster), applies [`SourceEvent`]s with
//! synchronous calls, recomputes only the records an event touches, and publishes their
//! pre-rendered entries. Names are *claimed* by owners; when two owners claim one name the lowest
//! [`Owner`] wins (static zone data first) and the others are reported as conflicts, never silently.
//!
//! - this file: the [`Engine`] type, events in, [`Engine::flush`];
//! - `slices`: per-cluster slices, member liveness and topology;
//! - `compute`: what one owner claims now (the inputs handed to [`crate::federation::records`]);
//! - `claims`: claims per name, conflicts, empty non-terminal counts, rendering into the store;
//! - `names`: every known name's state, by key (keys held once, owners hold ids);
//! - `zones`: the zone table, generated SOA/NS, serials;
//! - `rebuild`: recomputing everything against a new zone table;
//! - `explain` and `status`: what `fedns explain` and the status writer read.
//!
//! The engine is synchronous and does no I/O: no sockets, no `kube::Client`, no tasks. The one
//! exception to "one thread" is the first load: until the store first syncs, big recomputations
//! prepare their records on two scoped threads (see `claims::recompute_all`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::rr::Name;

use crate::dns::store::{RecordStore, SoaFields};
use crate::federation::locality::{Localized, LocationTable};
use crate::federation::model::{
    DomainSpec, FederationKind, FederationObject, FederationObjectId, IngressRecordSpec,
    MemberSpec, ObjectKey, ServiceRecordSpec, SourceEvent,
};
use crate::federation::records::{RecordData, ResolvedHost, TtlPolicy};

/// The engine's hash maps and sets. Their keys are names and objects that tenants choose, so the
/// hasher is seeded at random (no collisions computed in advance); foldhash instead of SipHash,
/// which took 13% of the start-up computation at 260,000 names.
pub(super) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(super) type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

mod claims;
mod compute;
mod explain;
mod names;
mod rebuild;
mod slices;
mod status;
mod zones;

pub use zones::{next_serial, serial_gt};

pub use claims::key_to_text;
pub use explain::{ApexState, ClientExplanation, Explanation};
use slices::{ClusterSlice, Liveness};

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
    /// Why the zone's file cannot be loaded, when there is no last good content to serve: the
    /// zone is then answered SERVFAIL (its `soa` and `names` are placeholders).
    pub error: Option<String>,
}

/// What one owner says a name carries, before it is rendered into a store entry (the engine keeps
/// the rendered entry only: see [`Claimants`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Record(RecordData),
    /// A global name whose answer depends on the client: the data every reader but the answer
    /// path sees (all healthy targets), and the per-client answers.
    Localized(RecordData, Box<Localized>),
    Static {
        apex: bool,
        sets: Vec<StaticSet>,
    },
    Apex {
        name_servers: Vec<Name>,
        ttl: u32,
        /// Addresses of the (in-zone) name server, sent as additional data with NS answers.
        addresses: Vec<std::net::IpAddr>,
    },
}

/// What the engine knows of one name.
#[derive(Debug, Default)]
struct NameState {
    claimants: Claimants,
    /// Names published below this one, inside its zone: with no data of its own and a count
    /// above zero, the name is an empty non-terminal.
    below: u32,
    /// The name is published with data: the first claimant's entry is in the store.
    published: bool,
}

impl NameState {
    /// Nothing claims the name and nothing is below it: it can be forgotten.
    fn is_idle(&self) -> bool {
        matches!(self.claimants, Claimants::None) && self.below == 0 && !self.published
    }
}

/// One of several owners claiming a name, with its rendered entry.
type Contender = (Arc<Owner>, Box<[u8]>);

/// The owners claiming one name.
#[derive(Debug, Default)]
enum Claimants {
    #[default]
    None,
    /// One owner (nearly every name): its rendered entry is the store's, not kept twice.
    One(Arc<Owner>),
    /// Several owners, sorted (the first is served), each with its rendered entry, so the next
    /// one can be served at once when the first goes. Boxed: rare, and the state of every other
    /// name stays small (16 bytes instead of 24).
    #[allow(
        clippy::box_collection,
        reason = "one pointer in every name's state, not three"
    )]
    Many(Box<Vec<Contender>>),
}

impl Claimants {
    fn first(&self) -> Option<&Arc<Owner>> {
        match self {
            Claimants::None => None,
            Claimants::One(owner) => Some(owner),
            Claimants::Many(list) => list.first().map(|(owner, _)| owner),
        }
    }

    /// The owners whose claim is not served.
    fn rejected(&self) -> &[Contender] {
        match self {
            Claimants::Many(list) => list.get(1..).unwrap_or_default(),
            _ => &[],
        }
    }
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
    /// Where clients are: the locations global names with a strategy pre-render answers for.
    pub locality: Arc<LocationTable>,
    /// Addresses of the in-zone name server of Domains that give none (`--name-server-addresses`).
    pub name_server_addresses: Vec<std::net::IpAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ttl: TtlPolicy::default(),
            grace: Duration::ZERO,
            negative_ttl: 30,
            apex_ttl: 3600,
            locality: Arc::default(),
            name_server_addresses: Vec::new(),
        }
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
    /// Every name claimed, published or an empty non-terminal: one state per name, its key held
    /// once (at 260,000 names each byte per name is 260 KB).
    names: names::Names,
    /// Per owner, the ids of the names it claims: one allocation per owner, 4 bytes per name.
    owned: HashMap<Arc<Owner>, Box<[names::NameId]>>,
    /// Names published with data (not empty non-terminals).
    published: usize,
    /// Problems per owner (invalid labels, record errors) from the last computation.
    problems: BTreeMap<Owner, Vec<String>>,
    touched: Touched,
    dirty_zones: HashSet<Box<[u8]>>,
    /// Records recomputed since the status writer last looked.
    status_dirty: BTreeSet<Owner>,
    /// Per zone (apex key): an order-independent digest of its non-empty entries, kept as names
    /// are published, so a serial changes only when content does.
    digests: HashMap<Box<[u8]>, u64>,
    /// A rebuild is publishing: it counts every digest afresh at its end, so `publish` does not
    /// keep them up to date name by name.
    rebuilding: bool,
    /// Per static zone: the digest of its file's content alone.
    file_digests: HashMap<Box<[u8]>, u64>,
    /// Per zone: the digest its current serial was given for.
    numbered: HashMap<Box<[u8]>, u64>,
    /// A zone changed within the second its serial was set: it is numbered in the next second.
    serial_pending: bool,
    /// The wall clock of the flush in progress (seconds since the epoch).
    clock: u32,
    /// Zone transfer copies, when transfers are configured.
    transfers: Option<Arc<crate::dns::xfr::Transfers>>,
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
            liveness: HashMap::default(),
            slices: BTreeMap::new(),
            static_zones: Vec::new(),
            hosts: HashMap::default(),
            names: names::Names::default(),
            owned: HashMap::default(),
            published: 0,
            problems: BTreeMap::new(),
            touched: Touched::default(),
            dirty_zones: HashSet::default(),
            status_dirty: BTreeSet::new(),
            digests: HashMap::default(),
            rebuilding: false,
            file_digests: HashMap::default(),
            numbered: HashMap::default(),
            serial_pending: false,
            clock: 0,
            transfers: None,
        }
    }

    /// Keeps `transfers` up to date with each zone's content at each serial.
    pub fn set_transfers(&mut self, transfers: Arc<crate::dns::xfr::Transfers>) {
        self.transfers = Some(transfers);
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

    /// Whether any event is waiting to be published.
    pub fn has_pending(&self) -> bool {
        let t = &self.touched;
        !t.services.is_empty()
            || !t.ingresses.is_empty()
            || t.topology
            || t.everything
            || t.zones
            || t.synced
            || self.serial_pending
    }

    /// Every ServiceDNSRecord and IngressDNSRecord, as owners to compute.
    fn computed_owners(&self) -> Vec<Owner> {
        let services = self.services.keys().cloned().map(Owner::Service);
        let ingresses = self.ingresses.keys().cloned().map(Owner::Ingress);
        services.chain(ingresses).collect()
    }

    /// Recomputes what the applied events touched and publishes it to the store.
    pub fn flush(&mut self, now: Instant) {
        self.flush_at(now, zones::unix_serial());
    }

    /// [`Engine::flush`] with the wall clock (seconds since the epoch, for serials) given.
    pub(crate) fn flush_at(&mut self, now: Instant, unix_now: u32) {
        self.clock = unix_now;
        let touched = std::mem::take(&mut self.touched);
        // Node events are frequent; only a real change of some member's zones or region
        // recomputes every record.
        let topology_changed =
            (touched.topology || touched.everything || touched.zones) && self.refresh_topology();
        if touched.zones {
            self.rebuild(now);
        } else if touched.everything || topology_changed {
            let mut owners = self.computed_owners();
            // Records deleted while everything was dirty.
            let deleted_services = touched
                .services
                .into_iter()
                .filter(|key| !self.services.contains_key(key))
                .map(Owner::Service);
            let deleted_ingresses = touched
                .ingresses
                .into_iter()
                .filter(|key| !self.ingresses.contains_key(key))
                .map(Owner::Ingress);
            owners.extend(deleted_services.chain(deleted_ingresses));
            self.recompute_all(owners, now);
        } else {
            let owners = touched
                .services
                .into_iter()
                .map(Owner::Service)
                .chain(touched.ingresses.into_iter().map(Owner::Ingress))
                .collect();
            self.recompute_all(owners, now);
        }
        self.dirty_zones.clear();
        self.serial_pending = false;
        // Answers see the whole flush at once, then its serials.
        self.store.commit();
        let renumbered = self.settle_serials(unix_now);
        if let Some(transfers) = &self.transfers {
            transfers.commit(&self.store, &renumbered);
        }
        if touched.synced {
            self.store.mark_synced();
        }
    }

    /// Problems found during the last computation of each owner.
    pub fn problems(&self) -> &BTreeMap<Owner, Vec<String>> {
        &self.problems
    }
}

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

#[cfg(test)]
mod tests;
