//! `fedns unjoin`: reverses `fedns join`. In the host: the `KubeFedCluster` and its Secret; in
//! the member: the ServiceAccount, its RBAC and token Secret (the namespace only with
//! `--delete-namespace`). Propagated objects stay unless `--remove-managed-objects` is given;
//! otherwise how many remain is printed. Missing pieces are reported and skipped; an unreachable
//! member does not stop the host side from being removed.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DynamicObject, ListParams};
use kube::discovery::ApiResource;
use kube::{Api, Client};

use super::join::{DEFAULT_NAMESPACE, JoinPlan, JoinScope};
use super::kubeconfig::KubeconfigFile;
use super::{Error, api_code, delete, dynamic_api};
use crate::k8s::crd::KubeFedCluster;
use crate::propagation::types::{
    ApiResourceRef, DEFAULT_TYPES, FederatedTypeConfig, MANAGED_LABEL, PropagationMode,
};

/// Flags of `fedns unjoin`.
#[derive(Debug, Clone, clap::Args)]
pub struct UnjoinArgs {
    /// Name of the member cluster (the KubeFedCluster's name).
    pub name: String,
    /// Kubeconfig context of the member cluster.
    #[arg(long)]
    pub cluster_context: String,
    /// Kubeconfig context of the host cluster.
    #[arg(long)]
    pub host_cluster_context: String,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Control-plane namespace, in the host and the member.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Also delete the control-plane namespace in the member.
    #[arg(long)]
    pub delete_namespace: bool,
    /// Also delete the member objects fedns propagated (labeled kubefed.io/managed=true, of
    /// every type enabled in the host). Without it they stay and are counted.
    #[arg(long)]
    pub remove_managed_objects: bool,
}

/// One object `unjoin` removes from the member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberPiece {
    pub resource: ApiResource,
    pub namespace: Option<String>,
    pub name: String,
}

impl MemberPiece {
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.resource.kind, self.name),
            None => format!("{} {}", self.resource.kind, self.name),
        }
    }
}

/// The member objects `join` may have created (either scope), in deletion order: token
/// Secret, bindings, roles, ServiceAccount.
pub fn member_pieces(plan: &JoinPlan) -> Vec<MemberPiece> {
    let ns = Some(plan.namespace.clone());
    let piece = |resource: ApiResource, namespace: &Option<String>, name: String| MemberPiece {
        resource,
        namespace: namespace.clone(),
        name,
    };
    let mut pieces = vec![piece(
        ApiResource::erase::<Secret>(&()),
        &ns,
        plan.token_secret_name(),
    )];
    for name in [plan.role_name(), plan.health_role_name()] {
        pieces.push(piece(
            ApiResource::erase::<ClusterRoleBinding>(&()),
            &None,
            name.clone(),
        ));
        pieces.push(piece(ApiResource::erase::<ClusterRole>(&()), &None, name));
    }
    pieces.push(piece(
        ApiResource::erase::<RoleBinding>(&()),
        &ns,
        plan.role_name(),
    ));
    pieces.push(piece(
        ApiResource::erase::<Role>(&()),
        &ns,
        plan.role_name(),
    ));
    pieces.push(piece(
        ApiResource::erase::<ServiceAccount>(&()),
        &ns,
        plan.service_account.clone(),
    ));
    pieces
}

/// The target types whose managed objects unjoin counts or removes: every enabled FTC.
pub fn managed_types(ftcs: &[FederatedTypeConfig]) -> Vec<ApiResourceRef> {
    ftcs.iter()
        .filter(|f| f.spec.propagation == PropagationMode::Enabled)
        .map(|f| f.spec.target_type.clone())
        .collect()
}

/// Runs `fedns unjoin`.
pub async fn run(args: UnjoinArgs) -> Result<(), Error> {
    let kubeconfig = KubeconfigFile::load(args.kubeconfig.as_deref())?;
    kubeconfig.context(Some(&args.cluster_context))?;
    let plan = JoinPlan::new(
        &args.name,
        &args.host_cluster_context,
        &args.namespace,
        JoinScope::Cluster,
    )?;
    let host = kubeconfig.client(Some(&args.host_cluster_context)).await?;
    let member = kubeconfig.client(Some(&args.cluster_context)).await;

    let types = enabled_types(&host, &plan.namespace).await;
    let member_outcome = match member {
        Ok(member) => unjoin_member(&member, &plan, &args, &types).await,
        Err(e) => Err(e.to_string()),
    };
    let host_outcome = unjoin_host(&host, &plan).await;

    match (member_outcome, host_outcome) {
        (Ok(()), Ok(())) => {
            println!("unjoined cluster {}", plan.cluster);
            Ok(())
        }
        (Err(member), Ok(())) => Err(Error::Incomplete(format!(
            "the host side of cluster '{}' was removed, but the member could not be cleaned: \
             {member}. Re-run this unjoin when the member is reachable (missing pieces are \
             skipped), or delete ServiceAccount {}/{} and its RBAC and token Secret by hand",
            plan.cluster, plan.namespace, plan.service_account
        ))),
        (_, Err(host)) => Err(host),
    }
}

/// The enabled types in the host; the default set when FTCs cannot be listed.
async fn enabled_types(host: &Client, namespace: &str) -> Vec<ApiResourceRef> {
    let ftcs: Api<FederatedTypeConfig> = Api::namespaced(host.clone(), namespace);
    match ftcs.list(&ListParams::default()).await {
        Ok(list) => managed_types(&list.items),
        Err(e) => {
            eprintln!(
                "warning: cannot list FederatedTypeConfigs in the host ({e}); looking for managed \
                 objects of the default types"
            );
            DEFAULT_TYPES.iter().map(|t| t.target()).collect()
        }
    }
}

/// Removes the member side; `Err` says why it stopped (unreachable member, refused deletes).
async fn unjoin_member(
    member: &Client,
    plan: &JoinPlan,
    args: &UnjoinArgs,
    types: &[ApiResourceRef],
) -> Result<(), String> {
    let cluster = &plan.cluster;
    // Managed objects first: counting them also tells whether the member is reachable.
    let mut remaining = 0usize;
    let mut in_namespace = 0usize;
    for target in types {
        let api: Api<DynamicObject> = dynamic_api(member, &target.api_resource(), None);
        let list = match api
            .list(&ListParams::default().labels(&format!("{MANAGED_LABEL}=true")))
            .await
        {
            Ok(list) => list,
            // The type is not served by this member: nothing of it to remove.
            Err(e) if api_code(&e) == Some(404) => continue,
            Err(e) if api_code(&e).is_some() => {
                eprintln!(
                    "warning: member {cluster}: cannot list {}: {e}",
                    target.config_name()
                );
                continue;
            }
            Err(e) => return Err(format!("member {cluster} is unreachable: {e}")),
        };
        for object in list.items {
            let name = object.metadata.name.clone().unwrap_or_default();
            let ns = object.metadata.namespace.clone();
            if args.remove_managed_objects {
                match delete(member, &target.api_resource(), ns.as_deref(), &name).await {
                    Ok(_) => eprintln!(
                        "member {cluster}: deleted managed {} {}{name}",
                        target.kind,
                        ns.as_deref().map(|n| format!("{n}/")).unwrap_or_default()
                    ),
                    Err(e) => return Err(format!("deleting managed {} {name}: {e}", target.kind)),
                }
            } else {
                remaining += 1;
                if ns.as_deref() == Some(plan.namespace.as_str()) {
                    in_namespace += 1;
                }
            }
        }
    }
    if remaining > 0 {
        eprintln!(
            "member {cluster}: {remaining} propagated object(s) labeled {MANAGED_LABEL}=true were \
             left in place; pass --remove-managed-objects to delete them"
        );
    }
    for piece in member_pieces(plan) {
        match delete(
            member,
            &piece.resource,
            piece.namespace.as_deref(),
            &piece.name,
        )
        .await
        {
            Ok(true) => eprintln!("member {cluster}: deleted {}", piece.describe()),
            Ok(false) => {}
            Err(e) if api_code(&e).is_some() => {
                return Err(format!("deleting {}: {e}", piece.describe()));
            }
            Err(e) => return Err(format!("member {cluster} is unreachable: {e}")),
        }
    }
    if args.delete_namespace {
        if in_namespace > 0 {
            eprintln!(
                "warning: member {cluster}: namespace {} kept: it holds {in_namespace} propagated \
                 object(s); pass --remove-managed-objects too to delete it",
                plan.namespace
            );
        } else {
            let ns = ApiResource::erase::<Namespace>(&());
            match delete(member, &ns, None, &plan.namespace).await {
                Ok(true) => eprintln!("member {cluster}: deleted Namespace {}", plan.namespace),
                Ok(false) => eprintln!(
                    "warning: member {cluster}: Namespace {} not found",
                    plan.namespace
                ),
                Err(e) => return Err(format!("deleting Namespace {}: {e}", plan.namespace)),
            }
        }
    }
    Ok(())
}

/// Removes the `KubeFedCluster` and its Secret from the host.
async fn unjoin_host(host: &Client, plan: &JoinPlan) -> Result<(), Error> {
    let clusters: Api<KubeFedCluster> = Api::namespaced(host.clone(), &plan.namespace);
    let what = |w: &str| format!("{w} in the host");
    let existing = match clusters.get_opt(&plan.cluster).await {
        Ok(c) => c,
        Err(e) if api_code(&e) == Some(404) => None,
        Err(e) => return Err(Error::kube(what("reading KubeFedCluster"), &e)),
    };
    let Some(existing) = existing else {
        eprintln!(
            "warning: host: KubeFedCluster {}/{} not found (already unjoined?)",
            plan.namespace, plan.cluster
        );
        return Ok(());
    };
    let secret = existing.spec.secret_ref.name;
    if !secret.is_empty() {
        let resource = ApiResource::erase::<Secret>(&());
        match delete(host, &resource, Some(&plan.namespace), &secret).await {
            Ok(true) => eprintln!("host: deleted Secret {}/{secret}", plan.namespace),
            Ok(false) => eprintln!(
                "warning: host: Secret {}/{secret} not found",
                plan.namespace
            ),
            Err(e) => return Err(Error::kube(what(&format!("deleting Secret {secret}")), &e)),
        }
    }
    let resource = ApiResource::erase::<KubeFedCluster>(&());
    delete(host, &resource, Some(&plan.namespace), &plan.cluster)
        .await
        .map_err(|e| Error::kube(what("deleting KubeFedCluster"), &e))?;
    eprintln!(
        "host: deleted KubeFedCluster {}/{}",
        plan.namespace, plan.cluster
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::types::{default_type, type_config};

    #[test]
    fn unjoin_removes_what_either_join_scope_created_and_the_service_account_last() {
        let plan = JoinPlan::new("east", "host", DEFAULT_NAMESPACE, JoinScope::Cluster).unwrap();
        let pieces = member_pieces(&plan);
        let described: Vec<String> = pieces.iter().map(MemberPiece::describe).collect();
        for scope in [JoinScope::Cluster, JoinScope::Namespaced] {
            let mut joined = plan.clone();
            joined.scope = scope;
            for created in joined.member_objects() {
                if created.resource.kind != "Namespace" {
                    assert!(
                        described.contains(&created.describe()),
                        "{}",
                        created.describe()
                    );
                }
            }
        }
        assert_eq!(
            described[0],
            "Secret kube-federation-system/east-host-token"
        );
        assert_eq!(
            described.last().unwrap(),
            "ServiceAccount kube-federation-system/east-host"
        );
        assert!(!described.iter().any(|d| d.starts_with("Namespace")));
    }

    #[test]
    fn only_enabled_types_are_searched_for_managed_objects() {
        let mut disabled = type_config(&default_type("services").unwrap(), DEFAULT_NAMESPACE);
        disabled.spec.propagation = PropagationMode::Disabled;
        let enabled = type_config(&default_type("deployments").unwrap(), DEFAULT_NAMESPACE);
        let types = managed_types(&[disabled, enabled]);
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].kind, "Deployment");
    }
}
