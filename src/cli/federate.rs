//! `fedns federate`: the `Federated<Kind>` of an existing object, read from the host cluster or
//! a YAML file, printed or created in the host.
//!
//! Like `kubefedctl federate`: server-set metadata and `status` are stripped, name and
//! namespace move to the federated object (a Namespace's lives in itself), annotations and
//! finalizers are left out of the template (fedns only takes them through overrides; a warning
//! lists dropped annotations), and the default placement is `clusterSelector: {matchLabels: {}}`,
//! which selects every member cluster (`--clusters a,b` lists them instead).

use std::io::Read;
use std::path::PathBuf;

use kube::api::DynamicObject;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::enable::{TypeFlags, discover, find_type, resolve_type};
use super::kubeconfig::KubeconfigFile;
use super::{Error, Manifest, ObjectOutput, api_code, apply, dynamic_api, render_objects};
use crate::propagation::types::{ApiResourceRef, default_type, federated_type_of};

/// Annotations that are noise, not intent (no warning when dropped).
const SERVER_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

/// Flags of `fedns federate`.
#[derive(Debug, Clone, clap::Args)]
pub struct FederateArgs {
    /// Kind (Deployment), plural (deployments) or <plural>.<group> of the object.
    pub kind: Option<String>,
    /// Name of the object.
    pub name: Option<String>,
    /// Namespace of the object (default: the context's namespace, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Place in every member cluster (the default).
    #[arg(long, conflicts_with = "clusters")]
    pub placement_all: bool,
    /// Place only in these member clusters.
    #[arg(long, value_delimiter = ',')]
    pub clusters: Vec<String>,
    /// Federate the objects of a YAML file (`-` for stdin) instead of reading the cluster.
    #[arg(short = 'f', long)]
    pub from_file: Option<PathBuf>,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context of the host cluster (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<ObjectOutput>,
    /// Create (or update) the federated objects in the host instead of printing them.
    #[arg(long)]
    pub apply: bool,
}

/// Where the federated object goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacementChoice {
    /// `clusterSelector: {matchLabels: {}}`: every member cluster.
    All,
    /// `clusters: [{name}…]`.
    Clusters(Vec<String>),
}

impl PlacementChoice {
    fn to_json(&self) -> Value {
        match self {
            PlacementChoice::All => json!({"clusterSelector": {"matchLabels": {}}}),
            PlacementChoice::Clusters(names) => json!({
                "clusters": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()
            }),
        }
    }
}

/// The federated object and what was left out that the user may have meant.
#[derive(Clone, Debug, PartialEq)]
pub struct Federated {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// The `Federated<Kind>` of `object` (a `target`).
pub fn federate(
    target: &ApiResourceRef,
    object: &Value,
    placement: &PlacementChoice,
) -> Result<Federated, Error> {
    let mut template = object
        .as_object()
        .cloned()
        .ok_or_else(|| Error::Usage(format!("the {} to federate is not an object", target.kind)))?;
    let mut meta = match template.remove("metadata") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            Error::Usage(format!(
                "the {} to federate has no metadata.name",
                target.kind
            ))
        })?
        .to_string();
    let is_namespace = target.group.is_empty() && target.kind == "Namespace";
    let namespace = if is_namespace {
        Some(name.clone())
    } else {
        meta.get("namespace")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if target.namespaced() && namespace.is_none() {
        return Err(Error::Usage(format!(
            "{} {name} has no namespace; pass -n <namespace>",
            target.kind
        )));
    }
    let mut warnings = Vec::new();
    if let Some(Value::Object(annotations)) = meta.remove("annotations") {
        let dropped: Vec<&String> = annotations
            .keys()
            .filter(|k| !SERVER_ANNOTATIONS.contains(&k.as_str()))
            .collect();
        if !dropped.is_empty() {
            warnings.push(format!(
                "annotations of {} {name} are not in the template (set them per cluster with \
                 overrides at /metadata/annotations): {}",
                target.kind,
                dropped
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "ownerReferences",
        "selfLink",
        "generateName",
        "finalizers",
    ] {
        meta.remove(field);
    }
    for field in ["apiVersion", "kind", "status"] {
        template.remove(field);
    }
    strip_controller_fields(target, &mut template);
    if !meta.is_empty() {
        template.insert("metadata".into(), Value::Object(meta));
    }
    let federated = federated_type_of(target);
    let mut metadata = json!({"name": name});
    if let Some(ns) = namespace {
        metadata["namespace"] = ns.into();
    }
    Ok(Federated {
        object: json!({
            "apiVersion": federated.api_version(),
            "kind": federated.kind,
            "metadata": metadata,
            "spec": {
                "template": Value::Object(template),
                "placement": placement.to_json(),
            }
        }),
        warnings,
    })
}

/// Fields controllers set per cluster, which must not be copied to every member (as
/// `kubefedctl federate` does, plus Service cluster IPs).
fn strip_controller_fields(target: &ApiResourceRef, template: &mut Map<String, Value>) {
    let core = target.group.is_empty();
    match target.kind.as_str() {
        "Namespace" if core => {
            if let Some(Value::Object(spec)) = template.get_mut("spec") {
                spec.remove("finalizers");
            }
        }
        "ServiceAccount" if core => {
            template.remove("secrets");
        }
        "Service" if core => {
            if let Some(Value::Object(spec)) = template.get_mut("spec") {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
                spec.remove("healthCheckNodePort");
                if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                    for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                        port.remove("nodePort");
                    }
                }
            }
        }
        _ => {}
    }
    if template
        .get("spec")
        .is_some_and(|s| s.as_object().is_some_and(Map::is_empty))
    {
        template.remove("spec");
    }
}

/// Objects of a YAML stream (a `List` is flattened).
pub fn parse_objects(text: &str) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).map_err(|e| e.to_string())?;
        match value {
            Value::Null => {}
            Value::Object(ref o) if o.get("kind").and_then(Value::as_str) == Some("List") => {
                if let Some(Value::Array(items)) = o.get("items") {
                    objects.extend(items.iter().cloned());
                }
            }
            other => objects.push(other),
        }
    }
    Ok(objects)
}

/// The target type of an object read from a file: a default type of that kind and group, or
/// one derived from its `apiVersion`/`kind` (namespaced when it has a namespace).
pub fn type_of_object(object: &Value) -> Result<ApiResourceRef, Error> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    if kind.is_empty() || api_version.is_empty() {
        return Err(Error::Usage(
            "an object in the file has no apiVersion or kind".into(),
        ));
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if let Some(t) = default_type(kind).filter(|t| t.group == group && t.kind == kind) {
        return Ok(t);
    }
    Ok(ApiResourceRef {
        group: group.to_string(),
        version: version.to_string(),
        kind: kind.to_string(),
        plural_name: format!("{}s", kind.to_ascii_lowercase()),
        scope: if object["metadata"]["namespace"].is_string() {
            "Namespaced"
        } else {
            "Cluster"
        }
        .to_string(),
    })
}

/// Runs `fedns federate`.
pub async fn run(args: FederateArgs) -> Result<(), Error> {
    let placement = if args.clusters.is_empty() {
        PlacementChoice::All
    } else {
        PlacementChoice::Clusters(args.clusters.clone())
    };
    let kubeconfig = || KubeconfigFile::load(args.kubeconfig.as_deref());
    let mut federated: Vec<(ApiResourceRef, Federated)> = Vec::new();
    if let Some(path) = &args.from_file {
        let text = read_file(path)?;
        let objects = parse_objects(&text).map_err(|message| Error::File {
            path: path.display().to_string(),
            message,
        })?;
        if objects.is_empty() {
            return Err(Error::Usage(format!("{} holds no object", path.display())));
        }
        for mut object in objects {
            let target = type_of_object(&object)?;
            if target.namespaced() && !object["metadata"]["namespace"].is_string() {
                let ns = args.namespace.clone().unwrap_or_else(|| "default".into());
                object["metadata"]["namespace"] = ns.into();
            }
            let f = federate(&target, &object, &placement)?;
            federated.push((target, f));
        }
    } else {
        let (Some(kind), Some(name)) = (&args.kind, &args.name) else {
            return Err(Error::Usage(
                "name the object: `fedns federate <kind> <name> [-n namespace]`, or pass \
                 --from-file <file>"
                    .into(),
            ));
        };
        let file = kubeconfig()?;
        let context_ns = file
            .context(args.context.as_deref())?
            .namespace
            .unwrap_or_else(|| "default".into());
        let client = file.client(args.context.as_deref()).await?;
        let target = resolve_type(kind, &TypeFlags::default(), async || Ok(client.clone())).await?;
        let namespace = args.namespace.clone().unwrap_or(context_ns);
        let ns = target.namespaced().then_some(namespace.as_str());
        let api = dynamic_api(&client, &target.api_resource(), ns);
        let object: DynamicObject = api.get(name).await.map_err(|e| {
            let what = match ns {
                Some(ns) => format!("reading {} {ns}/{name} from the host", target.kind),
                None => format!("reading {} {name} from the host", target.kind),
            };
            match api_code(&e) {
                Some(404) => Error::Kube {
                    what,
                    message: "not found".into(),
                    hint: "; check the name and -n <namespace>".into(),
                },
                _ => Error::kube(what, &e),
            }
        })?;
        let value = serde_json::to_value(&object).expect("objects serialize");
        federated.push((target.clone(), federate(&target, &value, &placement)?));
    }
    for (_, f) in &federated {
        for w in &f.warnings {
            eprintln!("warning: {w}");
        }
    }
    if args.apply {
        let client = kubeconfig()?.client(args.context.as_deref()).await?;
        let mut discovered = None;
        for (target, f) in &federated {
            let mut resource = federated_type_of(target).api_resource();
            if default_type(&target.kind).is_none_or(|d| d.group != target.group) {
                // A type not in the default set: ask the host for its federated type's plural.
                if discovered.is_none() {
                    discovered = Some(discover(&client).await?);
                }
                let kind = format!("Federated{}", target.kind);
                let qualified = find_type(&kind, discovered.as_deref().unwrap_or_default())
                    .map_err(|_| not_enabled(target))?;
                resource = qualified.api_resource();
            }
            let manifest = Manifest {
                resource,
                object: f.object.clone(),
            };
            apply(&client, &manifest, "host")
                .await
                .map_err(|e| match e {
                    Error::NotServed { .. } => not_enabled(target),
                    other => other,
                })?;
            eprintln!("host: applied {}", manifest.describe());
        }
        if let Some(output) = args.output {
            let objects: Vec<Value> = federated.into_iter().map(|(_, f)| f.object).collect();
            print!("{}", render_objects(&objects, output));
        }
        return Ok(());
    }
    let objects: Vec<Value> = federated.into_iter().map(|(_, f)| f.object).collect();
    print!(
        "{}",
        render_objects(&objects, args.output.unwrap_or(ObjectOutput::Yaml))
    );
    Ok(())
}

fn not_enabled(target: &ApiResourceRef) -> Error {
    Error::Usage(format!(
        "Federated{} is not installed in the host; run `fedns enable {}` first",
        target.kind,
        target.config_name()
    ))
}

fn read_file(path: &std::path::Path) -> Result<String, Error> {
    let err = |e: std::io::Error| Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(err)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2024-01-01T00:00:00Z",
                "managedFields": [{"manager": "kubectl"}],
                "ownerReferences": [{"kind": "X", "name": "y", "uid": "z", "apiVersion": "v1"}],
                "labels": {"app": "web"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "team": "blue"
                },
                "finalizers": ["x/y"]
            },
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
            "status": {"readyReplicas": 3}
        })
    }

    #[test]
    fn a_deployment_becomes_a_federated_deployment_for_every_cluster() {
        let target = default_type("deployments").unwrap();
        let f = federate(&target, &deployment(), &PlacementChoice::All).unwrap();
        assert_eq!(
            f.object,
            json!({
                "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedDeployment",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
                    },
                    "placement": {"clusterSelector": {"matchLabels": {}}}
                }
            })
        );
        assert_eq!(f.warnings.len(), 1);
        assert!(f.warnings[0].contains("team"), "{:?}", f.warnings);
        assert!(!f.warnings[0].contains("last-applied"));
    }

    #[test]
    fn listed_clusters_replace_the_selector() {
        let target = default_type("deployments").unwrap();
        let placement = PlacementChoice::Clusters(vec!["a".into(), "b".into()]);
        let f = federate(&target, &deployment(), &placement).unwrap();
        assert_eq!(
            f.object["spec"]["placement"],
            json!({"clusters": [{"name": "a"}, {"name": "b"}]})
        );
    }

    #[test]
    fn service_cluster_ips_and_node_ports_stay_per_cluster() {
        let target = default_type("services").unwrap();
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "type": "NodePort",
                     "ports": [{"port": 80, "nodePort": 30080}]}
        });
        let f = federate(&target, &svc, &PlacementChoice::All).unwrap();
        assert_eq!(
            f.object["spec"]["template"],
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}})
        );
    }

    #[test]
    fn a_namespace_is_federated_into_itself() {
        let target = default_type("namespaces").unwrap();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop"}, "spec": {"finalizers": ["kubernetes"]}});
        let f = federate(&target, &ns, &PlacementChoice::All).unwrap();
        assert_eq!(f.object["kind"], "FederatedNamespace");
        assert_eq!(
            f.object["metadata"],
            json!({"name": "shop", "namespace": "shop"})
        );
        assert_eq!(f.object["spec"]["template"], json!({}));
    }

    #[test]
    fn a_namespaced_object_without_namespace_is_an_error() {
        let target = default_type("configmaps").unwrap();
        let cm = json!({"metadata": {"name": "x"}});
        let err = federate(&target, &cm, &PlacementChoice::All).unwrap_err();
        assert!(err.to_string().contains("-n <namespace>"));
    }

    #[test]
    fn file_objects_are_typed_by_api_version_and_kind() {
        let objects = parse_objects(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a, namespace: x}\n---\n\
             apiVersion: example.io/v1\nkind: Gadget\nmetadata: {name: g}\n",
        )
        .unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(
            type_of_object(&objects[0]).unwrap(),
            default_type("deployments").unwrap()
        );
        let gadget = type_of_object(&objects[1]).unwrap();
        assert_eq!(
            (gadget.group.as_str(), gadget.scope.as_str()),
            ("example.io", "Cluster")
        );
    }
}
