//! Wiring: starts the sources, the engine thread, the zone-file and hostname refreshers, the DNS
//! listeners and the admin server, and stops them in order (lame duck first).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::config::{ServeConfig, SourceConfig};
use crate::dns::server::{self, UdpWorkers};
use crate::dns::store::RecordStore;
use crate::dns::zonefile::ZoneDir;
use crate::federation::engine::Engine;
use crate::federation::hostnames::HostResolver;
use crate::federation::model::SourceEvent;
use crate::federation::worker::{EngineHandle, EngineInput};
use crate::k8s::lease::{self, Leadership};
use crate::k8s::status_writer;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::source::dir;
use crate::source::kubernetes::host;
use crate::source::kubernetes::watch::WatchHealth;

/// Why fedns could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Source(#[from] dir::DirError),
    #[error("cannot listen for DNS on {addr}: {source}")]
    DnsListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for admin HTTP on {addr}: {source}")]
    AdminListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("Kubernetes source: {0}")]
    Kube(String),
    #[error("cannot start the engine thread: {0}")]
    EngineThread(std::io::Error),
}

/// A running fedns.
#[derive(Debug)]
pub struct Running {
    /// The bound DNS addresses (UDP and TCP share each).
    pub dns_addrs: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub store: Arc<RecordStore>,
    pub engine: EngineHandle,
    /// The engine's own thread; it ends on shutdown.
    engine_thread: Option<std::thread::JoinHandle<()>>,
    shutdown: Shutdown,
    draining: Arc<AtomicBool>,
    /// Ends after the Lease is released on shutdown; `stop` waits for that (up to `release`).
    leadership: Leadership,
    release: Duration,
    udp: Vec<UdpWorkers>,
    tasks: Vec<JoinHandle<()>>,
}

/// How often zone files are checked for changes.
const ZONE_POLL: Duration = Duration::from_millis(500);
/// How often the hostname resolver looks for due names.
const HOST_POLL: Duration = Duration::from_secs(1);

/// Starts everything; returns once the listeners are bound (answers are SERVFAIL until synced).
pub async fn start(cfg: ServeConfig) -> Result<Running, StartError> {
    let metrics = Metrics::new();
    let store = Arc::new(RecordStore::new());
    // Owned here until the start-up state is in, then moved onto its own thread.
    let mut engine = Engine::new(store.clone(), cfg.engine.clone());
    let shutdown = Shutdown::new();
    // Zone transfers and NOTIFY, when configured: the engine keeps their zone copies.
    let transfers = cfg
        .transfer
        .clone()
        .map(|c| Arc::new(crate::dns::xfr::Transfers::new(c, metrics.clone())));
    let draining = Arc::new(AtomicBool::new(false));
    let (errors_tx, errors_rx) = watch::channel(Vec::<String>::new());
    let watch_health = WatchHealth::default();
    let mut tasks = Vec::new();
    if let Some(t) = &transfers {
        engine.set_transfers(t.clone());
        tasks.push(tokio::spawn(crate::dns::xfr::notify::run(
            t.clone(),
            shutdown.clone(),
        )));
    }

    // Static zones first, so the first sync already serves them.
    let mut zone_dir = ZoneDir::new(cfg.zones.clone());
    zone_dir.refresh();
    engine.set_static_zones(zone_dir.zones());

    let (source_tx, mut source_rx) = mpsc::channel::<SourceEvent>(8192);
    let mut source_errors = None;
    // The directory source writes nothing, so it always "leads".
    let mut leadership = Leadership::always();
    let mut election = None;
    let mut release = Duration::ZERO;
    // The Kubernetes source's status writer starts once the engine runs on its own thread.
    let mut status_writer_of = None;
    match &cfg.source {
        SourceConfig::Directory(source_dir) => {
            let snapshot = {
                let dir = source_dir.clone();
                tokio::task::spawn_blocking(move || dir::load(dir))
                    .await
                    .map_err(|e| {
                        StartError::Source(dir::DirError::Unreadable {
                            path: source_dir.clone(),
                            source: std::io::Error::other(e.to_string()),
                        })
                    })??
            };
            source_errors = Some(snapshot.subscribe_errors());
            let initial = snapshot.initial_events();
            let seen = Instant::now();
            for event in initial {
                engine.apply(event, seen);
            }
            engine.flush(Instant::now());
            tasks.push(tokio::spawn(dir::watch(
                source_dir.clone(),
                snapshot,
                source_tx,
            )));
        }
        SourceConfig::Kubernetes(k) => {
            let (host_client, host_url) =
                kube_client(k.kubeconfig.as_deref(), k.context.as_deref()).await?;
            let mut static_members = Vec::new();
            for m in &k.members {
                let path = m.kubeconfig.as_deref().or(k.kubeconfig.as_deref());
                let context = m.context.clone().unwrap_or_else(|| m.name.clone());
                let (client, url) = kube_client(path, Some(&context)).await?;
                static_members.push(host::StaticMember {
                    name: m.name.clone(),
                    client,
                    url,
                    labels: m.labels.clone(),
                    zones: m.zones.clone(),
                    region: m.region.clone(),
                });
            }
            let (member_publisher, member_directory) = crate::propagation::members::directory();
            if k.read_only {
                leadership = Leadership::never();
            } else if let Some(lease) = &k.leader_election {
                tracing::info!(lease = %lease.name, identity = %lease.identity, "electing the writer");
                leadership = lease::start(host_client.clone(), (**lease).clone(), shutdown.clone());
                election = Some(format!(
                    "lease {}/{} as {}",
                    lease.namespace, lease.name, lease.identity
                ));
                release = lease.renew_deadline + Duration::from_secs(1);
            }
            let settings = host::HostSettings {
                members: Some(member_publisher),
                namespace: k.namespace.clone(),
                leadership: leadership.clone(),
                probe: k.probe,
                sync_timeout: k.sync_timeout,
                host_url,
                health: watch_health.clone(),
                empty_relist_confirm: k.empty_relist_confirm,
                static_members,
                metrics: metrics.clone(),
            };
            tracing::info!(namespace = %k.namespace, "watching the host cluster");
            status_writer_of = Some((host_client.clone(), k.namespace.clone()));
            if k.propagation && !k.read_only {
                tasks.push(tokio::spawn(crate::propagation::controller::run(
                    host_client.clone(),
                    crate::propagation::controller::SyncSettings {
                        resync: k.propagation_resync,
                        ..crate::propagation::controller::SyncSettings::new(
                            k.namespace.clone(),
                            metrics.clone(),
                        )
                    },
                    member_directory.clone(),
                    leadership.flag(),
                    shutdown.clone(),
                )));
                tasks.push(tokio::spawn(crate::propagation::scheduler::run(
                    host_client.clone(),
                    None,
                    member_directory,
                    leadership.flag(),
                    shutdown.clone(),
                )));
            }
            tasks.push(tokio::spawn(host::run(host_client, settings, source_tx)));
        }
    }
    // Load-balancer hostnames in our own zones resolve without network: do it before serving.
    let mut resolver = HostResolver::new(store.clone(), cfg.upstream_resolver);
    let wanted = engine.hostnames();
    for (host, resolved) in resolver.resolve_local(&wanted, Instant::now()) {
        engine.set_host(host, Some(resolved));
    }
    engine.flush(Instant::now());
    let (engine, engine_thread) = EngineHandle::spawn(engine, metrics.clone(), shutdown.clone())
        .map_err(StartError::EngineThread)?;
    if let Some((host_client, namespace)) = status_writer_of {
        tasks.push(tokio::spawn(status_writer::run(
            host_client,
            namespace,
            engine.clone(),
            leadership.clone(),
            shutdown.clone(),
        )));
    }
    let engine_tx = engine.sender();
    let forward = engine_tx.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(event) = source_rx.recv().await {
            if forward
                .send(EngineInput::Source(event, Instant::now()))
                .await
                .is_err()
            {
                return;
            }
        }
    }));

    tasks.push(tokio::spawn(zone_loop(
        zone_dir,
        engine_tx.clone(),
        metrics.clone(),
        errors_tx,
        source_errors,
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(host_loop(
        resolver,
        engine.clone(),
        engine_tx.clone(),
        shutdown.clone(),
    )));

    // DNS listeners: UDP and TCP on the same port.
    let mut udp = Vec::new();
    let mut dns_addrs = Vec::new();
    for addr in &cfg.dns_listen {
        let (workers, listener) = bind_dns(*addr, &cfg, &store, &metrics, &transfers).await?;
        let bound = workers.local_addr;
        udp.push(workers);
        tasks.push(tokio::spawn(server::serve_tcp(
            listener,
            store.clone(),
            cfg.limits.clone(),
            cfg.tcp,
            metrics.clone(),
            shutdown.clone(),
            transfers.clone(),
        )));
        dns_addrs.push(bound);
    }

    // Admin HTTP.
    let listener = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .map_err(|source| StartError::AdminListen {
            addr: cfg.admin_listen,
            source,
        })?;
    let admin_addr = listener
        .local_addr()
        .map_err(|source| StartError::AdminListen {
            addr: cfg.admin_listen,
            source,
        })?;
    let router = admin::router(AdminState {
        metrics: metrics.clone(),
        store: store.clone(),
        engine: engine.clone(),
        draining: draining.clone(),
        source_errors: errors_rx,
        watches: watch_health,
        leadership: leadership.clone(),
        election,
        transfers: transfers.clone(),
    });
    let stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            stop.wait().await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "admin server failed");
        }
    }));

    let listeners: Vec<String> = dns_addrs.iter().map(SocketAddr::to_string).collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        dns = %listeners.join(","),
        admin = %admin_addr,
        source = %match &cfg.source {
            SourceConfig::Directory(dir) => format!("directory {}", dir.display()),
            SourceConfig::Kubernetes(k) => format!("kubernetes namespace {}", k.namespace),
        },
        zones = %cfg.zones.as_deref().map_or("none".into(), |z| z.display().to_string()),
        "fedns serving"
    );
    Ok(Running {
        dns_addrs,
        admin_addr,
        store,
        engine,
        engine_thread: Some(engine_thread),
        shutdown,
        draining,
        leadership,
        release,
        udp,
        tasks,
    })
}

impl Running {
    /// Whether this replica writes to the host cluster.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Lame duck: fail `/ready`, keep answering for `drain`, then stop everything. The leader
    /// stops writing and releases its Lease first, so a standby takes over at once.
    pub async fn stop(mut self, drain: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        tokio::time::sleep(drain).await;
        self.shutdown.trigger();
        let _ = tokio::time::timeout(self.release, self.leadership.ended()).await;
        for workers in self.udp {
            tokio::task::spawn_blocking(move || workers.stop())
                .await
                .ok();
        }
        for task in self.tasks {
            task.abort();
        }
        // The engine thread sees the shutdown between two batches.
        if let Some(thread) = self.engine_thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .ok();
        }
    }
}

/// Binds the UDP workers and the TCP listener of one DNS address. With port 0 the UDP side picks
/// the port and TCP must get the same number, which another socket may already hold over TCP: then
/// both are released and another port is tried.
async fn bind_dns(
    addr: SocketAddr,
    cfg: &ServeConfig,
    store: &Arc<RecordStore>,
    metrics: &Metrics,
    transfers: &Option<Arc<crate::dns::xfr::Transfers>>,
) -> Result<(UdpWorkers, tokio::net::TcpListener), StartError> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let workers = UdpWorkers::start(
            addr,
            cfg.udp_workers,
            store.clone(),
            cfg.limits.clone(),
            &cfg.rrl,
            metrics,
            transfers.clone(),
        )
        .map_err(|source| StartError::DnsListen { addr, source })?;
        let bound = workers.local_addr;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(listener) => return Ok((workers, listener)),
            Err(source) => {
                tokio::task::spawn_blocking(move || workers.stop())
                    .await
                    .ok();
                last = Some(StartError::DnsListen {
                    addr: bound,
                    source,
                });
            }
        }
    }
    Err(last.unwrap_or(StartError::DnsListen {
        addr,
        source: std::io::Error::other("no port"),
    }))
}

/// A client for a kubeconfig file and context, or the inferred config (KUBECONFIG, in-cluster),
/// and the API server's URL.
async fn kube_client(
    path: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<(kube::Client, String), StartError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let fail = |e: &dyn std::fmt::Display| StartError::Kube(e.to_string());
    let config = match (path, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| StartError::Kube(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| fail(&e))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| fail(&e))?,
        (None, None) => kube::Config::infer().await.map_err(|e| fail(&e))?,
    };
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| StartError::Kube(e.to_string()))?;
    Ok((client, url))
}

async fn zone_loop(
    mut zones: ZoneDir,
    tx: mpsc::Sender<EngineInput>,
    metrics: Metrics,
    errors_tx: watch::Sender<Vec<String>>,
    source_errors: Option<watch::Receiver<Vec<dir::LoadError>>>,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(ZONE_POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let changed = zones.refresh();
        let rejected = zones.take_rejected();
        if rejected > 0 {
            metrics
                .zone_reloads
                .with_label_values(&["error"])
                .inc_by(rejected);
        }
        if changed {
            metrics.zone_reloads.with_label_values(&["changed"]).inc();
            if tx
                .send(EngineInput::StaticZones(zones.zones()))
                .await
                .is_err()
            {
                return;
            }
        }
        let mut errors: Vec<String> = source_errors
            .as_ref()
            .map(|rx| rx.borrow().iter().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        errors.extend(zones.errors().iter().map(|e| e.to_string()));
        metrics.source_errors.set(errors.len() as i64);
        errors_tx.send_if_modified(|current| {
            let changed = *current != errors;
            if changed {
                *current = errors;
            }
            changed
        });
    }
}

async fn host_loop(
    mut resolver: HostResolver,
    engine: EngineHandle,
    tx: mpsc::Sender<EngineInput>,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(HOST_POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let Some(wanted) = engine.query(|e| e.hostnames()).await else {
            return;
        };
        if wanted.is_empty() {
            continue;
        }
        for (host, resolved) in resolver.resolve_due(&wanted, Instant::now()).await {
            if tx.send(EngineInput::Host(host, resolved)).await.is_err() {
                return;
            }
        }
    }
}
