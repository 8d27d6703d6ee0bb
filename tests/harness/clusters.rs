//! One host and N member clusters for an end-to-end test: fake ones by default, the real
//! clusters of `FEDNS_E2E_KUBECONFIGS` when it is set; and kubeconfig files for either.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::FakeCluster;

/// Kubeconfig files of real clusters, host first, then members, separated by `:` or `,`.
pub const KUBECONFIGS_ENV: &str = "FEDNS_E2E_KUBECONFIGS";

/// One cluster of a kubeconfig: its cluster, user and context all take `name`.
#[derive(Clone, Debug)]
pub struct KubeconfigEntry {
    pub name: String,
    pub server: String,
    pub token: String,
    /// Base64 PEM CA (`certificate-authority-data`), for HTTPS servers.
    pub ca_bundle: Option<String>,
}

/// A kubeconfig with one cluster, user (bearer token) and context per entry.
pub fn kubeconfig_yaml(entries: &[KubeconfigEntry], current: &str) -> String {
    let mut clusters = String::new();
    let mut users = String::new();
    let mut contexts = String::new();
    for KubeconfigEntry {
        name,
        server,
        token,
        ca_bundle,
    } in entries
    {
        clusters += &format!("- name: {name}\n  cluster:\n    server: {server}\n");
        if let Some(ca) = ca_bundle {
            clusters += &format!("    certificate-authority-data: {ca}\n");
        }
        users += &format!("- name: {name}\n  user:\n    token: {token}\n");
        contexts += &format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: default\n"
        );
    }
    format!(
        "apiVersion: v1\nkind: Config\npreferences: {{}}\ncurrent-context: {current}\n\
         clusters:\n{clusters}users:\n{users}contexts:\n{contexts}"
    )
}

/// A kube client from a kubeconfig file and context (its current context when `None`), built
/// the way an application builds one.
pub async fn client_for(kubeconfig: &Path, context: Option<&str>) -> Result<kube::Client, String> {
    let file =
        Kubeconfig::read_from(kubeconfig).map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(file, &options)
        .await
        .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// A cluster of an end-to-end test, fake or real.
#[derive(Clone, Debug)]
pub struct TestCluster {
    name: String,
    kubeconfig: PathBuf,
    context: String,
    fake: Option<FakeCluster>,
}

impl TestCluster {
    fn fake(cluster: FakeCluster) -> Self {
        TestCluster {
            name: cluster.name().to_string(),
            kubeconfig: cluster.kubeconfig_path(),
            context: cluster.name().to_string(),
            fake: Some(cluster),
        }
    }

    fn real(kubeconfig: PathBuf) -> Result<Self, String> {
        let file = Kubeconfig::read_from(&kubeconfig)
            .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
        let context = file
            .current_context
            .or_else(|| file.contexts.first().map(|c| c.name.clone()))
            .ok_or_else(|| format!("{}: no context", kubeconfig.display()))?;
        Ok(TestCluster {
            name: context.clone(),
            kubeconfig,
            context,
            fake: None,
        })
    }

    /// The cluster's name: the fake cluster's name, or the real kubeconfig's context.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig, Some(&self.context))
            .await
            .unwrap_or_else(|e| panic!("kube client for {}: {e}", self.name))
    }

    /// The fake cluster behind this one, for its controls, or `None` on a real cluster, after
    /// printing that the test skips `step`:
    ///
    /// ```ignore
    /// if let Some(member) = clusters.members[0].controls("stop a member") {
    ///     member.stop().await;
    ///     // …
    /// }
    /// ```
    pub fn controls(&self, step: &str) -> Option<&FakeCluster> {
        if self.fake.is_none() {
            eprintln!(
                "skipping failure-injection step {step:?} on real cluster {}: controls need the harness",
                self.name
            );
        }
        self.fake.as_ref()
    }

    /// The fake cluster, if this is one (no message).
    pub fn as_fake(&self) -> Option<&FakeCluster> {
        self.fake.as_ref()
    }
}

/// A host cluster and member clusters.
#[derive(Debug)]
pub struct Clusters {
    pub host: TestCluster,
    pub members: Vec<TestCluster>,
    dir: tempfile::TempDir,
}

impl Clusters {
    /// The kubeconfig files named by `FEDNS_E2E_KUBECONFIGS`, if it is set and not empty.
    pub fn kubeconfigs_from_env() -> Option<Vec<PathBuf>> {
        let value = std::env::var(KUBECONFIGS_ENV).ok()?;
        let paths: Vec<PathBuf> = value
            .split([':', ','])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        (!paths.is_empty()).then_some(paths)
    }

    /// A host named `host` and `members` members named `member-1`, `member-2`, … (fake), or
    /// the real clusters of `FEDNS_E2E_KUBECONFIGS`. `None` (after a message) when fewer real
    /// members are configured than the test needs: the test should return.
    pub async fn start(members: usize) -> Option<Clusters> {
        let names: Vec<String> = (1..=members).map(|i| format!("member-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Self::start_named("host", &names).await
    }

    /// Like [`start`](Self::start) with chosen names for fake clusters (real clusters keep
    /// their context names).
    pub async fn start_named(host: &str, members: &[&str]) -> Option<Clusters> {
        if let Some(paths) = Self::kubeconfigs_from_env() {
            return Self::from_kubeconfigs(paths, members.len());
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let host = TestCluster::fake(FakeCluster::start(host).await);
        let mut fakes = Vec::new();
        for name in members {
            fakes.push(TestCluster::fake(FakeCluster::start(name).await));
        }
        Some(Clusters {
            host,
            members: fakes,
            dir,
        })
    }

    /// The clusters of kubeconfig files (host first), as with `FEDNS_E2E_KUBECONFIGS`: no
    /// controls. `None` (after a message) when there are fewer than a host and `members`.
    pub fn from_kubeconfigs(paths: Vec<PathBuf>, members: usize) -> Option<Clusters> {
        if paths.len() < members + 1 {
            eprintln!(
                "skipping: {} kubeconfig(s) given ({KUBECONFIGS_ENV}); this test needs a host and {members} member(s)",
                paths.len(),
            );
            return None;
        }
        let mut clusters = paths
            .into_iter()
            .take(members + 1)
            .map(|p| TestCluster::real(p).unwrap_or_else(|e| panic!("{KUBECONFIGS_ENV}: {e}")));
        let host = clusters.next().expect("a host kubeconfig");
        Some(Clusters {
            host,
            members: clusters.collect(),
            dir: tempfile::tempdir().expect("temporary directory"),
        })
    }

    /// True when these are the real clusters of `FEDNS_E2E_KUBECONFIGS`.
    pub fn is_real(&self) -> bool {
        self.host.fake.is_none()
    }

    /// Host first, then members.
    pub fn all(&self) -> impl Iterator<Item = &TestCluster> {
        std::iter::once(&self.host).chain(&self.members)
    }

    pub fn member(&self, name: &str) -> &TestCluster {
        self.members
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member named {name}"))
    }

    /// One kubeconfig file with a context per member (named as the member), for configs that
    /// list members statically as kubeconfig contexts. The host's context is current.
    pub fn combined_kubeconfig(&self) -> PathBuf {
        let path = self.dir.path().join("combined-kubeconfig");
        let mut merged: Option<Kubeconfig> = None;
        for cluster in self.all() {
            let file = Kubeconfig::read_from(&cluster.kubeconfig)
                .unwrap_or_else(|e| panic!("{}: {e}", cluster.kubeconfig.display()));
            merged = Some(match merged {
                None => file,
                Some(m) => m.merge(file).expect("merging kubeconfigs"),
            });
        }
        let mut merged = merged.expect("at least the host");
        merged.current_context = Some(self.host.context.clone());
        let yaml = serde_yaml_ng::to_string(&merged).expect("kubeconfig serializes");
        std::fs::write(&path, yaml).expect("writing the combined kubeconfig");
        path
    }
}
