//! The federation the benchmark seeds into the fake clusters, and the answers it expects.
//!
//! Members are spread round-robin over `regions × zones_per_region` zones (a Node per member
//! carries the zone and region labels). Every service exists in every member as a LoadBalancer
//! Service plus one EndpointSlice, but in each zone exactly one member has ready endpoints for a
//! given service (the *owner*, rotating with the service), so every zonal name answers with one
//! address and flipping the owner's EndpointSlice flips that name between A and a CNAME to the
//! region. The host holds the CRDs, the Domain, one KubeFedCluster and token Secret per member,
//! and one ServiceDNSRecord per service.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// fedns's control-plane namespace on the host.
pub const CONTROL_NAMESPACE: &str = "kube-federation-system";
/// Namespace of the services (in the members) and their ServiceDNSRecords (on the host).
pub const APP_NAMESPACE: &str = "apps";
/// The Domain object's name (the federation name in every DNS name).
pub const FEDERATION: &str = "fed";
/// The DNS zone.
pub const DOMAIN: &str = "example.com";

/// Who is where, and who owns which zonal name.
#[derive(Debug, Clone, Copy)]
pub struct Topology {
    pub members: usize,
    pub services: usize,
    regions: usize,
    zones_per_region: usize,
}

impl Topology {
    /// Members and services over 5 regions × 4 zones (fewer zones when there are fewer members).
    pub fn new(members: usize, services: usize) -> Self {
        Self {
            members,
            services,
            regions: 5,
            zones_per_region: 4,
        }
    }

    /// Zones in use: one per member up to the 20 the regions hold.
    pub fn zones(&self) -> usize {
        (self.regions * self.zones_per_region)
            .min(self.members)
            .max(1)
    }

    pub fn member_name(member: usize) -> String {
        format!("m{member:03}")
    }

    pub fn zone_of(&self, member: usize) -> usize {
        member % self.zones()
    }

    /// `(zone, region)` label values of a zone index, e.g. `("r2c", "r2")`.
    pub fn zone_labels(&self, zone: usize) -> (String, String) {
        let region = format!("r{}", zone / self.zones_per_region + 1);
        let letter = char::from(b'a' + (zone % self.zones_per_region) as u8);
        (format!("{region}{letter}"), region)
    }

    fn members_in_zone(&self, zone: usize) -> usize {
        (self.members - zone).div_ceil(self.zones())
    }

    /// The member of `zone` whose shard of `service` is ready.
    pub fn owner(&self, service: usize, zone: usize) -> usize {
        zone + (service % self.members_in_zone(zone)) * self.zones()
    }

    pub fn is_ready(&self, member: usize, service: usize) -> bool {
        self.owner(service, self.zone_of(member)) == member
    }

    /// The services whose zonal name `member` answers for.
    pub fn owned_services(&self, member: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.services).filter(move |&s| self.is_ready(member, s))
    }

    pub fn service_name(service: usize) -> String {
        format!("svc-{service}")
    }

    /// `svc-<s>.apps.fed.svc.<zone>.<region>.example.com.` of the member's zone.
    pub fn zonal_name(&self, member: usize, service: usize) -> String {
        let (zone, region) = self.zone_labels(self.zone_of(member));
        format!(
            "{}.{APP_NAMESPACE}.{FEDERATION}.svc.{zone}.{region}.{DOMAIN}.",
            Self::service_name(service)
        )
    }

    /// The load-balancer address of one shard: unique across the federation.
    pub fn load_balancer_ip(&self, member: usize, service: usize) -> Ipv4Addr {
        Ipv4Addr::from(0x0a00_0000 + (member * self.services + service + 1) as u32)
    }

    /// Whether every shard gets its own address in 10.0.0.0/8.
    pub fn fits(&self) -> bool {
        self.members * self.services < 0x00ff_ffff
    }
}

/// Host objects: CRDs, the control-plane namespace, the Domain, a token Secret and a
/// KubeFedCluster per member (`endpoints[i] = (url, token)`), and a ServiceDNSRecord per service.
pub fn host_objects(topology: &Topology, endpoints: &[(String, String)]) -> Vec<Value> {
    let mut objects: Vec<Value> = fedns::cli::crds::all()
        .into_iter()
        .map(|crd| serde_json::to_value(crd).expect("CRD serializes"))
        .collect();
    objects.push(json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": CONTROL_NAMESPACE}}));
    objects.push(json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": APP_NAMESPACE}}));
    objects.push(json!({
        "apiVersion": "multiclusterdns.kubefed.io/v1alpha1", "kind": "Domain",
        "metadata": {"name": FEDERATION, "namespace": CONTROL_NAMESPACE},
        "domain": DOMAIN, "nameServer": format!("ns1.{DOMAIN}"),
    }));
    for (member, (url, token)) in endpoints.iter().enumerate() {
        let name = Topology::member_name(member);
        objects.push(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{name}-token"), "namespace": CONTROL_NAMESPACE},
            "stringData": {"token": token},
        }));
        objects.push(json!({
            "apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
            "metadata": {"name": name, "namespace": CONTROL_NAMESPACE},
            "spec": {"apiEndpoint": url, "secretRef": {"name": format!("{name}-token")}},
        }));
    }
    for service in 0..topology.services {
        objects.push(json!({
            "apiVersion": "multiclusterdns.kubefed.io/v1alpha1", "kind": "ServiceDNSRecord",
            "metadata": {"name": Topology::service_name(service), "namespace": APP_NAMESPACE},
            "spec": {"domainRef": FEDERATION, "recordTTL": 300},
        }));
    }
    objects
}

/// One member's objects: its Node, and a Service and EndpointSlice per service.
pub fn member_objects(topology: &Topology, member: usize) -> Vec<Value> {
    let (zone, region) = topology.zone_labels(topology.zone_of(member));
    let mut objects = vec![json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": format!("node-{zone}-{member}"), "labels": {
            "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": region}},
    })];
    for service in 0..topology.services {
        objects.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": Topology::service_name(service), "namespace": APP_NAMESPACE},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [
                {"ip": topology.load_balancer_ip(member, service).to_string()}]}},
        }));
        objects.push(endpoint_slice(service, topology.is_ready(member, service)));
    }
    objects
}

/// The EndpointSlice of `service` with one endpoint, ready or not.
pub fn endpoint_slice(service: usize, ready: bool) -> Value {
    let name = Topology::service_name(service);
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-abcde"), "namespace": APP_NAMESPACE,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["172.16.0.10"], "conditions": {"ready": ready}}],
        "ports": [{"port": 80, "protocol": "TCP"}],
    })
}
