//! The subcommands that manage a federation rather than serve it: `join`, `unjoin`, `enable`,
//! `federate` and `status`.
//!
//! Each has a pure part (the objects built from flags and from objects read, unit-tested here)
//! and a thin I/O part: kubeconfig contexts ([`kubeconfig`]), kube clients, and
//! create-or-update through server-side apply ([`Manifest`], [`apply`]).

pub mod corefile;
pub mod crds;
pub mod enable;
pub mod federate;
pub mod join;
pub mod kubeconfig;
pub mod status;
pub mod unjoin;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::{Api, Client};
use serde::Serialize;
use serde_json::{Value, json};

/// Field manager of everything the CLI writes.
pub use crate::k8s::FIELD_MANAGER;

/// Why a subcommand failed; every message says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read kubeconfig {path}: {message}; pass --kubeconfig <file> or set KUBECONFIG")]
    Kubeconfig { path: String, message: String },
    #[error("context '{context}' not found in {path}; available: {available}")]
    ContextNotFound {
        context: String,
        path: String,
        available: String,
    },
    #[error("{path} has no current context; pass --context (available: {available})")]
    NoContext { path: String, available: String },
    #[error("context '{context}' in {path}: {message}")]
    Context {
        context: String,
        path: String,
        message: String,
    },
    #[error("{what}: {message}{hint}")]
    Kube {
        what: String,
        message: String,
        hint: String,
    },
    #[error(
        "{what}: the API type {api_version} is not served there; install its CRD (`fedns crds | kubectl apply -f -`, or `fedns enable <type>` for a Federated type)"
    )]
    NotServed { what: String, api_version: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {message}")]
    File { path: String, message: String },
    #[error(
        "the token controller of cluster '{cluster}' did not fill Secret {secret} within {timeout:?}; \
         is kube-controller-manager running there? Re-run with a longer --token-timeout"
    )]
    TokenTimeout {
        cluster: String,
        secret: String,
        timeout: Duration,
    },
    #[error("{0}")]
    Incomplete(String),
    #[error(
        "cannot reach fedns admin at {addr}: {message}; is `fedns serve` running with that --admin-listen? \
         Pass --admin <address>, or leave it out to read the cluster instead"
    )]
    Admin { addr: String, message: String },
}

impl Error {
    /// A kube error while doing `what`, with a hint chosen from its cause.
    pub fn kube(what: impl Into<String>, e: &kube::Error) -> Error {
        let hint = match e {
            kube::Error::Api(s) if s.code == 401 => {
                "; the credentials of this context are not accepted (expired token?)"
            }
            kube::Error::Api(s) if s.code == 403 => {
                "; the user of this context lacks permission for this"
            }
            kube::Error::Api(_) => "",
            _ => "; is the cluster reachable? check the server URL of the context",
        };
        Error::Kube {
            what: what.into(),
            message: e.to_string(),
            hint: hint.to_string(),
        }
    }
}

/// The API status code of a kube error, if it came from the server.
pub fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// How objects (or a status report) are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A YAML stream, `---` before each object.
    Yaml,
    /// One JSON `List` object (`kubectl apply -f` takes it).
    Json,
    /// A readable table (`status` only).
    Text,
}

/// How objects are printed by `join`, `enable` and `federate` (`-o yaml|json`; any other value
/// is rejected by the parser, never ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectOutput {
    /// A YAML stream, `---` before each object.
    Yaml,
    /// One JSON `List` object (`kubectl apply -f` takes it).
    Json,
}

/// Objects as a YAML stream or a JSON `v1/List`.
pub fn render_objects(objects: &[Value], output: ObjectOutput) -> String {
    match output {
        ObjectOutput::Json => {
            let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
            serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
        }
        ObjectOutput::Yaml => objects
            .iter()
            .map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).unwrap_or_default()))
            .collect(),
    }
}

/// Data (a status report) as JSON or YAML.
pub fn render_data<T: Serialize>(data: &T, output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(data).unwrap_or_default() + "\n",
        _ => serde_yaml_ng::to_string(data).unwrap_or_default(),
    }
}

/// One object to create or update, with what the API needs to reach it.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub resource: ApiResource,
    pub object: Value,
}

impl Manifest {
    /// A typed object; `apiVersion` and `kind` are set from its type (hand-written roots such
    /// as `KubeFedCluster` do not serialize them).
    pub fn of<K>(object: &K) -> Manifest
    where
        K: kube::Resource<DynamicType = ()> + Serialize,
    {
        let resource = ApiResource::erase::<K>(&());
        let mut object = serde_json::to_value(object).expect("Kubernetes objects serialize");
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".into(), resource.api_version.clone().into());
            map.insert("kind".into(), resource.kind.clone().into());
        }
        Manifest { resource, object }
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }

    /// `Kind namespace/name` for messages.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{} {ns}/{}", self.resource.kind, self.name()),
            None => format!("{} {}", self.resource.kind, self.name()),
        }
    }

    fn api(&self, client: &Client) -> Api<DynamicObject> {
        dynamic_api(client, &self.resource, self.namespace())
    }
}

/// A dynamic API, namespaced when `namespace` is given.
pub fn dynamic_api(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// Creates or updates (server-side apply, forced: re-running a command converges).
pub async fn apply(client: &Client, manifest: &Manifest, cluster: &str) -> Result<(), Error> {
    manifest
        .api(client)
        .patch(
            manifest.name(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&manifest.object),
        )
        .await
        .map(drop)
        .map_err(|e| {
            let what = format!("applying {} in cluster '{cluster}'", manifest.describe());
            match api_code(&e) {
                Some(404) if e.to_string().contains("namespaces \"") => Error::Kube {
                    what,
                    message: e.to_string(),
                    hint: format!(
                        "; create the namespace first: kubectl create namespace {}",
                        manifest.namespace().unwrap_or_default()
                    ),
                },
                Some(404) => Error::NotServed {
                    what,
                    api_version: manifest.resource.api_version.clone(),
                },
                _ => Error::kube(what, &e),
            }
        })
}

/// Creates a namespace unless it exists (never updates one).
pub async fn ensure_namespace(client: &Client, name: &str, cluster: &str) -> Result<(), Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let what = || format!("creating namespace {name} in the {cluster}");
    match namespaces.get_opt(name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match namespaces.create(&crate::k8s::post_params(), &ns).await {
                Ok(_) => {
                    eprintln!("{cluster}: created Namespace {name}");
                    Ok(())
                }
                Err(e) if api_code(&e) == Some(409) => Ok(()),
                Err(e) => Err(Error::kube(what(), &e)),
            }
        }
        Err(e) => Err(Error::kube(what(), &e)),
    }
}

/// Deletes one object; `Ok(false)` when it was not there.
pub async fn delete(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
    name: &str,
) -> Result<bool, kube::Error> {
    match dynamic_api(client, resource, namespace)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if api_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The one duration syntax of fedns (`30s`, `1m30s`, `1.5s`, `500ms`).
pub use crate::config::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn json_output_is_an_applyable_list_and_yaml_a_stream() {
        let objects = vec![json!({"kind": "A"}), json!({"kind": "B"})];
        let list: Value =
            serde_json::from_str(&render_objects(&objects, ObjectOutput::Json)).unwrap();
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
        let yaml = render_objects(&objects, ObjectOutput::Yaml);
        assert_eq!(yaml.matches("---\n").count(), 2);
    }

    #[test]
    fn manifests_carry_api_version_and_kind() {
        let m = Manifest::of(&crate::k8s::crd::KubeFedCluster::default());
        assert_eq!(m.object["apiVersion"], "core.kubefed.io/v1beta1");
        assert_eq!(m.object["kind"], "KubeFedCluster");
        assert_eq!(m.resource.plural, "kubefedclusters");
    }
}
