//! `fedns join`: registers a member cluster with the host, as `kubefedctl join` does.
//!
//! In the member: the control-plane namespace, a ServiceAccount `<member>-<host>`, RBAC for it
//! (all resources for a cluster-scoped control plane; for a namespaced one, the namespace only
//! plus health checks and node listing) and an explicit token Secret (Kubernetes ≥ 1.24 creates
//! none by itself). In the host: the namespace, a Secret `<member>-<5 random chars>` with the
//! member's `token` (and `ca.crt`), and the `KubeFedCluster`. Re-running updates in place: the
//! host Secret named by an existing `KubeFedCluster` is reused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client};

use super::kubeconfig::{ContextInfo, KubeconfigFile};
use super::{
    Error, Manifest, ObjectOutput, api_code, apply, ensure_namespace, parse_duration,
    render_objects,
};
use crate::k8s::crd::{KubeFedCluster, KubeFedClusterSpec, LocalSecretReference};

/// The default control-plane namespace.
pub const DEFAULT_NAMESPACE: &str = "kube-federation-system";
/// Annotation naming the ServiceAccount of a token Secret.
pub const SERVICE_ACCOUNT_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// Type of a Secret the token controller fills.
pub const TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";

/// What the member's ServiceAccount may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum JoinScope {
    /// All resources in every namespace (a cluster-scoped control plane).
    #[default]
    Cluster,
    /// All resources in the control-plane namespace only, plus `/healthz`, `/readyz` and nodes.
    Namespaced,
}

/// Flags of `fedns join`.
#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
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
    /// What the member's ServiceAccount may do.
    #[arg(long, value_enum, default_value_t = JoinScope::Cluster)]
    pub scope: JoinScope,
    /// Print the objects that would be created and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of --dry-run.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<ObjectOutput>,
    /// How long to wait for the member's token controller to fill the token Secret.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub token_timeout: Duration,
}

/// Everything `join` creates, computed from names alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinPlan {
    pub cluster: String,
    pub namespace: String,
    pub scope: JoinScope,
    pub service_account: String,
}

impl JoinPlan {
    /// The plan for member `cluster` joining the host whose kubeconfig context is
    /// `host_context` (sanitized into a DNS label for the ServiceAccount name).
    pub fn new(
        cluster: &str,
        host_context: &str,
        namespace: &str,
        scope: JoinScope,
    ) -> Result<JoinPlan, Error> {
        if !is_dns_subdomain(cluster) {
            return Err(Error::Usage(format!(
                "invalid cluster name {cluster:?}: use lower-case letters, digits, '-' and '.' \
                 (it names the KubeFedCluster), e.g. {:?}",
                dns_label(cluster)
            )));
        }
        if !is_dns_label(namespace) {
            return Err(Error::Usage(format!(
                "invalid --namespace {namespace:?}: a namespace is a DNS label (lower-case \
                 letters, digits, '-'), e.g. {DEFAULT_NAMESPACE}"
            )));
        }
        let host = dns_label(host_context);
        let service_account = dns_label(&format!("{cluster}-{host}"));
        Ok(JoinPlan {
            cluster: cluster.to_string(),
            namespace: namespace.to_string(),
            scope,
            service_account,
        })
    }

    /// The token Secret in the member.
    pub fn token_secret_name(&self) -> String {
        format!("{}-token", self.service_account)
    }

    /// The Role/ClusterRole (and binding) granting the ServiceAccount its access.
    pub fn role_name(&self) -> String {
        format!("kubefed-controller-manager-{}", self.service_account)
    }

    /// The ClusterRole (and binding) for health checks and nodes with a namespaced scope.
    pub fn health_role_name(&self) -> String {
        format!(
            "kubefed-controller-manager-{}-healthcheck",
            self.service_account
        )
    }

    fn meta(&self, name: &str, namespaced: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: namespaced.then(|| self.namespace.clone()),
            ..Default::default()
        }
    }

    fn subject(&self) -> Subject {
        Subject {
            kind: "ServiceAccount".into(),
            name: self.service_account.clone(),
            namespace: Some(self.namespace.clone()),
            api_group: None,
        }
    }

    fn cluster_role_binding(&self, name: &str) -> ClusterRoleBinding {
        ClusterRoleBinding {
            metadata: self.meta(name, false),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: name.to_string(),
            },
            subjects: Some(vec![self.subject()]),
        }
    }

    /// The objects created in the member, in creation order.
    pub fn member_objects(&self) -> Vec<Manifest> {
        let all = PolicyRule {
            api_groups: Some(vec!["*".into()]),
            resources: Some(vec!["*".into()]),
            verbs: vec!["*".into()],
            ..Default::default()
        };
        let mut objects = vec![
            Manifest::of(&Namespace {
                metadata: self.meta(&self.namespace, false),
                ..Default::default()
            }),
            Manifest::of(&ServiceAccount {
                metadata: self.meta(&self.service_account, true),
                ..Default::default()
            }),
        ];
        let role = self.role_name();
        match self.scope {
            JoinScope::Cluster => {
                objects.push(Manifest::of(&ClusterRole {
                    metadata: self.meta(&role, false),
                    rules: Some(vec![
                        all,
                        PolicyRule {
                            non_resource_urls: Some(vec!["*".into()]),
                            verbs: vec!["get".into()],
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }));
                objects.push(Manifest::of(&self.cluster_role_binding(&role)));
            }
            JoinScope::Namespaced => {
                objects.push(Manifest::of(&Role {
                    metadata: self.meta(&role, true),
                    rules: Some(vec![all]),
                }));
                objects.push(Manifest::of(&RoleBinding {
                    metadata: self.meta(&role, true),
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".into(),
                        kind: "Role".into(),
                        name: role.clone(),
                    },
                    subjects: Some(vec![self.subject()]),
                }));
                let health = self.health_role_name();
                objects.push(Manifest::of(&ClusterRole {
                    metadata: self.meta(&health, false),
                    rules: Some(vec![
                        PolicyRule {
                            non_resource_urls: Some(vec!["/healthz".into(), "/readyz".into()]),
                            verbs: vec!["get".into()],
                            ..Default::default()
                        },
                        PolicyRule {
                            api_groups: Some(vec![String::new()]),
                            resources: Some(vec!["nodes".into()]),
                            verbs: vec!["list".into(), "watch".into()],
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }));
                objects.push(Manifest::of(&self.cluster_role_binding(&health)));
            }
        }
        let mut token = self.meta(&self.token_secret_name(), true);
        token.annotations = Some(BTreeMap::from([(
            SERVICE_ACCOUNT_ANNOTATION.to_string(),
            self.service_account.clone(),
        )]));
        objects.push(Manifest::of(&Secret {
            metadata: token,
            type_: Some(TOKEN_SECRET_TYPE.into()),
            ..Default::default()
        }));
        objects
    }

    /// The host namespace.
    pub fn host_namespace(&self) -> Manifest {
        Manifest::of(&Namespace {
            metadata: self.meta(&self.namespace, false),
            ..Default::default()
        })
    }

    /// The host Secret holding the member's credentials. Without a token (dry run) it shows
    /// where the token will come from instead.
    pub fn host_secret(&self, name: &str, token: Option<&[u8]>, ca: Option<&[u8]>) -> Manifest {
        let mut data = BTreeMap::new();
        let mut string_data = BTreeMap::new();
        match token {
            Some(t) => {
                data.insert("token".to_string(), ByteString(t.to_vec()));
            }
            None => {
                string_data.insert(
                    "token".to_string(),
                    format!(
                        "<the token of Secret {}/{} in cluster {}>",
                        self.namespace,
                        self.token_secret_name(),
                        self.cluster
                    ),
                );
            }
        }
        if let Some(ca) = ca {
            data.insert("ca.crt".to_string(), ByteString(ca.to_vec()));
        }
        Manifest::of(&Secret {
            metadata: self.meta(name, true),
            type_: Some("Opaque".into()),
            data: (!data.is_empty()).then_some(data),
            string_data: (!string_data.is_empty()).then_some(string_data),
            ..Default::default()
        })
    }

    /// The `KubeFedCluster`: the member's server, CA and the host Secret with its token.
    pub fn cluster_object(
        &self,
        member: &ContextInfo,
        ca: Option<&[u8]>,
        secret: &str,
    ) -> Manifest {
        Manifest::of(&KubeFedCluster {
            metadata: self.meta(&self.cluster, true),
            spec: KubeFedClusterSpec {
                api_endpoint: member.server.clone(),
                ca_bundle: ca.map(|c| ByteString(c.to_vec())),
                secret_ref: LocalSecretReference {
                    name: secret.to_string(),
                },
                disabled_tls_validations: if member.insecure_skip_tls_verify {
                    vec!["*".to_string()]
                } else {
                    Vec::new()
                },
                proxy_url: None,
            },
            status: None,
        })
    }
}

/// A DNS label from any name: lower case, other characters to `-`, at most 63 characters.
pub fn dns_label(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut label = String::with_capacity(mapped.len());
    for c in mapped.chars() {
        if c == '-' && (label.is_empty() || label.ends_with('-')) {
            continue;
        }
        label.push(c);
    }
    label.truncate(63);
    let label = label.trim_end_matches('-').to_string();
    if label.is_empty() {
        "cluster".to_string()
    } else {
        label
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Five characters as Kubernetes' `generateName` uses (no vowels, no look-alikes).
pub fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut n = hasher.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// Runs `fedns join`.
pub async fn run(args: JoinArgs) -> Result<(), Error> {
    let kubeconfig = KubeconfigFile::load(args.kubeconfig.as_deref())?;
    let member_ctx = kubeconfig.context(Some(&args.cluster_context))?;
    kubeconfig.context(Some(&args.host_cluster_context))?;
    let plan = JoinPlan::new(
        &args.name,
        &args.host_cluster_context,
        &args.namespace,
        args.scope,
    )?;
    if args.dry_run {
        let secret = format!("{}-{}", plan.cluster, random_suffix());
        let mut objects: Vec<_> = plan
            .member_objects()
            .into_iter()
            .map(|m| m.object)
            .collect();
        objects.push(plan.host_namespace().object);
        objects.push(plan.host_secret(&secret, None, None).object);
        objects.push(
            plan.cluster_object(&member_ctx, member_ctx.ca_pem.as_deref(), &secret)
                .object,
        );
        print!(
            "{}",
            render_objects(&objects, args.output.unwrap_or(ObjectOutput::Yaml))
        );
        return Ok(());
    }
    let member = kubeconfig.client(Some(&args.cluster_context)).await?;
    let host = kubeconfig.client(Some(&args.host_cluster_context)).await?;
    let member_name = format!(
        "member '{}' (context {})",
        plan.cluster, args.cluster_context
    );

    for manifest in plan.member_objects() {
        apply(&member, &manifest, &member_name).await?;
        eprintln!("member {}: applied {}", plan.cluster, manifest.describe());
    }
    let (token, secret_ca) = wait_for_token(&member, &plan, args.token_timeout).await?;
    let ca = member_ctx.ca_pem.clone().or(secret_ca);

    let host_name = format!("host (context {})", args.host_cluster_context);
    ensure_namespace(&host, &plan.namespace, &host_name).await?;
    let clusters: Api<KubeFedCluster> = Api::namespaced(host.clone(), &plan.namespace);
    let existing = match clusters.get_opt(&plan.cluster).await {
        Ok(existing) => existing,
        Err(e) if api_code(&e) == Some(404) => {
            return Err(Error::Kube {
                what: format!("reading KubeFedClusters in the {host_name}"),
                message: e.to_string(),
                hint: "; the KubeFedCluster CRD is not installed there: `fedns crds | kubectl apply -f -`"
                    .into(),
            });
        }
        Err(e) => {
            return Err(Error::kube(
                format!("reading KubeFedClusters in the {host_name}"),
                &e,
            ));
        }
    };
    let secret = existing
        .map(|c| c.spec.secret_ref.name)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("{}-{}", plan.cluster, random_suffix()));
    let host_secret = plan.host_secret(&secret, Some(&token), ca.as_deref());
    apply(&host, &host_secret, &host_name).await?;
    eprintln!("host: applied {}", host_secret.describe());
    let cluster = plan.cluster_object(&member_ctx, ca.as_deref(), &secret);
    apply(&host, &cluster, &host_name).await?;
    eprintln!("host: applied {}", cluster.describe());
    println!(
        "joined cluster {} ({}) to the host in namespace {}",
        plan.cluster, member_ctx.server, plan.namespace
    );
    Ok(())
}

/// Waits until the member's token controller has filled the token Secret; returns the token
/// and `ca.crt` if present.
async fn wait_for_token(
    member: &Client,
    plan: &JoinPlan,
    timeout: Duration,
) -> Result<(Vec<u8>, Option<Vec<u8>>), Error> {
    let secrets: Api<Secret> = Api::namespaced(member.clone(), &plan.namespace);
    let name = plan.token_secret_name();
    let started = Instant::now();
    loop {
        let secret = secrets.get_opt(&name).await.map_err(|e| {
            Error::kube(
                format!(
                    "reading Secret {}/{name} in member {}",
                    plan.namespace, plan.cluster
                ),
                &e,
            )
        })?;
        let data = secret.and_then(|s| s.data).unwrap_or_default();
        if let Some(token) = data.get("token").filter(|t| !t.0.is_empty()) {
            return Ok((token.0.clone(), data.get("ca.crt").map(|c| c.0.clone())));
        }
        if started.elapsed() >= timeout {
            return Err(Error::TokenTimeout {
                cluster: plan.cluster.clone(),
                secret: format!("{}/{name}", plan.namespace),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(scope: JoinScope) -> JoinPlan {
        JoinPlan::new("east", "Host_Ctx@corp", DEFAULT_NAMESPACE, scope).unwrap()
    }

    fn kinds(objects: &[Manifest]) -> Vec<String> {
        objects.iter().map(Manifest::describe).collect()
    }

    #[test]
    fn the_service_account_is_member_dash_sanitized_host() {
        assert_eq!(
            plan(JoinScope::Cluster).service_account,
            "east-host-ctx-corp"
        );
        assert_eq!(dns_label("--A..b--"), "a-b");
        assert_eq!(dns_label(&"x".repeat(80)).len(), 63);
        assert!(JoinPlan::new("East!", "h", DEFAULT_NAMESPACE, JoinScope::Cluster).is_err());
    }

    #[test]
    fn cluster_scope_grants_everything_through_a_cluster_role() {
        let objects = plan(JoinScope::Cluster).member_objects();
        assert_eq!(
            kinds(&objects),
            [
                "Namespace kube-federation-system",
                "ServiceAccount kube-federation-system/east-host-ctx-corp",
                "ClusterRole kubefed-controller-manager-east-host-ctx-corp",
                "ClusterRoleBinding kubefed-controller-manager-east-host-ctx-corp",
                "Secret kube-federation-system/east-host-ctx-corp-token",
            ]
        );
        let role = &objects[2].object;
        assert_eq!(role["rules"][0]["verbs"][0], "*");
        assert_eq!(role["rules"][0]["resources"][0], "*");
        assert_eq!(role["rules"][1]["nonResourceURLs"][0], "*");
        let binding = &objects[3].object;
        assert_eq!(binding["subjects"][0]["name"], "east-host-ctx-corp");
        assert_eq!(binding["subjects"][0]["namespace"], DEFAULT_NAMESPACE);
        let token = &objects[4].object;
        assert_eq!(token["type"], TOKEN_SECRET_TYPE);
        assert_eq!(
            token["metadata"]["annotations"][SERVICE_ACCOUNT_ANNOTATION],
            "east-host-ctx-corp"
        );
    }

    #[test]
    fn namespaced_scope_grants_the_namespace_plus_health_and_nodes() {
        let objects = plan(JoinScope::Namespaced).member_objects();
        let described = kinds(&objects);
        assert!(described.contains(
            &"Role kube-federation-system/kubefed-controller-manager-east-host-ctx-corp".into()
        ));
        let health = objects
            .iter()
            .find(|m| m.resource.kind == "ClusterRole")
            .unwrap();
        assert_eq!(health.object["rules"][0]["nonResourceURLs"][1], "/readyz");
        assert_eq!(health.object["rules"][1]["resources"][0], "nodes");
        assert_eq!(health.object["rules"][1]["verbs"][1], "watch");
        assert!(
            objects
                .iter()
                .filter(|m| m.resource.kind == "ClusterRole")
                .all(|m| m.object["rules"][0]["resources"].is_null())
        );
    }

    #[test]
    fn the_kubefedcluster_names_the_member_server_ca_and_secret() {
        let p = plan(JoinScope::Cluster);
        let member = ContextInfo {
            name: "m".into(),
            server: "https://10.1.2.3:6443".into(),
            ca_pem: None,
            insecure_skip_tls_verify: false,
            namespace: None,
        };
        let c = p.cluster_object(&member, Some(b"PEM"), "east-abcde").object;
        assert_eq!(c["apiVersion"], "core.kubefed.io/v1beta1");
        assert_eq!(c["metadata"]["name"], "east");
        assert_eq!(c["spec"]["apiEndpoint"], "https://10.1.2.3:6443");
        assert_eq!(c["spec"]["caBundle"], "UEVN");
        assert_eq!(c["spec"]["secretRef"]["name"], "east-abcde");
        let s = p
            .host_secret("east-abcde", Some(b"tok"), Some(b"PEM"))
            .object;
        assert_eq!(s["data"]["token"], "dG9r");
        assert_eq!(s["data"]["ca.crt"], "UEVN");
        let dry = p.host_secret("east-abcde", None, None).object;
        assert!(
            dry["stringData"]["token"]
                .as_str()
                .unwrap()
                .contains("east-host-ctx-corp-token")
        );
    }

    #[test]
    fn random_suffixes_are_five_safe_characters() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(
            s.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
    }
}
