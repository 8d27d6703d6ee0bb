//! A multi-cluster fake Kubernetes API server for tests: each [`FakeCluster`] is an in-process,
//! in-memory API server on `127.0.0.1:<port>` that unmodified kube-rs client code talks to
//! through a kubeconfig the harness writes, with controls to stop, restart, partition, slow
//! down and break it. [`Clusters`] gives a test one host and N members, either fake or real.
//!
//! # Faithful (what kube-rs code can rely on)
//!
//! - Paths, verbs and bodies of the Kubernetes REST API: `/api`, `/api/v1`, `/apis`,
//!   `/apis/<group>[/<version>]` discovery; `/version`; `/healthz`, `/readyz`, `/livez` (`ok`,
//!   unauthenticated); namespaced and cluster-scoped collections, `namespace` omitted = all.
//! - Bearer-token auth: every other request needs `Authorization: Bearer <token>` (401).
//! - Errors are `Status` objects (`code`, `reason`, `message`, `details`), so kube-rs returns
//!   `kube::Error::Api`: NotFound, AlreadyExists, Conflict (stale `resourceVersion`, failed
//!   delete preconditions), Invalid (names, labels, finalizers added while deleting), BadRequest,
//!   Expired, MethodNotAllowed, UnsupportedMediaType, and any injected code.
//! - Metadata: server-set `uid`, `creationTimestamp`, `generation` (1, then +1 when anything but
//!   metadata/status changes), `resourceVersion` from one counter per cluster. A write that
//!   changes nothing keeps the resourceVersion and sends no watch event, as real servers do.
//! - Lists: `resourceVersion` of the list, `labelSelector` (`=`, `==`, `!=`, `in`, `notin`,
//!   exists, `!`), `fieldSelector` on `metadata.name`/`metadata.namespace` (and the few per-kind
//!   fields real servers support; others are 400), `limit`/`continue` honoured (kube-rs's
//!   watcher pages by 500); sorted by namespace/name.
//! - Watches: newline-delimited `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK`/`ERROR` events after
//!   the requested `resourceVersion`, replayed from a bounded history per collection; a version
//!   older than the history gets `ERROR` with a `Status` 410 `Expired` inside a 200 stream (what
//!   real servers send, and what makes kube-rs's watcher relist); no `resourceVersion` (or `0`)
//!   starts with synthetic `ADDED` events for the current state; `sendInitialEvents=true` ends
//!   those with the `k8s.io/initial-events-end` bookmark (kube-rs only uses it with
//!   `streaming_lists()`; its default is list-then-watch); `allowWatchBookmarks` gives periodic
//!   bookmarks (every second by default); `timeoutSeconds` ends the stream; objects moving out of
//!   (into) a label selection are sent as `DELETED` (`ADDED`); watchers that fall behind are
//!   disconnected and resume from their last version.
//! - Writes: create (201; `generateName`; the namespace must exist), replace (PUT),
//!   patch with `application/merge-patch+json`, `application/json-patch+json` (RFC 6902),
//!   `application/strategic-merge-patch+json` and `application/apply-patch+yaml` (server-side
//!   apply creates missing objects and requires `fieldManager`), a `resourceVersion` in a PUT or
//!   patch body is a precondition; `dryRun=All`.
//! - The `/status` subresource: PUT/PATCH there change only `.status`; main-resource writes keep
//!   `.status` for types that have the subresource, and create drops it.
//! - Delete: with finalizers the object gets `deletionTimestamp` (MODIFIED) and stays until an
//!   update empties `metadata.finalizers`, then DELETED; `DeleteOptions` preconditions (uid,
//!   resourceVersion) are checked, `propagationPolicy` validated; deletecollection.
//! - CustomResourceDefinitions: creating one registers its group, versions, plural, scope,
//!   kind, short names and status subresource; its `status` gets `Established` and
//!   `NamesAccepted` conditions; custom objects are pruned and defaulted by the version's
//!   structural schema; deleting the CRD deletes its objects.
//! - New clusters contain `default`, `kube-system`, `kube-public`, `kube-node-lease` and the
//!   `default/kubernetes` Service, Endpoints and EndpointSlice; Secret `stringData` is folded
//!   into base64 `data`.
//!
//! # Simplified (what a real cluster does differently)
//!
//! - Server-side apply is a JSON merge patch (no managedFields, no field ownership or apply
//!   conflicts, fields dropped from an applied config are not removed); strategic merge patch is
//!   a JSON merge patch too (lists are replaced, not merged by key: `metadata.finalizers` and
//!   `status.conditions` included).
//! - No validation or defaulting of built-in types beyond names and labels (a Service gets no
//!   `clusterIP`, a Pod no defaults); no admission, RBAC, quotas, owner-reference garbage
//!   collection, or controllers (Deployments do nothing, EndpointSlices are not derived from
//!   Services). Deleting a Namespace removes its contents at once, finalizers notwithstanding.
//! - Continue tokens page through the live state, not a snapshot (at-least-once, fine for
//!   watchers); they expire (410) after `compact()`.
//! - The versions of a multi-version CRD share one store and are relabelled, not converted.
//! - JSON only (no protobuf, no CBOR, no aggregated discovery, no gzip); HTTP/1.1 only
//!   (plain, or TLS with [`FakeCluster::start_tls`]: a CA of the cluster's own, whose PEM
//!   [`FakeCluster::ca_pem`] gives for `caBundle` tests; no client certificates).
//! - A fresh history after [`FakeCluster::restart`]: like a real API server whose watch cache
//!   was rebuilt, watches from versions before the restart get 410 and relist.
//!   [`FakeCluster::restart_empty`] loses all objects and CRD types but keeps the
//!   resourceVersion counter increasing (a real new etcd would restart it; kube-rs's watcher then
//!   would retry a "too large resource version" watch forever instead of relisting).
//!
//! # Controls
//!
//! [`FakeCluster::stop`] closes the listener and every connection (connection refused);
//! [`FakeCluster::restart`] serves the same data on the same port; [`FakeCluster::partition`]
//! blackholes requests and open watches until healed; [`FakeCluster::delay`] delays every
//! response; [`FakeCluster::fail_next`] injects error statuses; [`FakeCluster::compact`] expires
//! the watch history and open watches; [`FakeCluster::close_watches`] ends open watches cleanly;
//! [`FakeCluster::requests`] and [`FakeCluster::writes`] count requests by verb and resource.
//! The fault modes of `faults.rs`: [`FakeCluster::forbid`] (a persistent 403 on one resource),
//! [`refused_url`] (connection refused), [`Blackhole`] (accepts, never answers), and
//! [`RequestClock`] (when each request of one verb and resource arrived).
//! The seeding API ([`FakeCluster::apply_json`], [`FakeCluster::apply_all`],
//! [`FakeCluster::get_json`], [`FakeCluster::delete`]) bypasses HTTP and keeps `.status` as given.
//!
//! Two kube-rs 5 behaviours to know when injecting failures: its client retries 429, 503 and
//! 504 by itself (up to 15 times, honouring `Retry-After`, which the harness sends with 429), so
//! those codes reach the caller only as extra requests; and it has no read timeout, so a request
//! into a partition hangs until the partition heals unless the caller times out. kube-rs's
//! default watcher backoff (0.8 s doubling to 30 s, jittered) re-synced a watcher 2.8 s, 14.5 s
//! and 26 s after restarts that followed 1 s, 5 s and 15 s outages.
//!
//! The server runs on the test's tokio runtime: use
//! `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`, since a blocking call on a
//! current-thread runtime would starve it.
//!
//! # Fake or real clusters
//!
//! End-to-end tests take their clusters from [`Clusters::start`]. Without
//! `FEDNS_E2E_KUBECONFIGS` they get fake clusters. With it (kubeconfig files, host first, then
//! members, separated by `:` or `,`) they get the real clusters those files name (each file's
//! current context); [`TestCluster::controls`] is then `None` and a test skips its
//! failure-injection steps with a message. Tests that need seeding should write through the
//! kube client, which works on both.
//!
//! Scale: one lock per cluster, work per request proportional to the objects it touches, one
//! broadcast channel per watched collection, objects kept as serialized JSON. 100 clusters ×
//! (1,000 Services + 1,000 EndpointSlices) take about 280 MB; 200 kube-rs watchers list all
//! 200,000 objects in about 3 s (debug build).
#![allow(dead_code)]

mod apiserver;
mod clusters;
mod faults;
mod registry;
mod selector;
mod slow;
mod store;
mod tls;
mod watch_events;

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use apiserver::{Fault, Shared, WatchEpochs, lock};
use store::{Store, StoreLimits};
use tls::ServerTls;

#[allow(unused_imports)] // re-exported for the end-to-end tests
pub use clusters::{
    Clusters, KUBECONFIGS_ENV, KubeconfigEntry, TestCluster, client_for, kubeconfig_yaml,
};
#[allow(unused_imports)] // re-exported for the end-to-end tests
pub use faults::{Blackhole, RequestClock, kubeconfig_for, refused_url};
#[allow(unused_imports)] // re-exported for the tests and benches
pub use watch_events::{expect_event, spawn_watcher};

/// Sizes and periods of a fake cluster.
#[derive(Clone, Debug)]
pub struct FakeClusterOptions {
    /// Watch events kept per collection for watches that resume from an older version.
    pub history: usize,
    /// Events buffered per open watch before a slow watcher is disconnected.
    pub channel: usize,
    /// Period of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Serve HTTPS with a certificate from a CA of the cluster's own (see
    /// [`FakeCluster::ca_pem`]); the kubeconfig carries the CA.
    pub tls: bool,
}

impl Default for FakeClusterOptions {
    fn default() -> Self {
        FakeClusterOptions {
            history: 4096,
            channel: 2048,
            bookmark_interval: Duration::from_secs(1),
            tls: false,
        }
    }
}

/// One fake Kubernetes API server. Cloning gives another handle to the same server; it shuts
/// down when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct FakeCluster {
    control: Arc<Control>,
}

#[derive(Debug)]
struct Control {
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
    limits: StoreLimits,
    tls: Option<ServerTls>,
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Running {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(running) = lock(&self.running).take() {
            let _ = running.shutdown.send(true);
            running.task.abort();
        }
    }
}

fn random_hex() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write(b"fedns-harness");
    format!("{:016x}", hasher.finish())
}

async fn bind(port: u16) -> std::io::Result<TcpListener> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections until shut down, then closes the listener and every connection.
async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let router = Router::new().fallback(apiserver::handle).with_state(shared);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let tls = tls.clone();
                connections.spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else { return };
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

impl FakeCluster {
    /// Starts a cluster named `name` on `127.0.0.1:<free port>` and writes its kubeconfig.
    pub async fn start(name: &str) -> FakeCluster {
        Self::start_with(name, FakeClusterOptions::default()).await
    }

    /// [`start`](Self::start) serving HTTPS (see [`FakeClusterOptions::tls`]).
    pub async fn start_tls(name: &str) -> FakeCluster {
        let options = FakeClusterOptions {
            tls: true,
            ..FakeClusterOptions::default()
        };
        Self::start_with(name, options).await
    }

    pub async fn start_with(name: &str, options: FakeClusterOptions) -> FakeCluster {
        let limits = StoreLimits {
            history: options.history.max(1),
            channel: options.channel.max(1),
        };
        let shared = Arc::new(Shared {
            name: name.to_string(),
            token: Mutex::new(format!("fedns-harness-{}", random_hex())),
            port: AtomicU16::new(0),
            store: Mutex::new(Store::new(limits)),
            partitioned: watch::channel(false).0,
            delay: Mutex::new(Duration::ZERO),
            faults: Mutex::new(Vec::new()),
            counts: Mutex::new(BTreeMap::new()),
            epochs: watch::channel(WatchEpochs::default()).0,
            bookmark_interval: Mutex::new(options.bookmark_interval),
            open_watches: AtomicUsize::new(0),
            slow_lists: Mutex::new(Vec::new()),
            unauthorized: AtomicUsize::new(0),
        });
        let cluster = FakeCluster {
            control: Arc::new(Control {
                shared,
                running: Mutex::new(None),
                limits,
                tls: options.tls.then(|| ServerTls::generate(name)),
                dir: tempfile::tempdir().expect("temporary directory for the kubeconfig"),
            }),
        };
        cluster.listen(0).await;
        cluster.write_kubeconfig();
        cluster
    }

    async fn listen(&self, port: u16) {
        let mut attempts = 0;
        let listener = loop {
            match bind(port).await {
                Ok(listener) => break listener,
                Err(_) if attempts < 50 && port != 0 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("binding 127.0.0.1:{port} for cluster {}: {e}", self.name()),
            }
        };
        let shared = &self.control.shared;
        shared.port.store(
            listener.local_addr().expect("bound address").port(),
            Ordering::Relaxed,
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tls = self.control.tls.as_ref().map(|t| t.acceptor.clone());
        let task = tokio::spawn(serve(listener, shared.clone(), tls, shutdown_rx));
        *lock(&self.control.running) = Some(Running { shutdown, task });
    }

    fn shared(&self) -> &Shared {
        &self.control.shared
    }

    pub fn name(&self) -> &str {
        &self.control.shared.name
    }

    pub fn port(&self) -> u16 {
        self.shared().port.load(Ordering::Relaxed)
    }

    /// `http://127.0.0.1:<port>`, or `https://` for a TLS cluster.
    pub fn url(&self) -> String {
        let scheme = if self.control.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port())
    }

    /// The PEM certificate of a TLS cluster's own CA (what a KubeFedCluster's `caBundle`
    /// holds, base64-encoded: see [`ca_bundle`](Self::ca_bundle)).
    pub fn ca_pem(&self) -> Option<String> {
        self.control.tls.as_ref().map(|t| t.ca_pem.clone())
    }

    /// The CA certificate base64-encoded, as in `caBundle` and `certificate-authority-data`.
    pub fn ca_bundle(&self) -> Option<String> {
        self.ca_pem().map(|pem| store::base64(pem.as_bytes()))
    }

    /// The bearer token every API request must carry.
    pub fn token(&self) -> String {
        lock(&self.shared().token).clone()
    }

    /// Replaces the token (the old one gets 401 from now on) and rewrites the kubeconfig.
    pub fn rotate_token(&self) -> String {
        let token = format!("fedns-harness-{}", random_hex());
        *lock(&self.shared().token) = token.clone();
        self.write_kubeconfig();
        token
    }

    /// A kubeconfig file with one cluster, user and context, all named after the cluster
    /// (the current context).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.control.dir.path().join("kubeconfig")
    }

    /// The kubeconfig as YAML.
    pub fn kubeconfig_yaml(&self) -> String {
        let entry = clusters::KubeconfigEntry {
            name: self.name().to_string(),
            server: self.url(),
            token: self.token(),
            ca_bundle: self.ca_bundle(),
        };
        clusters::kubeconfig_yaml(&[entry], self.name())
    }

    fn write_kubeconfig(&self) {
        std::fs::write(self.kubeconfig_path(), self.kubeconfig_yaml())
            .expect("writing the kubeconfig");
    }

    /// A kube client built from the kubeconfig file, as an application would build it.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig_path(), Some(self.name()))
            .await
            .expect("kube client for a fake cluster")
    }

    // ---- seeding (bypasses HTTP, auth and every control) ----

    /// Creates or replaces an object as given (status included); a missing namespace is
    /// created. Panics with the API error when the object is invalid.
    pub fn apply_json(&self, object: Value) -> Value {
        self.try_apply_json(object)
            .unwrap_or_else(|e| panic!("apply_json: {e}"))
    }

    pub fn try_apply_json(&self, object: Value) -> Result<Value, String> {
        lock(&self.shared().store)
            .seed_apply(object)
            .map(|o| o.value())
            .map_err(|e| format!("{} {}: {}", e.code, e.reason, e.message))
    }

    /// Seeds many objects under one lock, returning nothing (for large fixtures: 1,000s of
    /// objects). Panics on the first invalid object.
    pub fn apply_all(&self, objects: impl IntoIterator<Item = Value>) {
        let mut store = lock(&self.shared().store);
        for object in objects {
            if let Err(e) = store.seed_apply(object) {
                panic!("apply_all: {} {}: {}", e.code, e.reason, e.message);
            }
        }
    }

    /// [`apply_json`](Self::apply_json) for a typed object (`k8s_openapi` or a CRD type).
    pub fn apply<K: serde::Serialize>(&self, object: &K) -> Value {
        self.apply_json(serde_json::to_value(object).expect("object serializes"))
    }

    pub fn get_json(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let store = lock(&self.shared().store);
        let rt = store.registry.by_kind(api_version, kind)?.clone();
        store.get(&rt, namespace, name).ok().map(|o| o.value())
    }

    /// All objects of a kind, in one namespace or (`None`) all.
    pub fn list_json(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let store = lock(&self.shared().store);
        let Some(rt) = store.registry.by_kind(api_version, kind).cloned() else {
            return Vec::new();
        };
        let filter = selector::ObjectFilter {
            namespace: namespace.map(str::to_string),
            ..Default::default()
        };
        store
            .list(&rt, &filter, None, None)
            .map(|page| page.items.iter().map(|o| o.value()).collect())
            .unwrap_or_default()
    }

    /// Deletes like `kubectl delete` (finalizers are honoured). False when there was nothing.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let mut store = lock(&self.shared().store);
        let Some(rt) = store.registry.by_kind(api_version, kind).cloned() else {
            return false;
        };
        store
            .delete(
                &rt,
                namespace,
                name,
                None,
                None,
                store::WriteOptions::default(),
            )
            .is_ok()
    }

    /// The cluster's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared().store).resource_version()
    }

    pub fn object_count(&self) -> usize {
        lock(&self.shared().store).object_count()
    }

    // ---- failure controls ----

    pub fn is_running(&self) -> bool {
        lock(&self.control.running).is_some()
    }

    /// Closes the listener and every open connection and watch: requests fail with
    /// "connection refused" until [`restart`](Self::restart).
    pub async fn stop(&self) {
        let running = lock(&self.control.running).take();
        if let Some(running) = running {
            let _ = running.shutdown.send(true);
            let _ = running.task.await;
        }
    }

    /// Serves the same objects on the same port again (stopping first if running). The watch
    /// history starts afresh, as a real API server's watch cache does.
    pub async fn restart(&self) {
        self.stop().await;
        lock(&self.shared().store).compact();
        self.listen(self.port()).await;
    }

    /// Like [`restart`](Self::restart), but the data is gone (a new etcd): only what a new
    /// cluster has. CRD types are gone too.
    pub async fn restart_empty(&self) {
        self.stop().await;
        {
            let mut store = lock(&self.shared().store);
            let emptied = store.emptied();
            *store = emptied;
        }
        self.listen(self.port()).await;
    }

    /// While on, requests are accepted but get no answer and open watches deliver nothing;
    /// everything held back proceeds when it heals.
    pub fn partition(&self, on: bool) {
        self.shared().partitioned.send_replace(on);
    }

    /// Delays every response by `delay` (zero turns it off).
    pub fn delay(&self, delay: Duration) {
        *lock(&self.shared().delay) = delay;
    }

    /// The next `n` requests whose `"METHOD /path?query"` contains `pattern` get HTTP `status`
    /// with a `Status` body (e.g. `fail_next(2, 500, "/services")`, `fail_next(1, 403,
    /// "watch=true")`, `fail_next(1, 409, "PATCH ")`). Health probes count too.
    pub fn fail_next(&self, n: usize, status: u16, pattern: &str) {
        lock(&self.shared().faults).push(Fault {
            remaining: n,
            status,
            pattern: pattern.to_string(),
        });
    }

    pub fn clear_faults(&self) {
        lock(&self.shared().faults).clear();
    }

    /// Drops the watch history: open watches get `ERROR 410 Expired`, and so does every watch
    /// from a version before now, so watchers relist.
    pub fn compact(&self) {
        lock(&self.shared().store).compact();
        self.shared().epochs.send_modify(|e| e.compactions += 1);
    }

    /// Ends every open watch stream cleanly (as an API server does at its timeouts); watchers
    /// resume from their last version.
    pub fn close_watches(&self) {
        self.shared().epochs.send_modify(|e| e.closes += 1);
    }

    pub fn set_bookmark_interval(&self, interval: Duration) {
        *lock(&self.shared().bookmark_interval) = interval;
    }

    /// Watch streams open right now.
    pub fn open_watches(&self) -> usize {
        self.shared().open_watches.load(Ordering::Relaxed)
    }

    // ---- request counters ----

    /// Requests so far with this verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`) on this resource (`services`, `services/status`, …);
    /// `"*"` matches any. Injected failures and unauthorized requests count; discovery and
    /// health probes do not.
    pub fn requests(&self, verb: &str, resource: &str) -> u64 {
        lock(&self.shared().counts)
            .iter()
            .filter(|((v, r), _)| (verb == "*" || v == verb) && (resource == "*" || r == resource))
            .map(|(_, n)| n)
            .sum()
    }

    /// Create, update, patch, delete and deletecollection requests on any resource.
    pub fn writes(&self) -> u64 {
        ["create", "update", "patch", "delete", "deletecollection"]
            .iter()
            .map(|verb| self.requests(verb, "*"))
            .sum()
    }

    /// All counters: (verb, resource) → requests.
    pub fn request_counts(&self) -> BTreeMap<(String, String), u64> {
        lock(&self.shared().counts).clone()
    }

    pub fn reset_requests(&self) {
        lock(&self.shared().counts).clear();
    }
}
