//! The sync controller: the I/O shell around [`placement`](super::placement),
//! [`render`](super::render) and [`status`](super::status).
//!
//! One task watches `FederatedTypeConfig`s and the `KubeFedConfig`, and runs one [`TypeSync`] per
//! enabled type. A type sync keeps a cache of its federated objects (host) and of the managed
//! member objects (label `kubefed.io/managed=true`, per member), and a work queue of object keys
//! fed by every change to either; workers reconcile one key at a time: finalizer, placement,
//! render, create/update/delete per cluster concurrently, status. Everything that writes runs
//! only while this replica leads (`leader`), and a reconcile in flight is abandoned the moment
//! leadership is lost.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::members::{MemberDirectory, MemberSet};
use super::placement::{self, NamespacePlacement};
use super::queue::WorkQueue;
use super::render::{self, Federated, Propagated};
use super::status::{self, ClusterOutcome, ClusterState, ObjectProblem};
use super::types::{
    ApiResourceRef, DELETE_OPTION_ANNOTATION, FederatedSpec, FederatedTypeConfig,
    KUBEFED_CONFIG_NAME, KubeFedConfig, KubeFedConfigSpec, MANAGED_LABEL, ORPHAN_ANNOTATION,
    PropagationMode, SYNC_FINALIZER, default_type, federated_type_of,
};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::source::kubernetes::watch::CappedBackoff;

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
    let ftc_watch = {
        let tx = changed_tx.clone();
        TaskGuard(tokio::spawn(async move {
            let stream = reflector::reflector(
                ftc_writer,
                watcher::watcher(ftcs, watcher::Config::default())
                    .backoff(CappedBackoff::default()),
            );
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::InitApply(_)) | Ok(Event::Init) => {}
                    Ok(_) => {
                        let _ = tx.send(());
                    }
                    Err(error) => {
                        tracing::warn!(%error, "FederatedTypeConfig watch failed; retrying")
                    }
                }
            }
        }))
    };
    let cfg_watch = {
        let tx = changed_tx.clone();
        TaskGuard(tokio::spawn(async move {
            let config =
                watcher::Config::default().fields(&format!("metadata.name={KUBEFED_CONFIG_NAME}"));
            let stream = reflector::reflector(
                cfg_writer,
                watcher::watcher(configs, config).backoff(CappedBackoff::default()),
            );
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::InitApply(_)) | Ok(Event::Init) => {}
                    Ok(_) => {
                        let _ = tx.send(());
                    }
                    Err(error) => tracing::warn!(%error, "KubeFedConfig watch failed; retrying"),
                }
            }
        }))
    };
    let recorder = Recorder::new(
        host.clone(),
        Reporter {
            controller: "fedns-propagation".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    // name → (what it was started for, the running sync)
    let mut running: BTreeMap<String, (String, TypeSync)> = BTreeMap::new();
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
        tokio::select! {
            changed = changed_rx.recv() => if changed.is_none() { break },
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

/// A federated object's key: namespace (empty for cluster-scoped federated types) and name.
type Key = (String, String);

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
    /// FederatedNamespaces, for the namespace intersection (cluster-scoped control plane).
    namespaces: Option<Store<DynamicObject>>,
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
    store: Store<DynamicObject>,
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
        {
            let queue = queue.clone();
            let label = federated.kind.clone();
            tasks.push(TaskGuard(tokio::spawn(async move {
                let stream = reflector::reflector(
                    fed_writer,
                    watcher::watcher(fed_api, watcher::Config::default())
                        .backoff(CappedBackoff::default()),
                );
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(Event::Apply(o) | Event::InitApply(o) | Event::Delete(o)) => {
                            queue.add(key_of(&o));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(kind = %label, %error, "watch failed; retrying")
                        }
                    }
                }
            })));
        }

        // The namespace intersection applies to namespaced types of a cluster-scoped plane.
        let namespaces = if target.namespaced() && !namespaced_plane {
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
                    watcher::watcher(api, watcher::Config::default())
                        .backoff(CappedBackoff::default()),
                );
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    // A namespace's placement changed: everything in it may move.
                    if let Ok(Event::Apply(o) | Event::Delete(o)) = event {
                        let ns = o.namespace().unwrap_or_default();
                        for obj in fed_store.state() {
                            if obj.namespace().as_deref() == Some(ns.as_str()) {
                                queue.add(key_of(&obj));
                            }
                        }
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
            namespaces,
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
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// Outcome of one cluster's step, with what to record.
struct Step {
    cluster: String,
    outcome: Option<ClusterOutcome>,
    /// The cluster still holds the object (deletion flow: blocks the finalizer).
    blocks: bool,
}

impl TypeContext {
    fn enqueue_all(&self) {
        for o in self.fed_store.state() {
            self.queue.add(key_of(&o));
        }
    }

    fn sync_member_caches(self: &Arc<Self>, set: &MemberSet, scope: Option<&str>) {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.retain(|name, _| set.contains_key(name));
        for (name, member) in set.iter() {
            if caches.contains_key(name) {
                continue;
            }
            let ar = self.target.api_resource();
            let api: Api<DynamicObject> = match scope {
                Some(ns) if self.target.namespaced() => {
                    Api::namespaced_with(member.client.clone(), ns, &ar)
                }
                _ => Api::all_with(member.client.clone(), &ar),
            };
            let writer = Writer::new(ar.clone());
            let store = writer.as_reader();
            let queue = self.queue.clone();
            let target = self.target.clone();
            let federated_namespaced = self.federated.namespaced();
            let label = format!("{}/{}", name, self.target.kind);
            let task = tokio::spawn(async move {
                let config = watcher::Config::default().labels(&format!("{MANAGED_LABEL}=true"));
                let stream = reflector::reflector(
                    writer,
                    watcher::watcher(api, config).backoff(CappedBackoff::default()),
                );
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(Event::Apply(o) | Event::InitApply(o) | Event::Delete(o)) => {
                            queue.add(member_key(&target, federated_namespaced, &o));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::debug!(watch = %label, %error, "member watch failed; retrying")
                        }
                    }
                }
            });
            caches.insert(
                name.clone(),
                MemberCache {
                    client: member.client.clone(),
                    store,
                    _task: TaskGuard(task),
                },
            );
        }
    }

    /// The managed object for `key` in `cluster`, from the cache.
    fn cached(&self, cluster: &str, key: &Key) -> Option<Value> {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        let cache = caches.get(cluster)?;
        let obj = cache.store.get(&self.member_ref(key))?;
        serde_json::to_value(obj.as_ref()).ok()
    }

    fn member_ref(&self, key: &Key) -> ObjectRef<DynamicObject> {
        let r = ObjectRef::new_with(&key.1, self.target.api_resource());
        if self.target.namespaced() {
            r.within(&key.0)
        } else {
            r
        }
    }

    /// The client of a member this type sync has a cache for.
    fn member_client(&self, cluster: &str) -> Option<Client> {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.get(cluster).map(|c| c.client.clone())
    }

    fn member_api(&self, cluster: &str, key: &Key) -> Option<Api<DynamicObject>> {
        let client = self.member_client(cluster)?;
        let ar = self.target.api_resource();
        Some(if self.target.namespaced() {
            Api::namespaced_with(client, &key.0, &ar)
        } else {
            Api::all_with(client, &ar)
        })
    }

    fn fed_api(&self, key: &Key) -> Api<DynamicObject> {
        let ar = self.federated.api_resource();
        if self.federated.namespaced() {
            Api::namespaced_with(self.host.clone(), &key.0, &ar)
        } else {
            Api::all_with(self.host.clone(), &ar)
        }
    }

    async fn reconcile(self: &Arc<Self>, key: &Key) {
        let r = ObjectRef::new_with(&key.1, self.federated.api_resource());
        let r = if self.federated.namespaced() {
            r.within(&key.0)
        } else {
            r
        };
        let retry = match self.fed_store.get(&r) {
            None => {
                self.release_orphans(key).await;
                self.forget(key);
                false
            }
            Some(fed) if fed.metadata.deletion_timestamp.is_some() => {
                self.finalize(key, &fed).await
            }
            Some(fed) => self.sync(key, &fed).await,
        };
        if retry {
            self.queue.retry(key.clone());
        } else {
            self.queue.forget(key);
        }
    }

    fn forget(&self, key: &Key) {
        self.propagated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(k, _), _| k != key);
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let Some(state) = self
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
        {
            self.metrics
                .propagation_objects
                .with_label_values(&[&self.federated.kind, state])
                .dec();
        }
    }

    fn set_state(&self, key: &Key, state: &'static str) {
        let old = self
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), state);
        if old == Some(state) {
            return;
        }
        let g = &self.metrics.propagation_objects;
        if let Some(old) = old {
            g.with_label_values(&[&self.federated.kind, old]).dec();
        }
        g.with_label_values(&[&self.federated.kind, state]).inc();
    }

    /// Member objects still labeled managed whose federated object is gone are released
    /// (unlabeled), never deleted.
    async fn release_orphans(&self, key: &Key) {
        let set = self.members.borrow().clone();
        for (cluster, member) in set.iter() {
            if !member.ready {
                continue;
            }
            let Some(live) = self.cached(cluster, key) else {
                continue;
            };
            match self.unlabel(cluster, key, &live).await {
                Ok(true) => {
                    tracing::info!(cluster, namespace = %key.0, name = %key.1, kind = %self.target.kind,
                        "released a managed object whose federated object is gone");
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(cluster, %error, "could not release an orphaned object")
                }
            }
        }
    }

    /// Removes the managed label from a member object (it stays, unmanaged); `Ok(false)` when
    /// there was nothing to remove or no connection to the member.
    async fn unlabel(&self, cluster: &str, key: &Key, live: &Value) -> Result<bool, kube::Error> {
        let (Some(patch), Some(api)) = (render::unlabel_patch(live), self.member_api(cluster, key))
        else {
            return Ok(false);
        };
        api.patch(
            &key.1,
            &PatchParams::default(),
            &Patch::Json::<()>(json_patch_of(patch)),
        )
        .await?;
        self.count_write(cluster, "unlabel");
        Ok(true)
    }

    fn count_write(&self, cluster: &str, verb: &str) {
        self.metrics
            .propagation_writes
            .with_label_values(&[cluster, verb])
            .inc();
    }

    /// Propagates one live federated object; returns whether to retry with backoff.
    async fn sync(self: &Arc<Self>, key: &Key, fed: &DynamicObject) -> bool {
        let generation = fed.metadata.generation.unwrap_or(0);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.get(key).is_none_or(|(g, _)| *g != generation) {
                seen.insert(key.clone(), (generation, Some(Instant::now())));
            }
        }
        if !fed.finalizers().iter().any(|f| f == SYNC_FINALIZER) {
            let patch = if fed.metadata.finalizers.is_none() {
                json!([{"op": "add", "path": "/metadata/finalizers", "value": [SYNC_FINALIZER]}])
            } else {
                json!([{"op": "add", "path": "/metadata/finalizers/-", "value": SYNC_FINALIZER}])
            };
            if let Err(error) = self
                .fed_api(key)
                .patch(
                    &key.1,
                    &PatchParams::default(),
                    &Patch::Json::<()>(json_patch_of(patch)),
                )
                .await
            {
                tracing::warn!(name = %key.1, %error, "could not add the finalizer");
                return true;
            }
        }
        let previous = fed.data.get("status").cloned().unwrap_or(Value::Null);
        let spec: FederatedSpec =
            match serde_json::from_value(fed.data.get("spec").cloned().unwrap_or(Value::Null)) {
                Ok(spec) => spec,
                Err(e) => {
                    let problem = ObjectProblem::InvalidSpec(format!("spec: {e}"));
                    self.write_status(key, fed, &BTreeMap::new(), Some(&problem), &previous)
                        .await;
                    self.set_state(key, "failed");
                    return false;
                }
            };
        let set = self.members.borrow().clone();
        let labels: BTreeMap<String, BTreeMap<String, String>> = set
            .iter()
            .map(|(n, m)| (n.clone(), m.labels.clone()))
            .collect();
        let ns_placement = self.namespace_placement(key, &labels);
        let placed = match &ns_placement {
            Err(problem) => Err(problem.clone()),
            Ok(nsp) => placement::place(&spec.placement, &labels, nsp)
                .map_err(|e| ObjectProblem::ComputePlacementFailed(e.to_string())),
        };
        let (selected, mut problem) = match placed {
            Ok(s) => (s, None),
            Err(p) => (BTreeSet::new(), Some(p)),
        };
        if matches!(ns_placement, Ok(NamespacePlacement::NotFederated)) {
            problem = Some(ObjectProblem::NamespaceNotFederated);
        }
        let overrides_ok = render::validate_overrides(&spec.overrides);
        if let Err(e) = &overrides_ok {
            problem = Some(ObjectProblem::ApplyOverridesFailed(e.to_string()));
        }
        for warning in render::template_warnings(&spec.template) {
            self.event(
                fed,
                EventType::Warning,
                "TemplateFieldIgnored",
                &warning,
                "Render",
            )
            .await;
        }
        let adopt = self.config.borrow().adopts();
        let mut steps = Vec::new();
        for (cluster, member) in set.iter() {
            let live = self.cached(cluster, key);
            let chosen = selected.contains(cluster);
            if !chosen && live.is_none() {
                continue;
            }
            let ctx = self.clone();
            let spec = &spec;
            let overrides_ok = overrides_ok.is_ok();
            let ready = member.ready;
            let cluster = cluster.clone();
            steps.push(async move {
                if !ready {
                    return Step {
                        outcome: chosen.then_some(ClusterOutcome {
                            state: ClusterState::ClusterNotReady,
                            remote_status: None,
                        }),
                        cluster,
                        blocks: false,
                    };
                }
                if !chosen {
                    let state = ctx.delete_member(key, fed, &cluster).await;
                    let failed = state != ClusterState::Ok;
                    return Step {
                        outcome: failed.then_some(ClusterOutcome {
                            state,
                            remote_status: None,
                        }),
                        cluster,
                        blocks: false,
                    };
                }
                if !overrides_ok {
                    return Step {
                        outcome: Some(ClusterOutcome {
                            state: ClusterState::ApplyOverridesFailed,
                            remote_status: None,
                        }),
                        cluster,
                        blocks: false,
                    };
                }
                let outcome = ctx
                    .apply_member(key, fed, spec, &cluster, live, adopt)
                    .await;
                Step {
                    outcome: Some(outcome),
                    cluster,
                    blocks: false,
                }
            });
        }
        let steps = futures::future::join_all(steps).await;
        let outcomes: BTreeMap<String, ClusterOutcome> = steps
            .into_iter()
            .filter_map(|s| Some((s.cluster, s.outcome?)))
            .collect();
        let retry = outcomes.values().any(|o| o.state.retryable());
        let all_ok = problem.is_none() && outcomes.values().all(|o| o.state == ClusterState::Ok);
        self.write_status(key, fed, &outcomes, problem.as_ref(), &previous)
            .await;
        if all_ok {
            self.set_state(key, "propagated");
            let since = match self
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(key)
            {
                // Observed once per generation: later resyncs of it are not propagations.
                Some((g, since)) if *g == generation => since.take(),
                _ => None,
            };
            if let Some(since) = since {
                self.metrics
                    .propagation_duration
                    .observe(since.elapsed().as_secs_f64());
            }
        } else {
            self.set_state(key, if retry { "pending" } else { "failed" });
        }
        retry
    }

    /// Where a namespaced object may go given its namespace's FederatedNamespace.
    fn namespace_placement(
        &self,
        key: &Key,
        labels: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<NamespacePlacement, ObjectProblem> {
        if self.target.group.is_empty() && self.target.kind == "Namespace" {
            if key.0 != key.1 {
                return Err(ObjectProblem::InvalidSpec(format!(
                    "a FederatedNamespace must be named after its namespace ({:?}), not {:?}",
                    key.0, key.1
                )));
            }
            return Ok(NamespacePlacement::Unconstrained);
        }
        let Some(store) = &self.namespaces else {
            return Ok(NamespacePlacement::Unconstrained);
        };
        let ns_type = federated_type_of(&default_type("namespaces").expect("a default type"));
        let r = ObjectRef::new_with(&key.0, ns_type.api_resource()).within(&key.0);
        let Some(ns) = store.get(&r) else {
            return Ok(NamespacePlacement::NotFederated);
        };
        let spec: FederatedSpec =
            serde_json::from_value(ns.data.get("spec").cloned().unwrap_or(Value::Null))
                .unwrap_or_default();
        placement::selected_clusters(&spec.placement, labels)
            .map(NamespacePlacement::Within)
            .map_err(|e| ObjectProblem::ComputePlacementFailed(format!("FederatedNamespace: {e}")))
    }

    /// Create or update the object in one ready, selected cluster.
    async fn apply_member(
        &self,
        key: &Key,
        fed: &DynamicObject,
        spec: &FederatedSpec,
        cluster: &str,
        live: Option<Value>,
        adopt: bool,
    ) -> ClusterOutcome {
        let Some(api) = self.member_api(cluster, key) else {
            return outcome(ClusterState::ClusterNotReady, None);
        };
        let view = Federated {
            target: &self.target,
            name: &key.1,
            namespace: (!key.0.is_empty()).then_some(key.0.as_str()),
            template: &spec.template,
            overrides: &spec.overrides,
            retain_replicas: spec.retain_replicas,
        };
        let pkey = (key.clone(), cluster.to_string());
        let timeout = self.write_timeout;
        let live = match live {
            Some(live) => live,
            None => {
                let desired = match render::render_for_cluster(view, cluster, None) {
                    Ok(d) => d,
                    Err(e) => return self.render_failed(fed, cluster, e).await,
                };
                let obj: DynamicObject = match serde_json::from_value(desired.clone()) {
                    Ok(o) => o,
                    Err(e) => return self.render_failed(fed, cluster, e).await,
                };
                let mut created =
                    tokio::time::timeout(timeout, api.create(&PostParams::default(), &obj)).await;
                if matches!(&created, Ok(Err(kube::Error::Api(e))) if e.code == 404)
                    && self.namespace_appears(cluster, &key.0).await
                {
                    // The namespace was being propagated beside it; now it is there.
                    created =
                        tokio::time::timeout(timeout, api.create(&PostParams::default(), &obj))
                            .await;
                }
                match created {
                    Err(_) => return outcome(ClusterState::CreationTimedOut, None),
                    Ok(Ok(obj)) => {
                        self.count_write(cluster, "create");
                        let v = serde_json::to_value(&obj).unwrap_or_default();
                        self.record(&pkey, &desired, &v);
                        self.event(
                            fed,
                            EventType::Normal,
                            "CreateInCluster",
                            &format!(
                                "Created {} {:?} in cluster {cluster}",
                                self.target.kind, key.1
                            ),
                            "Create",
                        )
                        .await;
                        return outcome(ClusterState::Ok, v.get("status").cloned());
                    }
                    Ok(Err(kube::Error::Api(e))) if e.code == 409 => {
                        // Exists unlabeled (or our cache lags): look at it.
                        match api.get_opt(&key.1).await {
                            Ok(Some(existing)) => {
                                serde_json::to_value(existing).unwrap_or_default()
                            }
                            Ok(None) => return outcome(ClusterState::CreationFailed, None),
                            Err(error) => {
                                tracing::warn!(cluster, %error, "could not read an existing object");
                                return outcome(ClusterState::CreationFailed, None);
                            }
                        }
                    }
                    Ok(Err(error)) => {
                        self.event(
                            fed,
                            EventType::Warning,
                            "CreateInClusterFailed",
                            &format!(
                                "Creating {} {:?} in cluster {cluster} failed: {error}",
                                self.target.kind, key.1
                            ),
                            "Create",
                        )
                        .await;
                        return outcome(ClusterState::CreationFailed, None);
                    }
                }
            }
        };
        match render::managed_label(&live) {
            Some("true") => {}
            Some("false") => return outcome(ClusterState::ManagedLabelFalse, None),
            _ if !adopt => return outcome(ClusterState::AlreadyExists, None),
            _ => {}
        }
        let desired = match render::render_for_cluster(view, cluster, Some(&live)) {
            Ok(d) => d,
            Err(e) => return self.render_failed(fed, cluster, e).await,
        };
        let last = self
            .propagated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pkey)
            .cloned();
        if !render::needs_update(&desired, &live, last.as_ref()) {
            self.record(&pkey, &desired, &live);
            return outcome(ClusterState::Ok, live.get("status").cloned());
        }
        let obj: DynamicObject = match serde_json::from_value(desired.clone()) {
            Ok(o) => o,
            Err(e) => return self.render_failed(fed, cluster, e).await,
        };
        let replaced =
            tokio::time::timeout(timeout, api.replace(&key.1, &PostParams::default(), &obj)).await;
        match replaced {
            Err(_) => outcome(ClusterState::UpdateTimedOut, None),
            Ok(Ok(obj)) => {
                self.count_write(cluster, "update");
                let v = serde_json::to_value(&obj).unwrap_or_default();
                self.record(&pkey, &desired, &v);
                self.event(
                    fed,
                    EventType::Normal,
                    "UpdateInCluster",
                    &format!(
                        "Updated {} {:?} in cluster {cluster}",
                        self.target.kind, key.1
                    ),
                    "Update",
                )
                .await;
                outcome(ClusterState::Ok, v.get("status").cloned())
            }
            Ok(Err(error)) => {
                // A conflict means our view was stale: the retry reads it afresh.
                self.event(
                    fed,
                    EventType::Warning,
                    "UpdateInClusterFailed",
                    &format!(
                        "Updating {} {:?} in cluster {cluster} failed: {error}",
                        self.target.kind, key.1
                    ),
                    "Update",
                )
                .await;
                outcome(ClusterState::UpdateFailed, None)
            }
        }
    }

    async fn render_failed(
        &self,
        fed: &DynamicObject,
        cluster: &str,
        error: impl std::fmt::Display,
    ) -> ClusterOutcome {
        self.event(
            fed,
            EventType::Warning,
            "ApplyOverridesFailed",
            &format!("Rendering for cluster {cluster} failed: {error}"),
            "Render",
        )
        .await;
        outcome(ClusterState::ApplyOverridesFailed, None)
    }

    fn record(&self, pkey: &(Key, String), desired: &Value, live: &Value) {
        self.propagated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                pkey.clone(),
                Propagated {
                    desired_hash: render::desired_hash(desired),
                    version: render::live_version(live),
                },
            );
    }

    /// Deletes the managed object from one cluster (no longer placed there, or the federated
    /// object is being deleted). A Namespace of the host cluster itself is never deleted.
    async fn delete_member(&self, key: &Key, fed: &DynamicObject, cluster: &str) -> ClusterState {
        let Some(api) = self.member_api(cluster, key) else {
            return ClusterState::ClusterNotReady;
        };
        if self.target.group.is_empty()
            && self.target.kind == "Namespace"
            && self.is_host_member(cluster).await
        {
            // Keep it, just stop managing it.
            let live = self.cached(cluster, key).unwrap_or(Value::Null);
            if let Err(error) = self.unlabel(cluster, key, &live).await {
                tracing::warn!(cluster, %error, "could not unlabel the host cluster's namespace");
            }
            return ClusterState::Ok;
        }
        let params = delete_params(fed);
        let deleted = tokio::time::timeout(self.write_timeout, api.delete(&key.1, &params)).await;
        match deleted {
            Err(_) => ClusterState::DeletionTimedOut,
            Ok(Ok(_)) => {
                self.count_write(cluster, "delete");
                self.propagated
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(key.clone(), cluster.to_string()));
                self.event(
                    fed,
                    EventType::Normal,
                    "DeleteInCluster",
                    &format!(
                        "Deleted {} {:?} in cluster {cluster}",
                        self.target.kind, key.1
                    ),
                    "Delete",
                )
                .await;
                ClusterState::Ok
            }
            Ok(Err(kube::Error::Api(e))) if e.code == 404 => ClusterState::Ok,
            Ok(Err(error)) => {
                self.event(
                    fed,
                    EventType::Warning,
                    "DeleteInClusterFailed",
                    &format!(
                        "Deleting {} {:?} in cluster {cluster} failed: {error}",
                        self.target.kind, key.1
                    ),
                    "Delete",
                )
                .await;
                ClusterState::DeletionFailed
            }
        }
    }

    /// Waits briefly for `namespace` to exist in `cluster` (it is usually being created by the
    /// FederatedNamespace's sync at the same moment), so its objects need not wait a backoff.
    async fn namespace_appears(&self, cluster: &str, namespace: &str) -> bool {
        if namespace.is_empty() {
            return false;
        }
        let Some(client) = self.member_client(cluster) else {
            return false;
        };
        let api = Api::<Namespace>::all(client);
        for _ in 0..20 {
            if let Ok(Some(_)) = api.get_opt(namespace).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Whether a member is the host cluster itself (same `kube-system` namespace uid).
    async fn is_host_member(&self, cluster: &str) -> bool {
        if let Some(known) = self
            .host_members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
        {
            return *known;
        }
        let Some(client) = self.member_client(cluster) else {
            return true;
        };
        let uid = |c: Client| async move {
            Api::<Namespace>::all(c)
                .get("kube-system")
                .await
                .ok()
                .and_then(|n| n.metadata.uid)
        };
        let (host, member) = futures::join!(uid(self.host.clone()), uid(client));
        // Unknown counts as "is the host": never risk deleting the host's namespace.
        let same = match (host, member) {
            (Some(h), Some(m)) => h == m,
            _ => return true,
        };
        self.host_members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cluster.to_string(), same);
        same
    }

    /// The deletion flow; returns whether to retry.
    async fn finalize(self: &Arc<Self>, key: &Key, fed: &DynamicObject) -> bool {
        if !fed.finalizers().iter().any(|f| f == SYNC_FINALIZER) {
            return false;
        }
        let orphan = fed.annotations().get(ORPHAN_ANNOTATION).map(String::as_str) == Some("true");
        let previous = fed.data.get("status").cloned().unwrap_or(Value::Null);
        let listed: BTreeSet<String> = previous["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        let set = self.members.borrow().clone();
        let mut steps = Vec::new();
        for (cluster, member) in set.iter() {
            let live = self.cached(cluster, key);
            let written = self
                .propagated
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&(key.clone(), cluster.clone()));
            // fedns's fix: only clusters where the object was placed can block removal.
            let placed = live.is_some() || written || listed.contains(cluster);
            if !placed {
                continue;
            }
            let ctx = self.clone();
            let ready = member.ready;
            let cluster = cluster.clone();
            steps.push(async move {
                if !ready {
                    // Orphaning never blocks: a still-labeled object is released when the
                    // member is back (its federated object is gone by then).
                    return Step {
                        outcome: Some(outcome(ClusterState::ClusterNotReady, None)),
                        cluster,
                        blocks: !orphan,
                    };
                }
                // The cache holds only managed objects; a cluster listed in the status may hold
                // one fedns never managed (refused adoption): read it, and leave it alone.
                let live = match live {
                    Some(live) => Some(live),
                    None => match ctx.member_api(&cluster, key) {
                        Some(api) => match api.get_opt(&key.1).await {
                            Ok(found) => found.and_then(|o| serde_json::to_value(o).ok()),
                            Err(_) => {
                                return Step {
                                    outcome: Some(outcome(ClusterState::DeletionFailed, None)),
                                    cluster,
                                    blocks: true,
                                };
                            }
                        },
                        None => None,
                    },
                };
                if live
                    .as_ref()
                    .is_none_or(|l| render::managed_label(l) != Some("true"))
                {
                    return Step {
                        outcome: None,
                        cluster,
                        blocks: false,
                    };
                }
                if orphan {
                    if let Some(live) = live {
                        match ctx.unlabel(&cluster, key, &live).await {
                            Ok(_) => {}
                            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => {}
                            Err(error) => {
                                tracing::warn!(cluster, %error, "could not unlabel an orphaned object");
                                return Step {
                                    outcome: Some(outcome(ClusterState::UpdateFailed, None)),
                                    cluster,
                                    blocks: true,
                                };
                            }
                        }
                    }
                    return Step {
                        outcome: None,
                        cluster,
                        blocks: false,
                    };
                }
                let state = ctx.delete_member(key, fed, &cluster).await;
                if state != ClusterState::Ok {
                    return Step {
                        outcome: Some(outcome(state, None)),
                        cluster,
                        blocks: true,
                    };
                }
                // Confirm it is gone (it may have finalizers of its own).
                let gone = match ctx.member_api(&cluster, key) {
                    Some(api) => matches!(api.get_opt(&key.1).await, Ok(None)),
                    None => false,
                };
                Step {
                    outcome: (!gone).then(|| outcome(ClusterState::WaitingForRemoval, None)),
                    cluster,
                    blocks: !gone,
                }
            });
        }
        let steps = futures::future::join_all(steps).await;
        let blocked = steps.iter().any(|s| s.blocks);
        if blocked {
            let outcomes: BTreeMap<String, ClusterOutcome> = steps
                .into_iter()
                .filter_map(|s| Some((s.cluster, s.outcome?)))
                .collect();
            self.write_status(key, fed, &outcomes, None, &previous)
                .await;
            return true;
        }
        let finalizers: Vec<String> = fed
            .finalizers()
            .iter()
            .filter(|f| f.as_str() != SYNC_FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": fed.resource_version()}});
        match self
            .fed_api(key)
            .patch(&key.1, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {
                self.forget(key);
                false
            }
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(error) => {
                tracing::warn!(name = %key.1, %error, "could not remove the finalizer");
                true
            }
        }
    }

    async fn write_status(
        &self,
        key: &Key,
        fed: &DynamicObject,
        outcomes: &BTreeMap<String, ClusterOutcome>,
        problem: Option<&ObjectProblem>,
        previous: &Value,
    ) {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let Some(status) = status::propagation_status(
            fed.metadata.generation.unwrap_or(0),
            outcomes,
            problem,
            previous,
            &now,
        ) else {
            return;
        };
        let patch = json!([{"op": "add", "path": "/status", "value": status}]);
        if let Err(error) = self
            .fed_api(key)
            .patch_status(
                &key.1,
                &PatchParams::default(),
                &Patch::Json::<()>(json_patch_of(patch)),
            )
            .await
        {
            tracing::debug!(name = %key.1, %error, "status not written");
        }
    }

    async fn event(
        &self,
        fed: &DynamicObject,
        type_: EventType,
        reason: &str,
        note: &str,
        action: &str,
    ) {
        let reference = ObjectReference {
            api_version: Some(self.federated.api_version()),
            kind: Some(self.federated.kind.clone()),
            name: fed.metadata.name.clone(),
            namespace: fed.metadata.namespace.clone(),
            uid: fed.metadata.uid.clone(),
            ..Default::default()
        };
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&ev, &reference).await {
            tracing::debug!(%error, "event not recorded");
        }
    }
}

fn outcome(state: ClusterState, remote_status: Option<Value>) -> ClusterOutcome {
    ClusterOutcome {
        state,
        remote_status,
    }
}

/// The federated object's key for a member object: a Namespace maps to the FederatedNamespace
/// in itself.
fn member_key(target: &ApiResourceRef, federated_namespaced: bool, o: &DynamicObject) -> Key {
    let name = o.name_any();
    if !target.namespaced() && federated_namespaced {
        (name.clone(), name)
    } else {
        (o.namespace().unwrap_or_default(), name)
    }
}

/// `kubefed.io/deleteoption` (JSON DeleteOptions) as delete parameters; defaults when absent or
/// invalid (logged).
fn delete_params(fed: &DynamicObject) -> DeleteParams {
    let Some(raw) = fed.annotations().get(DELETE_OPTION_ANNOTATION) else {
        return DeleteParams::default();
    };
    let v: Value = match serde_json::from_str(raw) {
        Ok(v) => v,
        Err(error) => {
            tracing::warn!(%error, "ignoring an invalid {DELETE_OPTION_ANNOTATION} annotation");
            return DeleteParams::default();
        }
    };
    let mut params = DeleteParams::default();
    if let Some(p) = v["propagationPolicy"].as_str() {
        params.propagation_policy = match p {
            "Orphan" => Some(kube::api::PropagationPolicy::Orphan),
            "Background" => Some(kube::api::PropagationPolicy::Background),
            "Foreground" => Some(kube::api::PropagationPolicy::Foreground),
            _ => None,
        };
    }
    if let Some(g) = v["gracePeriodSeconds"].as_u64() {
        params.grace_period_seconds = u32::try_from(g).ok();
    }
    params
}

fn json_patch_of(v: Value) -> json_patch::Patch {
    serde_json::from_value(v).expect("patches built here are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn member_namespaces_map_to_their_federated_namespace() {
        let ns = default_type("namespaces").unwrap();
        let o =
            dynamic(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
        assert_eq!(member_key(&ns, true, &o), ("shop".into(), "shop".into()));
        let cr = default_type("clusterroles").unwrap();
        let o = dynamic(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}}),
        );
        assert_eq!(member_key(&cr, false, &o), (String::new(), "r".into()));
    }

    #[test]
    fn delete_options_come_from_the_annotation() {
        let fed = dynamic(
            json!({"apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedDeployment",
            "metadata": {"name": "w", "annotations": {DELETE_OPTION_ANNOTATION: "{\"propagationPolicy\":\"Orphan\",\"gracePeriodSeconds\":5}"}}}),
        );
        let p = delete_params(&fed);
        assert!(matches!(
            p.propagation_policy,
            Some(kube::api::PropagationPolicy::Orphan)
        ));
        assert_eq!(p.grace_period_seconds, Some(5));
        let bad = dynamic(
            json!({"apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedDeployment",
            "metadata": {"name": "w", "annotations": {DELETE_OPTION_ANNOTATION: "nope"}}}),
        );
        assert!(delete_params(&bad).propagation_policy.is_none());
    }
}
