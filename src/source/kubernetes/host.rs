//! The Kubernetes source: the host cluster's federation objects (Domain, ServiceDNSRecord,
//! IngressDNSRecord, KubeFedCluster and the Secrets they reference) and, for every member, a
//! [`member`] watcher set plus a health prober.
//!
//! Members come from KubeFedClusters (`spec.apiEndpoint`, `caBundle`, `secretRef` → `token`,
//! `disabledTLSValidations`, `proxyURL`) or from kubeconfig contexts listed in the configuration.
//! The prober decides readiness: `/readyz` (falling back to `/healthz`) every period with a timeout,
//! flipping only after N consecutive failures or M consecutive successes, and writes the
//! KubeFedCluster's `Ready`/`Offline` conditions. `Synced` is sent once the host kinds and every
//! member known at start have completed their first listing. The host is waited for however long
//! it takes (before its Domains are known every answer would be REFUSED); members still unlisted
//! when the sync timeout runs out are reported and treated as unreachable until they list.
//! Records are listed after the Domains and KubeFedClusters after their Secrets, so that nothing
//! is reported missing at start only because it was not listed yet.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Patch;
use kube::runtime::utils::Backoff as _;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::member::{self, MemberWatchers, WatchNotice};
use super::watch::{self, CappedBackoff, Change, Notice, WatchHealth, WatchSettings, Watched};
use crate::federation::model::{
    FederationKind, FederationObject, FederationObjectId, MemberKind, MemberSpec, ObjectKey,
    SourceEvent,
};
use crate::k8s::crd::{Domain, IngressDNSRecord, KubeFedCluster, KubeFedClusterSpec};
use crate::k8s::lease::Leadership;
use crate::propagation::members::{MemberHandle, MemberPublisher};
use crate::source::normalize;

/// `status.topologySource` of a KubeFedCluster whose zones/region fedns wrote from node labels.
pub const TOPOLOGY_FROM_NODES: &str = "nodes";

/// Health probing of members (propagation spec section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    pub period: Duration,
    pub timeout: Duration,
    /// Consecutive failures before a member is marked not ready.
    pub failure_threshold: u32,
    /// Consecutive successes before it is ready again.
    pub success_threshold: u32,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(3),
            failure_threshold: 3,
            success_threshold: 1,
        }
    }
}

/// Settings of the Kubernetes source.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// The control-plane namespace (Domains, KubeFedClusters, their Secrets).
    pub namespace: String,
    pub probe: ProbeSettings,
    /// Longest wait for the first full listing of the members before answering without the
    /// unlisted ones. The host cluster's own first listing is waited for indefinitely.
    pub sync_timeout: Duration,
    /// The host cluster's URL (for the log and `/status`).
    pub host_url: String,
    /// Where failing watchers are listed for `/status`.
    pub health: WatchHealth,
    /// How long an empty relist is distrusted (`--empty-relist-confirm`).
    pub empty_relist_confirm: Duration,
    /// Members given as kubeconfig contexts instead of KubeFedClusters.
    pub static_members: Vec<StaticMember>,
    /// Where watch restarts, last syncs and ignored relists are counted.
    pub metrics: crate::metrics::Metrics,
    /// Where the connected members (client, labels, readiness) are published for the
    /// propagation controllers.
    pub members: Option<MemberPublisher>,
    /// KubeFedCluster conditions are written only while this replica leads.
    pub leadership: Leadership,
}

/// A member listed in the configuration.
#[derive(Clone)]
pub struct StaticMember {
    pub name: String,
    pub client: Client,
    /// The API server's URL (for the log and `/status`).
    pub url: String,
    /// Labels placement selectors match.
    pub labels: BTreeMap<String, String>,
    pub zones: Vec<String>,
    pub region: Option<String>,
}

impl std::fmt::Debug for StaticMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticMember")
            .field("name", &self.name)
            .field("zones", &self.zones)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Why a member cannot be connected.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("KubeFedCluster {0}: secret {1} not found or has no `token`")]
    MissingToken(String, String),
    #[error("KubeFedCluster {0}: invalid apiEndpoint {1:?}: {2}")]
    Endpoint(String, String, String),
    #[error("KubeFedCluster {0}: invalid caBundle: {1}")]
    CaBundle(String, String),
    #[error("KubeFedCluster {0}: invalid proxyURL {1:?}: {2}")]
    Proxy(String, String, String),
    #[error("KubeFedCluster {0}: cannot build a client: {1}")]
    Client(String, String),
}

/// Publishes a change to the member set: `Some` inserts or replaces, `None` removes.
fn publish(publisher: Option<&MemberPublisher>, name: &str, handle: Option<MemberHandle>) {
    if let Some(publisher) = publisher {
        publisher.send_if_modified(|set| {
            let map = &mut **std::sync::Arc::make_mut(set);
            match handle {
                Some(h) => {
                    map.insert(name.to_string(), h);
                    true
                }
                None => map.remove(name).is_some(),
            }
        });
    }
}

/// Changes one published member in place; nothing is published when `change` says so.
fn publish_change(
    publisher: Option<&MemberPublisher>,
    name: &str,
    change: impl FnOnce(&mut MemberHandle) -> bool,
) {
    if let Some(publisher) = publisher {
        publisher.send_if_modified(|set| {
            if !set.contains_key(name) {
                return false;
            }
            let mut next = set.as_ref().clone();
            let changed = next.get_mut(name).is_some_and(change);
            if changed {
                *set = std::sync::Arc::new(next);
            }
            changed
        });
    }
}

/// The kube client configuration for one KubeFedCluster, given its token.
pub fn member_config(
    name: &str,
    spec: &KubeFedClusterSpec,
    token: &str,
) -> Result<kube::Config, MemberError> {
    let url = if spec.api_endpoint.contains("://") {
        spec.api_endpoint.clone()
    } else {
        format!("https://{}", spec.api_endpoint)
    };
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| {
        MemberError::Endpoint(name.into(), spec.api_endpoint.clone(), e.to_string())
    })?;
    let mut config = kube::Config::new(uri);
    config.auth_info.token = Some(secrecy::SecretString::from(token.to_owned()));
    if let Some(ca) = &spec.ca_bundle {
        let certs = pem::parse_many(&ca.0)
            .map_err(|e| MemberError::CaBundle(name.into(), e.to_string()))?;
        if certs.is_empty() {
            return Err(MemberError::CaBundle(
                name.into(),
                "no PEM certificate found".into(),
            ));
        }
        config.root_cert = Some(certs.into_iter().map(|c| c.into_contents()).collect());
    }
    // KubeFed's `*` disables all checks; rustls cannot skip only the subject name or only the
    // validity period, so those also fall back to skipping verification (logged loudly).
    if !spec.disabled_tls_validations.is_empty() {
        tracing::warn!(cluster = name, validations = ?spec.disabled_tls_validations, "TLS verification disabled for this member");
        config.accept_invalid_certs = true;
    }
    if let Some(proxy) = &spec.proxy_url {
        config.proxy_url = Some(proxy.parse().map_err(|e: http::uri::InvalidUri| {
            MemberError::Proxy(name.into(), proxy.clone(), e.to_string())
        })?);
    }
    config.connect_timeout = Some(Duration::from_secs(5));
    Ok(config)
}

/// Running connections to members, keyed by name.
#[derive(Debug, Default)]
struct Members {
    running: HashMap<String, Running>,
}

#[derive(Debug)]
struct Running {
    /// What the connection was built from; a change reconnects.
    fingerprint: String,
    _watchers: MemberWatchers,
    prober: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.prober.abort();
    }
}

/// Runs the Kubernetes source until `events` closes.
pub async fn run(host: Client, settings: HostSettings, events: mpsc::Sender<SourceEvent>) {
    let (notices_tx, notices_rx) = mpsc::unbounded_channel::<WatchNotice>();
    let (host_listed_tx, host_listed_rx) = mpsc::unbounded_channel::<&'static str>();
    let ns = settings.namespace.clone();
    let watch_settings = WatchSettings {
        health: settings.health.clone(),
        metrics: settings.metrics.clone(),
        confirm_empty: settings.empty_relist_confirm,
    };
    let watched = |resource: &'static str, url: &str| Watched {
        cluster: HOST.to_owned(),
        resource,
        url: format!("{}{url}", settings.host_url.trim_end_matches('/')),
        health: settings.health.clone(),
        metrics: settings.metrics.clone(),
        confirm_empty: settings.empty_relist_confirm,
    };
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let probed = Probed::default();

    // Start-up order: records wait for the Domains' first listing and KubeFedClusters for the
    // Secrets', so nothing is reported missing only because it was not listed yet.
    let (domains_listed, domains_listed_rx) = tokio::sync::watch::channel(false);
    let (secrets_listed, secrets_listed_rx) = tokio::sync::watch::channel(false);

    // Federation kinds.
    let domains = Api::<Domain>::namespaced(host.clone(), &ns);
    tasks.push(tokio::spawn(federation_watch(
        watched("domains", domains.resource_url()),
        domains,
        FederationKind::Domain,
        |d: Domain| normalize::domain(d),
        |d: &Domain| d.meta().name.clone().map(FederationObjectId::Domain),
        events.clone(),
        host_listed_tx.clone(),
        Order {
            after: None,
            listed: Some(domains_listed),
        },
    )));
    let records = Api::<crate::k8s::crd::ServiceDNSRecord>::all(host.clone());
    tasks.push(tokio::spawn(federation_watch(
        watched("servicednsrecords", records.resource_url()),
        records,
        FederationKind::ServiceRecord,
        normalize::service_dns_record,
        |r: &crate::k8s::crd::ServiceDNSRecord| {
            Some(FederationObjectId::ServiceRecord(ObjectKey::new(
                r.namespace()?,
                r.meta().name.clone()?,
            )))
        },
        events.clone(),
        host_listed_tx.clone(),
        Order {
            after: Some(domains_listed_rx.clone()),
            listed: None,
        },
    )));
    let records = Api::<IngressDNSRecord>::all(host.clone());
    tasks.push(tokio::spawn(federation_watch(
        watched("ingressdnsrecords", records.resource_url()),
        records,
        FederationKind::IngressRecord,
        normalize::ingress_dns_record,
        |r: &IngressDNSRecord| {
            Some(FederationObjectId::IngressRecord(ObjectKey::new(
                r.namespace()?,
                r.meta().name.clone()?,
            )))
        },
        events.clone(),
        host_listed_tx.clone(),
        Order {
            after: Some(domains_listed_rx),
            listed: None,
        },
    )));

    // Static members: connected once, never from the host.
    let mut expected: BTreeSet<String> = BTreeSet::new();
    // Only the reconcile loop below touches the running connections.
    let mut members = Members::default();
    for m in &settings.static_members {
        expected.insert(m.name.clone());
        let spec = MemberSpec {
            name: m.name.clone(),
            zones: m.zones.clone(),
            region: m.region.clone(),
            ready: true,
        };
        if events
            .send(SourceEvent::ApplyFederation(FederationObject::Member(spec)))
            .await
            .is_err()
        {
            return;
        }
        publish(
            settings.members.as_ref(),
            &m.name,
            Some(MemberHandle::new(
                &m.name,
                m.client.clone(),
                m.labels.clone(),
            )),
        );
        let running = connect(
            &m.name,
            &m.url,
            m.client.clone(),
            String::new(),
            None,
            &settings,
            &watch_settings,
            &events,
            &notices_tx,
            &probed,
        );
        members.running.insert(m.name.clone(), running);
    }

    // KubeFedClusters and Secrets drive the dynamic members: each is mirrored into a map by
    // name, and every change wakes the reconcile loop below.
    let clusters = Arc::new(Mutex::new(BTreeMap::<String, KubeFedCluster>::new()));
    let secrets = Arc::new(Mutex::new(BTreeMap::<String, String>::new()));
    let (reconcile_tx, mut reconcile_rx) = mpsc::unbounded_channel::<()>();
    let mirrored = Arc::new(Mutex::new(BTreeSet::new()));
    let ctx = Mirror {
        reconcile: reconcile_tx,
        listed: host_listed_tx.clone(),
        mirrored: mirrored.clone(),
        events: events.clone(),
    };
    let kubefedclusters = Api::<KubeFedCluster>::namespaced(host.clone(), &ns);
    tasks.push(tokio::spawn(ctx.clone().run(
        watched("kubefedclusters", kubefedclusters.resource_url()),
        kubefedclusters,
        |c: KubeFedCluster| Some((c.meta().name.clone()?, c)),
        clusters.clone(),
        Order {
            after: Some(secrets_listed_rx),
            listed: None,
        },
    )));
    let secret_api = Api::<Secret>::namespaced(host.clone(), &settings.namespace);
    tasks.push(tokio::spawn(ctx.run(
        watched("secrets", secret_api.resource_url()),
        secret_api,
        |s: Secret| {
            let token = s.data.as_ref()?.get("token")?.0.clone();
            Some((s.meta().name.clone()?, String::from_utf8(token).ok()?))
        },
        secrets.clone(),
        Order {
            after: None,
            listed: Some(secrets_listed),
        },
    )));
    drop(host_listed_tx);

    tasks.push(tokio::spawn(sync_gate(
        expected,
        host_listed_rx,
        notices_rx,
        settings.sync_timeout,
        events.clone(),
        clusters.clone(),
        settings.metrics.clone(),
        probed.clone(),
    )));
    // Reconcile dynamic members whenever KubeFedClusters or Secrets change.
    while reconcile_rx.recv().await.is_some() {
        while reconcile_rx.try_recv().is_ok() {}
        let clusters = clusters.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let secrets = secrets.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let running = &mut members;
        let statics: BTreeSet<&str> = settings
            .static_members
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        // Gone: stop and withdraw.
        let gone: Vec<String> = running
            .running
            .keys()
            .filter(|n| !clusters.contains_key(*n) && !statics.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            running.running.remove(&name);
            publish(settings.members.as_ref(), &name, None);
            let _ = events
                .send(SourceEvent::DeleteFederation(FederationObjectId::Member(
                    name.clone(),
                )))
                .await;
            let _ = events.send(SourceEvent::ResetMember(name, vec![])).await;
        }
        for (name, cluster) in &clusters {
            if statics.contains(name.as_str()) {
                continue;
            }
            // Topology from the KubeFedCluster status unless fedns itself reported it there from
            // node labels; readiness is the prober's call.
            let mut declared = cluster.clone();
            if let Some(status) = &mut declared.status
                && status.topology_source.as_deref() == Some(TOPOLOGY_FROM_NODES)
            {
                status.zones.clear();
                status.region = None;
            }
            let spec = match normalize::kubefed_cluster(declared) {
                Ok(FederationObject::Member(mut m)) => {
                    m.ready = true;
                    m
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "KubeFedCluster skipped");
                    continue;
                }
            };
            if events
                .send(SourceEvent::ApplyFederation(FederationObject::Member(spec)))
                .await
                .is_err()
            {
                return;
            }
            let secret = &cluster.spec.secret_ref.name;
            let Some(token) = secrets.get(secret) else {
                tracing::warn!(error = %MemberError::MissingToken(name.clone(), secret.clone()), "member not connected");
                let _ = events
                    .send(SourceEvent::MemberReachable(name.clone(), false))
                    .await;
                continue;
            };
            let fingerprint = format!(
                "{}|{:?}|{}|{:?}|{:?}",
                cluster.spec.api_endpoint,
                cluster.spec.ca_bundle.as_ref().map(|c| c.0.as_slice()),
                token,
                cluster.spec.disabled_tls_validations,
                cluster.spec.proxy_url
            );
            let labels = cluster.metadata.labels.clone().unwrap_or_default();
            if running
                .running
                .get(name)
                .is_some_and(|r| r.fingerprint == fingerprint)
            {
                // Same connection; placement selectors may still see new labels.
                publish_change(settings.members.as_ref(), name, |m| {
                    let changed = m.labels != labels;
                    m.labels = labels.clone();
                    changed
                });
                continue;
            }
            let client = member_config(name, &cluster.spec, token).and_then(|config| {
                let url = config.cluster_url.to_string();
                Client::try_from(config)
                    .map(|client| (client, url))
                    .map_err(|e| MemberError::Client(name.clone(), e.to_string()))
            });
            match client {
                Ok((client, url)) => {
                    tracing::info!(cluster = %name, endpoint = %cluster.spec.api_endpoint, "connecting to member");
                    publish(
                        settings.members.as_ref(),
                        name,
                        Some(MemberHandle::new(name, client.clone(), labels.clone())),
                    );
                    let status_api = Some(Api::<KubeFedCluster>::namespaced(
                        host.clone(),
                        &settings.namespace,
                    ));
                    let r = connect(
                        name,
                        &url,
                        client,
                        fingerprint,
                        status_api,
                        &settings,
                        &watch_settings,
                        &events,
                        &notices_tx,
                        &probed,
                    );
                    running.running.insert(name.clone(), r);
                }
                Err(e) => {
                    tracing::error!(error = %e, "member not connected");
                    let _ = events
                        .send(SourceEvent::MemberReachable(name.clone(), false))
                        .await;
                }
            }
        }
        // Both mirrors listed and every member connected: the set is complete.
        if mirrored.lock().unwrap_or_else(|p| p.into_inner()).len() == 2
            && let Some(publisher) = &settings.members
        {
            crate::propagation::members::mark_listed(publisher);
        }
    }
    for t in tasks {
        t.abort();
    }
}

/// The `cluster` label of the host cluster's watchers.
pub const HOST: &str = "host";

/// Start-up order of one host watcher: what it waits for before its first listing, and what it
/// announces after its own.
struct Order {
    after: Option<tokio::sync::watch::Receiver<bool>>,
    listed: Option<tokio::sync::watch::Sender<bool>>,
}

impl Order {
    /// Waits for the watcher this one comes after; false when that one is gone.
    async fn wait(&mut self) -> bool {
        match &mut self.after {
            Some(after) => after.wait_for(|listed| *listed).await.is_ok(),
            None => true,
        }
    }

    fn listed(&self) {
        if let Some(listed) = &self.listed {
            listed.send_replace(true);
        }
    }
}

/// Mirrors one host kind into a map by name and wakes the member reconcile loop on changes.
#[derive(Clone)]
struct Mirror {
    reconcile: mpsc::UnboundedSender<()>,
    listed: mpsc::UnboundedSender<&'static str>,
    /// The mirrored kinds listed at least once (then the member set is complete).
    mirrored: Arc<Mutex<BTreeSet<&'static str>>>,
    events: mpsc::Sender<SourceEvent>,
}

impl Mirror {
    async fn run<K, T>(
        self,
        watched: Watched,
        api: Api<K>,
        strip: impl Fn(K) -> Option<(String, T)>,
        map: Arc<Mutex<BTreeMap<String, T>>>,
        mut order: Order,
    ) where
        K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K::DynamicType: Default,
    {
        if !order.wait().await {
            return;
        }
        let kind = watched.resource;
        watch::run(
            api,
            &watched,
            strip,
            |object: &K| object.meta().name.clone(),
            |change| {
                let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                match change {
                    Change::Reset(all) => {
                        map.clear();
                        map.extend(all);
                    }
                    Change::Apply((name, value)) => {
                        map.insert(name, value);
                    }
                    Change::Delete(name) => {
                        map.remove(&name);
                    }
                }
                let _ = self.reconcile.send(());
                None
            },
            |n| {
                if n == Notice::Listed {
                    order.listed();
                    let _ = self.listed.send(kind);
                    self.mirrored
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(kind);
                    let _ = self.reconcile.send(());
                }
            },
            &self.events,
        )
        .await;
    }
}

/// Starts a member's watchers and prober.
#[allow(clippy::too_many_arguments)]
fn connect(
    name: &str,
    url: &str,
    client: Client,
    fingerprint: String,
    status_api: Option<Api<KubeFedCluster>>,
    settings: &HostSettings,
    watch_settings: &WatchSettings,
    events: &mpsc::Sender<SourceEvent>,
    notices: &mpsc::UnboundedSender<WatchNotice>,
    probed: &Probed,
) -> Running {
    let watchers = member::spawn(
        name,
        url,
        client.clone(),
        watch_settings,
        events.clone(),
        notices.clone(),
    );
    let prober = tokio::spawn(probe_loop(
        name.to_owned(),
        client,
        settings.probe,
        events.clone(),
        status_api,
        settings.members.clone(),
        settings.leadership.clone(),
        probed.clone(),
    ));
    Running {
        fingerprint,
        _watchers: watchers,
        prober,
    }
}

/// Watches one federation kind and forwards it as model events.
#[allow(clippy::too_many_arguments)]
async fn federation_watch<K>(
    watched: Watched,
    api: Api<K>,
    kind: FederationKind,
    normalize: impl Fn(K) -> Result<FederationObject, normalize::NormalizeError>,
    id: impl Fn(&K) -> Option<FederationObjectId>,
    events: mpsc::Sender<SourceEvent>,
    listed: mpsc::UnboundedSender<&'static str>,
    mut order: Order,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    if !order.wait().await {
        return;
    }
    watch::run(
        api,
        &watched,
        |object| match normalize(object) {
            Ok(o) => Some(o),
            Err(error) => {
                tracing::warn!(%error, "federation object skipped");
                None
            }
        },
        id,
        |change| {
            Some(match change {
                Change::Reset(objects) => SourceEvent::ResetFederationKind(kind, objects),
                Change::Apply(o) => SourceEvent::ApplyFederation(o),
                Change::Delete(id) => SourceEvent::DeleteFederation(id),
            })
        },
        |n| {
            if n == Notice::Listed {
                order.listed();
                let _ = listed.send(kind.as_str());
            }
        },
        &events,
    )
    .await;
}

/// Sends `Synced` once the host kinds and the first members are listed. The host cluster is
/// waited for indefinitely (answering before its first listing would mean REFUSED for zones we
/// serve); members that have not listed by `timeout` are then treated as unreachable.
#[allow(clippy::too_many_arguments)]
async fn sync_gate(
    mut expected: BTreeSet<String>,
    mut host_listed: mpsc::UnboundedReceiver<&'static str>,
    mut notices: mpsc::UnboundedReceiver<WatchNotice>,
    timeout: Duration,
    events: mpsc::Sender<SourceEvent>,
    clusters: Arc<Mutex<BTreeMap<String, KubeFedCluster>>>,
    metrics: crate::metrics::Metrics,
    probed: Probed,
) {
    let mut gate = SyncGate::default();
    let deadline = tokio::time::sleep(timeout);
    let mut deadline = std::pin::pin!(deadline);
    loop {
        tokio::select! {
            kind = host_listed.recv() => {
                if let Some(kind) = kind {
                    gate.host_listed(kind);
                    if kind == "kubefedclusters" {
                        let names: Vec<String> = clusters
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .keys()
                            .cloned()
                            .collect();
                        expected.extend(names);
                    }
                }
            }
            notice = notices.recv() => {
                let Some(n) = notice else { return };
                if n.notice == Notice::Listed {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    metrics.member_last_sync.with_label_values(&[n.cluster.as_str()]).set(now);
                    let cluster = n.cluster.clone();
                    if gate.member_listed(n.cluster, n.kind) {
                        match probed.release(&cluster, &events).await {
                            Ok(true) => tracing::info!(%cluster, "member listed after the sync timeout: reachable again"),
                            Ok(false) => {}
                            Err(Closed) => return,
                        }
                    }
                }
            }
            _ = &mut deadline, if !gate.timed_out => {
                gate.timed_out = true;
                let missing = gate.missing_host_kinds();
                if !missing.is_empty() {
                    tracing::warn!(
                        ?missing,
                        "sync timeout: the host cluster has not been listed yet; not ready, answering SERVFAIL until it is"
                    );
                }
            }
        }
        match gate.decide(&expected) {
            SyncDecision::Wait | SyncDecision::Done => {}
            SyncDecision::Synced(unlisted) => {
                if unlisted.is_empty() {
                    tracing::info!(members = expected.len(), "first full listing done");
                } else {
                    tracing::warn!(
                        missing = ?unlisted,
                        "sync timeout: answering without a first listing of these members (treated as unreachable)"
                    );
                }
                // Held first, so that no prober turning ready in between serves them.
                gate.held_unreachable = unlisted.iter().cloned().collect();
                if probed.hold(&gate.held_unreachable, &events).await.is_err() {
                    return;
                }
                if events.send(SourceEvent::Synced).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The last readiness each member's prober decided, so that a member listed late is not
/// declared reachable against its prober's judgement; and the members the sync gate holds
/// unreachable because they had not listed by the timeout, so that a prober turning ready
/// later does not serve a member whose records were never listed.
///
/// Every `MemberReachable` that the probers and the sync gate send goes through it, under one
/// lock kept until the event is queued: a decision and its event reach the engine in the same
/// order, so a prober's "ready" decided just before a hold cannot land after the hold's
/// "unreachable" (it did, under load: a member that never listed was served).
#[derive(Debug, Clone, Default)]
struct Probed(Arc<tokio::sync::Mutex<ProbedState>>);

#[derive(Debug, Default)]
struct ProbedState {
    ready: HashMap<String, bool>,
    held: BTreeSet<String>,
}

impl ProbedState {
    /// Records the prober's decision; false when it must not be published because the member
    /// is held unreachable until it lists.
    fn set(&mut self, cluster: &str, ready: bool) -> bool {
        self.ready.insert(cluster.to_owned(), ready);
        !(ready && self.held.contains(cluster))
    }

    /// Releases a held member that has now listed; true when its prober does not object.
    fn release(&mut self, cluster: &str) -> bool {
        self.held.remove(cluster);
        self.ready.get(cluster) != Some(&false)
    }
}

/// The engine is gone: the source stops.
struct Closed;

impl Probed {
    /// Publishes a prober's decision unless the member is held.
    async fn publish(
        &self,
        cluster: &str,
        ready: bool,
        events: &mpsc::Sender<SourceEvent>,
    ) -> Result<(), Closed> {
        let mut state = self.0.lock().await;
        if state.set(cluster, ready) {
            send_reachable(events, cluster, ready).await?;
        }
        drop(state);
        Ok(())
    }

    /// Holds `clusters` unreachable (until they list) and says so to the engine.
    async fn hold(
        &self,
        clusters: &BTreeSet<String>,
        events: &mpsc::Sender<SourceEvent>,
    ) -> Result<(), Closed> {
        let mut state = self.0.lock().await;
        state.held.extend(clusters.iter().cloned());
        for cluster in clusters {
            send_reachable(events, cluster, false).await?;
        }
        drop(state);
        Ok(())
    }

    /// Releases a held member that has now listed, reachable again unless its prober objects;
    /// true when it was published reachable.
    async fn release(
        &self,
        cluster: &str,
        events: &mpsc::Sender<SourceEvent>,
    ) -> Result<bool, Closed> {
        let mut state = self.0.lock().await;
        let reachable = state.release(cluster);
        if reachable {
            send_reachable(events, cluster, true).await?;
        }
        drop(state);
        Ok(reachable)
    }
}

async fn send_reachable(
    events: &mpsc::Sender<SourceEvent>,
    cluster: &str,
    reachable: bool,
) -> Result<(), Closed> {
    events
        .send(SourceEvent::MemberReachable(cluster.to_owned(), reachable))
        .await
        .map_err(|_| Closed)
}

/// The host kinds whose first listing readiness waits for, however long it takes.
const HOST_KINDS: [&str; 5] = [
    "domains",
    "servicednsrecords",
    "ingressdnsrecords",
    "kubefedclusters",
    "secrets",
];

/// What the first listings have covered so far (pure; [`sync_gate`] feeds it).
#[derive(Debug, Default)]
struct SyncGate {
    host_done: BTreeSet<&'static str>,
    listed: BTreeSet<(String, MemberKind)>,
    timed_out: bool,
    synced: bool,
    /// Members marked unreachable at the timeout because they had not listed.
    held_unreachable: BTreeSet<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum SyncDecision {
    Wait,
    /// Send `Synced` now, after marking these members unreachable.
    Synced(Vec<String>),
    Done,
}

impl SyncGate {
    fn host_listed(&mut self, kind: &'static str) {
        self.host_done.insert(kind);
    }

    /// Records a listing; true when it completes the first listing of a member that was
    /// marked unreachable at the timeout for lack of one (it is reachable after all).
    fn member_listed(&mut self, cluster: String, kind: MemberKind) -> bool {
        self.listed.insert((cluster.clone(), kind));
        let complete = MemberKind::ALL
            .iter()
            .all(|k| self.listed.contains(&(cluster.clone(), *k)));
        complete && self.held_unreachable.remove(&cluster)
    }

    fn missing_host_kinds(&self) -> Vec<&'static str> {
        HOST_KINDS
            .into_iter()
            .filter(|k| !self.host_done.contains(k))
            .collect()
    }

    fn decide(&mut self, expected: &BTreeSet<String>) -> SyncDecision {
        if self.synced {
            return SyncDecision::Done;
        }
        if !self.missing_host_kinds().is_empty() {
            return SyncDecision::Wait;
        }
        let unlisted: Vec<String> = expected
            .iter()
            .filter(|c| {
                MemberKind::ALL
                    .iter()
                    .any(|k| !self.listed.contains(&((*c).clone(), *k)))
            })
            .cloned()
            .collect();
        if !unlisted.is_empty() && !self.timed_out {
            return SyncDecision::Wait;
        }
        self.synced = true;
        SyncDecision::Synced(unlisted)
    }
}

/// Probes a member until aborted; flips readiness after consecutive failures or successes and,
/// while this replica leads, writes the KubeFedCluster's conditions.
#[allow(clippy::too_many_arguments)]
async fn probe_loop(
    name: String,
    client: Client,
    settings: ProbeSettings,
    events: mpsc::Sender<SourceEvent>,
    status_api: Option<Api<KubeFedCluster>>,
    members: Option<MemberPublisher>,
    mut leadership: Leadership,
    probed: Probed,
) {
    let mut state = ProbeState::new(settings);
    // A member found not ready is probed less and less often (period doubling, jittered, up to
    // the longer of the period and 5 s); the first success resets it.
    let mut backoff = CappedBackoff::new(
        settings.period,
        settings.period.max(watch::RETRY_CAP_CONNECT),
    );
    // The readiness written and the term it was written in: after a leadership gap another
    // replica may have written something else, so a new term writes again.
    let mut written: Option<(u64, bool)> = None;
    loop {
        let result = match tokio::time::timeout(settings.timeout, probe_once(&client)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", settings.timeout)),
        };
        let ok = result.is_ok();
        if let Err(error) = &result {
            tracing::debug!(cluster = %name, %error, "member probe failed");
        }
        if let Some(ready) = state.observe(ok) {
            match &result {
                Ok(()) => tracing::info!(cluster = %name, ready, "member readiness changed"),
                Err(error) => {
                    tracing::warn!(cluster = %name, ready, %error, "member readiness changed")
                }
            }
            publish_change(members.as_ref(), &name, |m| {
                let changed = m.ready != ready || !m.probed;
                m.ready = ready;
                m.probed = true;
                changed
            });
            if probed.publish(&name, ready, &events).await.is_err() {
                return;
            }
        }
        if let (Some(api), Some(ready), Some(term)) = (&status_api, state.ready, leadership.term())
            && written != Some((term, ready))
        {
            let write = write_cluster_status(api, &name, ready);
            tokio::select! {
                done = write => if done {
                    written = Some((term, ready));
                },
                _ = leadership.lost() => {
                    tracing::debug!(cluster = %name, "KubeFedCluster status write abandoned: no longer the leader");
                }
            }
        }
        let pause = if ok {
            backoff.reset();
            settings.period
        } else if state.ready == Some(false) {
            backoff.next_delay(settings.period.max(watch::RETRY_CAP_CONNECT))
        } else {
            // Still counting towards the failure threshold: at the normal period.
            settings.period
        };
        if leadership.is_leader() {
            tokio::time::sleep(pause).await;
        } else {
            // A new leader writes what it knows at once instead of after a period.
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = leadership.acquired() => {}
            }
        }
    }
}

/// One probe: `Err` says why the member is not ready.
async fn probe_once(client: &Client) -> Result<(), String> {
    let mut last = String::new();
    for path in ["/readyz", "/healthz"] {
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => return Err(format!("{path} answered {:?}", body.trim())),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                last = format!("{path}: 404");
                continue;
            }
            Err(e) => return Err(format!("{path}: {}", watch::Failure::of_client(&e).message)),
        }
    }
    Err(last)
}

/// Consecutive-result thresholds (fedns's fix over KubeFed's flapping on one failure).
#[derive(Debug, Clone)]
pub struct ProbeState {
    settings: ProbeSettings,
    ready: Option<bool>,
    failures: u32,
    successes: u32,
}

impl ProbeState {
    pub fn new(settings: ProbeSettings) -> Self {
        Self {
            settings,
            ready: None,
            failures: 0,
            successes: 0,
        }
    }

    /// Records one probe result; returns the new readiness when it changes. The first success
    /// makes a member ready; a member never seen ready becomes not ready after the threshold.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let next = match self.ready {
            None if ok => Some(true),
            Some(false) if self.successes >= self.settings.success_threshold => Some(true),
            None | Some(true) if self.failures >= self.settings.failure_threshold => Some(false),
            _ => None,
        };
        if next.is_some() && next != self.ready {
            self.ready = next;
            return next;
        }
        None
    }
}

/// Writes the `Ready` (and `Offline`) conditions, with retries; false when they were not written.
async fn write_cluster_status(api: &Api<KubeFedCluster>, name: &str, ready: bool) -> bool {
    let now = Time(crate::k8s::timestamp(k8s_openapi::jiff::Timestamp::now()));
    let (status, reason, message) = if ready {
        ("True", "ClusterReady", "/readyz responded with ok")
    } else {
        ("False", "ClusterNotReachable", "cluster is not reachable")
    };
    let mut conditions = vec![json!({
        "type": "Ready", "status": status, "reason": reason, "message": message,
        "lastProbeTime": now, "lastTransitionTime": now,
    })];
    if !ready {
        conditions.push(json!({
            "type": "Offline", "status": "True", "reason": "ClusterNotReachable",
            "message": message, "lastProbeTime": now, "lastTransitionTime": now,
        }));
    }
    let patch = json!({ "status": { "conditions": conditions } });
    for attempt in 0..5u32 {
        match api
            .patch_status(name, &crate::k8s::patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return true,
            Err(e) => {
                tracing::debug!(cluster = name, error = %e, attempt, "KubeFedCluster status write failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    tracing::warn!(
        cluster = name,
        "KubeFedCluster status not written after retries"
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_held_for_lack_of_a_listing_is_not_served_when_its_prober_turns_ready() {
        let mut probed = ProbedState::default();
        assert!(probed.set("c1", true), "not held: published");
        probed.held.insert("c1".to_owned());
        assert!(
            !probed.set("c1", true),
            "held: the prober's ready is kept back"
        );
        assert!(probed.set("c1", false), "not ready is always published");
        assert!(
            !probed.release("c1"),
            "listed, but its prober says not ready"
        );
        assert!(probed.set("c1", true), "released: published again");
    }

    #[tokio::test]
    async fn a_hold_waits_for_a_prober_publication_in_flight_so_it_lands_last() {
        let (events, mut engine) = mpsc::channel(1);
        events.send(SourceEvent::Synced).await.unwrap(); // the engine is busy: sends wait
        let probed = Probed::default();
        let prober = tokio::spawn({
            let (probed, events) = (probed.clone(), events.clone());
            async move { probed.publish("c1", true, &events).await.is_ok() }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!prober.is_finished(), "the prober waits for room");
        // Until its event is queued, no other decision can be taken (and sent ahead of it).
        assert!(
            probed.0.try_lock().is_err(),
            "the prober keeps the lock until its event is queued"
        );
        let gate = tokio::spawn({
            let (probed, events) = (probed.clone(), events.clone());
            async move {
                probed
                    .hold(&BTreeSet::from(["c1".to_owned()]), &events)
                    .await
                    .is_ok()
            }
        });
        let mut received = Vec::new();
        for _ in 0..3 {
            received.push(engine.recv().await.unwrap());
        }
        assert!(prober.await.unwrap() && gate.await.unwrap());
        assert_eq!(
            received,
            [
                SourceEvent::Synced,
                SourceEvent::MemberReachable("c1".into(), true),
                SourceEvent::MemberReachable("c1".into(), false),
            ]
        );
        assert!(probed.0.lock().await.held.contains("c1"));
    }

    fn settings(fail: u32, ok: u32) -> ProbeSettings {
        ProbeSettings {
            failure_threshold: fail,
            success_threshold: ok,
            ..ProbeSettings::default()
        }
    }

    #[test]
    fn readiness_flips_only_after_consecutive_failures() {
        let mut p = ProbeState::new(settings(3, 1));
        assert_eq!(p.observe(true), Some(true));
        assert_eq!(p.observe(false), None);
        assert_eq!(p.observe(false), None);
        assert_eq!(p.observe(true), None, "a success resets the count");
        assert_eq!(p.observe(false), None);
        assert_eq!(p.observe(false), None);
        assert_eq!(p.observe(false), Some(false));
        assert_eq!(p.observe(true), Some(true));
    }

    #[test]
    fn recovery_waits_for_the_success_threshold() {
        let mut p = ProbeState::new(settings(1, 2));
        assert_eq!(p.observe(false), Some(false));
        assert_eq!(p.observe(true), None);
        assert_eq!(p.observe(true), Some(true));
    }

    #[test]
    fn never_synced_before_the_host_is_listed_however_long_it_takes() {
        let mut gate = SyncGate::default();
        let expected = BTreeSet::from(["c1".to_string()]);
        gate.timed_out = true;
        assert_eq!(gate.decide(&expected), SyncDecision::Wait);
        for kind in HOST_KINDS.into_iter().skip(1) {
            gate.host_listed(kind);
        }
        assert_eq!(
            gate.decide(&expected),
            SyncDecision::Wait,
            "domains missing"
        );
        gate.host_listed("domains");
        assert_eq!(
            gate.decide(&expected),
            SyncDecision::Synced(vec!["c1".into()]),
            "the timeout applies to members only"
        );
        assert_eq!(gate.decide(&expected), SyncDecision::Done);
    }

    #[test]
    fn members_are_waited_for_until_the_timeout() {
        let mut gate = SyncGate::default();
        let expected = BTreeSet::from(["c1".to_string(), "c2".to_string()]);
        for kind in HOST_KINDS {
            gate.host_listed(kind);
        }
        for kind in MemberKind::ALL {
            gate.member_listed("c1".into(), kind);
        }
        assert_eq!(gate.decide(&expected), SyncDecision::Wait);
        for kind in MemberKind::ALL {
            gate.member_listed("c2".into(), kind);
        }
        assert_eq!(gate.decide(&expected), SyncDecision::Synced(vec![]));
    }

    #[test]
    fn a_member_listed_after_the_timeout_is_reachable_again() {
        let mut gate = SyncGate::default();
        let expected = BTreeSet::from(["c1".to_string()]);
        for kind in HOST_KINDS {
            gate.host_listed(kind);
        }
        gate.timed_out = true;
        let SyncDecision::Synced(unlisted) = gate.decide(&expected) else {
            panic!("synced at the timeout");
        };
        gate.held_unreachable = unlisted.into_iter().collect();
        let (last, first) = MemberKind::ALL.split_last().unwrap();
        for kind in first {
            assert!(!gate.member_listed("c1".into(), *kind));
        }
        assert!(gate.member_listed("c1".into(), *last));
        assert!(!gate.member_listed("c1".into(), *last), "only once");
    }

    #[test]
    fn member_config_reads_endpoint_token_ca_and_proxy() {
        let spec = KubeFedClusterSpec {
            api_endpoint: "c1.example:6443".into(),
            proxy_url: Some("http://127.0.0.1:3128".into()),
            ..Default::default()
        };
        let c = member_config("c1", &spec, "t0ken").unwrap();
        assert_eq!(c.cluster_url.to_string(), "https://c1.example:6443/");
        assert!(c.auth_info.token.is_some());
        assert!(c.proxy_url.is_some());
        assert!(!c.accept_invalid_certs);
        let bad = KubeFedClusterSpec {
            api_endpoint: "https://c1".into(),
            ca_bundle: Some(k8s_openapi::ByteString(b"not a pem".to_vec())),
            ..Default::default()
        };
        let err = member_config("c1", &bad, "t").unwrap_err().to_string();
        assert!(err.contains("caBundle"), "{err}");
    }
}
