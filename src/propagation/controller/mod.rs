//! The sync controller: the I/O shell around [`placement`](super::placement),
//! [`render`](super::render), [`plan`](super::plan) and [`status`](super::status).
//!
//! This file owns [`run`] (watches `FederatedTypeConfig`s and the `KubeFedConfig`, runs one
//! [`TypeSync`] per enabled type, writes each FTC's status) and [`TypeSync::start`] (the watches,
//! queue and workers of one type). A type sync keeps a cache of its federated objects (host) and
//! of the managed member objects (`caches`), and a work queue of object keys fed by every change
//! to either; workers reconcile one key at a time (`sync`: finalizer, placement, one
//! [`plan`](super::plan) action per cluster carried out by `apply`, status and Events by
//! `report`; `finalize` for objects being deleted). Everything that writes runs only while this
//! replica leads (`leader`), and a reconcile in flight is abandoned the moment leadership is lost.
//!
//! Restart safety: no reconcile starts before the federated objects, the FederatedNamespaces
//! and the member set have listed, and a cluster whose prober has not judged it or whose member
//! cache has not listed is waited for; each input, once listed, wakes the whole type again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod apply;
mod caches;
mod finalize;
mod report;
mod sync;

use super::members::MemberDirectory;
use super::queue::WorkQueue;
use super::render::Propagated;
use super::types::{
    ApiResourceRef, FederatedTypeConfig, KUBEFED_CONFIG_NAME, KubeFedConfig, KubeFedConfigSpec,
    PropagationMode, default_type, federated_type_of,
};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::source::kubernetes::watch::retried;

/// Settings of the sync controller.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// The control-plane namespace (FTCs, KubeFedConfig).
    pub namespace: String,
    /// Reconciles running at once per federated type.
    pub workers: usize,
    /// A create/update/delete in a member that takes longer has timed out.
    pub write_timeout: Duration,
    /// Every object is checked again this often (no writes when nothing drifted).
    pub resync: Duration,
    pub metrics: Metrics,
}

impl SyncSettings {
    pub fn new(namespace: String, metrics: Metrics) -> Self {
        Self {
            namespace,
            workers: 16,
            write_timeout: Duration::from_secs(30),
            resync: Duration::from_secs(300),
            metrics,
        }
    }
}

/// Aborts a task when dropped, so a stopped type sync or member cache stops its watches.
#[derive(Debug)]
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Mirrors `api` into `writer` and signals `changed` on every change after the first listing's
/// objects (a watch failure is logged and backed off by [`retried`]).
async fn mirror_and_signal<K>(
    writer: Writer<K>,
    api: Api<K>,
    config: watcher::Config,
    what: &'static str,
    changed: tokio::sync::mpsc::UnboundedSender<()>,
) where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let stream = reflector::reflector(
        writer,
        retried(watcher::watcher(api, config), what.to_owned()),
    );
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if matches!(
            event,
            Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone)
        ) {
            let _ = changed.send(());
        }
    }
}

/// Runs until shutdown: watches FTCs and the KubeFedConfig, runs one type sync per enabled type.
pub async fn run(
    host: Client,
    settings: SyncSettings,
    members: MemberDirectory,
    leader: watch::Receiver<bool>,
    shutdown: Shutdown,
) {
    let ftcs: Api<FederatedTypeConfig> = Api::namespaced(host.clone(), &settings.namespace);
    let configs: Api<KubeFedConfig> = Api::namespaced(host.clone(), &settings.namespace);
    let (ftc_writer, ftc_store) = {
        let w: Writer<FederatedTypeConfig> = Writer::default();
        let r = w.as_reader();
        (w, r)
    };
    let (cfg_writer, cfg_store) = {
        let w: Writer<KubeFedConfig> = Writer::default();
        let r = w.as_reader();
        (w, r)
    };
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let ftc_watch = TaskGuard(tokio::spawn(mirror_and_signal(
        ftc_writer,
        ftcs,
        watcher::Config::default(),
        "FederatedTypeConfigs",
        changed_tx.clone(),
    )));
    let cfg_watch = TaskGuard(tokio::spawn(mirror_and_signal(
        cfg_writer,
        configs,
        watcher::Config::default().fields(&format!("metadata.name={KUBEFED_CONFIG_NAME}")),
        "KubeFedConfig",
        changed_tx.clone(),
    )));
    let recorder = Recorder::new(
        host.clone(),
        Reporter {
            controller: "fedns-propagation".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    // name → (what it was started for, the running sync)
    let mut running: BTreeMap<String, (String, TypeSync)> = BTreeMap::new();
    let ftc_api: Api<FederatedTypeConfig> = Api::namespaced(host.clone(), &settings.namespace);
    let mut leader_changes = leader.clone();
    let _ = ftc_store.wait_until_ready().await;
    loop {
        let config = cfg_store
            .get(&ObjectRef::new(KUBEFED_CONFIG_NAME).within(&settings.namespace))
            .map(|c| c.spec.clone())
            .unwrap_or_else(default_config);
        let mut wanted: BTreeMap<String, (String, ApiResourceRef, ApiResourceRef)> =
            BTreeMap::new();
        for ftc in ftc_store.state() {
            if ftc.spec.propagation != PropagationMode::Enabled {
                continue;
            }
            let identity = format!(
                "{}|{}|{}",
                serde_json::to_string(&ftc.spec.target_type).unwrap_or_default(),
                serde_json::to_string(&ftc.spec.federated_type).unwrap_or_default(),
                config.scope,
            );
            wanted.insert(
                ftc.name_any(),
                (
                    identity,
                    ftc.spec.target_type.clone(),
                    ftc.spec.federated_type.clone(),
                ),
            );
        }
        running.retain(|name, (identity, _)| {
            wanted
                .get(name)
                .is_some_and(|(wanted, _, _)| wanted == identity)
        });
        for (name, (identity, target, federated)) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            tracing::info!(ftc = %name, kind = %federated.kind, "propagation started");
            let sync = TypeSync::start(
                host.clone(),
                target,
                federated,
                config.clone(),
                &settings,
                members.clone(),
                leader.clone(),
                recorder.clone(),
            );
            running.insert(name, (identity, sync));
        }
        // Every running sync sees config changes (adoption switch) without a restart.
        for (_, sync) in running.values() {
            let _ = sync.ctx.config.send(config.clone());
        }
        if *leader_changes.borrow_and_update() {
            report::write_type_config_statuses(&ftc_api, &ftc_store.state(), &running).await;
        }
        tokio::select! {
            changed = changed_rx.recv() => if changed.is_none() { break },
            _ = changed_or_forever(&mut leader_changes) => {}
            _ = shutdown.wait() => break,
        }
        while changed_rx.try_recv().is_ok() {}
    }
    drop((ftc_watch, cfg_watch));
}

fn default_config() -> KubeFedConfigSpec {
    KubeFedConfigSpec {
        scope: "Cluster".into(),
        ..Default::default()
    }
}

/// A federated object's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Empty for cluster-scoped federated types.
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Key {
        Key {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// The watches, queue and workers of one federated type; dropping it stops them.
struct TypeSync {
    ctx: Arc<TypeContext>,
    _tasks: Vec<TaskGuard>,
}

/// What the workers of one type share.
struct TypeContext {
    target: ApiResourceRef,
    federated: ApiResourceRef,
    host: Client,
    fed_store: Store<DynamicObject>,
    /// The federated objects have completed their first listing.
    fed_listed: Arc<AtomicBool>,
    /// FederatedNamespaces, for the namespace intersection (cluster-scoped control plane).
    namespaces: Option<Store<DynamicObject>>,
    /// The FederatedNamespaces have completed their first listing (or are not consulted).
    namespaces_listed: Arc<AtomicBool>,
    config: watch::Sender<KubeFedConfigSpec>,
    members: MemberDirectory,
    caches: Mutex<BTreeMap<String, MemberCache>>,
    queue: WorkQueue<Key>,
    /// What was last written per object and cluster.
    propagated: Mutex<HashMap<(Key, String), Propagated>>,
    /// Members found to be the host cluster itself (their Namespaces are never deleted).
    host_members: Mutex<HashMap<String, bool>>,
    /// The latest generation of each object and when it was first seen, until it is propagated
    /// everywhere (then `None`), for the propagation latency metric.
    seen: Mutex<HashMap<Key, (i64, Option<Instant>)>>,
    states: Mutex<HashMap<Key, &'static str>>,
    recorder: Recorder,
    write_timeout: Duration,
    metrics: Metrics,
}

/// The managed objects of one type in one member.
struct MemberCache {
    client: Client,
    /// The member connection it was built for ([`MemberHandle::connection`]).
    ///
    /// [`MemberHandle::connection`]: super::members::MemberHandle::connection
    connection: u64,
    store: Store<DynamicObject>,
    /// The first listing is complete: an object missing from `store` is absent.
    listed: Arc<AtomicBool>,
    /// The watch has failed and not listed since.
    failing: Arc<AtomicBool>,
    _task: TaskGuard,
}

impl TypeSync {
    #[allow(clippy::too_many_arguments)]
    fn start(
        host: Client,
        target: ApiResourceRef,
        federated: ApiResourceRef,
        config: KubeFedConfigSpec,
        settings: &SyncSettings,
        members: MemberDirectory,
        leader: watch::Receiver<bool>,
        recorder: Recorder,
    ) -> TypeSync {
        let namespaced_plane = config.namespaced();
        let plane_ns = settings.namespace.clone();
        let queue: WorkQueue<Key> = WorkQueue::new(Duration::from_secs(5), Duration::from_secs(60));
        let mut tasks = Vec::new();

        let fed_ar = federated.api_resource();
        let fed_api: Api<DynamicObject> = if federated.namespaced() && namespaced_plane {
            Api::namespaced_with(host.clone(), &plane_ns, &fed_ar)
        } else {
            Api::all_with(host.clone(), &fed_ar)
        };
        let fed_writer = Writer::new(fed_ar.clone());
        let fed_store = fed_writer.as_reader();
        let fed_listed = Arc::new(AtomicBool::new(false));
        {
            let queue = queue.clone();
            let listed = fed_listed.clone();
            let label = federated.kind.clone();
            tasks.push(TaskGuard(tokio::spawn(async move {
                let stream = reflector::reflector(
                    fed_writer,
                    retried(
                        watcher::watcher(fed_api, watcher::Config::default()),
                        format!("host {label}"),
                    ),
                );
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(Event::Apply(o) | Event::InitApply(o) | Event::Delete(o)) => {
                            queue.add(key_of(&o));
                        }
                        Ok(Event::InitDone) => listed.store(true, Ordering::Release),
                        Ok(Event::Init) => {}
                        // Logged and backed off by `retried`.
                        Err(_) => {}
                    }
                }
            })));
        }

        // The namespace intersection applies to namespaced types of a cluster-scoped plane.
        let namespaces_listed = Arc::new(AtomicBool::new(true));
        let namespaces = if target.namespaced() && !namespaced_plane {
            namespaces_listed.store(false, Ordering::Release);
            let listed = namespaces_listed.clone();
            let ns_type = federated_type_of(&default_type("namespaces").expect("a default type"));
            let ar = ns_type.api_resource();
            let writer = Writer::new(ar.clone());
            let store = writer.as_reader();
            let api: Api<DynamicObject> = Api::all_with(host.clone(), &ar);
            let queue = queue.clone();
            let fed_store = fed_store.clone();
            tasks.push(TaskGuard(tokio::spawn(async move {
                let stream = reflector::reflector(
                    writer,
                    retried(
                        watcher::watcher(api, watcher::Config::default()),
                        "host FederatedNamespaces".to_owned(),
                    ),
                );
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        // A namespace's placement changed: everything in it may move.
                        Ok(Event::Apply(o) | Event::Delete(o)) => {
                            let ns = o.namespace().unwrap_or_default();
                            for obj in fed_store.state() {
                                if obj.namespace().as_deref() == Some(ns.as_str()) {
                                    queue.add(key_of(&obj));
                                }
                            }
                        }
                        // Listed (again): objects waiting for it may go on.
                        Ok(Event::InitDone) => {
                            listed.store(true, Ordering::Release);
                            for obj in fed_store.state() {
                                queue.add(key_of(&obj));
                            }
                        }
                        Ok(_) => {}
                        // Logged and backed off by `retried`.
                        Err(_) => {}
                    }
                }
            })));
            Some(store)
        } else {
            None
        };

        let (config_tx, _) = watch::channel(config);
        let ctx = Arc::new(TypeContext {
            target,
            federated,
            host,
            fed_store,
            fed_listed,
            namespaces,
            namespaces_listed,
            config: config_tx,
            members: members.clone(),
            caches: Mutex::new(BTreeMap::new()),
            queue: queue.clone(),
            propagated: Mutex::new(HashMap::new()),
            host_members: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
            recorder,
            write_timeout: settings.write_timeout,
            metrics: settings.metrics.clone(),
        });

        // Member caches follow the member set; any change re-checks every object (placement and
        // readiness both come from it).
        {
            let ctx = ctx.clone();
            let mut members = members;
            let scope = namespaced_plane.then(|| plane_ns.clone());
            tasks.push(TaskGuard(tokio::spawn(async move {
                loop {
                    let set = members.borrow_and_update().clone();
                    ctx.sync_member_caches(&set, scope.as_deref());
                    ctx.enqueue_all();
                    if members.changed().await.is_err() {
                        return;
                    }
                }
            })));
        }
        // Periodic resync, and everything again when this replica becomes the leader.
        {
            let ctx = ctx.clone();
            let resync = settings.resync;
            let mut leader = leader.clone();
            tasks.push(TaskGuard(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(resync) => {}
                        _ = changed_or_forever(&mut leader) => {}
                    }
                    if *leader.borrow() {
                        ctx.enqueue_all();
                    }
                }
            })));
        }
        for _ in 0..settings.workers.max(1) {
            let ctx = ctx.clone();
            let mut leader = leader.clone();
            tasks.push(TaskGuard(tokio::spawn(async move {
                let _ = ctx.fed_store.wait_until_ready().await;
                while let Some(key) = ctx.queue.next().await {
                    if *leader.borrow_and_update() {
                        tokio::select! {
                            _ = ctx.reconcile(&key) => {}
                            _ = lost(&mut leader) => {
                                tracing::info!("leadership lost: abandoning work in flight");
                            }
                        }
                    }
                    ctx.queue.done(&key);
                }
            })));
        }
        TypeSync { ctx, _tasks: tasks }
    }
}

/// Resolves when leadership changes; never when nobody can change it any more.
async fn changed_or_forever(leader: &mut watch::Receiver<bool>) {
    if leader.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves when this replica stops leading (a closed channel keeps the last word).
async fn lost(leader: &mut watch::Receiver<bool>) {
    if leader.wait_for(|l| !*l).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn key_of(o: &DynamicObject) -> Key {
    Key::new(o.namespace().unwrap_or_default(), o.name_any())
}
