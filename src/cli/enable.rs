//! `fedns enable`: the `FederatedTypeConfig` and `Federated<Kind>` CRD for a type, printed or
//! applied to the host. The type is a default one (`deployments.apps`, `Deployment`,
//! `services`…), one found by discovery on the host (CRDs included), or given in full with
//! `--group/--version/--kind/--plural/--scope` (no cluster needed).

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::discovery::{Discovery, Scope};
use serde_json::Value;

use super::join::DEFAULT_NAMESPACE;
use super::kubeconfig::KubeconfigFile;
use super::{Error, Manifest, ObjectOutput, apply, ensure_namespace, render_objects};
use crate::propagation::types::{
    ApiResourceRef, default_type, federated_crd, federated_type_of, type_config,
};

/// Flags naming a type in full, for types neither default nor discoverable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TypeFlags {
    /// API group of the type (empty for the core group).
    #[arg(long)]
    pub group: Option<String>,
    /// API version of the type, e.g. v1.
    #[arg(long)]
    pub version: Option<String>,
    /// Kind, e.g. Gadget.
    #[arg(long)]
    pub kind: Option<String>,
    /// Plural resource name, e.g. gadgets.
    #[arg(long)]
    pub plural: Option<String>,
    /// Namespaced or Cluster.
    #[arg(long)]
    pub scope: Option<String>,
}

/// Flags of `fedns enable`.
#[derive(Debug, Clone, clap::Args)]
pub struct EnableArgs {
    /// The type: kind (Deployment), plural (deployments) or <plural>.<group> (deployments.apps).
    #[arg(name = "TYPE")]
    pub type_name: String,
    #[command(flatten)]
    pub type_flags: TypeFlags,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context of the host cluster (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Control-plane namespace (where the FederatedTypeConfig lives).
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Print the objects instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of --dry-run.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<ObjectOutput>,
}

impl TypeFlags {
    fn any(&self) -> bool {
        self.group.is_some()
            || self.version.is_some()
            || self.kind.is_some()
            || self.plural.is_some()
            || self.scope.is_some()
    }
}

/// The type named by full flags (`Ok(None)` when none given); a partial set is an error naming
/// what is missing.
pub fn type_from_flags(flags: &TypeFlags) -> Result<Option<ApiResourceRef>, Error> {
    if !flags.any() {
        return Ok(None);
    }
    let mut missing = Vec::new();
    for (flag, value) in [
        ("--version", &flags.version),
        ("--kind", &flags.kind),
        ("--plural", &flags.plural),
        ("--scope", &flags.scope),
    ] {
        if value.as_deref().is_none_or(str::is_empty) {
            missing.push(flag);
        }
    }
    if !missing.is_empty() {
        return Err(Error::Usage(format!(
            "a type given by flags needs --version, --kind, --plural and --scope (and --group \
             unless it is the core group); missing: {}",
            missing.join(", ")
        )));
    }
    let scope = match flags
        .scope
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("namespaced") => "Namespaced",
        Some("cluster") => "Cluster",
        other => {
            return Err(Error::Usage(format!(
                "invalid --scope {:?}: use Namespaced or Cluster",
                other.unwrap_or_default()
            )));
        }
    };
    Ok(Some(ApiResourceRef {
        group: flags.group.clone().unwrap_or_default(),
        version: flags.version.clone().unwrap_or_default(),
        kind: flags.kind.clone().unwrap_or_default(),
        plural_name: flags.plural.clone().unwrap_or_default(),
        scope: scope.to_string(),
    }))
}

/// Whether `name` (kind, plural or `<plural>.<group>`, case-insensitive) names `t`.
pub fn names_type(name: &str, t: &ApiResourceRef) -> bool {
    let name = name.to_ascii_lowercase();
    t.kind.to_ascii_lowercase() == name
        || t.plural_name == name
        || t.config_name() == name
        || format!("{}.{}", t.plural_name, t.group) == name
}

/// Finds `name` among discovered types; the error suggests the exact flags.
pub fn find_type(name: &str, discovered: &[ApiResourceRef]) -> Result<ApiResourceRef, Error> {
    let matches: Vec<&ApiResourceRef> = discovered.iter().filter(|t| names_type(name, t)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(unknown_type(name)),
        many => Err(Error::Usage(format!(
            "type {name:?} is ambiguous: {}; name it as <plural>.<group>",
            many.iter()
                .map(|t| t.config_name())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn unknown_type(name: &str) -> Error {
    Error::Usage(format!(
        "type {name:?} is neither a default federated type nor served by the host cluster; \
         check the name (kind, plural or <plural>.<group>) and the --context, or give it in full: \
         --group <group> --version <version> --kind <Kind> --plural <plural> --scope Namespaced|Cluster"
    ))
}

/// The FederatedTypeConfig and Federated CRD enabling `target`.
pub fn enable_manifests(target: &ApiResourceRef, namespace: &str) -> Vec<Manifest> {
    let crd: CustomResourceDefinition = federated_crd(&federated_type_of(target));
    vec![
        Manifest::of(&crd),
        Manifest::of(&type_config(target, namespace)),
    ]
}

/// Every type the cluster serves (preferred versions), as FTC targets.
pub async fn discover(client: &Client) -> Result<Vec<ApiResourceRef>, Error> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| Error::kube("discovering the API types of the host", &e))?;
    let mut types = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            types.push(ApiResourceRef {
                group: ar.group,
                version: ar.version,
                kind: ar.kind,
                plural_name: ar.plural,
                scope: match caps.scope {
                    Scope::Namespaced => "Namespaced",
                    Scope::Cluster => "Cluster",
                }
                .to_string(),
            });
        }
    }
    Ok(types)
}

/// The target type: full flags, a default type, or discovery on the host.
pub async fn resolve_type(
    name: &str,
    flags: &TypeFlags,
    host: impl AsyncFnOnce() -> Result<Client, Error>,
) -> Result<ApiResourceRef, Error> {
    if let Some(t) = type_from_flags(flags)? {
        return Ok(t);
    }
    if let Some(t) = default_type(name) {
        return Ok(t);
    }
    let client = host().await.map_err(|e| {
        Error::Usage(format!(
            "type {name:?} is not a default federated type and the host cannot be asked ({e}); \
             give it in full: --group --version --kind --plural --scope"
        ))
    })?;
    find_type(name, &discover(&client).await?)
}

/// Runs `fedns enable`.
pub async fn run(args: EnableArgs) -> Result<(), Error> {
    let kubeconfig = || KubeconfigFile::load(args.kubeconfig.as_deref());
    let connect = async || kubeconfig()?.client(args.context.as_deref()).await;
    let target = resolve_type(&args.type_name, &args.type_flags, connect).await?;
    let manifests = enable_manifests(&target, &args.namespace);
    if args.dry_run {
        let objects: Vec<Value> = manifests.into_iter().map(|m| m.object).collect();
        print!(
            "{}",
            render_objects(&objects, args.output.unwrap_or(ObjectOutput::Yaml))
        );
        return Ok(());
    }
    let client = kubeconfig()?.client(args.context.as_deref()).await?;
    ensure_namespace(&client, &args.namespace, "host").await?;
    for manifest in &manifests {
        apply(&client, manifest, "host").await?;
        eprintln!("host: applied {}", manifest.describe());
    }
    let summary = format!(
        "enabled {}: Federated{} objects in the host are now propagated",
        target.config_name(),
        target.kind
    );
    match args.output {
        // Stdout stays a clean YAML stream / JSON list.
        Some(output) => {
            let objects: Vec<Value> = manifests.into_iter().map(|m| m.object).collect();
            print!("{}", render_objects(&objects, output));
            eprintln!("{summary}");
        }
        None => println!("{summary}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gadget() -> ApiResourceRef {
        ApiResourceRef {
            group: "example.io".into(),
            version: "v1".into(),
            kind: "Gadget".into(),
            plural_name: "gadgets".into(),
            scope: "Namespaced".into(),
        }
    }

    #[test]
    fn full_flags_name_a_type_and_partial_flags_say_what_is_missing() {
        let flags = TypeFlags {
            group: Some("example.io".into()),
            version: Some("v1".into()),
            kind: Some("Gadget".into()),
            plural: Some("gadgets".into()),
            scope: Some("namespaced".into()),
        };
        assert_eq!(type_from_flags(&flags).unwrap(), Some(gadget()));
        assert_eq!(type_from_flags(&TypeFlags::default()).unwrap(), None);
        let partial = TypeFlags {
            kind: Some("Gadget".into()),
            ..Default::default()
        };
        let err = type_from_flags(&partial).unwrap_err().to_string();
        assert!(
            err.contains("missing: --version, --plural, --scope"),
            "{err}"
        );
    }

    #[test]
    fn discovered_types_are_found_by_kind_plural_or_qualified_name() {
        let types = [gadget(), default_type("deployments").unwrap()];
        for name in ["Gadget", "gadgets", "gadgets.example.io"] {
            assert_eq!(find_type(name, &types).unwrap(), gadget());
        }
        let err = find_type("widgets", &types).unwrap_err().to_string();
        assert!(err.contains("--group <group> --version <version>"), "{err}");
    }

    #[test]
    fn enable_gives_the_crd_then_the_type_config() {
        let m = enable_manifests(&gadget(), "fed");
        assert_eq!(m[0].object["kind"], "CustomResourceDefinition");
        assert_eq!(m[0].name(), "federatedgadgets.types.kubefed.io");
        assert_eq!(m[0].object["spec"]["names"]["kind"], "FederatedGadget");
        assert_eq!(m[1].object["kind"], "FederatedTypeConfig");
        assert_eq!(m[1].object["metadata"]["name"], "gadgets.example.io");
        assert_eq!(m[1].object["metadata"]["namespace"], "fed");
        assert_eq!(m[1].object["spec"]["targetType"]["pluralName"], "gadgets");
        assert_eq!(m[1].object["spec"]["propagation"], "Enabled");
    }
}
