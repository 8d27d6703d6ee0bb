//! Kubernetes and KubeFed objects → the normalized [`crate::federation::model`]: each object is stripped to the
//! fields record computation needs as it arrives. Pure functions, no I/O: the directory source and
//! the Kubernetes watchers both call them, so both read objects the same way.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::federation::locality::Strategy;
use crate::federation::model::{
    DomainSpec, EndpointsState, FederationObject, IngressRecordSpec, LoadBalancer, MemberObject,
    MemberSpec, NodeTopology, ObjectKey, ServiceRecordSpec, ServiceState,
};
use crate::k8s::crd::{
    Domain, IngressDNSRecord, KubeFedCluster, RecordStrategy, ServiceDNSRecord, StrategyType,
};

/// Namespace of namespaced member objects and DNS records written without one (as `kubectl apply`
/// would place them).
pub const DEFAULT_NAMESPACE: &str = "default";
/// Namespace of `Domain`s and `KubeFedCluster`s written without one: KubeFed's control plane.
pub const CONTROL_PLANE_NAMESPACE: &str = "kube-federation-system";
/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const ZONE_LABEL_BETA: &str = "failure-domain.beta.kubernetes.io/zone";
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const REGION_LABEL_BETA: &str = "failure-domain.beta.kubernetes.io/region";

/// An object that cannot be normalized; the caller logs it and skips the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {problem}")]
pub struct NormalizeError {
    /// The object's kind, e.g. `EndpointSlice`.
    pub kind: &'static str,
    /// `namespace/name` (just `name` for cluster-scoped kinds), or `<unnamed>`.
    pub name: String,
    pub problem: Problem,
}

/// What is wrong with an object, without saying which object (see [`NormalizeError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("missing metadata.name")]
    MissingName,
    #[error("missing label {0}")]
    MissingLabel(&'static str),
    #[error("{field}: must not be empty")]
    Empty { field: &'static str },
    #[error("{field}: invalid IP address {value:?}")]
    InvalidIp { field: String, value: String },
    #[error("{field}: {value} is not a TTL (0 to 2147483647 seconds)")]
    InvalidTtl { field: &'static str, value: i64 },
    #[error("{field}: {message}")]
    InvalidStrategy {
        field: &'static str,
        message: String,
    },
}

/// A member Service. Only `type: LoadBalancer` Services carry targets, but every Service yields an
/// object: that the Service exists matters even without targets.
pub fn service(service: Service) -> Result<MemberObject, NormalizeError> {
    let key = namespaced_key("Service", service.metadata, DEFAULT_NAMESPACE)?;
    let is_load_balancer =
        service.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer");
    let mut load_balancer = LoadBalancer::default();
    if is_load_balancer {
        let ingress = service
            .status
            .and_then(|status| status.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default();
        let targets = ingress.into_iter().map(|i| (i.ip, i.hostname));
        load_balancer = load_balancer_from(targets).map_err(|problem| NormalizeError {
            kind: "Service",
            name: key.to_string(),
            problem,
        })?;
    }
    Ok(MemberObject::Service(key, ServiceState { load_balancer }))
}

/// An EndpointSlice, counted by endpoints whose `conditions.ready` is true or unset (the API
/// defines unset as ready).
pub fn endpoint_slice(slice: EndpointSlice) -> Result<MemberObject, NormalizeError> {
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
        .filter(|name| !name.is_empty())
        .cloned();
    let key = namespaced_key("EndpointSlice", slice.metadata, DEFAULT_NAMESPACE)?;
    let Some(service) = service else {
        return Err(NormalizeError {
            kind: "EndpointSlice",
            name: key.to_string(),
            problem: Problem::MissingLabel(SERVICE_NAME_LABEL),
        });
    };
    let ready = slice
        .endpoints
        .iter()
        .filter(|endpoint| {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready);
            ready.unwrap_or(true)
        })
        .count();
    Ok(MemberObject::EndpointSlice(
        key,
        EndpointsState {
            service,
            ready: saturating_u32(ready),
        },
    ))
}

/// A core/v1 Endpoints object: belongs to the Service of the same name; ready = addresses in all
/// subsets (`notReadyAddresses` do not count).
pub fn endpoints(endpoints: Endpoints) -> Result<MemberObject, NormalizeError> {
    let key = namespaced_key("Endpoints", endpoints.metadata, DEFAULT_NAMESPACE)?;
    let ready: usize = endpoints
        .subsets
        .iter()
        .flatten()
        .map(|subset| subset.addresses.as_ref().map_or(0, Vec::len))
        .sum();
    let state = EndpointsState {
        service: key.name.clone(),
        ready: saturating_u32(ready),
    };
    Ok(MemberObject::Endpoints(key, state))
}

/// An Ingress, with the targets of its `status.loadBalancer`.
pub fn ingress(ingress: Ingress) -> Result<MemberObject, NormalizeError> {
    let key = namespaced_key("Ingress", ingress.metadata, DEFAULT_NAMESPACE)?;
    let entries = ingress
        .status
        .and_then(|status| status.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default();
    let targets = entries.into_iter().map(|i| (i.ip, i.hostname));
    let load_balancer = load_balancer_from(targets).map_err(|problem| NormalizeError {
        kind: "Ingress",
        name: key.to_string(),
        problem,
    })?;
    Ok(MemberObject::Ingress(key, load_balancer))
}

/// A Node, reduced to its zone and region labels (GA labels first, then the beta ones).
pub fn node(node: Node) -> Result<MemberObject, NormalizeError> {
    let labels = node.metadata.labels.unwrap_or_default();
    let name = required_name("Node", node.metadata.name, None)?;
    let label = |ga: &str, beta: &str| {
        [ga, beta]
            .into_iter()
            .filter_map(|key| labels.get(key))
            .find(|value| !value.is_empty())
            .cloned()
    };
    let topology = NodeTopology {
        zone: label(ZONE_LABEL, ZONE_LABEL_BETA),
        region: label(REGION_LABEL, REGION_LABEL_BETA),
    };
    Ok(MemberObject::Node(name, topology))
}

/// A `Domain`: its name is the federation, `domain` the zone.
pub fn domain(domain: Domain) -> Result<FederationObject, NormalizeError> {
    let key = namespaced_key("Domain", domain.metadata, CONTROL_PLANE_NAMESPACE)?;
    if domain.domain.trim().is_empty() {
        return Err(NormalizeError {
            kind: "Domain",
            name: key.to_string(),
            problem: Problem::Empty { field: "domain" },
        });
    }
    let default_strategy =
        strategy("strategy", domain.strategy).map_err(|problem| NormalizeError {
            kind: "Domain",
            name: key.to_string(),
            problem,
        })?;
    let mut name_server_addresses = Vec::new();
    for (i, value) in domain.name_server_addresses.iter().enumerate() {
        let ip = value.trim().parse::<IpAddr>().map_err(|_| NormalizeError {
            kind: "Domain",
            name: key.to_string(),
            problem: Problem::InvalidIp {
                field: format!("nameServerAddresses[{i}]"),
                value: value.clone(),
            },
        })?;
        if !name_server_addresses.contains(&ip) {
            name_server_addresses.push(ip);
        }
    }
    Ok(FederationObject::Domain(DomainSpec {
        federation: key.name,
        namespace: key.namespace,
        zone: domain.domain,
        name_server: non_empty(domain.name_server),
        default_strategy,
        name_server_addresses,
    }))
}

/// A `ServiceDNSRecord` (its status is output, not input, and is ignored).
pub fn service_dns_record(record: ServiceDNSRecord) -> Result<FederationObject, NormalizeError> {
    let uid = record.metadata.uid.clone();
    let key = namespaced_key("ServiceDNSRecord", record.metadata, DEFAULT_NAMESPACE)?;
    let spec = record.spec;
    let fail = |problem| NormalizeError {
        kind: "ServiceDNSRecord",
        name: key.to_string(),
        problem,
    };
    if spec.domain_ref.is_empty() {
        return Err(fail(Problem::Empty {
            field: "spec.domainRef",
        }));
    }
    let record_ttl = record_ttl(spec.record_ttl).map_err(fail)?;
    let strategy = strategy("spec.strategy", spec.strategy).map_err(fail)?;
    Ok(FederationObject::ServiceRecord(ServiceRecordSpec {
        key,
        domain_ref: spec.domain_ref,
        record_ttl,
        dns_prefix: non_empty(spec.dns_prefix),
        external_name: non_empty(spec.external_name),
        allow_service_without_endpoints: spec.allow_service_without_endpoints,
        strategy,
        uid,
    }))
}

/// An `IngressDNSRecord` (its status is output, not input, and is ignored).
pub fn ingress_dns_record(record: IngressDNSRecord) -> Result<FederationObject, NormalizeError> {
    let uid = record.metadata.uid.clone();
    let key = namespaced_key("IngressDNSRecord", record.metadata, DEFAULT_NAMESPACE)?;
    let record_ttl = record_ttl(record.spec.record_ttl).map_err(|problem| NormalizeError {
        kind: "IngressDNSRecord",
        name: key.to_string(),
        problem,
    })?;
    let hosts = record
        .spec
        .hosts
        .into_iter()
        .filter(|host| !host.is_empty())
        .collect();
    Ok(FederationObject::IngressRecord(IngressRecordSpec {
        key,
        hosts,
        record_ttl,
        uid,
    }))
}

/// A `KubeFedCluster` → a member with the topology of its status. It is ready unless a `Ready`
/// condition is `False`/`Unknown` or an `Offline` condition is `True`; no conditions means ready
/// (nothing says otherwise).
pub fn kubefed_cluster(cluster: KubeFedCluster) -> Result<FederationObject, NormalizeError> {
    let name = required_name("KubeFedCluster", cluster.metadata.name, None)?;
    let status = cluster.status.unwrap_or_default();
    let unreachable = status.conditions.iter().any(|c| {
        (c.type_ == "Ready" && matches!(c.status.as_str(), "False" | "Unknown"))
            || (c.type_ == "Offline" && c.status == "True")
    });
    Ok(FederationObject::Member(MemberSpec {
        name,
        zones: status.zones.into_iter().filter(|z| !z.is_empty()).collect(),
        region: non_empty(status.region),
        ready: !unreachable,
    }))
}

/// The `namespace/name` key of an object, with `default_namespace` when it has none.
fn namespaced_key(
    kind: &'static str,
    metadata: ObjectMeta,
    default_namespace: &str,
) -> Result<ObjectKey, NormalizeError> {
    let namespace = non_empty(metadata.namespace).unwrap_or_else(|| default_namespace.to_owned());
    let name = required_name(kind, metadata.name, Some(&namespace))?;
    Ok(ObjectKey { namespace, name })
}

fn required_name(
    kind: &'static str,
    name: Option<String>,
    namespace: Option<&str>,
) -> Result<String, NormalizeError> {
    non_empty(name).ok_or_else(|| NormalizeError {
        kind,
        name: match namespace {
            Some(namespace) => format!("{namespace}/<unnamed>"),
            None => "<unnamed>".to_owned(),
        },
        problem: Problem::MissingName,
    })
}

/// Collects `status.loadBalancer.ingress[]` entries (`(ip, hostname)`); an IPv4-mapped IPv6
/// address is the IPv4 address it maps.
fn load_balancer_from(
    entries: impl Iterator<Item = (Option<String>, Option<String>)>,
) -> Result<LoadBalancer, Problem> {
    let mut load_balancer = LoadBalancer::default();
    for (index, (ip, hostname)) in entries.enumerate() {
        if let Some(ip) = ip.filter(|ip| !ip.is_empty()) {
            let parsed = ip.parse::<IpAddr>().map_err(|_| Problem::InvalidIp {
                field: format!("status.loadBalancer.ingress[{index}].ip"),
                value: ip.clone(),
            })?;
            load_balancer.ips.push(parsed.to_canonical());
        }
        if let Some(hostname) = hostname.filter(|h| !h.is_empty()) {
            load_balancer.hostnames.push(hostname);
        }
    }
    Ok(load_balancer)
}

/// `recordTTL` as seconds: absent means 0 (the default); RFC 2181 caps TTLs at 2^31 - 1.
fn record_ttl(ttl: Option<i64>) -> Result<u32, Problem> {
    let value = ttl.unwrap_or(0);
    match u32::try_from(value) {
        Ok(ttl) if ttl <= i32::MAX as u32 => Ok(ttl),
        _ => Err(Problem::InvalidTtl {
            field: "spec.recordTTL",
            value,
        }),
    }
}

/// A `strategy` (of a ServiceDNSRecord, or a Domain's default): `failover` needs primary regions,
/// `weighted` needs weights from 0 to 4294967295 and at least one above 0.
fn strategy(
    field: &'static str,
    value: Option<RecordStrategy>,
) -> Result<Option<Strategy>, Problem> {
    let Some(value) = value else {
        return Ok(None);
    };
    let invalid = |message: String| Problem::InvalidStrategy { field, message };
    Ok(Some(match value.type_ {
        StrategyType::All => Strategy::All,
        StrategyType::Nearest => Strategy::Nearest,
        StrategyType::Failover => {
            let primary_regions: Vec<String> = value
                .primary_regions
                .into_iter()
                .filter(|r| !r.is_empty())
                .collect();
            if primary_regions.is_empty() {
                return Err(invalid(
                    "type failover needs primaryRegions, e.g. [eu]".into(),
                ));
            }
            Strategy::Failover { primary_regions }
        }
        StrategyType::Weighted => {
            let mut weights = std::collections::BTreeMap::new();
            for (cluster, weight) in value.weights {
                let weight = u32::try_from(weight).map_err(|_| {
                    invalid(format!(
                        "weights.{cluster}: {weight} is not a weight (0 to 4294967295)"
                    ))
                })?;
                weights.insert(cluster, weight);
            }
            if weights.values().all(|w| *w == 0) {
                return Err(invalid(
                    "type weighted needs weights above 0, e.g. {us-east: 3, eu-west: 1}".into(),
                ));
            }
            Strategy::Weighted { weights }
        }
    }))
}

/// Go writes absent strings as `""`; both mean "not set".
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn saturating_u32(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{
        EndpointAddress, EndpointSubset, LoadBalancerIngress, LoadBalancerStatus, ServiceSpec,
        ServiceStatus,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::api::networking::v1::{
        IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
    };

    use super::*;
    use crate::k8s::crd::{
        ClusterCondition, IngressDNSRecordSpec, KubeFedClusterStatus, ServiceDNSRecordSpec,
    };

    fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: namespace.map(str::to_owned),
            name: Some(name.to_owned()),
            ..Default::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn lb_service(type_: &str, targets: &[(Option<&str>, Option<&str>)]) -> Service {
        let ingress = targets
            .iter()
            .map(|(ip, hostname)| LoadBalancerIngress {
                ip: ip.map(str::to_owned),
                hostname: hostname.map(str::to_owned),
                ..Default::default()
            })
            .collect();
        Service {
            metadata: meta(Some("test"), "nginx"),
            spec: Some(ServiceSpec {
                type_: Some(type_.to_owned()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(ingress),
                }),
                ..Default::default()
            }),
        }
    }

    fn service_lb(object: MemberObject) -> LoadBalancer {
        match object {
            MemberObject::Service(_, state) => state.load_balancer,
            other => panic!("not a Service: {other:?}"),
        }
    }

    fn slice_endpoint(ready: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec!["10.1.0.1".into()],
            conditions: Some(EndpointConditions {
                ready,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn condition(type_: &str, status: &str) -> ClusterCondition {
        ClusterCondition {
            type_: type_.into(),
            status: status.into(),
            ..Default::default()
        }
    }

    fn kubefed_cluster_with(conditions: Vec<ClusterCondition>) -> KubeFedCluster {
        KubeFedCluster {
            metadata: meta(None, "c1"),
            status: Some(KubeFedClusterStatus {
                conditions,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn member(object: FederationObject) -> MemberSpec {
        match object {
            FederationObject::Member(member) => member,
            other => panic!("not a member: {other:?}"),
        }
    }

    #[test]
    fn load_balancer_service_carries_ips_and_hostnames() {
        let svc = lb_service(
            "LoadBalancer",
            &[(Some("10.0.0.1"), None), (None, Some("lb.example.com"))],
        );
        let MemberObject::Service(key, state) = service(svc).unwrap() else {
            panic!("not a Service")
        };
        assert_eq!(key, ObjectKey::new("test", "nginx"));
        let lb = state.load_balancer;
        assert_eq!(lb.ips, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(lb.hostnames, ["lb.example.com"]);
    }

    #[test]
    fn ipv4_mapped_ipv6_address_becomes_ipv4() {
        let svc = lb_service("LoadBalancer", &[(Some("::ffff:10.0.0.7"), None)]);
        let lb = service_lb(service(svc).unwrap());
        assert_eq!(lb.ips, ["10.0.0.7".parse::<IpAddr>().unwrap()]);
        let svc = lb_service("LoadBalancer", &[(Some("2001:db8::1"), None)]);
        assert!(service_lb(service(svc).unwrap()).ips[0].is_ipv6());
    }

    #[test]
    fn invalid_ip_is_an_error_naming_object_and_field() {
        let svc = lb_service(
            "LoadBalancer",
            &[(Some("10.0.0.1"), None), (Some("10.0.0.x"), None)],
        );
        let err = service(svc).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"Service test/nginx: status.loadBalancer.ingress[1].ip: invalid IP address "10.0.0.x""#
        );
    }

    #[test]
    fn non_load_balancer_service_exists_without_targets() {
        let svc = lb_service("ClusterIP", &[(Some("10.0.0.1"), None)]);
        assert!(service_lb(service(svc).unwrap()).is_empty());
        let bare = Service {
            metadata: meta(None, "bare"),
            ..Default::default()
        };
        assert_eq!(
            service(bare).unwrap(),
            MemberObject::Service(ObjectKey::new("default", "bare"), ServiceState::default())
        );
    }

    #[test]
    fn object_without_name_is_an_error() {
        let err = service(Service::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Service default/<unnamed>: missing metadata.name"
        );
        assert_eq!(err.problem, Problem::MissingName);
    }

    #[test]
    fn endpoint_slice_counts_ready_and_unset_conditions() {
        let mut no_conditions = slice_endpoint(None);
        no_conditions.conditions = None;
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                labels: labels(&[(SERVICE_NAME_LABEL, "nginx")]),
                ..meta(Some("test"), "nginx-abc")
            },
            endpoints: vec![
                slice_endpoint(Some(true)),
                slice_endpoint(Some(false)),
                slice_endpoint(None),
                no_conditions,
            ],
            ..Default::default()
        };
        assert_eq!(
            endpoint_slice(slice).unwrap(),
            MemberObject::EndpointSlice(
                ObjectKey::new("test", "nginx-abc"),
                EndpointsState {
                    service: "nginx".into(),
                    ready: 3
                }
            )
        );
    }

    #[test]
    fn endpoint_slice_without_service_label_is_an_error() {
        let slice = EndpointSlice {
            metadata: meta(Some("test"), "nginx-abc"),
            ..Default::default()
        };
        assert_eq!(
            endpoint_slice(slice).unwrap_err().to_string(),
            "EndpointSlice test/nginx-abc: missing label kubernetes.io/service-name"
        );
    }

    #[test]
    fn endpoints_count_addresses_but_not_not_ready_addresses() {
        let address = |ip: &str| EndpointAddress {
            ip: ip.into(),
            ..Default::default()
        };
        let subsets = vec![
            EndpointSubset {
                addresses: Some(vec![address("10.1.0.1"), address("10.1.0.2")]),
                not_ready_addresses: Some(vec![address("10.1.0.3")]),
                ..Default::default()
            },
            EndpointSubset {
                addresses: Some(vec![address("10.1.0.4")]),
                ..Default::default()
            },
        ];
        let ep = Endpoints {
            metadata: meta(Some("test"), "nginx"),
            subsets: Some(subsets),
        };
        assert_eq!(
            endpoints(ep).unwrap(),
            MemberObject::Endpoints(
                ObjectKey::new("test", "nginx"),
                EndpointsState {
                    service: "nginx".into(),
                    ready: 3
                }
            )
        );
    }

    #[test]
    fn ingress_takes_its_load_balancer_targets() {
        let ing = Ingress {
            metadata: meta(Some("web"), "front"),
            status: Some(IngressStatus {
                load_balancer: Some(IngressLoadBalancerStatus {
                    ingress: Some(vec![
                        IngressLoadBalancerIngress {
                            ip: Some("192.0.2.1".into()),
                            ..Default::default()
                        },
                        IngressLoadBalancerIngress {
                            hostname: Some("elb.example.com".into()),
                            ..Default::default()
                        },
                    ]),
                }),
            }),
            ..Default::default()
        };
        let MemberObject::Ingress(key, lb) = ingress(ing).unwrap() else {
            panic!("not an Ingress")
        };
        assert_eq!(key, ObjectKey::new("web", "front"));
        assert_eq!(lb.ips, ["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(lb.hostnames, ["elb.example.com"]);
    }

    #[test]
    fn ingress_with_invalid_ip_names_the_field() {
        let ing = Ingress {
            metadata: meta(None, "front"),
            status: Some(IngressStatus {
                load_balancer: Some(IngressLoadBalancerStatus {
                    ingress: Some(vec![IngressLoadBalancerIngress {
                        ip: Some("300.1.1.1".into()),
                        ..Default::default()
                    }]),
                }),
            }),
            ..Default::default()
        };
        assert_eq!(
            ingress(ing).unwrap_err().to_string(),
            r#"Ingress default/front: status.loadBalancer.ingress[0].ip: invalid IP address "300.1.1.1""#
        );
    }

    #[test]
    fn node_topology_prefers_ga_labels() {
        let n = Node {
            metadata: ObjectMeta {
                labels: labels(&[
                    (ZONE_LABEL, "z-ga"),
                    (ZONE_LABEL_BETA, "z-beta"),
                    (REGION_LABEL, "r-ga"),
                    (REGION_LABEL_BETA, "r-beta"),
                ]),
                ..meta(None, "node-1")
            },
            ..Default::default()
        };
        assert_eq!(
            node(n).unwrap(),
            MemberObject::Node(
                "node-1".into(),
                NodeTopology {
                    zone: Some("z-ga".into()),
                    region: Some("r-ga".into())
                }
            )
        );
    }

    #[test]
    fn node_topology_falls_back_to_beta_labels() {
        let n = Node {
            metadata: ObjectMeta {
                labels: labels(&[(ZONE_LABEL_BETA, "z-beta"), (REGION_LABEL_BETA, "r-beta")]),
                ..meta(None, "node-1")
            },
            ..Default::default()
        };
        let MemberObject::Node(_, topology) = node(n).unwrap() else {
            panic!("not a Node")
        };
        assert_eq!(topology.zone.as_deref(), Some("z-beta"));
        assert_eq!(topology.region.as_deref(), Some("r-beta"));
    }

    #[test]
    fn unlabeled_node_has_no_topology() {
        let n = Node {
            metadata: meta(None, "node-1"),
            ..Default::default()
        };
        assert_eq!(
            node(n).unwrap(),
            MemberObject::Node("node-1".into(), NodeTopology::default())
        );
    }

    #[test]
    fn domain_defaults_to_the_control_plane_namespace() {
        let d = Domain {
            metadata: meta(None, "myfed"),
            domain: "example.com".into(),
            name_server: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(
            domain(d).unwrap(),
            FederationObject::Domain(DomainSpec {
                federation: "myfed".into(),
                namespace: CONTROL_PLANE_NAMESPACE.into(),
                zone: "example.com".into(),
                name_server: None,
                default_strategy: None,
                name_server_addresses: Vec::new(),
            })
        );
    }

    #[test]
    fn domain_name_server_addresses_are_parsed_and_a_bad_one_is_named() {
        let mut d = Domain {
            metadata: meta(None, "myfed"),
            domain: "example.com".into(),
            name_server: Some("ns1.example.com".into()),
            name_server_addresses: vec!["192.0.2.53".into(), " 2001:db8::53 ".into()],
            ..Default::default()
        };
        let FederationObject::Domain(spec) = domain(d.clone()).unwrap() else {
            panic!("not a Domain")
        };
        assert_eq!(
            spec.name_server_addresses,
            [
                "192.0.2.53".parse::<IpAddr>().unwrap(),
                "2001:db8::53".parse().unwrap()
            ]
        );
        d.name_server_addresses.push("ns1".into());
        assert_eq!(
            domain(d).unwrap_err().to_string(),
            "Domain kube-federation-system/myfed: nameServerAddresses[2]: invalid IP address \"ns1\""
        );
    }

    #[test]
    fn domain_with_empty_zone_is_an_error() {
        let d = Domain {
            metadata: meta(None, "myfed"),
            ..Default::default()
        };
        assert_eq!(
            domain(d).unwrap_err().to_string(),
            "Domain kube-federation-system/myfed: domain: must not be empty"
        );
    }

    #[test]
    fn service_dns_record_defaults_to_the_default_namespace() {
        let record = ServiceDNSRecord {
            metadata: meta(None, "nginx"),
            spec: ServiceDNSRecordSpec {
                domain_ref: "myfed".into(),
                record_ttl: Some(300),
                dns_prefix: Some("www".into()),
                external_name: Some(String::new()),
                allow_service_without_endpoints: true,
                strategy: None,
            },
            status: None,
        };
        assert_eq!(
            service_dns_record(record).unwrap(),
            FederationObject::ServiceRecord(ServiceRecordSpec {
                key: ObjectKey::new("default", "nginx"),
                domain_ref: "myfed".into(),
                record_ttl: 300,
                dns_prefix: Some("www".into()),
                external_name: None,
                allow_service_without_endpoints: true,
                strategy: None,
                uid: None,
            })
        );
    }

    fn record_with(strategy: &str) -> Result<FederationObject, NormalizeError> {
        let yaml = format!("metadata: {{name: r}}\nspec: {{domainRef: f, strategy: {strategy}}}\n");
        service_dns_record(serde_yaml_ng::from_str(&yaml).unwrap())
    }

    fn strategy_of(object: FederationObject) -> Option<Strategy> {
        match object {
            FederationObject::ServiceRecord(r) => r.strategy,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn strategies_are_read_and_checked() {
        assert_eq!(
            strategy_of(record_with("{type: nearest}").unwrap()),
            Some(Strategy::Nearest)
        );
        assert_eq!(
            strategy_of(record_with("{type: failover, primaryRegions: [eu]}").unwrap()),
            Some(Strategy::Failover {
                primary_regions: vec!["eu".into()]
            })
        );
        let weighted = strategy_of(record_with("{type: weighted, weights: {a: 3, b: 0}}").unwrap());
        let Some(Strategy::Weighted { weights }) = weighted else {
            panic!("{weighted:?}")
        };
        assert_eq!(weights.get("a"), Some(&3));
        let err = record_with("{type: failover}").unwrap_err().to_string();
        assert!(
            err.contains("spec.strategy: type failover needs primaryRegions"),
            "{err}"
        );
        let err = record_with("{type: weighted, weights: {a: -1}}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("weights.a: -1 is not a weight"), "{err}");
        let err = record_with("{type: weighted, weights: {a: 0}}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs weights above 0"), "{err}");
        assert!(
            serde_yaml_ng::from_str::<ServiceDNSRecord>(
                "spec: {domainRef: f, strategy: {type: closest}}"
            )
            .is_err()
        );
    }

    #[test]
    fn negative_record_ttl_is_an_error() {
        let record = ServiceDNSRecord {
            metadata: meta(Some("test"), "nginx"),
            spec: ServiceDNSRecordSpec {
                domain_ref: "myfed".into(),
                record_ttl: Some(-5),
                ..Default::default()
            },
            status: None,
        };
        assert_eq!(
            service_dns_record(record).unwrap_err().problem,
            Problem::InvalidTtl {
                field: "spec.recordTTL",
                value: -5
            }
        );
    }

    #[test]
    fn ingress_dns_record_keeps_hosts_and_ttl() {
        let record = IngressDNSRecord {
            metadata: meta(Some("web"), "front"),
            spec: IngressDNSRecordSpec {
                hosts: vec!["a.example.com".into(), String::new()],
                record_ttl: None,
            },
            status: None,
        };
        assert_eq!(
            ingress_dns_record(record).unwrap(),
            FederationObject::IngressRecord(IngressRecordSpec {
                key: ObjectKey::new("web", "front"),
                hosts: vec!["a.example.com".into()],
                record_ttl: 0,
                uid: None,
            })
        );
    }

    #[test]
    fn kubefed_cluster_without_conditions_is_ready_with_its_topology() {
        let mut cluster = kubefed_cluster_with(vec![]);
        if let Some(status) = cluster.status.as_mut() {
            status.zones = vec!["z1".into(), "z2".into()];
            status.region = Some("r1".into());
        }
        assert_eq!(
            member(kubefed_cluster(cluster).unwrap()),
            MemberSpec {
                name: "c1".into(),
                zones: vec!["z1".into(), "z2".into()],
                region: Some("r1".into()),
                ready: true,
            }
        );
        let no_status = KubeFedCluster {
            metadata: meta(None, "c2"),
            ..Default::default()
        };
        assert!(member(kubefed_cluster(no_status).unwrap()).ready);
    }

    #[test]
    fn kubefed_cluster_ready_true_is_ready() {
        let cluster = kubefed_cluster_with(vec![condition("Ready", "True")]);
        assert!(member(kubefed_cluster(cluster).unwrap()).ready);
    }

    #[test]
    fn kubefed_cluster_ready_false_or_unknown_is_not_ready() {
        for status in ["False", "Unknown"] {
            let cluster = kubefed_cluster_with(vec![condition("Ready", status)]);
            assert!(!member(kubefed_cluster(cluster).unwrap()).ready, "{status}");
        }
    }

    #[test]
    fn kubefed_cluster_offline_true_is_not_ready() {
        let cluster = kubefed_cluster_with(vec![
            condition("Ready", "True"),
            condition("Offline", "True"),
        ]);
        assert!(!member(kubefed_cluster(cluster).unwrap()).ready);
        let cluster = kubefed_cluster_with(vec![condition("Offline", "False")]);
        assert!(member(kubefed_cluster(cluster).unwrap()).ready);
    }
}
