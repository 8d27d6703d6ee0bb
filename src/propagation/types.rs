//! KubeFed's propagation API as users write it: `FederatedTypeConfig` and `KubeFedConfig`
//! (`core.kubefed.io/v1beta1`), `ReplicaSchedulingPreference` (`scheduling.kubefed.io/v1alpha1`),
//! the shape of every `Federated<Kind>` (`types.kubefed.io/v1beta1`), the default set of federated
//! types, and the CRDs for all of them.
//!
//! Federated objects themselves are handled as dynamic objects ([`FederatedSpec`] is only their
//! parsed `spec`), so one sync path serves every type, CRDs included.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use kube::discovery::ApiResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::k8s::crd::null_as_default;
use serde_json::{Value, json};

/// API group of the `Federated<Kind>` types.
pub const TYPES_GROUP: &str = "types.kubefed.io";
/// Version of the `Federated<Kind>` types.
pub const TYPES_VERSION: &str = "v1beta1";
/// API group of `ReplicaSchedulingPreference`.
pub const SCHEDULING_GROUP: &str = "scheduling.kubefed.io";
/// Label on every member object fedns manages; `"false"` refuses adoption.
pub const MANAGED_LABEL: &str = "kubefed.io/managed";
/// Finalizer on federated objects until their member objects are gone (or orphaned).
pub const SYNC_FINALIZER: &str = "kubefed.io/sync-controller";
/// Annotation `"true"`: deleting the federated object leaves its member objects in place.
pub const ORPHAN_ANNOTATION: &str = "kubefed.io/orphan";
/// Annotation holding JSON `DeleteOptions` used when deleting member objects.
pub const DELETE_OPTION_ANNOTATION: &str = "kubefed.io/deleteoption";
/// Name of the one `KubeFedConfig` fedns reads.
pub const KUBEFED_CONFIG_NAME: &str = "kubefed";

/// `Namespaced` or `Cluster`, as in CRDs.
pub type Scope = String;

/// A type fedns can federate: the target (`Deployment`) or the federated one
/// (`FederatedDeployment`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiResourceRef {
    /// Empty for the core group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural_name: String,
    /// `Namespaced` or `Cluster`.
    pub scope: Scope,
}

impl ApiResourceRef {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn namespaced(&self) -> bool {
        self.scope == "Namespaced"
    }

    /// What `kube::Api::<DynamicObject>` needs to reach this type.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.plural_name.clone(),
        }
    }

    /// The FederatedTypeConfig name KubeFed uses: `<plural>.<group>`, or `<plural>` for core.
    pub fn config_name(&self) -> String {
        if self.group.is_empty() {
            self.plural_name.clone()
        } else {
            format!("{}.{}", self.plural_name, self.group)
        }
    }

    /// The federated type KubeFed generates for this target: `Federated<Kind>` in
    /// `types.kubefed.io/v1beta1`, same scope.
    pub fn federated(&self) -> ApiResourceRef {
        ApiResourceRef {
            group: TYPES_GROUP.to_string(),
            version: TYPES_VERSION.to_string(),
            kind: format!("Federated{}", self.kind),
            plural_name: format!("federated{}", self.plural_name),
            scope: self.scope.clone(),
        }
    }
}

/// Whether a federated type is propagated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PropagationMode {
    #[default]
    Enabled,
    Disabled,
}

/// Enables federation of one type: `<plural>.<group>` in the control-plane namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "core.kubefed.io",
    version = "v1beta1",
    kind = "FederatedTypeConfig",
    shortname = "ftc",
    namespaced,
    status = "FederatedTypeConfigStatus",
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FederatedTypeConfigSpec {
    /// The type propagated to member clusters.
    pub target_type: ApiResourceRef,
    #[serde(default)]
    pub propagation: PropagationMode,
    /// The `Federated<Kind>` type in the host cluster.
    pub federated_type: ApiResourceRef,
    /// Accepted for compatibility (KubeFed's status collection); fedns aggregates member status
    /// into the federated object itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_type: Option<ApiResourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_collection: Option<String>,
}

/// Observed state of a [`FederatedTypeConfig`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FederatedTypeConfigStatus {
    #[serde(default)]
    pub observed_generation: i64,
    /// `Running` or `NotRunning`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_controller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_controller: Option<String>,
}

/// Control-plane settings, one object named `kubefed` in the control-plane namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "core.kubefed.io",
    version = "v1beta1",
    kind = "KubeFedConfig",
    namespaced,
    status = "KubeFedConfigStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct KubeFedConfigSpec {
    /// `Cluster` (federated objects in every namespace) or `Namespaced` (only in the
    /// control-plane namespace).
    #[serde(default = "cluster_scope")]
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_duration: Option<DurationConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_elect: Option<LeaderElectConfig>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub feature_gates: Vec<FeatureGateConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_health_check: Option<ClusterHealthCheckConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_controller: Option<SyncControllerConfig>,
}

fn cluster_scope() -> Scope {
    "Cluster".to_string()
}

/// Durations are Go `metav1.Duration` strings (`"10s"`, `"1m30s"`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DurationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_sync_timeout: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderElectConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_lock: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FeatureGateConfig {
    pub name: String,
    /// `Enabled` or `Disabled`.
    pub configuration: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHealthCheckConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncControllerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_reconciles: Option<i64>,
    /// `Enabled` (default): an unlabeled member object of the same name is adopted.
    /// `Disabled`: propagation to that cluster stops with `AlreadyExists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt_resources: Option<String>,
}

impl KubeFedConfigSpec {
    /// Whether existing unlabeled member objects are adopted (KubeFed's default) or refused.
    pub fn adopts(&self) -> bool {
        self.sync_controller
            .as_ref()
            .and_then(|s| s.adopt_resources.as_deref())
            != Some("Disabled")
    }

    /// Whether federated objects are read only from the control-plane namespace.
    pub fn namespaced(&self) -> bool {
        self.scope == "Namespaced"
    }
}

/// Observed state of a [`KubeFedConfig`] (unused by KubeFed; kept for the status subresource).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KubeFedConfigStatus {}

/// How many replicas of a `FederatedDeployment`/`FederatedReplicaSet` (same namespace and name)
/// run in which cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "scheduling.kubefed.io",
    version = "v1alpha1",
    kind = "ReplicaSchedulingPreference",
    shortname = "rsp",
    namespaced,
    status = "ReplicaSchedulingPreferenceStatus",
    printcolumn = r#"{"name":"TOTAL","type":"integer","jsonPath":".spec.totalReplicas"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSchedulingPreferenceSpec {
    /// `FederatedDeployment` or `FederatedReplicaSet`.
    pub target_kind: String,
    pub total_replicas: i32,
    /// Move running replicas when a better split exists (false keeps what runs).
    #[serde(default, deserialize_with = "null_as_default")]
    pub rebalance: bool,
    /// Candidates are also limited by the target's `placement.clusterSelector`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub intersect_with_cluster_selector: bool,
    /// Per cluster name, or `*` for every other cluster. Empty means `{"*": {weight: 1}}`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub clusters: BTreeMap<String, ClusterPreferences>,
}

/// One cluster's share preferences.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPreferences {
    #[serde(default, deserialize_with = "null_as_default")]
    pub min_replicas: i64,
    /// Unbounded when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub weight: i64,
}

/// fedns's addition: the last plan and why it could or could not be written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSchedulingPreferenceStatus {
    /// Replicas planned per cluster.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub plan: BTreeMap<String, i64>,
    /// Replicas that did not fit a cluster's capacity and stay pending there.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub overflow: BTreeMap<String, i64>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub conditions: Vec<Condition>,
}

/// The parsed `spec` of any `Federated<Kind>`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FederatedSpec {
    /// The target object without name and namespace.
    #[serde(default, deserialize_with = "null_as_default")]
    pub template: Value,
    #[serde(default, deserialize_with = "null_as_default")]
    pub placement: Placement,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub overrides: Vec<ClusterOverrides>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub retain_replicas: bool,
}

/// Where a federated object goes: an explicit list wins over a selector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// `None`: absent; `Some(vec![])`: explicitly no cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<ClusterName>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterName {
    pub name: String,
}

/// The overrides of one cluster, applied as one JSON patch in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOverrides {
    pub cluster_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub cluster_overrides: Vec<Override>,
}

/// One override: an RFC 6902 operation (`add`, `remove`, `replace`; default `replace`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Override {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// One entry of the default federated type set, as `kubefedctl enable` would create it.
#[derive(Clone, Copy, Debug)]
pub struct TypeSpec {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

impl TypeSpec {
    pub fn target(&self) -> ApiResourceRef {
        ApiResourceRef {
            group: self.group.to_string(),
            version: self.version.to_string(),
            kind: self.kind.to_string(),
            plural_name: self.plural.to_string(),
            scope: if self.namespaced {
                "Namespaced"
            } else {
                "Cluster"
            }
            .to_string(),
        }
    }
}

/// KubeFed's default federated types. FederatedNamespace is namespaced (it lives in the namespace it
/// federates), unlike its cluster-scoped target.
pub const DEFAULT_TYPES: &[TypeSpec] = &[
    TypeSpec {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
    },
    TypeSpec {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
    },
    TypeSpec {
        group: "networking.k8s.io",
        version: "v1",
        kind: "Ingress",
        plural: "ingresses",
        namespaced: true,
    },
    TypeSpec {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
    },
    TypeSpec {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        namespaced: true,
    },
    TypeSpec {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        namespaced: true,
    },
    TypeSpec {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
    },
    TypeSpec {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
    },
    TypeSpec {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
    },
    TypeSpec {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
    },
];

/// Finds a default type by kind (`Deployment`), plural (`deployments`) or FTC name
/// (`deployments.apps`), case-insensitively.
pub fn default_type(name: &str) -> Option<ApiResourceRef> {
    let name = name.to_ascii_lowercase();
    DEFAULT_TYPES.iter().map(TypeSpec::target).find(|t| {
        t.kind.eq_ignore_ascii_case(&name) || t.plural_name == name || t.config_name() == name
    })
}

/// The federated type of a target. The federated form of a Namespace is namespaced (it lives in
/// the namespace it federates); every other keeps its target's scope.
pub fn federated_type_of(target: &ApiResourceRef) -> ApiResourceRef {
    let mut federated = target.federated();
    if target.group.is_empty() && target.kind == "Namespace" {
        federated.scope = "Namespaced".to_string();
    }
    federated
}

/// The `FederatedTypeConfig` enabling `target` in the control-plane `namespace`.
pub fn type_config(target: &ApiResourceRef, namespace: &str) -> FederatedTypeConfig {
    let mut ftc = FederatedTypeConfig::new(
        &target.config_name(),
        FederatedTypeConfigSpec {
            target_type: target.clone(),
            propagation: PropagationMode::Enabled,
            federated_type: federated_type_of(target),
            status_type: None,
            status_collection: None,
        },
    );
    ftc.metadata.namespace = Some(namespace.to_string());
    ftc
}

/// The CRD of a `Federated<Kind>`: `template` keeps any fields (so any target type, CRDs
/// included, fits), placement and overrides are typed, status is fedns's (conditions, per-cluster
/// status and the members' own status).
pub fn federated_crd(federated: &ApiResourceRef) -> CustomResourceDefinition {
    let singular = federated.kind.to_ascii_lowercase();
    let preserve = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let selector = json!({
        "type": "object",
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {"type": "array", "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}}
                }
            }}
        }
    });
    let schema = json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "properties": {
                    "template": preserve,
                    "placement": {
                        "type": "object",
                        "properties": {
                            "clusters": {"type": "array", "items": {
                                "type": "object", "required": ["name"],
                                "properties": {"name": {"type": "string"}}
                            }},
                            "clusterSelector": selector
                        }
                    },
                    "overrides": {"type": "array", "items": {
                        "type": "object",
                        "required": ["clusterName"],
                        "properties": {
                            "clusterName": {"type": "string"},
                            "clusterOverrides": {"type": "array", "items": {
                                "type": "object",
                                "required": ["path"],
                                "properties": {
                                    "op": {"type": "string", "enum": ["add", "remove", "replace"]},
                                    "path": {"type": "string"},
                                    "value": {"x-kubernetes-preserve-unknown-fields": true}
                                }
                            }}
                        }
                    }},
                    "retainReplicas": {"type": "boolean"}
                }
            },
            "status": preserve
        }
    });
    let scope = if federated.namespaced() {
        "Namespaced"
    } else {
        "Cluster"
    };
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{}", federated.plural_name, federated.group)},
        "spec": {
            "group": federated.group,
            "names": {
                "kind": federated.kind,
                "listKind": format!("{}List", federated.kind),
                "plural": federated.plural_name,
                "singular": singular,
                "categories": ["federated"]
            },
            "scope": scope,
            "versions": [{
                "name": federated.version,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "PROPAGATED", "type": "string",
                     "jsonPath": ".status.conditions[?(@.type=='Propagation')].status"},
                    {"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": schema}
            }]
        }
    });
    serde_json::from_value(crd).expect("the federated CRD template is a valid CRD")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_follow_kubefed() {
        assert_eq!(
            default_type("deployments.apps").unwrap().config_name(),
            "deployments.apps"
        );
        assert_eq!(default_type("Service").unwrap().config_name(), "services");
        assert_eq!(
            default_type("clusterroles").unwrap().federated().kind,
            "FederatedClusterRole"
        );
        assert!(default_type("gadgets").is_none());
    }

    #[test]
    fn federated_namespace_is_namespaced_and_cluster_role_is_not() {
        let ns = federated_type_of(&default_type("namespaces").unwrap());
        assert_eq!(ns.kind, "FederatedNamespace");
        assert!(ns.namespaced());
        assert!(!federated_type_of(&default_type("clusterroles").unwrap()).namespaced());
    }

    #[test]
    fn kubefed_manifests_parse() {
        let ftc: FederatedTypeConfig = serde_yaml_ng::from_str(
            "apiVersion: core.kubefed.io/v1beta1\nkind: FederatedTypeConfig\n\
             metadata: {name: deployments.apps, namespace: kube-federation-system}\n\
             spec:\n  federatedType: {group: types.kubefed.io, kind: FederatedDeployment,\n    \
             pluralName: federateddeployments, scope: Namespaced, version: v1beta1}\n  \
             propagation: Enabled\n  targetType: {group: apps, kind: Deployment,\n    \
             pluralName: deployments, scope: Namespaced, version: v1}\n",
        )
        .unwrap();
        assert_eq!(
            ftc.spec.target_type,
            default_type("deployments.apps").unwrap()
        );
        let rsp: ReplicaSchedulingPreference = serde_yaml_ng::from_str(
            "apiVersion: scheduling.kubefed.io/v1alpha1\nkind: ReplicaSchedulingPreference\n\
             metadata: {name: web, namespace: test}\n\
             spec:\n  targetKind: FederatedDeployment\n  totalReplicas: 10\n  clusters:\n    \
             a: {weight: 1}\n    '*': {minReplicas: 2, maxReplicas: 5}\n",
        )
        .unwrap();
        assert_eq!(rsp.spec.clusters["*"].max_replicas, Some(5));
        assert!(!rsp.spec.rebalance);
        let spec: FederatedSpec = serde_json::from_value(json!({
            "template": {"spec": {"replicas": 3}},
            "placement": {"clusterSelector": {}},
            "overrides": [{"clusterName": "a", "clusterOverrides": [{"path": "/spec/replicas", "value": 5}]}]
        }))
        .unwrap();
        assert!(spec.placement.clusters.is_none());
        assert_eq!(spec.overrides[0].cluster_overrides[0].op, None);
        let cfg: KubeFedConfig = serde_yaml_ng::from_str(
            "apiVersion: core.kubefed.io/v1beta1\nkind: KubeFedConfig\nmetadata: {name: kubefed}\n\
             spec:\n  scope: Namespaced\n  syncController: {adoptResources: Disabled}\n",
        )
        .unwrap();
        assert!(cfg.spec.namespaced());
        assert!(!cfg.spec.adopts());
    }

    #[test]
    fn federated_crd_is_named_and_scoped_like_kubefed() {
        let crd = federated_crd(&federated_type_of(&default_type("deployments").unwrap()));
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("federateddeployments.types.kubefed.io")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "FederatedDeployment");
    }
}
