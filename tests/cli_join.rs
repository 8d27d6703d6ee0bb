//! The management commands of the real `fedns` binary against fake host and member API
//! servers (127.0.0.1 only): `join` (the fake has no token controller, so a background task
//! plays it), `unjoin`, `enable`, `federate` and `status`.

#[path = "harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use harness::{FakeCluster, KubeconfigEntry, kubeconfig_yaml};
use k8s_openapi::ByteString;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const NS: &str = "kube-federation-system";
/// The member's token as its (simulated) token controller writes it.
const MEMBER_TOKEN: &str = "member-token-from-the-token-controller";
const MEMBER_CA: &str = "-----BEGIN CERTIFICATE-----\nTUVNQkVS\n-----END CERTIFICATE-----\n";

/// A host named `host` with fedns's CRDs, a member named `east`, and one kubeconfig naming both.
struct Federation {
    host: FakeCluster,
    member: FakeCluster,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    token_controller: tokio::task::JoinHandle<()>,
}

impl Drop for Federation {
    fn drop(&mut self) {
        self.token_controller.abort();
    }
}

fn b64(bytes: &[u8]) -> Value {
    serde_json::to_value(ByteString(bytes.to_vec())).unwrap()
}

impl Federation {
    async fn start() -> Federation {
        let host = FakeCluster::start("host").await;
        let member = FakeCluster::start("east").await;
        let entries: Vec<KubeconfigEntry> = [&host, &member]
            .iter()
            .map(|c| KubeconfigEntry {
                name: c.name().to_string(),
                server: c.url(),
                token: c.token(),
                ca_bundle: None,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&entries, "host")).unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(host.client().await);
        for crd in fedns::cli::crds::all() {
            let name = crd.metadata.name.clone().unwrap();
            crds.patch(
                &name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap();
        }
        let token_controller = tokio::spawn(token_controller(member.clone()));
        host.reset_requests();
        Federation {
            host,
            member,
            kubeconfig,
            _dir: dir,
            token_controller,
        }
    }

    /// Runs the binary with `--kubeconfig` appended (never the user's own kubeconfig).
    async fn fedns(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fedns"));
        command
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env_remove("KUBECONFIG")
            .env_remove("FEDNS_ADMIN");
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    async fn join(&self) -> Output {
        self.fedns(&[
            "join",
            "east",
            "--cluster-context",
            "east",
            "--host-cluster-context",
            "host",
            "--token-timeout",
            "10s",
        ])
        .await
    }

    async fn unjoin(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "unjoin",
            "east",
            "--cluster-context",
            "east",
            "--host-cluster-context",
            "host",
        ];
        args.extend_from_slice(extra);
        self.fedns(&args).await
    }

    fn host_kubefedcluster(&self) -> Option<Value> {
        self.host.get_json(
            "core.kubefed.io/v1beta1",
            "KubeFedCluster",
            Some(NS),
            "east",
        )
    }

    /// Host Secrets of the member (`east-xxxxx`).
    fn host_member_secrets(&self) -> Vec<Value> {
        self.host
            .list_json("v1", "Secret", Some(NS))
            .into_iter()
            .filter(|s| {
                s["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("east-"))
            })
            .collect()
    }

    fn member_has(&self, api_version: &str, kind: &str, namespaced: bool, name: &str) -> bool {
        self.member
            .get_json(api_version, kind, namespaced.then_some(NS), name)
            .is_some()
    }
}

/// Plays the member's token controller: fills `token` and `ca.crt` of every
/// service-account-token Secret that has none.
async fn token_controller(member: FakeCluster) {
    loop {
        for mut secret in member.list_json("v1", "Secret", None) {
            if secret["type"] == "kubernetes.io/service-account-token"
                && secret["data"]["token"].is_null()
            {
                secret["data"] = json!({
                    "token": b64(MEMBER_TOKEN.as_bytes()),
                    "ca.crt": b64(MEMBER_CA.as_bytes()),
                });
                if let Some(meta) = secret["metadata"].as_object_mut() {
                    meta.remove("resourceVersion");
                }
                member.apply_json(secret);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn yaml_stream(text: &str) -> Vec<Value> {
    fedns::cli::federate::parse_objects(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_creates_the_member_account_and_the_host_kubefedcluster() {
    let f = Federation::start().await;
    let out = f.join().await;
    assert_success(&out);

    // Member: namespace, ServiceAccount <member>-<host>, RBAC, explicit token Secret.
    assert!(f.member_has("v1", "Namespace", false, NS));
    assert!(f.member_has("v1", "ServiceAccount", true, "east-host"));
    let role = "kubefed-controller-manager-east-host";
    assert!(f.member_has("rbac.authorization.k8s.io/v1", "ClusterRole", false, role));
    let binding = f
        .member
        .get_json(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            None,
            role,
        )
        .unwrap();
    assert_eq!(binding["subjects"][0]["name"], "east-host");
    let token = f
        .member
        .get_json("v1", "Secret", Some(NS), "east-host-token")
        .unwrap();
    assert_eq!(token["type"], "kubernetes.io/service-account-token");
    assert_eq!(
        token["metadata"]["annotations"]["kubernetes.io/service-account.name"],
        "east-host"
    );

    // Host: the token Secret and the KubeFedCluster pointing at it.
    let cluster = f
        .host_kubefedcluster()
        .expect("KubeFedCluster east in the host");
    assert_eq!(cluster["spec"]["apiEndpoint"], f.member.url());
    // The kubeconfig has no CA for this http member: the token Secret's ca.crt is used.
    assert_eq!(cluster["spec"]["caBundle"], b64(MEMBER_CA.as_bytes()));
    let secrets = f.host_member_secrets();
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    let secret_name = secrets[0]["metadata"]["name"].as_str().unwrap();
    assert_eq!(secret_name.len(), "east-".len() + 5);
    assert_eq!(cluster["spec"]["secretRef"]["name"], secret_name);
    assert_eq!(secrets[0]["data"]["token"], b64(MEMBER_TOKEN.as_bytes()));

    // What fedns serve reads: a member client built from this KubeFedCluster and Secret.
    let spec: fedns::k8s::crd::KubeFedClusterSpec =
        serde_json::from_value(cluster["spec"].clone()).unwrap();
    fedns::source::kubernetes::host::member_config("east", &spec, MEMBER_TOKEN).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_twice_updates_in_place() {
    let f = Federation::start().await;
    assert_success(&f.join().await);
    let first = f.host_kubefedcluster().unwrap();
    assert_success(&f.join().await);
    let second = f.host_kubefedcluster().unwrap();
    assert_eq!(first["spec"], second["spec"], "same Secret, same endpoint");
    assert_eq!(f.host_member_secrets().len(), 1, "no second host Secret");
    assert_eq!(
        f.member
            .list_json("v1", "ServiceAccount", Some(NS))
            .iter()
            .filter(|s| s["metadata"]["name"] == "east-host")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_every_object_and_touches_nothing() {
    let f = Federation::start().await;
    f.member.reset_requests();
    let out = f
        .fedns(&[
            "join",
            "east",
            "--cluster-context",
            "east",
            "--host-cluster-context",
            "host",
            "--dry-run",
        ])
        .await;
    assert_success(&out);
    let kinds: Vec<String> = yaml_stream(&stdout(&out))
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Secret",
            "Namespace",
            "Secret",
            "KubeFedCluster"
        ]
    );
    let json_out = f
        .fedns(&[
            "join",
            "east",
            "--cluster-context",
            "east",
            "--host-cluster-context",
            "host",
            "--scope",
            "namespaced",
            "--dry-run",
            "-o",
            "json",
        ])
        .await;
    assert_success(&json_out);
    let list: Value = serde_json::from_str(&stdout(&json_out)).unwrap();
    assert_eq!(list["kind"], "List");
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "Role")
    );
    assert_eq!(f.host.writes(), 0);
    assert_eq!(f.member.writes(), 0);
    assert!(f.host_kubefedcluster().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unjoin_removes_both_sides_and_leaves_propagated_objects() {
    let f = Federation::start().await;
    assert_success(&f.join().await);
    // ConfigMaps are federated, and one was propagated to the member.
    f.host.apply(&fedns::propagation::types::type_config(
        &fedns::propagation::types::default_type("configmaps").unwrap(),
        NS,
    ));
    f.member.apply_json(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"kubefed.io/managed": "true"}},
        "data": {"k": "v"}
    }));

    let out = f.unjoin(&[]).await;
    assert_success(&out);
    assert!(f.host_kubefedcluster().is_none());
    assert!(f.host_member_secrets().is_empty());
    assert!(!f.member_has("v1", "ServiceAccount", true, "east-host"));
    assert!(!f.member_has("v1", "Secret", true, "east-host-token"));
    assert!(!f.member_has(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        false,
        "kubefed-controller-manager-east-host"
    ));
    assert!(f.member_has("v1", "Namespace", false, NS), "namespace kept");
    assert!(
        f.member
            .get_json("v1", "ConfigMap", Some("shop"), "web")
            .is_some(),
        "propagated objects stay"
    );
    assert!(
        stderr(&out).contains("1 propagated object(s)"),
        "{}",
        stderr(&out)
    );

    // Again, explicitly removing managed objects: missing pieces are skipped.
    let out = f.unjoin(&["--remove-managed-objects"]).await;
    assert_success(&out);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    assert!(
        f.member
            .get_json("v1", "ConfigMap", Some("shop"), "web")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unjoin_of_an_unreachable_member_still_removes_the_host_side() {
    let f = Federation::start().await;
    assert_success(&f.join().await);
    f.member.stop().await;
    let out = f.unjoin(&[]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("host side of cluster 'east' was removed") && err.contains("unreachable"),
        "{err}"
    );
    assert!(f.host_kubefedcluster().is_none());
    assert!(f.host_member_secrets().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_context_names_the_available_ones() {
    let f = Federation::start().await;
    let out = f
        .fedns(&[
            "join",
            "east",
            "--cluster-context",
            "nope",
            "--host-cluster-context",
            "host",
        ])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("context 'nope' not found in")
            && stderr(&out).contains("available: host, east"),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.host.writes() + f.member.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_prints_a_valid_type_config_and_crd_and_applies_them() {
    let f = Federation::start().await;
    let out = f
        .fedns(&["enable", "deployments.apps", "--dry-run", "-o", "yaml"])
        .await;
    assert_success(&out);
    let objects = yaml_stream(&stdout(&out));
    let crd: CustomResourceDefinition = serde_json::from_value(objects[0].clone()).unwrap();
    assert_eq!(crd.spec.names.kind, "FederatedDeployment");
    let ftc: fedns::propagation::types::FederatedTypeConfig =
        serde_json::from_value(objects[1].clone()).unwrap();
    assert_eq!(ftc.metadata.name.as_deref(), Some("deployments.apps"));
    assert_eq!(ftc.metadata.namespace.as_deref(), Some(NS));
    assert_eq!(ftc.spec.target_type.kind, "Deployment");

    // A CRD type found by discovery on the host, then applied.
    f.host.apply_json(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.io"},
        "spec": {"group": "example.io", "scope": "Namespaced",
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget", "listKind": "GadgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }));
    let out = f.fedns(&["enable", "gadgets", "--context", "host"]).await;
    assert_success(&out);
    assert!(
        f.host
            .get_json(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                "federatedgadgets.types.kubefed.io"
            )
            .is_some()
    );
    let ftc = f
        .host
        .get_json(
            "core.kubefed.io/v1beta1",
            "FederatedTypeConfig",
            Some(NS),
            "gadgets.example.io",
        )
        .unwrap();
    assert_eq!(ftc["spec"]["targetType"]["scope"], "Namespaced");

    let out = f.fedns(&["enable", "widgets", "--context", "host"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--group <group> --version <version> --kind"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federate_turns_a_host_deployment_into_a_federated_deployment() {
    let f = Federation::start().await;
    f.host.apply_json(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
        "status": {"readyReplicas": 2}
    }));
    let args = [
        "federate",
        "deployment",
        "web",
        "-n",
        "shop",
        "--context",
        "host",
    ];
    let out = f.fedns(&[&args[..], &["-o", "json"]].concat()).await;
    assert_success(&out);
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        list["items"][0],
        json!({
            "apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedDeployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
                },
                "placement": {"clusterSelector": {"matchLabels": {}}}
            }
        })
    );

    let out = f
        .fedns(&[&args[..], &["--clusters", "east", "--apply"]].concat())
        .await;
    assert_success(&out);
    let created = f
        .host
        .get_json(
            "types.kubefed.io/v1beta1",
            "FederatedDeployment",
            Some("shop"),
            "web",
        )
        .unwrap();
    assert_eq!(
        created["spec"]["placement"]["clusters"],
        json!([{"name": "east"}])
    );
    assert_eq!(created["spec"]["template"]["spec"]["replicas"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_the_joined_member() {
    let f = Federation::start().await;
    assert_success(&f.join().await);
    // What fedns's prober would write.
    let mut cluster = f.host_kubefedcluster().unwrap();
    cluster["status"] = json!({
        "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterReady"}],
        "zones": ["east-a"], "region": "east"
    });
    f.host.apply_json(cluster);
    f.host.apply(&fedns::propagation::types::type_config(
        &fedns::propagation::types::default_type("deployments").unwrap(),
        NS,
    ));

    let out = f.fedns(&["status", "--context", "host"]).await;
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.contains("east") && text.contains("True") && text.contains("east-a"),
        "{text}"
    );
    assert!(text.contains("deployments.apps"), "{text}");

    let out = f
        .fedns(&["status", "--context", "host", "-o", "json"])
        .await;
    assert_success(&out);
    let data: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(data["clusters"][0]["name"], "east");
    assert_eq!(data["clusters"][0]["ready"], "True");
    assert_eq!(data["clusters"][0]["apiEndpoint"], f.member.url());
    assert_eq!(data["domains"], 0);
    assert_eq!(data["types"][0]["federatedKind"], "FederatedDeployment");
    assert_eq!(data["types"][0]["objects"], 0);
}
