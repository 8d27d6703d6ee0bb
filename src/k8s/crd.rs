//! KubeFed-compatible object shapes (serde), as users write them with kubectl, and their CRDs.
//!
//! These mirror the KubeFed Go types field for field (`multiclusterdns.kubefed.io/v1alpha1` and
//! `core.kubefed.io/v1beta1`), so manifests written for KubeFed load unchanged. They are plain data:
//! the [`crate::source::normalize`] functions turn them into the [`crate::federation::model`]. Unknown fields are
//! ignored, and fields that Go writes as `null` when empty (nil slices, zero times) accept `null`.
//!
//! The root types are hand-written (lenient parsing, KubeFed's `Domain` has no `spec`) and
//! implement [`k8s_openapi::Resource`], which is all `kube::Api` needs. Their CRDs come from
//! `CustomResource` derives on the same spec and status types, through schema-only roots
//! (`*Schema`); [`crate::cli::crds::all`] lists them, `fedns crds` prints them, `deploy/crds/`
//! holds them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::LoadBalancerStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// API group of `Domain`, `ServiceDNSRecord` and `IngressDNSRecord`.
pub const MULTICLUSTERDNS_GROUP: &str = "multiclusterdns.kubefed.io";
/// `apiVersion` of `Domain`, `ServiceDNSRecord` and `IngressDNSRecord`.
pub const MULTICLUSTERDNS_API_VERSION: &str = "multiclusterdns.kubefed.io/v1alpha1";
/// API group of `KubeFedCluster`.
pub const CORE_GROUP: &str = "core.kubefed.io";
/// `apiVersion` of `KubeFedCluster`.
pub const CORE_API_VERSION: &str = "core.kubefed.io/v1beta1";

/// A `Domain`: one DNS zone of one federation. Unlike most kinds it has no `spec`/`status`; its
/// fields sit at the top level, next to `metadata`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Domain {
    /// `metadata.name` is the federation name used in every generated DNS name.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The DNS zone, e.g. `example.com`.
    pub domain: String,
    /// The authoritative name server of the zone (apex NS target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_server: Option<String>,
    /// Default strategy of this Domain's ServiceDNSRecords (fedns extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RecordStrategy>,
    /// Addresses of the name server, when it lies inside the zone: served as its A/AAAA
    /// records and sent as additional data with NS answers (a fedns extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_server_addresses: Vec<String>,
}

/// The fields of a [`Domain`], for its CRD schema only (they sit at the top level: `no_spec`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "multiclusterdns.kubefed.io",
    version = "v1alpha1",
    kind = "Domain",
    root = "DomainSchema",
    namespaced,
    no_spec,
    printcolumn = r#"{"name":"DOMAIN","type":"string","jsonPath":".domain"}"#,
    printcolumn = r#"{"name":"NAMESERVER","type":"string","jsonPath":".nameServer"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DomainFields {
    /// The DNS zone, e.g. `example.com`.
    pub domain: String,
    /// The authoritative name server of the zone (apex NS target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_server: Option<String>,
    /// Default strategy of this Domain's ServiceDNSRecords (fedns extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RecordStrategy>,
    /// Addresses of the name server, when it lies inside the zone: served as its A/AAAA
    /// records and sent as additional data with NS answers (a fedns extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_server_addresses: Vec<String>,
}

/// A `ServiceDNSRecord`: asks for federation-wide DNS names for the Service of the same
/// name and namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceDNSRecord {
    /// Name and namespace: those of the Service.
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ServiceDNSRecordSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceDNSRecordStatus>,
}

/// Desired state of a [`ServiceDNSRecord`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "multiclusterdns.kubefed.io",
    version = "v1alpha1",
    kind = "ServiceDNSRecord",
    root = "ServiceDNSRecordSchema",
    namespaced,
    status = "ServiceDNSRecordStatus",
    printcolumn = r#"{"name":"DOMAIN","type":"string","jsonPath":".spec.domainRef"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDNSRecordSpec {
    /// Name of the [`Domain`] (in the control-plane namespace) the names are created in.
    pub domain_ref: String,
    /// TTL in seconds of the generated records; absent or 0 means the default.
    #[serde(rename = "recordTTL", default, skip_serializing_if = "Option::is_none")]
    pub record_ttl: Option<i64>,
    /// Extra label prepended to the generated names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_prefix: Option<String>,
    /// A CNAME target used instead of the load-balancer addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    /// Publish names even when no cluster has a ready endpoint for the Service.
    #[serde(default, deserialize_with = "null_as_default")]
    pub allow_service_without_endpoints: bool,
    /// How the global name picks clusters per client (fedns extension; absent: the Domain's
    /// default, else `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RecordStrategy>,
}

/// How a global name picks the clusters it answers a client with (fedns extension of KubeFed's
/// CRD). Regional and zonal names are not affected.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordStrategy {
    /// `all` (every healthy cluster), `nearest` (the client's zone, else region, else the
    /// preferred regions, else all), `failover` (the primary regions while one is healthy) or
    /// `weighted` (one cluster per answer, by weight).
    #[serde(rename = "type")]
    pub type_: StrategyType,
    /// `failover`: the regions served while one of their clusters is healthy.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub primary_regions: Vec<String>,
    /// `weighted`: cluster name → weight; clusters not listed have weight 0.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub weights: BTreeMap<String, i64>,
}

/// The `type` of a [`RecordStrategy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StrategyType {
    #[default]
    All,
    Nearest,
    Failover,
    Weighted,
}

/// Observed state of a [`ServiceDNSRecord`], written by the controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceDNSRecordStatus {
    /// The zone of the referenced [`Domain`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// One entry per cluster, sorted by cluster name.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns: Vec<ClusterDNS>,
    /// fedns's addition: a `Ready` condition saying why the record does or does not answer.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub conditions: Vec<Condition>,
}

/// The load balancer and topology of a Service in one member cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDNS {
    /// Member cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub load_balancer: LoadBalancerStatus,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// An `IngressDNSRecord`: user-chosen host names answered with the load-balancer targets of the
/// Ingress of the same name and namespace in every member cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IngressDNSRecord {
    /// Name and namespace: those of the Ingress.
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "null_as_default")]
    pub spec: IngressDNSRecordSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<IngressDNSRecordStatus>,
}

/// Desired state of an [`IngressDNSRecord`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "multiclusterdns.kubefed.io",
    version = "v1alpha1",
    kind = "IngressDNSRecord",
    root = "IngressDNSRecordSchema",
    namespaced,
    status = "IngressDNSRecordStatus",
    printcolumn = r#"{"name":"HOSTS","type":"string","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct IngressDNSRecordSpec {
    /// Fully qualified host names to answer.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hosts: Vec<String>,
    /// TTL in seconds of the generated records; absent or 0 means the default.
    #[serde(rename = "recordTTL", default, skip_serializing_if = "Option::is_none")]
    pub record_ttl: Option<i64>,
}

/// Observed state of an [`IngressDNSRecord`], written by the controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IngressDNSRecordStatus {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns: Vec<ClusterIngressDNS>,
    /// fedns's addition: a `Ready` condition saying why the hosts do or do not answer.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub conditions: Vec<Condition>,
}

/// The load balancer of an Ingress in one member cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIngressDNS {
    /// Member cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub load_balancer: LoadBalancerStatus,
}

/// A `KubeFedCluster`: one member cluster, how to reach it, and (in its status) whether it is
/// reachable and where its nodes are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KubeFedCluster {
    /// `metadata.name` is the member cluster's name; labels feed placement selectors.
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: KubeFedClusterSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<KubeFedClusterStatus>,
}

/// How to reach a member cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "core.kubefed.io",
    version = "v1beta1",
    kind = "KubeFedCluster",
    root = "KubeFedClusterSchema",
    namespaced,
    status = "KubeFedClusterStatus",
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KubeFedClusterSpec {
    /// The member's API server: a hostname, `hostname:port`, IP or `IP:port` (or a URL).
    pub api_endpoint: String,
    /// PEM CA bundle of the member's API server (base64 in YAML/JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub ca_bundle: Option<ByteString>,
    /// Secret in the control-plane namespace whose `token` key authenticates to the member.
    pub secret_ref: LocalSecretReference,
    /// TLS checks to skip: `*`, `SubjectName` or `ValidityPeriod`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub disabled_tls_validations: Vec<String>,
    /// HTTP(S) proxy to reach the member through.
    #[serde(rename = "proxyURL", default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
}

/// Reference to a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LocalSecretReference {
    pub name: String,
}

/// Observed state of a member cluster, written by the cluster health controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeFedClusterStatus {
    /// `Ready` and `Offline` conditions.
    #[serde(default, deserialize_with = "null_as_default")]
    pub conditions: Vec<ClusterCondition>,
    /// Availability zones the member's nodes are in, e.g. `us-east1-a`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub zones: Vec<String>,
    /// The region all of the member's nodes are in, e.g. `us-east1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// fedns's addition: `nodes` when fedns wrote `zones`/`region` from node labels. Such values
    /// are a report, not a declaration: they never override what the nodes say later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_source: Option<String>,
}

/// One condition of a member cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCondition {
    /// `Ready` or `Offline`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Required by KubeFed, but Go writes a zero time as `null`, so it is optional here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A `DNSEndpoint` (ExternalDNS's CRD-source shape, in KubeFed's group): fedns writes one per
/// record (`service-<name>`, `ingress-<name>`) so ExternalDNS can push the names to a provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "multiclusterdns.kubefed.io",
    version = "v1alpha1",
    kind = "DNSEndpoint",
    namespaced,
    status = "DNSEndpointStatus",
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct DNSEndpointSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
}

/// One DNS record set of a [`DNSEndpoint`].
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The name, without a trailing dot.
    pub dns_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// `A`, `AAAA` or `CNAME`.
    pub record_type: String,
    #[serde(rename = "recordTTL", default, skip_serializing_if = "Option::is_none")]
    pub record_ttl: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provider_specific: Vec<ProviderSpecificProperty>,
}

/// A provider-specific setting of an [`Endpoint`].
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct ProviderSpecificProperty {
    pub name: String,
    pub value: String,
}

/// Observed state of a [`DNSEndpoint`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DNSEndpointStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// `kube::Api` support for the hand-written roots (the same identity as their schema roots; a
/// test checks that they agree).
macro_rules! resource {
    ($root:ty, $group:literal, $version:literal, $kind:literal, $plural:literal) => {
        impl k8s_openapi::Resource for $root {
            const API_VERSION: &'static str = concat!($group, "/", $version);
            const GROUP: &'static str = $group;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::Metadata for $root {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

resource!(
    Domain,
    "multiclusterdns.kubefed.io",
    "v1alpha1",
    "Domain",
    "domains"
);
resource!(
    ServiceDNSRecord,
    "multiclusterdns.kubefed.io",
    "v1alpha1",
    "ServiceDNSRecord",
    "servicednsrecords"
);
resource!(
    IngressDNSRecord,
    "multiclusterdns.kubefed.io",
    "v1alpha1",
    "IngressDNSRecord",
    "ingressdnsrecords"
);
resource!(
    KubeFedCluster,
    "core.kubefed.io",
    "v1beta1",
    "KubeFedCluster",
    "kubefedclusters"
);

/// Go serializes nil slices and empty structs as `null`; read those as the empty value.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    /// As the directory source reads them: YAML value first, then the typed parse.
    fn from_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> Result<T, String> {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        serde_path_to_error::deserialize(&value).map_err(|e| e.to_string())
    }

    #[test]
    fn hand_written_roots_match_their_crds() {
        use kube::Resource;
        fn check<A: Resource<DynamicType = ()>, B: Resource<DynamicType = ()>>() {
            assert_eq!(A::kind(&()), B::kind(&()));
            assert_eq!(A::group(&()), B::group(&()));
            assert_eq!(A::version(&()), B::version(&()));
            assert_eq!(A::plural(&()), B::plural(&()));
        }
        check::<Domain, DomainSchema>();
        check::<ServiceDNSRecord, ServiceDNSRecordSchema>();
        check::<IngressDNSRecord, IngressDNSRecordSchema>();
        check::<KubeFedCluster, KubeFedClusterSchema>();
    }

    #[test]
    fn domain_crd_has_its_fields_at_the_top_level() {
        let crd = DomainSchema::crd();
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let props = &schema["openAPIV3Schema"]["properties"];
        assert!(props["domain"].is_object(), "{props}");
        assert!(props["nameServer"].is_object());
        assert!(props.get("spec").is_none());
    }

    #[test]
    fn status_subresource_and_kubefed_printer_columns() {
        let crd = KubeFedClusterSchema::crd();
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<&str> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(cols, ["AGE", "READY"]);
    }

    #[test]
    fn domain_fields_sit_at_the_top_level() {
        let domain: Domain = from_yaml(
            "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: Domain\n\
             metadata: {name: myfed, namespace: kube-federation-system}\n\
             domain: example.com\nnameServer: ns1.example.com\n",
        )
        .unwrap();
        assert_eq!(domain.metadata.name.as_deref(), Some("myfed"));
        assert_eq!(domain.domain, "example.com");
        assert_eq!(domain.name_server.as_deref(), Some("ns1.example.com"));
    }

    #[test]
    fn domain_without_domain_field_is_rejected() {
        let err = from_yaml::<Domain>("kind: Domain\nmetadata: {name: myfed}\n").unwrap_err();
        assert!(err.contains("missing field `domain`"), "{err}");
    }

    #[test]
    fn service_dns_record_reads_kubefed_spec_and_status() {
        let record: ServiceDNSRecord = from_yaml(
            r#"
metadata: {name: nginx, namespace: test}
spec:
  domainRef: myfed
  recordTTL: 300
  dnsPrefix: www
  allowServiceWithoutEndpoints: true
  someFutureField: ignored
status:
  domain: example.com
  dns:
  - cluster: c1
    loadBalancer: {ingress: [{ip: 10.0.0.1}]}
    zones: [z1]
    region: r1
"#,
        )
        .unwrap();
        assert_eq!(record.spec.domain_ref, "myfed");
        assert_eq!(record.spec.record_ttl, Some(300));
        assert_eq!(record.spec.dns_prefix.as_deref(), Some("www"));
        assert!(record.spec.allow_service_without_endpoints);
        let status = record.status.unwrap();
        assert_eq!(status.dns[0].zones, ["z1"]);
        let ingress = status.dns[0].load_balancer.ingress.as_deref().unwrap();
        assert_eq!(ingress[0].ip.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn service_dns_record_without_domain_ref_names_the_field() {
        let err = from_yaml::<ServiceDNSRecord>("spec: {recordTTL: 5}\n").unwrap_err();
        assert_eq!(err, "spec: missing field `domainRef`");
    }

    #[test]
    fn wrong_field_type_names_the_path() {
        let err =
            from_yaml::<ServiceDNSRecord>("spec: {domainRef: f, recordTTL: soon}\n").unwrap_err();
        assert!(err.starts_with("spec.recordTTL: invalid type"), "{err}");
    }

    #[test]
    fn ingress_dns_record_spec_is_optional() {
        let record: IngressDNSRecord = from_yaml("metadata: {name: web}\n").unwrap();
        assert!(record.spec.hosts.is_empty());
        let record: IngressDNSRecord =
            from_yaml("spec: {hosts: [a.example.com], recordTTL: 60}\n").unwrap();
        assert_eq!(record.spec.hosts, ["a.example.com"]);
        assert_eq!(record.spec.record_ttl, Some(60));
    }

    #[test]
    fn kubefed_cluster_reads_go_output_with_nulls() {
        let cluster: KubeFedCluster = serde_json::from_str(
            r#"{
              "apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
              "metadata": {"name": "c1", "namespace": "kube-federation-system"},
              "spec": {"apiEndpoint": "https://c1:6443", "caBundle": "aGVsbG8=",
                       "secretRef": {"name": "c1-token"}, "disabledTLSValidations": null,
                       "proxyURL": "http://proxy:3128"},
              "status": {"conditions": [{"type": "Ready", "status": "True",
                         "lastProbeTime": null,
                         "lastTransitionTime": "2024-01-02T03:04:05Z"}],
                         "zones": ["z1", "z2"], "region": "r1"}
            }"#,
        )
        .unwrap();
        assert_eq!(cluster.spec.api_endpoint, "https://c1:6443");
        assert_eq!(cluster.spec.ca_bundle, Some(ByteString(b"hello".to_vec())));
        assert_eq!(cluster.spec.secret_ref.name, "c1-token");
        assert_eq!(cluster.spec.proxy_url.as_deref(), Some("http://proxy:3128"));
        let status = cluster.status.unwrap();
        assert_eq!(status.conditions[0].type_, "Ready");
        assert!(status.conditions[0].last_transition_time.is_some());
        assert_eq!(status.zones, ["z1", "z2"]);
        assert_eq!(status.region.as_deref(), Some("r1"));
    }

    #[test]
    fn kubefed_cluster_requires_api_endpoint_and_secret_ref() {
        let err = from_yaml::<KubeFedCluster>("spec: {secretRef: {name: s}}\n").unwrap_err();
        assert_eq!(err, "spec: missing field `apiEndpoint`");
        let err = from_yaml::<KubeFedCluster>("spec: {apiEndpoint: x}\n").unwrap_err();
        assert_eq!(err, "spec: missing field `secretRef`");
    }

    #[test]
    fn status_round_trips_through_json_without_empty_fields() {
        let status = ServiceDNSRecordStatus {
            domain: Some("example.com".into()),
            dns: vec![ClusterDNS {
                cluster: Some("c1".into()),
                ..Default::default()
            }],
            conditions: Vec::new(),
        };
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(
            json,
            r#"{"domain":"example.com","dns":[{"cluster":"c1","loadBalancer":{}}]}"#
        );
        assert_eq!(
            serde_json::from_str::<ServiceDNSRecordStatus>(&json).unwrap(),
            status
        );
    }
}
