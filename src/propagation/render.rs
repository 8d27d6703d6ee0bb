//! Rendering a federated object for one member cluster (spec section 3) and deciding whether a
//! live member object needs an update. Pure.
//!
//! Order: the template (name, namespace, kind and apiVersion from the federated object and its
//! type) → fields retained from the live member object → that cluster's overrides as one RFC 6902
//! patch → the `kubefed.io/managed: "true"` label, last, so nothing can remove it.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::types::{ApiResourceRef, ClusterOverrides, MANAGED_LABEL};

/// Override paths that would change the object's identity.
const FORBIDDEN_PATHS: &[&str] = &[
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/generateName",
    "/kind",
];

/// Errors that fail every cluster (`ApplyOverridesFailed` everywhere).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverridesError {
    #[error("overrides name cluster {0:?} more than once")]
    DuplicateCluster(String),
    #[error("overrides for cluster {cluster:?} change {path} more than once")]
    DuplicatePath { cluster: String, path: String },
    #[error("overrides for cluster {cluster:?} may not change {path}")]
    ForbiddenPath { cluster: String, path: String },
    #[error("overrides for cluster {cluster:?}: unknown op {op:?} (add, remove, replace)")]
    UnknownOp { cluster: String, op: String },
}

/// Errors that fail one cluster only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("spec.template must be an object")]
    TemplateNotObject,
    #[error("overrides do not apply: {0}")]
    PatchFailed(String),
}

/// Checks the whole-object override rules; call once per federated object.
pub fn validate_overrides(overrides: &[ClusterOverrides]) -> Result<(), OverridesError> {
    let mut clusters = BTreeSet::new();
    for o in overrides {
        if !clusters.insert(o.cluster_name.as_str()) {
            return Err(OverridesError::DuplicateCluster(o.cluster_name.clone()));
        }
        let mut paths = BTreeSet::new();
        for op in &o.cluster_overrides {
            let path = op.path.trim_end_matches('/');
            if FORBIDDEN_PATHS.contains(&path) {
                return Err(OverridesError::ForbiddenPath {
                    cluster: o.cluster_name.clone(),
                    path: op.path.clone(),
                });
            }
            if !paths.insert(path) {
                return Err(OverridesError::DuplicatePath {
                    cluster: o.cluster_name.clone(),
                    path: op.path.clone(),
                });
            }
            if let Some(kind) = op.op.as_deref()
                && !matches!(kind, "add" | "remove" | "replace")
            {
                return Err(OverridesError::UnknownOp {
                    cluster: o.cluster_name.clone(),
                    op: kind.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Template fields only overrides may set; reported as a warning and dropped.
pub fn template_warnings(template: &Value) -> Vec<String> {
    let mut warnings = Vec::new();
    for field in ["annotations", "finalizers"] {
        if template["metadata"].get(field).is_some() {
            warnings.push(format!(
                "spec.template.metadata.{field} is ignored: set {field} through overrides"
            ));
        }
    }
    warnings
}

/// What a federated object says about itself, for rendering.
#[derive(Debug, Clone, Copy)]
pub struct Federated<'a> {
    pub target: &'a ApiResourceRef,
    pub name: &'a str,
    /// The federated object's namespace (for a FederatedNamespace: the namespace itself).
    pub namespace: Option<&'a str>,
    pub template: &'a Value,
    pub overrides: &'a [ClusterOverrides],
    pub retain_replicas: bool,
}

/// The object to write to `cluster`, given the live object there (for an update).
pub fn render_for_cluster(
    fed: Federated<'_>,
    cluster: &str,
    live: Option<&Value>,
) -> Result<Value, RenderError> {
    // An absent template is an empty object (a FederatedNamespace usually has none).
    let mut obj = match fed.template {
        Value::Object(template) => Value::Object(template.clone()),
        Value::Null => json!({}),
        _ => return Err(RenderError::TemplateNotObject),
    };
    obj["apiVersion"] = json!(fed.target.api_version());
    obj["kind"] = json!(fed.target.kind);
    let meta = object_at(&mut obj, "metadata");
    for server_set in [
        "annotations",
        "finalizers",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "ownerReferences",
        "generateName",
    ] {
        meta.remove(server_set);
    }
    meta.insert("name".into(), json!(fed.name));
    match fed.namespace {
        Some(ns) if fed.target.namespaced() => {
            meta.insert("namespace".into(), json!(ns));
        }
        _ => {
            meta.remove("namespace");
        }
    }
    if let Value::Object(o) = &mut obj {
        o.remove("status");
    }
    if fed.target.group.is_empty() && fed.target.kind == "Secret" {
        fold_string_data(&mut obj);
    }
    if let Some(live) = live {
        retain_cluster_fields(fed, &mut obj, live);
    }
    if let Some(o) = fed.overrides.iter().find(|o| o.cluster_name == cluster) {
        apply_overrides(&mut obj, o)?;
    }
    let meta = object_at(&mut obj, "metadata");
    let labels = match meta.entry("labels").or_insert_with(|| json!({})) {
        Value::Object(l) => l,
        other => {
            *other = json!({});
            other.as_object_mut().expect("just set")
        }
    };
    labels.insert(MANAGED_LABEL.into(), json!("true"));
    Ok(obj)
}

/// A Secret's `stringData` folded into `data` (base64), as the API server stores it: the live
/// object never has `stringData`, so comparing against it would rewrite the Secret after every
/// restart.
fn fold_string_data(obj: &mut Value) {
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    let data = object_at(obj, "data");
    for (key, value) in strings {
        if let Value::String(text) = value {
            let encoded = k8s_openapi::ByteString(text.into_bytes());
            data.insert(key, serde_json::to_value(encoded).unwrap_or(Value::Null));
        }
    }
}

/// Fields a member cluster owns once the object exists there (spec section 3, step 3).
fn retain_cluster_fields(fed: Federated<'_>, obj: &mut Value, live: &Value) {
    let meta = object_at(obj, "metadata");
    for field in ["resourceVersion", "finalizers", "annotations"] {
        if let Some(v) = live["metadata"].get(field) {
            meta.insert(field.into(), v.clone());
        }
    }
    let core = fed.target.group.is_empty();
    match fed.target.kind.as_str() {
        "Service" if core => {
            let spec = object_at(obj, "spec");
            for field in ["clusterIP", "clusterIPs", "healthCheckNodePort"] {
                if let Some(v) = live["spec"].get(field) {
                    spec.insert(field.into(), v.clone());
                }
            }
            retain_node_ports(obj, live);
        }
        "ServiceAccount" if core => {
            let has_secrets = obj
                .get("secrets")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            if !has_secrets && let Some(secrets) = live.get("secrets") {
                obj["secrets"] = secrets.clone();
            }
        }
        _ => {
            if fed.retain_replicas
                && let Some(replicas) = live["spec"].get("replicas")
            {
                object_at(obj, "spec").insert("replicas".into(), replicas.clone());
            }
        }
    }
}

/// A port keeps its live `nodePort` when a live port has the same name, protocol and port.
fn retain_node_ports(obj: &mut Value, live: &Value) {
    let Some(live_ports) = live["spec"]["ports"].as_array() else {
        return;
    };
    let Some(ports) = obj["spec"]["ports"].as_array_mut() else {
        return;
    };
    let same = |a: &Value, b: &Value| {
        let protocol = |p: &Value| p["protocol"].as_str().unwrap_or("TCP").to_string();
        a["name"] == b["name"] && protocol(a) == protocol(b) && a["port"] == b["port"]
    };
    for port in ports {
        if let Some(node_port) = live_ports
            .iter()
            .find(|l| same(l, port))
            .and_then(|l| l.get("nodePort"))
            && let Value::Object(p) = port
        {
            p.insert("nodePort".into(), node_port.clone());
        }
    }
}

fn apply_overrides(obj: &mut Value, overrides: &ClusterOverrides) -> Result<(), RenderError> {
    let ops: Vec<Value> = overrides
        .cluster_overrides
        .iter()
        .map(|o| {
            let op = o.op.as_deref().unwrap_or("replace");
            let mut v = json!({"op": op, "path": o.path});
            if op != "remove" {
                v["value"] = o.value.clone().unwrap_or(Value::Null);
            }
            v
        })
        .collect();
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
        .map_err(|e| RenderError::PatchFailed(e.to_string()))?;
    json_patch::patch(obj, &patch).map_err(|e| RenderError::PatchFailed(e.to_string()))
}

/// `obj[key]` as a map, created (or replaced if not a map) when needed.
fn object_at<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let entry = obj
        .as_object_mut()
        .expect("just made an object")
        .entry(key)
        .or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("just made an object")
}

/// The version of a live object fedns compares against what it last wrote: the generation for
/// types that have one (status updates do not bump it), else the resourceVersion.
pub fn live_version(live: &Value) -> String {
    match live["metadata"]["generation"].as_i64() {
        Some(generation) => format!("gen:{generation}"),
        None => format!(
            "rv:{}",
            live["metadata"]["resourceVersion"].as_str().unwrap_or("")
        ),
    }
}

/// A hash of what fedns wants in a cluster, ignoring the retained `resourceVersion`.
pub fn desired_hash(desired: &Value) -> u64 {
    let mut stripped = desired.clone();
    if let Some(meta) = stripped.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    stripped.to_string().hash(&mut hasher);
    hasher.finish()
}

/// What fedns last wrote to one cluster for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propagated {
    pub desired_hash: u64,
    /// [`live_version`] of the object as the write returned it.
    pub version: String,
}

/// Whether the live object must be updated to `desired`. Cheap when nothing changed: the same
/// desired hash and live version as last written means no comparison at all. Otherwise the live
/// object must contain everything desired (fields the API server defaults, or that the member
/// adds, do not count), and labels too.
pub fn needs_update(desired: &Value, live: &Value, last: Option<&Propagated>) -> bool {
    if let Some(last) = last
        && last.desired_hash == desired_hash(desired)
        && last.version == live_version(live)
    {
        return false;
    }
    let mut wanted = desired.clone();
    if let Some(meta) = wanted.get_mut("metadata").and_then(Value::as_object_mut) {
        // Retained from live by construction.
        meta.remove("resourceVersion");
    }
    !contains(live, &wanted)
}

/// The annotation on every member object fedns writes, recording what fedns manages there: a
/// hash of the field paths it rendered and the annotation keys it set (no values, so a Secret's
/// data never lands in an annotation).
///
/// Why a record and not server-side apply: the update decision must see a removed key (a
/// template key, label or selector entry dropped since the last write) even right after a
/// restart, when nothing of the last write is in memory. With this record a removal changes
/// the hash, so the member object is rewritten from the template (a replace: keys fedns no
/// longer renders go, fields the member owns are carried over by the retention step, and
/// annotations the member added stay). It behaves the same on every API server version and
/// needs no parsing of `managedFields`; a replace carries the live `resourceVersion`, so a
/// concurrent member edit is a conflict and re-read, never silently lost.
pub const MANAGED_FIELDS_ANNOTATION: &str = "fedns.io/managed-fields";

/// `desired` (rendered with the live object's retained fields) as it is written: annotations
/// fedns set before (by the live object's record) but no longer renders are dropped, and the
/// record of `config` (what fedns renders, without anything retained) is set.
pub fn with_managed_record(mut desired: Value, config: &Value, live: Option<&Value>) -> Value {
    let rendered_annotations: BTreeSet<String> = config["metadata"]["annotations"]
        .as_object()
        .map(|a| {
            a.keys()
                .filter(|k| *k != MANAGED_FIELDS_ANNOTATION)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut paths = Vec::new();
    leaf_paths(config, &mut String::new(), &mut paths);
    paths.sort();
    let record = json!({
        "fields": format!("{:016x}", fnv1a(paths.join("\n").as_bytes())),
        "annotations": rendered_annotations,
    })
    .to_string();
    let previous: Vec<String> = live
        .and_then(|l| l["metadata"]["annotations"][MANAGED_FIELDS_ANNOTATION].as_str())
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .and_then(|r| serde_json::from_value(r["annotations"].clone()).ok())
        .unwrap_or_default();
    let meta = object_at(&mut desired, "metadata");
    let annotations = match meta.entry("annotations").or_insert_with(|| json!({})) {
        Value::Object(a) => a,
        other => {
            *other = json!({});
            other.as_object_mut().expect("just set")
        }
    };
    for key in previous {
        if !rendered_annotations.contains(&key) {
            annotations.remove(&key);
        }
    }
    annotations.insert(MANAGED_FIELDS_ANNOTATION.into(), json!(record));
    desired
}

/// Every leaf path of `v` as a JSON pointer: scalars, empty objects and arrays, array elements
/// by index.
fn leaf_paths(v: &Value, prefix: &mut String, out: &mut Vec<String>) {
    let at = prefix.len();
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push('/');
                prefix.push_str(&k.replace('~', "~0").replace('/', "~1"));
                leaf_paths(child, prefix, out);
                prefix.truncate(at);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, child) in a.iter().enumerate() {
                prefix.push('/');
                prefix.push_str(&i.to_string());
                leaf_paths(child, prefix, out);
                prefix.truncate(at);
            }
        }
        _ => out.push(prefix.clone()),
    }
}

/// 64-bit FNV-1a: stable across builds and Rust versions (the record outlives the process).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Whether `have` holds everything in `want`: objects key by key (extra keys in `have` allowed),
/// arrays element by element with equal lengths, scalars equal (numbers by value).
pub fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv)) || is_empty(wv)),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv))
        }
        (Value::Number(h), Value::Number(w)) => h.as_f64() == w.as_f64(),
        (h, w) => h == w,
    }
}

/// Values the API server drops when empty, so their absence in the live object is not a change.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The managed label's value on a live object: `Some("true")`, `Some("false")`, or `None`.
pub fn managed_label(live: &Value) -> Option<&str> {
    live["metadata"]["labels"][MANAGED_LABEL].as_str()
}

/// The JSON of a live object with the managed label removed (orphaning), as a JSON patch.
pub fn unlabel_patch(live: &Value) -> Option<Value> {
    managed_label(live)?;
    Some(
        json!([{"op": "remove", "path": format!("/metadata/labels/{}", MANAGED_LABEL.replace('/', "~1"))}]),
    )
}

/// Member objects' own status summed into one place: replicas for workloads, load-balancer
/// ingress points for Services and Ingresses.
pub fn aggregate_status(statuses: &BTreeMap<String, Value>) -> Value {
    let mut out = Map::new();
    for field in [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
        "succeeded",
        "failed",
        "active",
    ] {
        let values: Vec<i64> = statuses
            .values()
            .filter_map(|s| s.get(field).and_then(Value::as_i64))
            .collect();
        if !values.is_empty() {
            out.insert(field.into(), json!(values.iter().sum::<i64>()));
        }
    }
    let mut ingress: Vec<Value> = Vec::new();
    for (cluster, s) in statuses {
        for point in s["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let mut point = point.clone();
            if let Value::Object(p) = &mut point {
                p.insert("cluster".into(), json!(cluster));
            }
            ingress.push(point);
        }
    }
    if !ingress.is_empty() {
        out.insert("loadBalancer".into(), json!({"ingress": ingress}));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::super::types::{Override, default_type};
    use super::*;

    fn ov(cluster: &str, ops: &[(&str, &str, Value)]) -> ClusterOverrides {
        ClusterOverrides {
            cluster_name: cluster.into(),
            cluster_overrides: ops
                .iter()
                .map(|(op, path, value)| Override {
                    op: (!op.is_empty()).then(|| op.to_string()),
                    path: path.to_string(),
                    value: (!value.is_null()).then(|| value.clone()),
                })
                .collect(),
        }
    }

    struct Fixture {
        target: ApiResourceRef,
        template: Value,
        overrides: Vec<ClusterOverrides>,
        retain_replicas: bool,
    }

    impl Fixture {
        fn deployment() -> Self {
            Fixture {
                target: default_type("deployments").unwrap(),
                template: json!({
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}
                }),
                overrides: vec![],
                retain_replicas: false,
            }
        }

        fn service() -> Self {
            Fixture {
                target: default_type("services").unwrap(),
                template: json!({"spec": {"type": "LoadBalancer", "ports": [
                    {"name": "http", "port": 80},
                    {"name": "https", "port": 443, "protocol": "TCP"}
                ]}}),
                overrides: vec![],
                retain_replicas: false,
            }
        }

        fn with(mut self, o: ClusterOverrides) -> Self {
            self.overrides.push(o);
            self
        }

        fn fed(&self) -> Federated<'_> {
            Federated {
                target: &self.target,
                name: "web",
                namespace: Some("shop"),
                template: &self.template,
                overrides: &self.overrides,
                retain_replicas: self.retain_replicas,
            }
        }

        fn render(&self, cluster: &str, live: Option<&Value>) -> Result<Value, RenderError> {
            render_for_cluster(self.fed(), cluster, live)
        }
    }

    #[test]
    fn renders_identity_from_the_federated_object_and_labels_it_managed() {
        let f = Fixture::deployment();
        let obj = f.render("a", None).unwrap();
        assert_eq!(obj["apiVersion"], "apps/v1");
        assert_eq!(obj["kind"], "Deployment");
        assert_eq!(obj["metadata"]["name"], "web");
        assert_eq!(obj["metadata"]["namespace"], "shop");
        assert_eq!(obj["metadata"]["labels"]["app"], "web");
        assert_eq!(obj["metadata"]["labels"][MANAGED_LABEL], "true");
        assert_eq!(obj["spec"]["replicas"], 3);
    }

    #[test]
    fn cluster_scoped_targets_have_no_namespace() {
        let mut f = Fixture::deployment();
        f.target = default_type("namespaces").unwrap();
        f.template = json!({});
        let obj = f.render("a", None).unwrap();
        assert_eq!(obj["metadata"]["name"], "web");
        assert!(obj["metadata"].get("namespace").is_none());
    }

    #[test]
    fn template_annotations_and_finalizers_are_dropped_with_a_warning() {
        let mut f = Fixture::deployment();
        f.template["metadata"]["annotations"] = json!({"a": "b"});
        f.template["metadata"]["finalizers"] = json!(["x"]);
        assert_eq!(template_warnings(&f.template).len(), 2);
        let obj = f.render("a", None).unwrap();
        assert!(obj["metadata"].get("annotations").is_none());
        assert!(obj["metadata"].get("finalizers").is_none());
    }

    #[test]
    fn overrides_apply_in_order_for_their_cluster_only() {
        let f = Fixture::deployment().with(ov(
            "a",
            &[
                ("", "/spec/replicas", json!(5)),
                ("add", "/metadata/labels/tier", json!("gold")),
                (
                    "replace",
                    "/spec/template/spec/containers/0/image",
                    json!("nginx:2"),
                ),
            ],
        ));
        let a = f.render("a", None).unwrap();
        assert_eq!(a["spec"]["replicas"], 5);
        assert_eq!(a["metadata"]["labels"]["tier"], "gold");
        assert_eq!(
            a["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );
        let b = f.render("b", None).unwrap();
        assert_eq!(b["spec"]["replicas"], 3);
    }

    #[test]
    fn overrides_cannot_remove_the_managed_label() {
        let f = Fixture::deployment().with(ov("a", &[("remove", "/metadata/labels", Value::Null)]));
        let a = f.render("a", None).unwrap();
        assert_eq!(a["metadata"]["labels"][MANAGED_LABEL], "true");
    }

    #[test]
    fn annotations_come_through_overrides() {
        let f = Fixture::deployment().with(ov(
            "a",
            &[("add", "/metadata/annotations", json!({"team": "shop"}))],
        ));
        assert_eq!(
            f.render("a", None).unwrap()["metadata"]["annotations"]["team"],
            "shop"
        );
    }

    #[test]
    fn a_failing_patch_fails_that_cluster_only() {
        let f = Fixture::deployment()
            .with(ov("a", &[("remove", "/spec/nothing", Value::Null)]))
            .with(ov("b", &[("", "/spec/replicas", json!(1))]));
        assert!(matches!(
            f.render("a", None),
            Err(RenderError::PatchFailed(_))
        ));
        assert_eq!(f.render("b", None).unwrap()["spec"]["replicas"], 1);
        assert!(validate_overrides(&f.overrides).is_ok());
    }

    #[test]
    fn whole_object_override_errors() {
        let twice = vec![
            ov("a", &[("", "/spec/replicas", json!(1))]),
            ov("a", &[("", "/spec/paused", json!(true))]),
        ];
        assert_eq!(
            validate_overrides(&twice),
            Err(OverridesError::DuplicateCluster("a".into()))
        );
        let same_path = vec![ov(
            "a",
            &[
                ("", "/spec/replicas", json!(1)),
                ("add", "/spec/replicas", json!(2)),
            ],
        )];
        assert!(matches!(
            validate_overrides(&same_path),
            Err(OverridesError::DuplicatePath { .. })
        ));
        for path in [
            "/metadata/name",
            "/metadata/namespace",
            "/metadata/generateName",
            "/kind",
        ] {
            assert!(
                matches!(
                    validate_overrides(&[ov("a", &[("", path, json!("x"))])]),
                    Err(OverridesError::ForbiddenPath { .. })
                ),
                "{path}"
            );
        }
        assert!(matches!(
            validate_overrides(&[ov("a", &[("move", "/spec/x", json!(1))])]),
            Err(OverridesError::UnknownOp { .. })
        ));
    }

    #[test]
    fn an_absent_template_renders_a_bare_object() {
        let mut f = Fixture::deployment();
        f.target = default_type("namespaces").unwrap();
        f.template = Value::Null;
        let obj = f.render("a", None).unwrap();
        assert_eq!(obj["kind"], "Namespace");
        assert_eq!(obj["metadata"]["name"], "web");
    }

    #[test]
    fn template_must_be_an_object() {
        let mut f = Fixture::deployment();
        f.template = json!("nope");
        assert_eq!(f.render("a", None), Err(RenderError::TemplateNotObject));
    }

    #[test]
    fn update_retains_version_finalizers_and_annotations() {
        let f = Fixture::deployment();
        let live = json!({"metadata": {"resourceVersion": "42", "finalizers": ["f"],
            "annotations": {"member": "note"}}, "spec": {"replicas": 7}});
        let obj = f.render("a", Some(&live)).unwrap();
        assert_eq!(obj["metadata"]["resourceVersion"], "42");
        assert_eq!(obj["metadata"]["finalizers"], json!(["f"]));
        assert_eq!(obj["metadata"]["annotations"]["member"], "note");
        assert_eq!(
            obj["spec"]["replicas"], 3,
            "replicas not retained by default"
        );
    }

    #[test]
    fn retain_replicas_keeps_the_members_count_but_overrides_still_win() {
        let mut f = Fixture::deployment();
        f.retain_replicas = true;
        let live = json!({"metadata": {}, "spec": {"replicas": 7}});
        assert_eq!(f.render("a", Some(&live)).unwrap()["spec"]["replicas"], 7);
        let f = f.with(ov("a", &[("", "/spec/replicas", json!(2))]));
        assert_eq!(f.render("a", Some(&live)).unwrap()["spec"]["replicas"], 2);
    }

    #[test]
    fn services_keep_cluster_ips_and_matching_node_ports() {
        let f = Fixture::service();
        let live = json!({"metadata": {}, "spec": {
        "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "healthCheckNodePort": 31000,
        "ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
            {"name": "https", "port": 8443, "protocol": "TCP", "nodePort": 30443}
        ]}});
        let obj = f.render("a", Some(&live)).unwrap();
        assert_eq!(obj["spec"]["clusterIP"], "10.0.0.1");
        assert_eq!(obj["spec"]["clusterIPs"], json!(["10.0.0.1"]));
        assert_eq!(obj["spec"]["healthCheckNodePort"], 31000);
        assert_eq!(obj["spec"]["ports"][0]["nodePort"], 30080);
        assert!(
            obj["spec"]["ports"][1].get("nodePort").is_none(),
            "port differs"
        );
    }

    #[test]
    fn service_accounts_keep_live_secrets_unless_the_template_has_some() {
        let mut f = Fixture::deployment();
        f.target = default_type("serviceaccounts").unwrap();
        f.template = json!({});
        let live = json!({"metadata": {}, "secrets": [{"name": "tok"}]});
        assert_eq!(
            f.render("a", Some(&live)).unwrap()["secrets"],
            json!([{"name": "tok"}])
        );
        f.template = json!({"secrets": [{"name": "mine"}]});
        assert_eq!(
            f.render("a", Some(&live)).unwrap()["secrets"],
            json!([{"name": "mine"}])
        );
    }

    fn live_of(desired: &Value, generation: i64) -> Value {
        let mut live = desired.clone();
        live["metadata"]["generation"] = json!(generation);
        live["metadata"]["resourceVersion"] = json!("9");
        live["metadata"]["uid"] = json!("u");
        live["spec"]["progressDeadlineSeconds"] = json!(600);
        live["status"] = json!({"readyReplicas": 3});
        live
    }

    #[test]
    fn no_update_when_live_holds_everything_desired() {
        let desired = Fixture::deployment().render("a", None).unwrap();
        let live = live_of(&desired, 1);
        assert!(!needs_update(&desired, &live, None));
    }

    #[test]
    fn a_member_spec_edit_needs_an_update_and_a_member_annotation_does_not() {
        let f = Fixture::deployment();
        let desired = f.render("a", None).unwrap();
        let mut live = live_of(&desired, 1);
        let last = Propagated {
            desired_hash: desired_hash(&desired),
            version: live_version(&live),
        };
        assert!(!needs_update(&desired, &live, Some(&last)));

        live["metadata"]["annotations"] = json!({"member": "note"});
        live["metadata"]["resourceVersion"] = json!("10");
        let desired = f.render("a", Some(&live)).unwrap();
        assert!(!needs_update(&desired, &live, Some(&last)));

        live["spec"]["replicas"] = json!(9);
        live["metadata"]["generation"] = json!(2);
        let desired = f.render("a", Some(&live)).unwrap();
        assert!(needs_update(&desired, &live, Some(&last)));
        assert_eq!(desired["metadata"]["annotations"]["member"], "note");
        assert_eq!(desired["spec"]["replicas"], 3);
    }

    #[test]
    fn a_template_change_or_a_missing_label_needs_an_update() {
        let f = Fixture::deployment();
        let desired = f.render("a", None).unwrap();
        let mut live = live_of(&desired, 1);
        let last = Propagated {
            desired_hash: desired_hash(&desired),
            version: live_version(&live),
        };
        let f2 = Fixture::deployment().with(ov("a", &[("", "/spec/replicas", json!(4))]));
        assert!(needs_update(
            &f2.render("a", None).unwrap(),
            &live,
            Some(&last)
        ));
        live["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove(MANAGED_LABEL);
        assert!(needs_update(&desired, &live, None));
    }

    #[test]
    fn removed_container_is_a_change_but_defaulted_fields_are_not() {
        let have = json!({"a": [{"x": 1, "d": "default"}, {"x": 2}], "n": 1.0});
        assert!(contains(&have, &json!({"a": [{"x": 1}, {"x": 2}], "n": 1})));
        assert!(!contains(&have, &json!({"a": [{"x": 1}]})));
        assert!(!contains(&have, &json!({"a": [{"x": 1}, {"x": 3}]})));
        assert!(contains(&have, &json!({"empty": {}, "none": null})));
    }

    #[test]
    fn unlabel_patch_escapes_the_label_key() {
        let live = json!({"metadata": {"labels": {MANAGED_LABEL: "true"}}});
        let patch = unlabel_patch(&live).unwrap();
        assert_eq!(patch[0]["path"], "/metadata/labels/kubefed.io~1managed");
        assert!(unlabel_patch(&json!({"metadata": {}})).is_none());
    }

    #[test]
    fn member_status_is_aggregated() {
        let statuses = BTreeMap::from([
            (
                "a".to_string(),
                json!({"replicas": 3, "readyReplicas": 2, "loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}}),
            ),
            ("b".to_string(), json!({"replicas": 2, "readyReplicas": 2})),
        ]);
        let agg = aggregate_status(&statuses);
        assert_eq!(agg["replicas"], 5);
        assert_eq!(agg["readyReplicas"], 4);
        assert_eq!(
            agg["loadBalancer"]["ingress"],
            json!([{"ip": "1.1.1.1", "cluster": "a"}])
        );
    }

    fn sample_config(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"app": "a", MANAGED_LABEL: "true"}}, "data": data})
    }

    #[test]
    fn a_removed_template_key_changes_the_record_so_the_object_is_rewritten() {
        let before = sample_config(json!({"a": "1", "b": "2"}));
        let written = with_managed_record(before.clone(), &before, None);
        let mut live = written.clone();
        live["metadata"]["annotations"]["member.example/added"] = json!("x");
        live["metadata"]["resourceVersion"] = json!("7");
        // Unchanged: nothing to do, even with no memory of the last write (a restart).
        let again = with_managed_record(before.clone(), &before, Some(&live));
        let mut again_retained = again.clone();
        again_retained["metadata"]["annotations"]["member.example/added"] = json!("x");
        assert!(!needs_update(&again_retained, &live, None));
        // Key `b` removed from the template: the record differs, so the object is rewritten.
        let after = sample_config(json!({"a": "1"}));
        let mut retained = after.clone();
        retained["metadata"]["annotations"] = json!({"member.example/added": "x"});
        let desired = with_managed_record(retained, &after, Some(&live));
        assert!(needs_update(&desired, &live, None));
        assert!(desired["data"].get("b").is_none());
        assert_eq!(
            desired["metadata"]["annotations"]["member.example/added"],
            "x"
        );
    }

    #[test]
    fn a_removed_key_inside_a_list_element_changes_the_record() {
        let with_env = json!({"spec": {"containers": [{"name": "w", "env": [{"name": "A"}]}]}});
        let without = json!({"spec": {"containers": [{"name": "w"}]}});
        let a = with_managed_record(with_env.clone(), &with_env, None);
        let b = with_managed_record(without.clone(), &without, Some(&a));
        assert_ne!(
            a["metadata"]["annotations"][MANAGED_FIELDS_ANNOTATION],
            b["metadata"]["annotations"][MANAGED_FIELDS_ANNOTATION]
        );
        assert!(needs_update(&b, &a, None));
    }

    #[test]
    fn an_annotation_fedns_stopped_setting_is_removed_and_member_ones_stay() {
        let mut config = sample_config(json!({}));
        config["metadata"]["annotations"] = json!({"by.fedns/x": "1"});
        let live = with_managed_record(config.clone(), &config, None);
        let mut live = live;
        live["metadata"]["annotations"]["member.example/added"] = json!("y");
        let next = sample_config(json!({}));
        // Rendering retains every live annotation; the record says which were fedns's.
        let mut retained = next.clone();
        retained["metadata"]["annotations"] = live["metadata"]["annotations"].clone();
        let desired = with_managed_record(retained, &next, Some(&live));
        let annotations = &desired["metadata"]["annotations"];
        assert!(annotations.get("by.fedns/x").is_none());
        assert_eq!(annotations["member.example/added"], "y");
        assert!(needs_update(&desired, &live, None));
    }

    #[test]
    fn the_record_hash_is_stable_across_builds() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn secret_string_data_is_rendered_as_data_the_way_the_api_server_stores_it() {
        let secrets = default_type("secrets").unwrap();
        let template = json!({"stringData": {"k": "v"}, "data": {"d": "ZA=="}});
        let fed = Federated {
            target: &secrets,
            name: "s",
            namespace: Some("n"),
            template: &template,
            overrides: &[],
            retain_replicas: false,
        };
        let out = render_for_cluster(fed, "c1", None).unwrap();
        assert!(out.get("stringData").is_none());
        assert_eq!(out["data"], json!({"d": "ZA==", "k": "dg=="}));
    }
}
