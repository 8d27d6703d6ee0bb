//! The deploy/ manifests, rendered and validated offline.
//!
//! Rendering uses the real tools: `kubectl kustomize` (kustomize v5, in the machine image) for the
//! kustomize base, its overlays and the member RBAC, and Helm itself (the Helm library shipped by
//! the PyPI package `helm-python-sdk`, installed by .ci/run) for the chart, with default values and
//! with overrides. A missing tool fails those tests naming what to install (`bash .ci/test`
//! installs them), or marks them ignored under `FEDNS_SKIP_MISSING_TOOLS=1`.
//!
//! Every rendered object is then checked:
//! - core kinds are deserialized into the `k8s-openapi` types (the Kubernetes OpenAPI schema) and
//!   serialized back: a field the schema does not know, or a wrong type, is an error;
//! - custom resources are checked against the `openAPIV3Schema` of their CRD in deploy/crds;
//! - the objects are checked together: selectors against pod labels, Service target ports and
//!   probe ports against container ports, the fedns config file against fedns's own parser and the
//!   ports it listens on, RBAC rules against known resources and verbs, what fedns needs granted
//!   and what least privilege forbids, bindings against roles and ServiceAccounts, namespaces.
//!
//! The checker's own tests break a manifest on purpose and expect the problem to be named.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// kubectl with kustomize v5 (in the machine image: Debian's kubernetes-client is too old).
fn require_kustomize() {
    common::tools::require(
        "kubectl kustomize",
        "kubectl kustomize --help",
        "kubectl with kustomize v5 (https://kubernetes.io/docs/tasks/tools/)",
    );
}

const HELM_PY: &str = r#"
import json, sys
from helm_python import chart
path, values, name, namespace = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
c = chart.Chart.load(path)
manifests = c.render(values=values, name=name, namespace=namespace, is_install=True)
lint = chart.lint(path, values, strict=True, namespace=namespace)
crds = [f["data"] if isinstance(f, dict) else f for f in c.crds]
print(json.dumps({"manifests": manifests, "lint": lint, "crds": crds}))
"#;

fn require_helm() {
    common::tools::require(
        "Helm (python3 helm_python)",
        "python3 -c 'import helm_python'",
        "python3 -m pip install helm-python-sdk==0.2.2",
    );
}

fn kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(deploy(dir))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/{dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_documents(
        &String::from_utf8_lossy(&out.stdout),
        &format!("deploy/{dir}"),
    )
}

/// A Helm rendering: the objects of the templates, the chart's CRDs and `helm lint --strict`'s
/// findings.
struct HelmRender {
    objects: Vec<Value>,
    /// The rendered NOTES.txt.
    notes: String,
    crds: Vec<Value>,
    lint: Value,
}

/// Runs [`HELM_PY`] on the chart.
fn run_helm(values: &Value, name: &str, namespace: &str) -> std::process::Output {
    Command::new("python3")
        .args(["-c", HELM_PY])
        .arg(deploy("helm/fedns"))
        .arg(values.to_string())
        .args([name, namespace])
        .output()
        .expect("python3 runs")
}

fn helm(values: Value, name: &str, namespace: &str) -> HelmRender {
    let out = run_helm(&values, name, namespace);
    assert!(
        out.status.success(),
        "helm render failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("helm render prints JSON");
    let mut objects = Vec::new();
    let mut notes = String::new();
    for (template, text) in result["manifests"].as_object().unwrap() {
        if template.ends_with(".txt") {
            notes.push_str(text.as_str().unwrap_or_default());
            continue;
        }
        objects.extend(parse_documents(text.as_str().unwrap(), template));
    }
    let crds = result["crds"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| parse_documents(crd_text(c), "chart crds/"))
        .collect();
    HelmRender {
        objects,
        notes,
        crds,
        lint: result["lint"].clone(),
    }
}

/// The helm library gives a CRD file as text or as `{name, data}` with base64 or text data.
fn crd_text(c: &Value) -> &str {
    c.as_str()
        .or_else(|| c.get("data").and_then(Value::as_str))
        .unwrap_or_default()
}

fn parse_documents(text: &str, origin: &str) -> Vec<Value> {
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value =
            Value::deserialize(document).unwrap_or_else(|e| panic!("{origin}: not YAML: {e}"));
        if !value.is_null() {
            objects.push(value);
        }
    }
    objects
}

fn read_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    parse_documents(&text, &path.display().to_string())
}

fn crd_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn crds() -> Vec<Value> {
    crd_files().iter().flat_map(|p| read_documents(p)).collect()
}

// ---------------------------------------------------------------------------------------------
// Schema checks of single objects
// ---------------------------------------------------------------------------------------------

/// Deserializes into the `k8s-openapi` type and serializes back: every field of the input must
/// come back unchanged, so unknown fields (dropped by the type) and wrong types are errors.
fn typed<T: DeserializeOwned + Serialize>(object: &Value) -> Result<(), String> {
    let parsed: T = serde_path_to_error::deserialize(object)
        .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    let back = serde_json::to_value(&parsed).map_err(|e| e.to_string())?;
    contained(object, &back, "")
}

fn contained(input: &Value, output: &Value, path: &str) -> Result<(), String> {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => contained(value, other, &here)?,
                    None if value.is_null() => {}
                    None => return Err(format!("{here}: field not in the schema")),
                }
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .try_for_each(|(i, (x, y))| contained(x, y, &format!("{path}[{i}]"))),
        (a, b) if a == b => Ok(()),
        (a, b) => Err(format!("{path}: {a} is read by the schema as {b}")),
    }
}

/// Checks one object against its schema: the Kubernetes OpenAPI types for core kinds, the CRD's
/// openAPIV3Schema for custom resources.
fn check_schema(object: &Value, crds: &[Value]) -> Result<(), String> {
    use k8s_openapi::api::{apps, core, policy, rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Namespace") => typed::<core::v1::Namespace>(object),
        ("v1", "ServiceAccount") => typed::<core::v1::ServiceAccount>(object),
        ("v1", "ConfigMap") => typed::<core::v1::ConfigMap>(object),
        ("v1", "Secret") => typed::<core::v1::Secret>(object),
        ("v1", "Service") => typed::<core::v1::Service>(object),
        ("apps/v1", "Deployment") => typed::<apps::v1::Deployment>(object),
        ("policy/v1", "PodDisruptionBudget") => typed::<policy::v1::PodDisruptionBudget>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => typed::<rbac::v1::ClusterRole>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            typed::<rbac::v1::ClusterRoleBinding>(object)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => typed::<rbac::v1::Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => typed::<rbac::v1::RoleBinding>(object),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            typed::<apiext::CustomResourceDefinition>(object)
        }
        ("monitoring.coreos.com/v1", "ServiceMonitor") => check_service_monitor(object),
        _ => check_custom_resource(object, crds),
    }
}

/// The Prometheus Operator's CRD is not ours to ship: the fields the chart writes, by name and type.
fn check_service_monitor(object: &Value) -> Result<(), String> {
    let spec = object["spec"]
        .as_object()
        .ok_or("ServiceMonitor without spec")?;
    for key in spec.keys() {
        if !["selector", "endpoints", "namespaceSelector", "jobLabel"].contains(&key.as_str()) {
            return Err(format!("ServiceMonitor spec.{key} is not a field"));
        }
    }
    if !spec["selector"]["matchLabels"].is_object() {
        return Err("ServiceMonitor spec.selector.matchLabels must be a map".into());
    }
    for e in spec["endpoints"]
        .as_array()
        .ok_or("spec.endpoints must be a list")?
    {
        for (key, value) in e.as_object().ok_or("an endpoint must be a map")? {
            let ok = match key.as_str() {
                "port" | "path" | "interval" | "scrapeTimeout" | "scheme" => value.is_string(),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "ServiceMonitor endpoint {key}: {value} is not valid"
                ));
            }
        }
    }
    Ok(())
}

fn check_custom_resource(object: &Value, crds: &[Value]) -> Result<(), String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let crd = crds
        .iter()
        .find(|c| c["spec"]["group"] == group && c["spec"]["names"]["kind"] == kind)
        .ok_or_else(|| format!("unknown apiVersion/kind {api_version} {kind}"))?;
    let served = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == version && v["served"] == true)
        .ok_or_else(|| format!("{kind}: version {version} is not served by its CRD"))?;
    let metadata = &object["metadata"];
    if !metadata["name"].is_string() {
        return Err("metadata.name: required".into());
    }
    if crd["spec"]["scope"] == "Namespaced" && !metadata["namespace"].is_string() {
        return Err("metadata.namespace: required for a namespaced kind".into());
    }
    let mut body = object.clone();
    for key in ["apiVersion", "kind", "metadata"] {
        body.as_object_mut().unwrap().remove(key);
    }
    let mut errors = Vec::new();
    check_structural(&body, &served["schema"]["openAPIV3Schema"], "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// A structural-schema check (the subset of OpenAPI v3 that Kubernetes allows in CRDs): types,
/// nullable, required, properties, additionalProperties, items, enum,
/// x-kubernetes-preserve-unknown-fields and x-kubernetes-int-or-string.
fn check_structural(value: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    let at = if path.is_empty() { "." } else { path };
    if value.is_null() {
        if schema["nullable"] != true {
            errors.push(format!("{at}: null is not allowed"));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    if schema["x-kubernetes-int-or-string"] == true {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(format!(
                "{at}: expected an integer or a string, got {value}"
            ));
        }
        return;
    }
    let kind = schema["type"].as_str();
    let ok = match kind {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        None => preserve,
        Some(other) => {
            errors.push(format!("{at}: unsupported schema type {other}"));
            return;
        }
    };
    if !ok {
        errors.push(format!(
            "{at}: expected {}, got {value}",
            kind.unwrap_or("a schema type")
        ));
        return;
    }
    match value {
        Value::Object(fields) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap_or_default();
                if !fields.contains_key(name) {
                    errors.push(format!("{path}.{name}: required"));
                }
            }
            for (key, field) in fields {
                let here = format!("{path}.{key}");
                if let Some(property) = schema["properties"].get(key) {
                    check_structural(field, property, &here, errors);
                } else if schema["additionalProperties"].is_object() {
                    check_structural(field, &schema["additionalProperties"], &here, errors);
                } else if !preserve && schema["additionalProperties"] != true {
                    errors.push(format!("{here}: field not in the CRD schema"));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if schema["items"].is_object() {
                    check_structural(item, &schema["items"], &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Checks of a rendered set of objects
// ---------------------------------------------------------------------------------------------

/// What a rendering is expected to be.
#[derive(Debug, Clone)]
struct Expect {
    namespace: &'static str,
    /// Replicas of the fedns Deployment, None for a set without one (member RBAC).
    replicas: Option<i64>,
    dns_service_type: &'static str,
    /// A PodDisruptionBudget must exist.
    pdb: bool,
}

const HOST: Expect = Expect {
    namespace: "kube-federation-system",
    replicas: Some(2),
    dns_service_type: "LoadBalancer",
    pdb: true,
};

const MEMBER: Expect = Expect {
    namespace: "kube-federation-system",
    replicas: None,
    dns_service_type: "",
    pdb: false,
};

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or_default()
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

fn id(o: &Value) -> String {
    format!("{} {}", kind(o), name(o))
}

fn of_kind<'a>(objects: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objects.iter().filter(move |o| kind(o) == k)
}

fn find<'a>(objects: &'a [Value], k: &str, n: &str) -> Option<&'a Value> {
    objects.iter().find(|o| kind(o) == k && name(o) == n)
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let Some(selector) = selector.as_object() else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

const CLUSTER_SCOPED: [&str; 4] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
];

/// Every problem of the set, one line each; empty when the set is good.
fn check_set(objects: &[Value], expect: &Expect) -> Vec<String> {
    let crds = crds();
    let mut problems = Vec::new();
    for o in objects {
        if let Err(e) = check_schema(o, &crds) {
            problems.push(format!("{}: {e}", id(o)));
        }
        let namespace = o["metadata"]["namespace"].as_str();
        if CLUSTER_SCOPED.contains(&kind(o)) {
            if namespace.is_some() {
                problems.push(format!("{}: cluster-scoped but has a namespace", id(o)));
            }
        } else if namespace != Some(expect.namespace) {
            problems.push(format!(
                "{}: namespace {namespace:?}, expected {}",
                id(o),
                expect.namespace
            ));
        }
        if kind(o) == "Namespace" && name(o) != expect.namespace {
            problems.push(format!("{}: not the control-plane namespace", id(o)));
        }
    }
    let deployments: Vec<&Value> = of_kind(objects, "Deployment").collect();
    match (expect.replicas, deployments.len()) {
        (None, 0) => {}
        (Some(_), 1) => check_deployment(objects, deployments[0], expect, &mut problems),
        (_, n) => problems.push(format!("{n} Deployments, expected one for fedns or none")),
    }
    check_services(objects, expect, &mut problems);
    check_pdbs(objects, expect, &mut problems);
    check_rbac(objects, &mut problems);
    problems
}

fn pod_labels(objects: &[Value]) -> Vec<&Value> {
    of_kind(objects, "Deployment")
        .map(|d| &d["spec"]["template"]["metadata"]["labels"])
        .collect()
}

/// The container ports of all pods: (name, number, protocol).
fn container_ports(objects: &[Value]) -> Vec<(String, i64, String)> {
    of_kind(objects, "Deployment")
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
        })
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["containerPort"].as_i64().unwrap_or_default(),
                p["protocol"].as_str().unwrap_or("TCP").to_owned(),
            )
        })
        .collect()
}

fn valid_port(p: &Value) -> bool {
    p.as_i64().is_some_and(|n| (1..=65535).contains(&n))
}

fn check_deployment(objects: &[Value], d: &Value, expect: &Expect, problems: &mut Vec<String>) {
    let mut fail = |m: String| problems.push(format!("{}: {m}", id(d)));
    let spec = &d["spec"];
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    if !labels_match(&spec["selector"]["matchLabels"], labels) {
        fail("selector.matchLabels do not match the pod template's labels".into());
    }
    let replicas = spec["replicas"].as_i64().unwrap_or(1);
    if Some(replicas) != expect.replicas {
        fail(format!(
            "replicas {replicas}, expected {:?}",
            expect.replicas
        ));
    }
    if replicas > 1 {
        let anti = &pod["affinity"]["podAntiAffinity"];
        let terms = anti["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| &t["podAffinityTerm"])
            .chain(
                anti["requiredDuringSchedulingIgnoredDuringExecution"]
                    .as_array()
                    .into_iter()
                    .flatten(),
            );
        let spread = pod["topologySpreadConstraints"]
            .as_array()
            .into_iter()
            .flatten();
        if !terms.chain(spread).any(|t| {
            t["topologyKey"] == "kubernetes.io/hostname"
                && labels_match(&t["labelSelector"]["matchLabels"], labels)
        }) {
            fail("no anti-affinity or spread by kubernetes.io/hostname for its own pods".into());
        }
    }
    let sa = pod["serviceAccountName"].as_str().unwrap_or("default");
    if find(objects, "ServiceAccount", sa).is_none() {
        fail(format!("serviceAccountName {sa} is not in the manifests"));
    }
    if pod["terminationGracePeriodSeconds"]
        .as_i64()
        .is_none_or(|s| s <= 2)
    {
        fail("terminationGracePeriodSeconds must exceed fedns's 2 s drain".into());
    }
    let pod_sc = &pod["securityContext"];
    let volumes: Vec<&Value> = pod["volumes"].as_array().into_iter().flatten().collect();
    for v in &volumes {
        if let Some(cm) = v["configMap"]["name"].as_str()
            && find(objects, "ConfigMap", cm).is_none()
        {
            fail(format!(
                "volume {} uses ConfigMap {cm}, not in the manifests",
                v["name"]
            ));
        }
    }
    for c in pod["containers"].as_array().into_iter().flatten() {
        let cname = c["name"].as_str().unwrap_or_default();
        let mut fail = |m: String| problems.push(format!("{} container {cname}: {m}", id(d)));
        let image = c["image"].as_str().unwrap_or_default();
        if image.is_empty() || image.ends_with(":latest") || !image.contains(':') {
            fail(format!("image {image:?} must name a pinned tag"));
        }
        let ports: Vec<&Value> = c["ports"].as_array().into_iter().flatten().collect();
        let mut seen = BTreeSet::new();
        for p in &ports {
            if !valid_port(&p["containerPort"]) {
                fail(format!(
                    "containerPort {} out of 1-65535",
                    p["containerPort"]
                ));
            }
            if let Some(n) = p["name"].as_str()
                && !seen.insert(n)
            {
                fail(format!("port name {n} declared twice"));
            }
        }
        let probe_port = |probe: &Value| -> Option<i64> {
            let port = &probe["httpGet"]["port"];
            ports
                .iter()
                .find(|p| (port.is_string() && p["name"] == *port) || p["containerPort"] == *port)
                .and_then(|p| p["containerPort"].as_i64())
        };
        let mut probe_ports = Vec::new();
        for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/healthz")] {
            let p = &c[probe];
            if p["httpGet"]["path"] != path {
                fail(format!(
                    "{probe} must GET {path}, got {}",
                    p["httpGet"]["path"]
                ));
            }
            match probe_port(p) {
                Some(n) => probe_ports.push(n),
                None => fail(format!(
                    "{probe} port {} is not a declared container port",
                    p["httpGet"]["port"]
                )),
            }
        }
        let sc = &c["securityContext"];
        let either = |key: &str| {
            if sc[key].is_null() {
                &pod_sc[key]
            } else {
                &sc[key]
            }
        };
        if either("runAsNonRoot") != true || either("runAsUser").as_i64() == Some(0) {
            fail("must run as non-root".into());
        }
        if either("seccompProfile")["type"] != "RuntimeDefault" {
            fail("seccompProfile must be RuntimeDefault".into());
        }
        if sc["readOnlyRootFilesystem"] != true {
            fail("root filesystem must be read-only".into());
        }
        if sc["allowPrivilegeEscalation"] != false {
            fail("allowPrivilegeEscalation must be false".into());
        }
        if !sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.contains(&json!("ALL")))
            || sc["capabilities"]["add"].is_array()
        {
            fail("capabilities: drop ALL and add none".into());
        }
        let env: Vec<&Value> = c["env"].as_array().into_iter().flatten().collect();
        if !env.iter().any(|e| {
            e["name"] == "POD_NAME" && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        }) {
            fail("POD_NAME from metadata.name (the Lease identity) is missing".into());
        }
        let mounts: Vec<&Value> = c["volumeMounts"].as_array().into_iter().flatten().collect();
        for m in &mounts {
            if !volumes.iter().any(|v| v["name"] == m["name"]) {
                fail(format!("volumeMount {} has no volume", m["name"]));
            }
        }
        let args: Vec<&str> = c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let cli = serve_cli();
        if args.first() != Some(&"serve") {
            fail(format!("args must start with serve: {args:?}"));
        }
        for a in args.iter().filter(|a| a.starts_with("--")) {
            let flag = a.split('=').next().unwrap();
            if !cli.contains(flag) {
                fail(format!("{flag} is not a flag of `fedns serve`"));
            }
        }
        for e in &env {
            let n = e["name"].as_str().unwrap_or_default();
            if n.starts_with("FEDNS_") && n != "FEDNS_LOG" && !cli.contains(n) {
                fail(format!(
                    "{n} is not an environment variable of `fedns serve`"
                ));
            }
        }
        let Some(config_path) = args
            .iter()
            .position(|a| *a == "--config")
            .and_then(|i| args.get(i + 1))
        else {
            fail("no --config".into());
            continue;
        };
        let secrets = tempfile::tempdir().unwrap();
        let text = config_text(objects, &volumes, &mounts, config_path)
            .and_then(|text| with_secret_files(&text, objects, &volumes, &mounts, secrets.path()));
        match text {
            Err(e) => fail(e),
            Ok(text) => {
                if let Err(e) = check_config(&text, &ports, &probe_ports) {
                    fail(format!("config {config_path}: {e}"));
                }
                if let Err(e) = check_zones(&text, objects, &volumes, &mounts) {
                    fail(format!("config {config_path}: {e}"));
                }
            }
        }
    }
}

/// `fedns serve --help`: its flags and environment variables.
fn serve_cli() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fedns"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The config file at `path` in the container, through its volume mount and ConfigMap.
fn config_text(
    objects: &[Value],
    volumes: &[&Value],
    mounts: &[&Value],
    path: &str,
) -> Result<String, String> {
    for m in mounts {
        let Some(file) = m["mountPath"]
            .as_str()
            .and_then(|dir| path.strip_prefix(dir))
            .map(|f| f.trim_start_matches('/'))
        else {
            continue;
        };
        let volume = volumes.iter().find(|v| v["name"] == m["name"]);
        let cm = volume
            .and_then(|v| v["configMap"]["name"].as_str())
            .and_then(|n| find(objects, "ConfigMap", n));
        return cm
            .and_then(|cm| cm["data"][file].as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("{path}: no ConfigMap key {file} behind the mount"));
    }
    Err(format!("{path} is not inside any volume mount"))
}

/// Every `tsigKeys[].secretFile` of the config must be a file of a mounted Secret volume, and a key
/// of that Secret when the manifests hold it. Returns the config with each `secretFile` pointing at
/// a copy in `dir` (the Secret's value; a placeholder for a Secret made outside the manifests), so
/// that fedns's own parser reads the key as the pod would.
fn with_secret_files(
    text: &str,
    objects: &[Value],
    volumes: &[&Value],
    mounts: &[&Value],
    dir: &Path,
) -> Result<String, String> {
    use base64::Engine as _;
    let mut config: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let Some(keys) = config["tsigKeys"].as_array_mut() else {
        return Ok(text.to_owned());
    };
    for (i, key) in keys.iter_mut().enumerate() {
        let Some(path) = key["secretFile"].as_str() else {
            continue;
        };
        let (mount, file) = mounts
            .iter()
            .find_map(|m| {
                let dir = m["mountPath"].as_str()?.trim_end_matches('/');
                let file = path.strip_prefix(dir)?.strip_prefix('/')?;
                Some((m, file.to_owned()))
            })
            .ok_or_else(|| {
                format!(
                    "tsigKeys {}: secretFile {path} is not in a volume mount",
                    key["name"]
                )
            })?;
        let secret_name = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .and_then(|v| v["secret"]["secretName"].as_str())
            .ok_or_else(|| format!("tsigKeys {}: {path} is not in a Secret volume", key["name"]))?;
        let value = match find(objects, "Secret", secret_name) {
            None => "cGxhY2Vob2xkZXItc2VjcmV0".to_owned(),
            Some(secret) => match (
                secret["stringData"][&file].as_str(),
                secret["data"][&file].as_str(),
            ) {
                (Some(text), _) => text.to_owned(),
                (None, Some(b64)) => String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| format!("Secret {secret_name} {file}: {e}"))?,
                )
                .map_err(|e| format!("Secret {secret_name} {file}: {e}"))?,
                (None, None) => {
                    return Err(format!(
                        "tsigKeys {}: Secret {secret_name} has no key {file}",
                        key["name"]
                    ));
                }
            },
        };
        let copy = dir.join(format!("tsig-{i}"));
        std::fs::write(&copy, value).unwrap();
        key["secretFile"] = json!(copy.display().to_string());
    }
    serde_yaml_ng::to_string(&config).map_err(|e| e.to_string())
}

/// The config's `zones` directory, if any, must be a mounted ConfigMap of the manifests whose every
/// file parses as a zone with fedns's own zone-file parser.
fn check_zones(
    text: &str,
    objects: &[Value],
    volumes: &[&Value],
    mounts: &[&Value],
) -> Result<(), String> {
    let config: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let Some(zones) = config["zones"].as_str() else {
        return Ok(());
    };
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"].as_str().map(|p| p.trim_end_matches('/')) == Some(zones))
        .ok_or_else(|| format!("zones {zones} is not a volume mount"))?;
    let cm = volumes
        .iter()
        .find(|v| v["name"] == mount["name"])
        .and_then(|v| v["configMap"]["name"].as_str())
        .and_then(|n| find(objects, "ConfigMap", n))
        .ok_or_else(|| format!("zones {zones}: no ConfigMap behind the mount"))?;
    let dir = tempfile::tempdir().unwrap();
    for (file, zone) in cm["data"].as_object().into_iter().flatten() {
        std::fs::write(dir.path().join(file), zone.as_str().unwrap_or_default()).unwrap();
    }
    let mut zone_dir = fedns::dns::zonefile::ZoneDir::new(Some(dir.path().to_owned()));
    zone_dir.refresh();
    if let Some(e) = zone_dir.errors().first() {
        return Err(format!("zones {zones}: {e}"));
    }
    if zone_dir.zones().is_empty() {
        return Err(format!("zones {zones}: the ConfigMap holds no zone"));
    }
    Ok(())
}

/// Parses the config with fedns's own parser, then checks it listens where the pod expects it.
fn check_config(text: &str, ports: &[&Value], probe_ports: &[i64]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let args = fedns::config::ServeArgs {
        config: Some(path),
        // The in-cluster config in the pod; a placeholder here (resolve does not read it).
        kubeconfig: Some("/var/run/in-cluster".into()),
        ..Default::default()
    };
    let cfg = args.resolve().map_err(|e| e.to_string())?;
    let declared = |port: u16, protocol: &str| {
        ports.iter().any(|p| {
            p["containerPort"] == port && p["protocol"].as_str().unwrap_or("TCP") == protocol
        })
    };
    for addr in &cfg.dns_listen {
        if !addr.ip().is_unspecified() {
            return Err(format!(
                "dnsListen {addr} is not reachable from outside the pod"
            ));
        }
        if !declared(addr.port(), "UDP") || !declared(addr.port(), "TCP") {
            return Err(format!(
                "dnsListen port {} is not a UDP and TCP container port",
                addr.port()
            ));
        }
    }
    let admin = cfg.admin_listen;
    if !admin.ip().is_unspecified() {
        return Err(format!(
            "adminListen {admin}: the kubelet's probes cannot reach it"
        ));
    }
    if !probe_ports.iter().all(|p| *p == i64::from(admin.port())) {
        return Err(format!(
            "probes use ports {probe_ports:?}, fedns's admin server listens on {}",
            admin.port()
        ));
    }
    Ok(())
}

fn check_services(objects: &[Value], expect: &Expect, problems: &mut Vec<String>) {
    let pods = pod_labels(objects);
    let cports = container_ports(objects);
    let mut dns = false;
    let mut metrics = false;
    for s in of_kind(objects, "Service") {
        let mut fail = |m: String| problems.push(format!("{}: {m}", id(s)));
        let selector = &s["spec"]["selector"];
        if !pods.iter().any(|l| labels_match(selector, l)) {
            fail("selector matches no pod of the manifests".into());
        }
        let ports: Vec<&Value> = s["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let mut targets = Vec::new();
        for p in &ports {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            if !valid_port(&p["port"]) {
                fail(format!("port {} out of 1-65535", p["port"]));
            }
            let target = if p["targetPort"].is_null() {
                &p["port"]
            } else {
                &p["targetPort"]
            };
            let found = cports.iter().find(|(n, num, proto)| {
                proto == protocol
                    && (target.as_str() == Some(n.as_str()) || target.as_i64() == Some(*num))
            });
            match found {
                Some((_, num, _)) => targets.push(*num),
                None => fail(format!(
                    "targetPort {target} ({protocol}) is not a container port of the pods"
                )),
            }
        }
        let has = |port: i64, protocol: &str| {
            ports
                .iter()
                .any(|p| p["port"] == port && p["protocol"].as_str().unwrap_or("TCP") == protocol)
        };
        if has(53, "UDP") && has(53, "TCP") {
            dns = true;
            if s["spec"]["type"].as_str().unwrap_or("ClusterIP") != expect.dns_service_type {
                fail(format!(
                    "DNS Service type {}, expected {}",
                    s["spec"]["type"], expect.dns_service_type
                ));
            }
        }
        let annotations = &s["metadata"]["annotations"];
        if annotations["prometheus.io/scrape"] == "true" {
            metrics = true;
            let port = annotations["prometheus.io/port"]
                .as_str()
                .and_then(|p| p.parse::<i64>().ok());
            if port.is_none_or(|p| !targets.contains(&p))
                || annotations["prometheus.io/path"] != "/metrics"
            {
                fail(
                    "prometheus.io annotations must name the admin container port and /metrics"
                        .into(),
                );
            }
        }
    }
    if expect.replicas.is_some() && !dns {
        problems.push("no Service exposes DNS on UDP and TCP 53".into());
    }
    if expect.replicas.is_some() && !metrics {
        problems.push("no Service is annotated for Prometheus scraping".into());
    }
}

fn check_pdbs(objects: &[Value], expect: &Expect, problems: &mut Vec<String>) {
    let pdbs: Vec<&Value> = of_kind(objects, "PodDisruptionBudget").collect();
    if expect.pdb && pdbs.is_empty() {
        problems.push("no PodDisruptionBudget".into());
    }
    for p in pdbs {
        let selector = &p["spec"]["selector"]["matchLabels"];
        let Some(d) = of_kind(objects, "Deployment")
            .find(|d| labels_match(selector, &d["spec"]["template"]["metadata"]["labels"]))
        else {
            problems.push(format!(
                "{}: selector matches no pod of the manifests",
                id(p)
            ));
            continue;
        };
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        if p["spec"]["minAvailable"]
            .as_i64()
            .is_none_or(|m| m < 1 || m >= replicas)
        {
            problems.push(format!(
                "{}: minAvailable {} must be at least 1 and below the {replicas} replicas \
                 (else node drains block)",
                id(p),
                p["spec"]["minAvailable"]
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RBAC
// ---------------------------------------------------------------------------------------------

const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// Resources per API group that fedns's roles may name: the built-in ones it reads or propagates,
/// the CRDs in deploy/crds, and the KubeFed kinds of the propagation spec.
fn known_resources() -> BTreeMap<String, BTreeSet<String>> {
    let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut add = |group: &str, resources: &[&str]| {
        known
            .entry(group.to_owned())
            .or_default()
            .extend(resources.iter().map(|r| r.to_string()));
    };
    add(
        "",
        &[
            "namespaces",
            "services",
            "endpoints",
            "nodes",
            "pods",
            "configmaps",
            "secrets",
            "serviceaccounts",
            "events",
        ],
    );
    add(
        "apps",
        &["deployments", "replicasets", "statefulsets", "daemonsets"],
    );
    add("batch", &["jobs", "cronjobs"]);
    add("networking.k8s.io", &["ingresses"]);
    add("discovery.k8s.io", &["endpointslices"]);
    add("coordination.k8s.io", &["leases"]);
    add("events.k8s.io", &["events"]);
    add(
        "rbac.authorization.k8s.io",
        &[
            "clusterroles",
            "clusterrolebindings",
            "roles",
            "rolebindings",
        ],
    );
    add(
        "core.kubefed.io",
        &["kubefedconfigs", "federatedtypeconfigs"],
    );
    add("scheduling.kubefed.io", &["replicaschedulingpreferences"]);
    for crd in crds() {
        add(
            crd["spec"]["group"].as_str().unwrap(),
            &[crd["spec"]["names"]["plural"].as_str().unwrap()],
        );
    }
    known
}

/// A permission: (namespace or "" for cluster-wide, group, resource, verb).
type Grant = (String, String, String, String);

/// What the ServiceAccount `sa_name` in `namespace` is granted by the bound roles of the set.
fn grants(objects: &[Value], namespace: &str, sa_name: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for b in of_kind(objects, "ClusterRoleBinding").chain(of_kind(objects, "RoleBinding")) {
        let bound = b["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == sa_name && s["namespace"] == namespace
        });
        let role_kind = b["roleRef"]["kind"].as_str().unwrap_or_default();
        let Some(role) = (bound)
            .then(|| {
                find(
                    objects,
                    role_kind,
                    b["roleRef"]["name"].as_str().unwrap_or_default(),
                )
            })
            .flatten()
        else {
            continue;
        };
        let scope = if kind(b) == "RoleBinding" {
            b["metadata"]["namespace"].as_str().unwrap_or_default()
        } else {
            ""
        };
        for rule in role["rules"].as_array().into_iter().flatten() {
            for g in rule["apiGroups"].as_array().into_iter().flatten() {
                for r in rule["resources"].as_array().into_iter().flatten() {
                    for v in rule["verbs"].as_array().into_iter().flatten() {
                        out.insert((
                            scope.to_owned(),
                            g.as_str().unwrap().to_owned(),
                            r.as_str().unwrap().to_owned(),
                            v.as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
        }
    }
    out
}

fn granted(
    grants: &BTreeSet<Grant>,
    namespace: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> bool {
    let wildcard = match resource.split_once('/') {
        Some((_, sub)) => format!("*/{sub}"),
        None => "*".to_owned(),
    };
    [namespace, ""].iter().any(|scope| {
        [resource, wildcard.as_str()].iter().any(|r| {
            grants.contains(&(scope.to_string(), group.into(), r.to_string(), verb.into()))
        })
    })
}

/// What fedns on the host needs (namespaced ones in its control-plane namespace, "" scope for
/// cluster-wide): its watchers, status writers, leader election and propagation controller.
const HOST_NEEDS: &[(bool, &str, &str, &[&str])] = &[
    (
        false,
        "multiclusterdns.kubefed.io",
        "servicednsrecords",
        &["list", "watch"],
    ),
    (
        false,
        "multiclusterdns.kubefed.io",
        "ingressdnsrecords",
        &["list", "watch"],
    ),
    (
        false,
        "multiclusterdns.kubefed.io",
        "servicednsrecords/status",
        &["patch"],
    ),
    (
        false,
        "multiclusterdns.kubefed.io",
        "ingressdnsrecords/status",
        &["patch"],
    ),
    (
        false,
        "multiclusterdns.kubefed.io",
        "dnsendpoints",
        &["get", "create", "patch", "delete"],
    ),
    (false, "events.k8s.io", "events", &["create", "patch"]),
    (false, "", "namespaces", &["get", "list", "watch"]),
    (
        false,
        "types.kubefed.io",
        "federateddeployments",
        &["get", "list", "watch", "update", "patch"],
    ),
    (
        false,
        "types.kubefed.io",
        "federatedservices/status",
        &["update", "patch"],
    ),
    (
        false,
        "scheduling.kubefed.io",
        "replicaschedulingpreferences",
        &["get", "list", "watch"],
    ),
    (
        false,
        "scheduling.kubefed.io",
        "replicaschedulingpreferences/status",
        &["patch"],
    ),
    (
        true,
        "multiclusterdns.kubefed.io",
        "domains",
        &["list", "watch"],
    ),
    (
        true,
        "core.kubefed.io",
        "kubefedclusters",
        &["list", "watch"],
    ),
    (
        true,
        "core.kubefed.io",
        "kubefedclusters/status",
        &["patch"],
    ),
    (
        true,
        "core.kubefed.io",
        "federatedtypeconfigs",
        &["list", "watch"],
    ),
    (
        true,
        "core.kubefed.io",
        "federatedtypeconfigs/status",
        &["patch"],
    ),
    (
        true,
        "core.kubefed.io",
        "kubefedconfigs",
        &["get", "list", "watch"],
    ),
    (true, "", "secrets", &["get", "list", "watch"]),
    (
        true,
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// What the host may write at all; anything else written is a least-privilege violation.
const HOST_MAY_WRITE: &[(&str, &str)] = &[
    ("multiclusterdns.kubefed.io", "dnsendpoints"),
    ("events.k8s.io", "events"),
    ("coordination.k8s.io", "leases"),
    ("types.kubefed.io", "*"),
];

/// What fedns needs in a member cluster: watchers, the replica scheduler and propagation of
/// the default federated types.
const MEMBER_NEEDS: &[(&str, &str, &[&str])] = &[
    ("", "services", &["list", "watch"]),
    ("", "endpoints", &["list", "watch"]),
    ("", "nodes", &["get", "list", "watch"]),
    ("", "pods", &["list"]),
    ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
    (
        "networking.k8s.io",
        "ingresses",
        &["list", "watch", "create", "update", "patch", "delete"],
    ),
    (
        "",
        "namespaces",
        &["get", "create", "update", "patch", "delete"],
    ),
    (
        "",
        "configmaps",
        &["get", "create", "update", "patch", "delete"],
    ),
    (
        "",
        "secrets",
        &["get", "create", "update", "patch", "delete"],
    ),
    (
        "",
        "serviceaccounts",
        &["get", "create", "update", "patch", "delete"],
    ),
    (
        "",
        "services",
        &["get", "create", "update", "patch", "delete"],
    ),
    (
        "apps",
        "deployments",
        &["get", "create", "update", "patch", "delete"],
    ),
    (
        "apps",
        "replicasets",
        &["get", "create", "update", "patch", "delete"],
    ),
    (
        "batch",
        "jobs",
        &["get", "create", "update", "patch", "delete"],
    ),
    (
        "rbac.authorization.k8s.io",
        "clusterroles",
        &["get", "create", "update", "patch", "delete"],
    ),
];

fn check_rbac(objects: &[Value], problems: &mut Vec<String>) {
    let known = known_resources();
    for role in of_kind(objects, "ClusterRole").chain(of_kind(objects, "Role")) {
        let mut fail = |m: String| problems.push(format!("{}: {m}", id(role)));
        for rule in role["rules"].as_array().into_iter().flatten() {
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if let Some(urls) = rule["nonResourceURLs"].as_array() {
                if kind(role) != "ClusterRole" {
                    fail("nonResourceURLs only work in a ClusterRole".into());
                }
                if verbs != ["get"]
                    || urls
                        .iter()
                        .any(|u| !matches!(u.as_str(), Some("/healthz" | "/readyz")))
                {
                    fail(format!(
                        "nonResourceURLs {urls:?} {verbs:?}: only GET /healthz and /readyz"
                    ));
                }
                continue;
            }
            for v in &verbs {
                if !VERBS.contains(v) {
                    fail(format!(
                        "verb {v:?} is not a Kubernetes verb (or is a wildcard)"
                    ));
                }
            }
            for g in rule["apiGroups"].as_array().into_iter().flatten() {
                let g = g.as_str().unwrap_or("*");
                for r in rule["resources"].as_array().into_iter().flatten() {
                    let r = r.as_str().unwrap_or_default();
                    let (base, sub) = r.split_once('/').map_or((r, None), |(b, s)| (b, Some(s)));
                    let resource_ok = if base == "*" {
                        g == "types.kubefed.io"
                    } else {
                        known.get(g).is_some_and(|k| k.contains(base))
                    };
                    if !resource_ok {
                        fail(format!(
                            "resource {r:?} of group {g:?} is unknown (or a wildcard)"
                        ));
                    }
                    if sub.is_some_and(|s| s != "status") {
                        fail(format!("subresource of {r:?} is not status"));
                    }
                }
            }
        }
    }
    for b in of_kind(objects, "ClusterRoleBinding").chain(of_kind(objects, "RoleBinding")) {
        let mut fail = |m: String| problems.push(format!("{}: {m}", id(b)));
        let role_kind = b["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = b["roleRef"]["name"].as_str().unwrap_or_default();
        match find(objects, role_kind, role_name) {
            None => fail(format!(
                "roleRef {role_kind} {role_name} is not in the manifests"
            )),
            Some(role) if role["metadata"]["namespace"] != b["metadata"]["namespace"] => {
                fail("roleRef is in another namespace".into())
            }
            Some(_) => {}
        }
        for s in b["subjects"].as_array().into_iter().flatten() {
            let sa = of_kind(objects, "ServiceAccount").find(|a| {
                a["metadata"]["name"] == s["name"] && a["metadata"]["namespace"] == s["namespace"]
            });
            if s["kind"] != "ServiceAccount" || sa.is_none() {
                fail(format!(
                    "subject {s} is not a ServiceAccount of the manifests"
                ));
            }
        }
    }
    // The host: fedns's own ServiceAccount.
    if let Some(d) = of_kind(objects, "Deployment").next() {
        let ns = d["metadata"]["namespace"].as_str().unwrap_or_default();
        let sa = d["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let g = grants(objects, ns, sa);
        for (namespaced, group, resource, verbs) in HOST_NEEDS {
            for verb in *verbs {
                let scope = if *namespaced { ns } else { "" };
                if !granted(&g, scope, group, resource, verb) {
                    problems.push(format!("fedns ({sa}) lacks {verb} {group}/{resource}"));
                }
            }
        }
        for (scope, group, resource, verb) in &g {
            let status = resource.ends_with("/status");
            if WRITES.contains(&verb.as_str())
                && !status
                && !HOST_MAY_WRITE
                    .iter()
                    .any(|(mg, mr)| mg == group && mr == resource)
            {
                problems.push(format!(
                    "least privilege: fedns ({sa}) may {verb} {group}/{resource}"
                ));
            }
            if resource == "secrets" && scope.is_empty() {
                problems.push(format!(
                    "least privilege: fedns ({sa}) reads Secrets cluster-wide"
                ));
            }
        }
    }
    // Members: the ServiceAccounts bound to a ClusterRole that grants the member watchers' reads.
    for role in of_kind(objects, "ClusterRole")
        .filter(|r| name(r).ends_with("-member") || name(r) == "fedns-member")
    {
        for b in of_kind(objects, "ClusterRoleBinding")
            .filter(|b| b["roleRef"]["name"] == role["metadata"]["name"])
        {
            for s in b["subjects"].as_array().into_iter().flatten() {
                let g = grants(
                    objects,
                    s["namespace"].as_str().unwrap_or_default(),
                    s["name"].as_str().unwrap_or_default(),
                );
                for (group, resource, verbs) in MEMBER_NEEDS {
                    for verb in *verbs {
                        if !granted(&g, "", group, resource, verb) {
                            problems.push(format!(
                                "member {}: lacks {verb} {group}/{resource}",
                                s["name"]
                            ));
                        }
                    }
                }
                for (_, group, resource, verb) in &g {
                    let needed = MEMBER_NEEDS.iter().any(|(mg, mr, mv)| {
                        mg == group
                            && mr == resource
                            && (mv.contains(&verb.as_str()) || !WRITES.contains(&verb.as_str()))
                    });
                    if !(needed || resource == "nodes" || resource == "pods") {
                        problems.push(format!(
                            "least privilege: member {} may {verb} {group}/{resource}",
                            s["name"]
                        ));
                    }
                    if WRITES.contains(&verb.as_str())
                        && (resource == "nodes" || resource == "pods")
                    {
                        problems.push(format!(
                            "least privilege: member {} may {verb} {group}/{resource}",
                            s["name"]
                        ));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The manifests
// ---------------------------------------------------------------------------------------------

fn assert_clean(what: &str, objects: &[Value], expect: &Expect) {
    let problems = check_set(objects, expect);
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// Every CRD of deploy/crds is in the set, unchanged.
fn assert_has_the_crds(what: &str, objects: &[Value]) {
    for crd in crds() {
        let rendered = find(objects, "CustomResourceDefinition", name(&crd));
        assert_eq!(
            rendered.map(|r| &r["spec"]),
            Some(&crd["spec"]),
            "{what}: CRD {} missing or changed",
            name(&crd)
        );
    }
}

#[test]
#[cfg_attr(
    fedns_missing_kustomize,
    ignore = "needs kubectl kustomize / Helm; FEDNS_SKIP_MISSING_TOOLS=1 and missing"
)]
fn kustomize_base_renders_and_validates() {
    require_kustomize();
    let objects = kustomize("kustomize/base");
    assert_clean("base", &objects, &HOST);
    assert_has_the_crds("base", &objects);
}

#[test]
#[cfg_attr(
    fedns_missing_kustomize,
    ignore = "needs kubectl kustomize / Helm; FEDNS_SKIP_MISSING_TOOLS=1 and missing"
)]
fn single_replica_dev_overlay_is_one_cluster_ip_replica_without_a_pdb() {
    require_kustomize();
    let objects = kustomize("kustomize/overlays/single-replica-dev");
    let expect = Expect {
        replicas: Some(1),
        dns_service_type: "ClusterIP",
        pdb: false,
        ..HOST
    };
    assert_clean("single-replica-dev", &objects, &expect);
    assert_eq!(of_kind(&objects, "PodDisruptionBudget").count(), 0);
}

#[test]
#[cfg_attr(
    fedns_missing_kustomize,
    ignore = "needs kubectl kustomize / Helm; FEDNS_SKIP_MISSING_TOOLS=1 and missing"
)]
fn production_overlay_is_three_replicas_spread_over_zones() {
    require_kustomize();
    let objects = kustomize("kustomize/overlays/production");
    let expect = Expect {
        replicas: Some(3),
        ..HOST
    };
    assert_clean("production", &objects, &expect);
    let d = find(&objects, "Deployment", "fedns").unwrap();
    let spread = &d["spec"]["template"]["spec"]["topologySpreadConstraints"];
    assert!(
        spread
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["topologyKey"] == "topology.kubernetes.io/zone"),
        "{spread}"
    );
    let pdb = find(&objects, "PodDisruptionBudget", "fedns").unwrap();
    assert_eq!(pdb["spec"]["minAvailable"], 2);
}

#[test]
#[cfg_attr(
    fedns_missing_kustomize,
    ignore = "needs kubectl kustomize / Helm; FEDNS_SKIP_MISSING_TOOLS=1 and missing"
)]
fn member_rbac_renders_and_grants_what_the_watchers_and_propagation_need() {
    require_kustomize();
    let objects = kustomize("rbac/member");
    assert_clean("member RBAC", &objects, &MEMBER);
    assert!(find(&objects, "ClusterRole", "fedns-member").is_some());
    let token = find(&objects, "Secret", "fedns-member-token").unwrap();
    assert_eq!(token["type"], "kubernetes.io/service-account-token");
}

fn rules_of<'a>(objects: &'a [Value], k: &'a str, suffix: &str) -> &'a Value {
    &of_kind(objects, k)
        .find(|o| name(o).ends_with(suffix))
        .unwrap_or_else(|| panic!("no {k} *{suffix}"))["rules"]
}

#[test]
#[cfg_attr(
    any(fedns_missing_helm, fedns_missing_kustomize),
    ignore = "needs kubectl kustomize / Helm; FEDNS_SKIP_MISSING_TOOLS=1 and missing"
)]
fn helm_chart_with_default_values_renders_lints_and_validates() {
    require_helm();
    require_kustomize();
    let render = helm(json!({}), "fedns", "kube-federation-system");
    let errors: Vec<&Value> = render.lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap_or(3) >= 2)
        .chain(render.lint["errors"].as_array().unwrap())
        .collect();
    assert!(errors.is_empty(), "helm lint --strict: {errors:?}");
    let mut objects = render.objects.clone();
    // The chart does not own the namespace (helm install --create-namespace does).
    objects.extend(render.crds.clone());
    assert_clean("helm defaults", &objects, &HOST);
    assert_has_the_crds("helm chart crds/", &render.crds);
    // The chart grants exactly what the kustomize base grants.
    {
        let base = kustomize("kustomize/base");
        for k in ["ClusterRole", "Role"] {
            assert_eq!(
                rules_of(&objects, k, "fedns"),
                rules_of(&base, k, "fedns"),
                "{k} rules differ"
            );
        }
    }
}

#[test]
#[cfg_attr(
    any(fedns_missing_helm, fedns_missing_kustomize),
    ignore = "needs kubectl kustomize / Helm; FEDNS_SKIP_MISSING_TOOLS=1 and missing"
)]
fn helm_chart_with_overrides_renders_and_validates() {
    require_helm();
    require_kustomize();
    let values = json!({
        "replicaCount": 3,
        "fullnameOverride": "dns",
        "memberRbac": {"create": true},
        "podAntiAffinity": "hard",
        "image": {"tag": "0.2.0"},
        "ports": {"dns": 10053, "admin": 19053},
        "service": {
            "dns": {"type": "NodePort", "externalTrafficPolicy": "Local"},
            "admin": {"annotations": {
                "prometheus.io/scrape": "true", "prometheus.io/port": "19053",
                "prometheus.io/path": "/metrics"}}
        },
        "config": {"logFormat": "text", "gracePeriod": "1m"},
        "logLevel": "debug",
        "extraEnv": [{"name": "FEDNS_UPSTREAM_RESOLVER", "value": "10.0.0.10:53"}],
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "fedns"}}}],
        "podDisruptionBudget": {"minAvailable": 2},
    });
    let render = helm(values, "federation", "fed-dns");
    let mut objects = render.objects;
    objects.extend(render.crds);
    let expect = Expect {
        namespace: "fed-dns",
        replicas: Some(3),
        dns_service_type: "NodePort",
        pdb: true,
    };
    assert_clean("helm overrides", &objects, &expect);
    let d = find(&objects, "Deployment", "dns").unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/fedns/fedns:0.2.0"
    );
    assert!(find(&objects, "ClusterRole", "dns-member").is_some());
    // The member ClusterRole of the chart is the one of deploy/rbac/member.
    {
        let member = kustomize("rbac/member");
        assert_eq!(
            rules_of(&objects, "ClusterRole", "-member"),
            rules_of(&member, "ClusterRole", "-member")
        );
    }
    // A single replica gets no PodDisruptionBudget (it would block node drains).
    let single = helm(
        json!({"replicaCount": 1}),
        "fedns",
        "kube-federation-system",
    );
    assert_eq!(of_kind(&single.objects, "PodDisruptionBudget").count(), 0);
}

/// A Helm rendering that must fail: Helm's error.
fn helm_error(values: Value) -> String {
    let out = run_helm(&values, "fedns", "kube-federation-system");
    assert!(!out.status.success(), "rendered with {values}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const TSIG_SECRET: &str = "c2VjcmV0LWZvci10aGUtZmVkbnMtZGVtby1vbmx5IQ==";

/// The fedns pod's TSIG volume, its mount, and the config file as YAML.
fn tsig_parts(objects: &[Value]) -> (Value, Value, Value) {
    let pod = &find(objects, "Deployment", "fedns").unwrap()["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tsig")
        .expect("a tsig volume")
        .clone();
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tsig")
        .expect("a tsig volume mount")
        .clone();
    let config = find(objects, "ConfigMap", "fedns-config").unwrap()["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    (volume, mount, serde_yaml_ng::from_str(&config).unwrap())
}

#[test]
#[cfg_attr(
    any(fedns_missing_helm, fedns_missing_kustomize),
    ignore = "needs kubectl kustomize / Helm; FEDNS_SKIP_MISSING_TOOLS=1 and missing"
)]
fn helm_chart_mounts_the_tsig_secret_and_writes_the_transfer_config() {
    require_helm();
    require_kustomize();
    let transfer = json!({
        "allow": [{"network": "192.0.2.0/24", "key": "fedns-xfr"}],
        "notify": [{"address": "192.0.2.10:53", "key": "fedns-xfr"}, "192.0.2.11:53"],
        "notifySource": "192.0.2.53",
        "journal": 500,
    });
    // An existing Secret, the key's secret under its data key `secret`. (The checks of
    // assert_clean resolve the config with fedns's parser, the secretFile inside the mount.)
    let render = helm(
        json!({"transfer": transfer, "tsig": {
            "keys": [{"name": "fedns-xfr", "algorithm": "hmac-sha256", "secretKey": "secret"}],
            "existingSecret": "fedns-tsig"}}),
        "fedns",
        "kube-federation-system",
    );
    let lint: Vec<&Value> = render.lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap_or(3) >= 2)
        .collect();
    assert!(lint.is_empty(), "helm lint --strict: {lint:?}");
    let mut objects = render.objects;
    objects.extend(render.crds);
    assert_clean("helm tsig existingSecret", &objects, &HOST);
    let (volume, mount, config) = tsig_parts(&objects);
    assert_eq!(volume["secret"]["secretName"], "fedns-tsig");
    assert_eq!(mount["mountPath"], "/etc/fedns-tsig");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        config["tsigKeys"],
        json!([{"name": "fedns-xfr", "algorithm": "hmac-sha256",
                "secretFile": "/etc/fedns-tsig/secret"}])
    );
    assert_eq!(config["transfer"], transfer);
    assert_eq!(
        of_kind(&objects, "Secret").count(),
        0,
        "the Secret is not ours"
    );
    // The chart creates the Secret from the values, and rolls the pods when it changes.
    let render = helm(
        json!({"transfer": transfer, "tsig": {
            "keys": [{"name": "fedns-xfr", "algorithm": "hmac-sha256"}],
            "secrets": {"fedns-xfr": TSIG_SECRET}}}),
        "fedns",
        "kube-federation-system",
    );
    let mut objects = render.objects;
    objects.extend(render.crds);
    assert_clean("helm tsig secrets", &objects, &HOST);
    let secret = find(&objects, "Secret", "fedns-tsig").expect("the chart's Secret");
    assert_eq!(secret["stringData"]["fedns-xfr"], TSIG_SECRET);
    let (volume, _, config) = tsig_parts(&objects);
    assert_eq!(volume["secret"]["secretName"], "fedns-tsig");
    assert_eq!(
        config["tsigKeys"][0]["secretFile"],
        "/etc/fedns-tsig/fedns-xfr"
    );
    let d = find(&objects, "Deployment", "fedns").unwrap();
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["checksum/tsig"].is_string(),
        "{d}"
    );
    // Keys without a Secret, or a created Secret missing a key, do not render.
    let e = helm_error(json!({"tsig": {"keys": [{"name": "k", "algorithm": "hmac-sha256"}]}}));
    assert!(e.contains("tsig.existingSecret"), "{e}");
    let e = helm_error(
        json!({"tsig": {"keys": [{"name": "k", "algorithm": "hmac-sha256"}],
        "secrets": {"other": TSIG_SECRET}}}),
    );
    assert!(
        e.contains("tsig.secrets has no") && e.contains("\"k\""),
        "{e}"
    );
    // Without tsig values: no volume, no tsigKeys, no transfer.
    let plain = helm(json!({}), "fedns", "kube-federation-system").objects;
    let config = find(&plain, "ConfigMap", "fedns-config").unwrap()["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !config.contains("tsigKeys") && !config.contains("transfer"),
        "{config}"
    );
}

const ACME_ZONE: &str = "$ORIGIN acme.com.\n$TTL 300\n\
@ IN SOA ns1.acme.com. hostmaster.acme.com. 1 3600 600 86400 30\n\
@ IN NS ns1.acme.com.\nns1 IN A 10.0.0.53\n\
nginx IN CNAME nginx.test.galactic.svc.example.com.\n";

#[test]
fn helm_chart_serves_zone_files_and_takes_extra_args_volumes_a_digest_a_monitor_and_dual_stack() {
    require_helm();
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let values = json!({
        "image": {"digest": digest},
        "zoneFiles": {"acme.com.zone": ACME_ZONE},
        "extraArgs": ["--shutdown-drain", "5s", "--log-level", "debug"],
        "extraVolumes": [{"name": "members", "secret": {"secretName": "member-kubeconfigs"}}],
        "extraVolumeMounts": [{"name": "members", "mountPath": "/etc/fedns-members", "readOnly": true}],
        "serviceMonitor": {"enabled": true, "interval": "15s", "labels": {"release": "prom"}},
        "service": {"dns": {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"]}},
    });
    let render = helm(values.clone(), "fedns", "kube-federation-system");
    let lint_errors: Vec<&Value> = render.lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap_or(3) >= 2)
        .collect();
    assert!(
        lint_errors.is_empty(),
        "helm lint --strict: {lint_errors:?}"
    );
    let mut objects = render.objects.clone();
    objects.extend(render.crds.clone());
    // Includes: the zones directory of the config is a mounted ConfigMap whose files parse.
    assert_clean("helm extras", &objects, &HOST);
    let d = find(&objects, "Deployment", "fedns").unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], format!("ghcr.io/fedns/fedns@{digest}"));
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        [
            "serve",
            "--config",
            "/etc/fedns/config.yaml",
            "--shutdown-drain",
            "5s",
            "--log-level",
            "debug"
        ]
    );
    let mounts = c["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"] == "/etc/fedns-members")
    );
    assert!(mounts.iter().any(|m| m["mountPath"] == "/etc/fedns-zones"));
    let zones = find(&objects, "ConfigMap", "fedns-zones").expect("the zones ConfigMap");
    assert_eq!(zones["data"]["acme.com.zone"], ACME_ZONE);
    let config = find(&objects, "ConfigMap", "fedns-config").unwrap();
    assert!(
        config["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .contains("zones: /etc/fedns-zones")
    );
    let monitor = find(&objects, "ServiceMonitor", "fedns").expect("a ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");
    // It selects the admin Service, by a port that Service has.
    let admin = find(&objects, "Service", "fedns-admin").unwrap();
    assert!(labels_match(
        &monitor["spec"]["selector"]["matchLabels"],
        &admin["metadata"]["labels"]
    ));
    let port = &monitor["spec"]["endpoints"][0]["port"];
    assert!(
        admin["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == *port)
    );
    let dns = find(&objects, "Service", "fedns-dns").unwrap();
    assert_eq!(dns["spec"]["ipFamilyPolicy"], "PreferDualStack");
    assert_eq!(dns["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
    // The DNS Service's fixed address is the in-zone name server's address.
    let mut fixed = values.clone();
    fixed["service"]["dns"]["address"] = json!("192.0.2.53");
    let objects = helm(fixed, "fedns", "kube-federation-system").objects;
    let dns = find(&objects, "Service", "fedns-dns").unwrap();
    assert_eq!(dns["spec"]["loadBalancerIP"], "192.0.2.53");
    let config = find(&objects, "ConfigMap", "fedns-config").unwrap();
    let config = config["data"]["config.yaml"].as_str().unwrap();
    assert!(
        config.contains("nameServerAddresses: [\"192.0.2.53\"]"),
        "{config}"
    );
    // Without the values, none of it.
    let plain = helm(json!({}), "fedns", "kube-federation-system");
    assert!(find(&plain.objects, "ServiceMonitor", "fedns").is_none());
    assert!(find(&plain.objects, "ConfigMap", "fedns-zones").is_none());
    // A zone file that does not parse is caught before it reaches a cluster.
    let mut broken = values;
    broken["zoneFiles"]["acme.com.zone"] = json!("$ORIGIN acme.com.\nnginx IN CNAME\n");
    let mut objects = helm(broken, "fedns", "kube-federation-system").objects;
    objects.extend(render.crds);
    let problems = check_set(&objects, &HOST).join("\n");
    assert!(problems.contains("zones /etc/fedns-zones"), "{problems}");
}

#[test]
fn helm_notes_refer_to_nothing_in_the_repository() {
    require_helm();
    let notes = helm(json!({}), "fedns", "kube-federation-system").notes;
    assert!(notes.contains("fedns join"), "{notes}");
    for path in ["deploy/", "tests/", "README", "examples", ".yaml"] {
        assert!(!notes.contains(path), "NOTES.txt mentions {path}:\n{notes}");
    }
}

/// kustomize renders the base from a copy of deploy/kustomize with `config.yaml` edited.
fn kustomize_base_with_config(edit: impl FnOnce(&str) -> String) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("kustomize");
    common::copy_tree(&deploy("kustomize"), &root);
    let config = root.join("base/config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, edit(&text)).unwrap();
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join("base"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_documents(&String::from_utf8_lossy(&out.stdout), "edited base")
}

/// The name of the ConfigMap the Deployment mounts as its config.
fn mounted_config_map(objects: &[Value]) -> String {
    let d = find(objects, "Deployment", "fedns").unwrap();
    d["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .and_then(|v| v["configMap"]["name"].as_str())
        .unwrap()
        .to_owned()
}

#[test]
fn a_kustomize_config_change_renames_the_config_map_and_so_rolls_the_pods() {
    require_kustomize();
    let before = kustomize_base_with_config(str::to_owned);
    let name = mounted_config_map(&before);
    assert!(
        name.starts_with("fedns-config-") && find(&before, "ConfigMap", &name).is_some(),
        "the Deployment mounts the generated ConfigMap: {name}"
    );
    let after =
        kustomize_base_with_config(|text| text.replace("gracePeriod: 30s", "gracePeriod: 1m"));
    let renamed = mounted_config_map(&after);
    assert_ne!(name, renamed, "a new pod template, so a rollout");
    assert!(find(&after, "ConfigMap", &renamed).is_some());
}

#[test]
fn crd_copies_for_kustomize_and_helm_equal_deploy_crds() {
    for copy in ["kustomize/crds", "helm/fedns/crds"] {
        let mut names: Vec<String> = std::fs::read_dir(deploy(copy))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "kustomization.yaml")
            .collect();
        names.sort();
        let expected: Vec<String> = crd_files()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names, expected,
            "deploy/{copy}: run cp deploy/crds/*.yaml deploy/{copy}/"
        );
        for file in &expected {
            assert_eq!(
                std::fs::read(deploy(&format!("{copy}/{file}"))).unwrap(),
                std::fs::read(deploy(&format!("crds/{file}"))).unwrap(),
                "deploy/{copy}/{file} differs: run cp deploy/crds/*.yaml deploy/{copy}/"
            );
        }
    }
}

#[test]
fn examples_and_demo_objects_validate_against_the_crds() {
    let crds = crds();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push(deploy("demo/federation.yaml"));
    let mut count = 0;
    for file in files {
        for object in read_documents(&file) {
            check_schema(&object, &crds)
                .unwrap_or_else(|e| panic!("{file:?} {}: {e}", id(&object)));
            count += 1;
        }
    }
    assert!(count >= 8, "only {count} objects checked");
}

/// Every chart value (outside free-form Kubernetes objects) has a comment right above it and a
/// row in deploy/README.md's values table.
#[test]
fn every_helm_value_is_documented() {
    const FREE_FORM: [&str; 5] = [
        "resources",
        "podSecurityContext",
        "securityContext",
        "annotations",
        "affinity",
    ];
    let values = std::fs::read_to_string(deploy("helm/fedns/values.yaml")).unwrap();
    let readme = std::fs::read_to_string(deploy("README.md")).unwrap();
    let mut path: Vec<(usize, String)> = Vec::new();
    // A `# -- ` comment (helm-docs style), possibly continued on further comment lines, right above.
    let mut documented = false;
    let mut undocumented = Vec::new();
    let mut free_form_indent: Option<usize> = None;
    for line in values.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            documented = false;
            continue;
        }
        if trimmed.starts_with('#') {
            documented |= trimmed.starts_with("# -- ");
            continue;
        }
        if trimmed.starts_with('-') {
            continue;
        }
        if free_form_indent.is_some_and(|i| indent > i) {
            continue;
        }
        free_form_indent = None;
        let Some((key, rest)) = trimmed.split_once(':') else {
            continue;
        };
        path.retain(|(i, _)| *i < indent);
        path.push((indent, key.to_owned()));
        let dotted: Vec<&str> = path.iter().map(|(_, k)| k.as_str()).collect();
        let dotted = dotted.join(".");
        let is_section = rest.trim().is_empty() && !FREE_FORM.contains(&key);
        if !is_section && !documented {
            undocumented.push(format!("{dotted}: no `# --` comment above it"));
        }
        if !is_section && !readme.contains(&format!("`{dotted}`")) {
            undocumented.push(format!("{dotted}: not in deploy/README.md"));
        }
        if FREE_FORM.contains(&key) {
            free_form_indent = Some(indent);
        }
        documented = false;
    }
    assert!(undocumented.is_empty(), "{}", undocumented.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The checker catches broken manifests
// ---------------------------------------------------------------------------------------------

/// The kustomize base read straight from its files (no renderer needed), namespaced by hand the
/// way its kustomization does.
fn base_from_files() -> Vec<Value> {
    let mut objects = crds();
    for file in [
        "namespace",
        "serviceaccount",
        "rbac",
        "deployment",
        "service",
        "pdb",
    ] {
        objects.extend(read_documents(&deploy(&format!(
            "kustomize/base/{file}.yaml"
        ))));
    }
    // What the configMapGenerator makes of config.yaml (without the hash suffix).
    objects.push(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "fedns-config"},
        "data": {"config.yaml": std::fs::read_to_string(deploy("kustomize/base/config.yaml")).unwrap()},
    }));
    for o in &mut objects {
        if !CLUSTER_SCOPED.contains(&kind(o)) {
            o["metadata"]["namespace"] = json!("kube-federation-system");
        }
    }
    objects
}

/// Applies `edit` to the object `k`/`n` of the base and returns the problems of the result.
fn problems_after(k: &str, n: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut objects = base_from_files();
    assert_clean("unbroken base", &objects, &HOST);
    let object = objects
        .iter_mut()
        .find(|o| kind(o) == k && name(o) == n)
        .unwrap();
    edit(object);
    check_set(&objects, &HOST).join("\n")
}

#[test]
fn a_misspelled_field_is_caught_by_the_schema() {
    let problems = problems_after("Deployment", "fedns", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = json!("Always");
    });
    assert!(
        problems.contains("imagePullPolcy: field not in the schema"),
        "{problems}"
    );
}

#[test]
fn a_wrongly_typed_field_is_caught_by_the_schema() {
    let problems = problems_after("Service", "fedns-dns", |s| {
        s["spec"]["ports"][0]["port"] = json!("fifty-three");
    });
    assert!(problems.contains("spec.ports[0].port"), "{problems}");
}

#[test]
fn a_service_target_port_missing_from_the_pod_is_caught() {
    let problems = problems_after("Service", "fedns-dns", |s| {
        s["spec"]["ports"][1]["targetPort"] = json!("dns");
    });
    assert!(
        problems.contains("targetPort \"dns\" (TCP) is not a container port"),
        "{problems}"
    );
}

#[test]
fn a_selector_that_matches_no_pod_is_caught() {
    let problems = problems_after("PodDisruptionBudget", "fedns", |p| {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = json!("fednz");
    });
    assert!(
        problems.contains("PodDisruptionBudget fedns: selector matches no pod"),
        "{problems}"
    );
}

#[test]
fn a_probe_on_an_undeclared_port_is_caught() {
    let problems = problems_after("Deployment", "fedns", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] =
            json!("metrics");
    });
    assert!(
        problems.contains("livenessProbe port \"metrics\" is not a declared container port"),
        "{problems}"
    );
}

#[test]
fn a_config_listening_on_loopback_or_with_unknown_keys_is_caught() {
    let problems = problems_after("ConfigMap", "fedns-config", |c| {
        c["data"]["config.yaml"] =
            json!("dnsListen: [\"0.0.0.0:5353\"]\nadminListen: \"127.0.0.1:9053\"\n");
    });
    assert!(
        problems.contains("the kubelet's probes cannot reach it"),
        "{problems}"
    );
    let problems = problems_after("ConfigMap", "fedns-config", |c| {
        c["data"]["config.yaml"] = json!(
            "dnsListen: [\"0.0.0.0:5353\"]\nadminListen: \"0.0.0.0:9053\"\ngracePeriods: 1s\n"
        );
    });
    assert!(problems.contains("gracePeriods"), "{problems}");
}

#[test]
fn a_writable_root_filesystem_or_root_user_is_caught() {
    let problems = problems_after("Deployment", "fedns", |d| {
        let c = &mut d["spec"]["template"]["spec"]["containers"][0]["securityContext"];
        c["readOnlyRootFilesystem"] = json!(false);
        c["runAsUser"] = json!(0);
    });
    assert!(
        problems.contains("root filesystem must be read-only"),
        "{problems}"
    );
    assert!(problems.contains("must run as non-root"), "{problems}");
}

#[test]
fn a_missing_permission_is_caught() {
    let problems = problems_after("Role", "fedns", |r| {
        let rules = r["rules"].as_array_mut().unwrap();
        rules.retain(|rule| rule["resources"] != json!(["kubefedclusters/status"]));
    });
    assert!(
        problems.contains("lacks patch core.kubefed.io/kubefedclusters/status"),
        "{problems}"
    );
}

#[test]
fn excess_permissions_are_caught() {
    let problems = problems_after("ClusterRole", "fedns", |r| {
        r["rules"].as_array_mut().unwrap().push(json!(
            {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "create"]}
        ));
    });
    assert!(
        problems.contains("reads Secrets cluster-wide"),
        "{problems}"
    );
    assert!(problems.contains("may create /configmaps"), "{problems}");
}

#[test]
fn unknown_verbs_resources_and_wildcards_are_caught() {
    let problems = problems_after("ClusterRole", "fedns", |r| {
        r["rules"].as_array_mut().unwrap().push(json!(
            {"apiGroups": ["apps"], "resources": ["deployment", "*"], "verbs": ["watchs", "*"]}
        ));
    });
    assert!(problems.contains("verb \"watchs\""), "{problems}");
    assert!(problems.contains("verb \"*\""), "{problems}");
    assert!(
        problems.contains("resource \"deployment\" of group \"apps\" is unknown"),
        "{problems}"
    );
    assert!(
        problems.contains("resource \"*\" of group \"apps\""),
        "{problems}"
    );
}

#[test]
fn a_binding_to_a_missing_service_account_is_caught() {
    let problems = problems_after("RoleBinding", "fedns", |b| {
        b["subjects"][0]["namespace"] = json!("default");
    });
    assert!(
        problems.contains("is not a ServiceAccount of the manifests"),
        "{problems}"
    );
}

#[test]
fn the_crd_schema_check_catches_wrong_types_unknown_and_missing_fields() {
    let crds = crds();
    let record = json!({
        "apiVersion": "multiclusterdns.kubefed.io/v1alpha1",
        "kind": "ServiceDNSRecord",
        "metadata": {"name": "nginx", "namespace": "test"},
        "spec": {"recordTTL": "300", "dnsPrefx": "www"},
    });
    let e = check_schema(&record, &crds).unwrap_err();
    assert!(e.contains(".spec.recordTTL: expected integer"), "{e}");
    assert!(
        e.contains(".spec.dnsPrefx: field not in the CRD schema"),
        "{e}"
    );
    assert!(e.contains(".spec.domainRef: required"), "{e}");
    let wrong_version = json!({
        "apiVersion": "multiclusterdns.kubefed.io/v1", "kind": "Domain",
        "metadata": {"name": "x", "namespace": "y"}, "domain": "example.com",
    });
    assert!(
        check_schema(&wrong_version, &crds)
            .unwrap_err()
            .contains("not served")
    );
    let unknown =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    assert!(
        check_schema(&unknown, &crds)
            .unwrap_err()
            .contains("unknown apiVersion/kind")
    );
}
