//! The resource types a fake cluster serves: the built-in table, types registered by
//! CustomResourceDefinitions, and the discovery documents built from them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};

/// Identifies one collection in the store: versions of a type share their objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    pub group: String,
    pub plural: String,
}

/// One served resource type (all of its versions).
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    /// Served versions, highest priority first.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub short_names: Vec<String>,
    /// Set for types that come from a CRD.
    pub custom: bool,
    /// The CRD's structural schema per version (`openAPIV3Schema`), used for pruning and defaults.
    pub schemas: BTreeMap<String, Value>,
}

impl ResourceType {
    pub fn id(&self) -> ResourceId {
        ResourceId {
            group: self.group.clone(),
            plural: self.plural.clone(),
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// `services` or `endpointslices.discovery.k8s.io`, as the API server names a resource in errors.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// A built-in type: group, version, plural, singular, kind, namespaced, status subresource,
/// short names.
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    bool,
    &'static [&'static str],
);

/// All resource types a cluster serves, by collection and by (apiVersion, kind).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    types: BTreeMap<ResourceId, Arc<ResourceType>>,
}

impl Registry {
    pub fn builtin() -> Self {
        let mut registry = Registry::default();
        let table: &[Builtin] = &[
            (
                "",
                "v1",
                "namespaces",
                "namespace",
                "Namespace",
                false,
                true,
                &["ns"],
            ),
            (
                "",
                "v1",
                "services",
                "service",
                "Service",
                true,
                true,
                &["svc"],
            ),
            (
                "",
                "v1",
                "endpoints",
                "endpoints",
                "Endpoints",
                true,
                false,
                &["ep"],
            ),
            ("", "v1", "nodes", "node", "Node", false, true, &["no"]),
            ("", "v1", "secrets", "secret", "Secret", true, false, &[]),
            (
                "",
                "v1",
                "configmaps",
                "configmap",
                "ConfigMap",
                true,
                false,
                &["cm"],
            ),
            (
                "",
                "v1",
                "serviceaccounts",
                "serviceaccount",
                "ServiceAccount",
                true,
                false,
                &["sa"],
            ),
            ("", "v1", "events", "event", "Event", true, false, &["ev"]),
            ("", "v1", "pods", "pod", "Pod", true, true, &["po"]),
            (
                "discovery.k8s.io",
                "v1",
                "endpointslices",
                "endpointslice",
                "EndpointSlice",
                true,
                false,
                &[],
            ),
            (
                "networking.k8s.io",
                "v1",
                "ingresses",
                "ingress",
                "Ingress",
                true,
                true,
                &["ing"],
            ),
            (
                "networking.k8s.io",
                "v1",
                "ingressclasses",
                "ingressclass",
                "IngressClass",
                false,
                false,
                &[],
            ),
            (
                "coordination.k8s.io",
                "v1",
                "leases",
                "lease",
                "Lease",
                true,
                false,
                &[],
            ),
            (
                "apps",
                "v1",
                "deployments",
                "deployment",
                "Deployment",
                true,
                true,
                &["deploy"],
            ),
            (
                "apps",
                "v1",
                "replicasets",
                "replicaset",
                "ReplicaSet",
                true,
                true,
                &["rs"],
            ),
            (
                "apps",
                "v1",
                "statefulsets",
                "statefulset",
                "StatefulSet",
                true,
                true,
                &["sts"],
            ),
            (
                "apps",
                "v1",
                "daemonsets",
                "daemonset",
                "DaemonSet",
                true,
                true,
                &["ds"],
            ),
            ("batch", "v1", "jobs", "job", "Job", true, true, &[]),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "clusterroles",
                "clusterrole",
                "ClusterRole",
                false,
                false,
                &[],
            ),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "clusterrolebindings",
                "clusterrolebinding",
                "ClusterRoleBinding",
                false,
                false,
                &[],
            ),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "roles",
                "role",
                "Role",
                true,
                false,
                &[],
            ),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "rolebindings",
                "rolebinding",
                "RoleBinding",
                true,
                false,
                &[],
            ),
            (
                "events.k8s.io",
                "v1",
                "events",
                "event",
                "Event",
                true,
                false,
                &["ev"],
            ),
            (
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "customresourcedefinition",
                "CustomResourceDefinition",
                false,
                true,
                &["crd", "crds"],
            ),
        ];
        for &(group, version, plural, singular, kind, namespaced, status, short) in table {
            registry.insert(ResourceType {
                group: group.into(),
                versions: vec![version.into()],
                plural: plural.into(),
                singular: singular.into(),
                kind: kind.into(),
                list_kind: format!("{kind}List"),
                namespaced,
                status_subresource: status,
                short_names: short.iter().map(|s| s.to_string()).collect(),
                custom: false,
                schemas: BTreeMap::new(),
            });
        }
        registry
    }

    pub fn insert(&mut self, rt: ResourceType) {
        self.types.insert(rt.id(), Arc::new(rt));
    }

    pub fn remove(&mut self, id: &ResourceId) -> Option<Arc<ResourceType>> {
        self.types.remove(id)
    }

    pub fn types(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    pub fn get(&self, id: &ResourceId) -> Option<&Arc<ResourceType>> {
        self.types.get(id)
    }

    /// The type served at `/apis/<group>/<version>/<plural>`.
    pub fn by_path(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceType>> {
        let id = ResourceId {
            group: group.to_string(),
            plural: plural.to_string(),
        };
        self.types.get(&id).filter(|rt| rt.serves(version))
    }

    /// The type of an object with this `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&Arc<ResourceType>> {
        let (group, version) = split_api_version(api_version);
        self.types
            .values()
            .find(|rt| rt.group == group && rt.kind == kind && rt.serves(version))
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.types
            .values()
            .any(|rt| rt.group == group && rt.serves(version))
    }

    /// `GET /api` (group "" only has v1).
    pub fn core_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        })
    }

    /// `GET /apis`.
    pub fn group_list(&self) -> Value {
        let groups: BTreeSet<&str> = self
            .types
            .values()
            .map(|rt| rt.group.as_str())
            .filter(|g| !g.is_empty())
            .collect();
        let groups: Vec<Value> = groups.into_iter().map(|g| self.group(g)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/<group>`; `Value::Null` when the group is unknown.
    pub fn group(&self, group: &str) -> Value {
        let mut versions: Vec<String> = Vec::new();
        for rt in self.types.values().filter(|rt| rt.group == group) {
            for v in &rt.versions {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        if versions.is_empty() {
            return Value::Null;
        }
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        let entries: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        json!({
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": entries,
            "preferredVersion": entries[0].clone(),
        })
    }

    /// `GET /api/v1` or `GET /apis/<group>/<version>`; `Value::Null` when nothing is served there.
    pub fn resource_list(&self, group: &str, version: &str) -> Value {
        let mut resources = Vec::new();
        for rt in self
            .types
            .values()
            .filter(|rt| rt.group == group && rt.serves(version))
        {
            let mut entry = json!({
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            });
            if !rt.short_names.is_empty() {
                entry["shortNames"] = json!(rt.short_names);
            }
            resources.push(entry);
            if rt.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", rt.plural),
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        if resources.is_empty() {
            return Value::Null;
        }
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        })
    }
}

pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// Kubernetes version priority: GA > beta > alpha, higher numbers first, others last.
pub fn version_priority(version: &str) -> (u8, u32, u32) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (level, num) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    match num.parse::<u32>() {
        Ok(n) => (level, major, n),
        Err(_) => (0, 0, 0),
    }
}

/// The resource type a CustomResourceDefinition object declares, or why it is invalid.
pub fn type_from_crd(crd: &Value) -> Result<ResourceType, String> {
    let spec = &crd["spec"];
    let text = |v: &Value, what: &str| -> Result<String, String> {
        v.as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("spec.{what}: Required value"))
    };
    let group = text(&spec["group"], "group")?;
    let names = &spec["names"];
    let plural = text(&names["plural"], "names.plural")?;
    let kind = text(&names["kind"], "names.kind")?;
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let list_kind = names["listKind"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{kind}List"));
    let expected_name = format!("{plural}.{group}");
    if crd["metadata"]["name"].as_str() != Some(expected_name.as_str()) {
        return Err(format!(
            "metadata.name: Invalid value: must be spec.names.plural+\".\"+spec.group ({expected_name})"
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope: Unsupported value: must be Namespaced or Cluster".into()),
    };
    let mut versions = Vec::new();
    let mut schemas = BTreeMap::new();
    let mut status_subresource = false;
    for v in spec["versions"].as_array().into_iter().flatten() {
        let name = text(&v["name"], "versions[].name")?;
        if v["served"].as_bool() == Some(false) {
            continue;
        }
        if v["subresources"]["status"].is_object() {
            status_subresource = true;
        }
        if let Some(schema) = v["schema"].get("openAPIV3Schema") {
            schemas.insert(name.clone(), schema.clone());
        }
        versions.push(name);
    }
    if versions.is_empty() {
        return Err("spec.versions: Invalid value: must have at least one served version".into());
    }
    versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    let short_names = names["shortNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    Ok(ResourceType {
        group,
        versions,
        plural,
        singular,
        kind,
        list_kind,
        namespaced,
        status_subresource,
        short_names,
        custom: true,
        schemas,
    })
}

/// Drops fields a structural schema does not declare and fills in declared defaults, as the
/// API server does for custom resources. `metadata`, `apiVersion` and `kind` at the root are kept.
pub fn prune_and_default(value: &mut Value, schema: &Value, root: bool) {
    if schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
        && schema.get("properties").is_none()
    {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                let preserve =
                    schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true);
                map.retain(|key, _| {
                    props.contains_key(key)
                        || preserve
                        || (root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata"))
                });
                for (key, prop) in props {
                    if root && key == "metadata" {
                        continue;
                    }
                    if !map.contains_key(key)
                        && let Some(default) = prop.get("default")
                    {
                        map.insert(key.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(key) {
                        prune_and_default(child, prop, false);
                    }
                }
            } else if let Some(additional) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for child in map.values_mut() {
                    prune_and_default(child, additional, false);
                }
            } else if schema["type"] == "object"
                && schema.get("additionalProperties").is_none()
                && !root
            {
                // A structural object schema without properties keeps nothing.
                map.clear();
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    prune_and_default(item, item_schema, false);
                }
            }
        }
        _ => {}
    }
}
