//! The normalized federation model: Kubernetes objects stripped, as they arrive, to the fields that
//! record computation needs. Sources (the directory source, later the Kubernetes watchers) produce
//! [`SourceEvent`]s of these types; the [`crate::federation::engine`] applies them. Nothing here does I/O.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::federation::locality::Strategy;

/// Reference to a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A `Domain` (`multiclusterdns.kubefed.io/v1alpha1`): one authoritative zone of one federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    /// `metadata.name`: the federation label used in every generated name.
    pub federation: String,
    pub namespace: String,
    /// `domain`: the zone apex, e.g. `example.com` (no trailing dot needed).
    pub zone: String,
    /// `nameServer`: the apex NS target; `ns.<zone>` is used when absent.
    pub name_server: Option<String>,
    /// `strategy`: the default strategy of this Domain's ServiceDNSRecords (fedns extension).
    pub default_strategy: Option<Strategy>,
    /// `nameServerAddresses`: the name server's addresses, served as its A/AAAA records when it
    /// lies inside the zone and sent as additional data with NS answers.
    pub name_server_addresses: Vec<std::net::IpAddr>,
}

/// A `ServiceDNSRecord`: which Service gets federation names, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecordSpec {
    pub key: ObjectKey,
    /// `domainRef`: name of a Domain in the control-plane namespace.
    pub domain_ref: String,
    /// `recordTTL` in seconds; 0 means the default (180).
    pub record_ttl: u32,
    pub dns_prefix: Option<String>,
    pub external_name: Option<String>,
    pub allow_service_without_endpoints: bool,
    /// `spec.strategy` (fedns extension): how the global name picks clusters per client; `None`
    /// means the Domain's default, else `all`.
    pub strategy: Option<Strategy>,
    /// `metadata.uid`, for owner references on what fedns writes (none from the directory source).
    pub uid: Option<String>,
}

/// An `IngressDNSRecord`: user-chosen host names answered with the Ingresses' load-balancer targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRecordSpec {
    pub key: ObjectKey,
    pub hosts: Vec<String>,
    pub record_ttl: u32,
    /// `metadata.uid`, for owner references on what fedns writes (none from the directory source).
    pub uid: Option<String>,
}

/// A member cluster as the federation declares it (a `KubeFedCluster`, a configured context, or a
/// directory of the directory source). Explicit topology here wins over node labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberSpec {
    pub name: String,
    pub zones: Vec<String>,
    pub region: Option<String>,
    /// `false` when the cluster is known to be unreachable (KubeFedCluster `Ready=False`/`Offline=True`,
    /// a failed health probe, or a stopped watch).
    pub ready: bool,
}

/// Load-balancer targets from `status.loadBalancer.ingress[]` of a Service or an Ingress.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadBalancer {
    pub ips: Vec<IpAddr>,
    pub hostnames: Vec<String>,
}

impl LoadBalancer {
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.hostnames.is_empty()
    }
}

/// A member Service, stripped. Only `type: LoadBalancer` Services carry targets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceState {
    pub load_balancer: LoadBalancer,
}

/// An EndpointSlice (or a core/v1 Endpoints object), stripped to its owner and ready count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointsState {
    /// The Service this belongs to (`kubernetes.io/service-name` label, or the Endpoints' own name).
    pub service: String,
    pub ready: u32,
}

/// Topology labels of one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeTopology {
    pub zone: Option<String>,
    pub region: Option<String>,
}

/// One object seen in a member cluster, already stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberObject {
    Service(ObjectKey, ServiceState),
    EndpointSlice(ObjectKey, EndpointsState),
    /// core/v1 Endpoints: used only for Services that have no EndpointSlice.
    Endpoints(ObjectKey, EndpointsState),
    Ingress(ObjectKey, LoadBalancer),
    Node(String, NodeTopology),
}

/// The kinds watched in a member cluster; each is listed and relisted on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberKind {
    Service,
    EndpointSlice,
    Endpoints,
    Ingress,
    Node,
}

impl MemberKind {
    pub const ALL: [MemberKind; 5] = [
        MemberKind::Service,
        MemberKind::EndpointSlice,
        MemberKind::Endpoints,
        MemberKind::Ingress,
        MemberKind::Node,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::Service => "services",
            MemberKind::EndpointSlice => "endpointslices",
            MemberKind::Endpoints => "endpoints",
            MemberKind::Ingress => "ingresses",
            MemberKind::Node => "nodes",
        }
    }
}

impl MemberObject {
    pub fn kind(&self) -> MemberKind {
        match self {
            MemberObject::Service(..) => MemberKind::Service,
            MemberObject::EndpointSlice(..) => MemberKind::EndpointSlice,
            MemberObject::Endpoints(..) => MemberKind::Endpoints,
            MemberObject::Ingress(..) => MemberKind::Ingress,
            MemberObject::Node(..) => MemberKind::Node,
        }
    }

    pub fn id(&self) -> MemberObjectId {
        match self {
            MemberObject::Service(k, _) => MemberObjectId::Service(k.clone()),
            MemberObject::EndpointSlice(k, _) => MemberObjectId::EndpointSlice(k.clone()),
            MemberObject::Endpoints(k, _) => MemberObjectId::Endpoints(k.clone()),
            MemberObject::Ingress(k, _) => MemberObjectId::Ingress(k.clone()),
            MemberObject::Node(n, _) => MemberObjectId::Node(n.clone()),
        }
    }
}

/// Identity of a [`MemberObject`], for deletes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberObjectId {
    Service(ObjectKey),
    EndpointSlice(ObjectKey),
    Endpoints(ObjectKey),
    Ingress(ObjectKey),
    Node(String),
}

/// One federation-level object (host cluster, or top level of the directory source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FederationObject {
    Domain(DomainSpec),
    ServiceRecord(ServiceRecordSpec),
    IngressRecord(IngressRecordSpec),
    Member(MemberSpec),
}

/// The kinds of federation objects; each is listed and relisted on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FederationKind {
    Domain,
    ServiceRecord,
    IngressRecord,
    Member,
}

impl FederationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FederationKind::Domain => "domains",
            FederationKind::ServiceRecord => "servicednsrecords",
            FederationKind::IngressRecord => "ingressdnsrecords",
            FederationKind::Member => "kubefedclusters",
        }
    }
}

impl FederationObjectId {
    pub fn kind(&self) -> FederationKind {
        match self {
            FederationObjectId::Domain(_) => FederationKind::Domain,
            FederationObjectId::ServiceRecord(_) => FederationKind::ServiceRecord,
            FederationObjectId::IngressRecord(_) => FederationKind::IngressRecord,
            FederationObjectId::Member(_) => FederationKind::Member,
        }
    }
}

impl FederationObject {
    pub fn id(&self) -> FederationObjectId {
        match self {
            FederationObject::Domain(d) => FederationObjectId::Domain(d.federation.clone()),
            FederationObject::ServiceRecord(r) => FederationObjectId::ServiceRecord(r.key.clone()),
            FederationObject::IngressRecord(r) => FederationObjectId::IngressRecord(r.key.clone()),
            FederationObject::Member(m) => FederationObjectId::Member(m.name.clone()),
        }
    }
}

/// Identity of a [`FederationObject`], for deletes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FederationObjectId {
    Domain(String),
    ServiceRecord(ObjectKey),
    IngressRecord(ObjectKey),
    Member(String),
}

/// What a source tells the engine. A `Reset*` replaces everything that source said before for that
/// scope, atomically (a relist), so one cluster's relist never touches another cluster's data.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    ApplyFederation(FederationObject),
    DeleteFederation(FederationObjectId),
    ResetFederation(Vec<FederationObject>),
    /// A relist of one federation kind: replaces only that kind's objects.
    ResetFederationKind(FederationKind, Vec<FederationObject>),
    ApplyMember(String, MemberObject),
    DeleteMember(String, MemberObjectId),
    ResetMember(String, Vec<MemberObject>),
    /// A relist of one kind in one member: replaces only that kind's objects there.
    ResetMemberKind(String, MemberKind, Vec<MemberObject>),
    /// A member cluster's reachability changed (watch live / probe result).
    MemberReachable(String, bool),
    /// Every configured source has completed its first full listing: stop answering SERVFAIL.
    Synced,
}

/// The topology a member reports through its node labels: all zones, and the most common region.
pub fn topology_from_nodes<'a>(
    nodes: impl IntoIterator<Item = &'a NodeTopology>,
) -> (BTreeSet<String>, Option<String>) {
    let mut zones = BTreeSet::new();
    let mut regions: std::collections::BTreeMap<&str, usize> = Default::default();
    for node in nodes {
        if let Some(zone) = &node.zone {
            zones.insert(zone.clone());
        }
        if let Some(region) = &node.region {
            *regions.entry(region.as_str()).or_default() += 1;
        }
    }
    // Most common region wins; ties go to the alphabetically first for determinism.
    let region = regions
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(r, _)| r.to_owned());
    (zones, region)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(zone: &str, region: &str) -> NodeTopology {
        NodeTopology {
            zone: Some(zone.into()),
            region: Some(region.into()),
        }
    }

    #[test]
    fn most_common_region_wins_and_all_zones_count() {
        let nodes = [node("a1", "a"), node("a2", "a"), node("b1", "b")];
        let (zones, region) = topology_from_nodes(&nodes);
        assert_eq!(zones.into_iter().collect::<Vec<_>>(), ["a1", "a2", "b1"]);
        assert_eq!(region.as_deref(), Some("a"));
    }

    #[test]
    fn region_tie_is_broken_alphabetically() {
        let nodes = [node("b1", "b"), node("a1", "a")];
        assert_eq!(topology_from_nodes(&nodes).1.as_deref(), Some("a"));
    }

    #[test]
    fn unlabeled_nodes_give_no_topology() {
        let nodes = [NodeTopology::default()];
        let (zones, region) = topology_from_nodes(&nodes);
        assert!(zones.is_empty());
        assert!(region.is_none());
    }
}
