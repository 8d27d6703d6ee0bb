//! The engine's own thread. The [`Engine`] is CPU-heavy (a topology change recomputes every record)
//! and single-writer, so it runs on a dedicated OS thread, never on the async runtime that answers
//! TCP DNS, serves `/healthz`, renews the Lease and runs the watchers:
//!
//! - inputs (source events, static zones, resolved hostnames) arrive over a bounded channel
//!   ([`EngineHandle::sender`]) and are applied and flushed in batches;
//! - after flushes the thread publishes an [`EngineView`] (counts, member readiness, conflicts,
//!   problems) that `/metrics` and `/status` read without waiting for the engine;
//! - what needs the whole model (`/explain`, the status writer's outputs, the hostnames to resolve)
//!   is a [`EngineHandle::query`]: a closure run on the engine thread between batches, answered
//!   over a oneshot, so an async caller awaits instead of blocking a runtime thread.
//!
//! Nobody else holds the engine: there is no lock to wait on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use crate::federation::engine::{Conflict, Engine, EngineCounts, Owner, StaticZone};
use crate::federation::model::SourceEvent;
use crate::federation::records::ResolvedHost;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Inputs queued ahead of the engine; senders wait when it is full (backpressure on the sources).
const INPUT_QUEUE: usize = 8192;
/// Inputs applied per flush at most.
const BATCH: usize = 4096;
/// While flushes follow each other, the view is republished at most this often (building it walks
/// every claimed name); when the engine goes idle it is republished at once.
const VIEW_INTERVAL: Duration = Duration::from_millis(250);

/// What the engine thread consumes.
#[derive(Debug)]
pub enum EngineInput {
    /// A source event and when it was received (for the programming-latency metric).
    Source(SourceEvent, Instant),
    StaticZones(Vec<StaticZone>),
    Host(String, Option<ResolvedHost>),
}

/// A read-only picture of the engine, as of its last publication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineView {
    pub counts: EngineCounts,
    /// Each member and whether it is ready.
    pub member_readiness: Vec<(String, bool)>,
    pub conflicts: Vec<Conflict>,
    pub problems: BTreeMap<Owner, Vec<String>>,
}

impl EngineView {
    fn of(engine: &Engine) -> Self {
        Self {
            counts: engine.counts(),
            member_readiness: engine
                .member_readiness()
                .into_iter()
                .map(|(member, ready)| (member.to_owned(), ready))
                .collect(),
            conflicts: engine.conflicts(),
            problems: engine.problems().clone(),
        }
    }
}

type Query = Box<dyn FnOnce(&mut Engine) + Send>;

/// The way to the engine thread: feed it, read its view, or ask it something. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    inputs: mpsc::Sender<EngineInput>,
    queries: mpsc::Sender<Query>,
    view: Arc<ArcSwap<EngineView>>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// Moves `engine` onto its own thread, which runs until `shutdown` (or until every handle and
    /// sender is gone). The view is published once before this returns.
    pub fn spawn(
        engine: Engine,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (inputs, inputs_rx) = mpsc::channel(INPUT_QUEUE);
        let (queries, queries_rx) = mpsc::channel::<Query>(64);
        let view = Arc::new(ArcSwap::from_pointee(EngineView::of(&engine)));
        // Its own single-threaded runtime only for the channel and deadline waits: the work in
        // between is synchronous and stays on this thread.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let published = view.clone();
        let thread = std::thread::Builder::new()
            .name("fedns-engine".into())
            .spawn(move || {
                runtime.block_on(run(
                    engine, inputs_rx, queries_rx, published, metrics, shutdown,
                ));
            })?;
        let handle = Self {
            inputs,
            queries,
            view,
        };
        Ok((handle, thread))
    }

    /// Where sources send their inputs.
    pub fn sender(&self) -> mpsc::Sender<EngineInput> {
        self.inputs.clone()
    }

    /// The last published view; never waits for the engine.
    pub fn view(&self) -> Arc<EngineView> {
        self.view.load_full()
    }

    /// Runs `ask` on the engine thread between two batches and returns its answer; `None` once the
    /// engine thread has stopped.
    pub async fn query<R: Send + 'static>(
        &self,
        ask: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let query: Query = Box::new(move |engine| {
            let _ = tx.send(ask(engine));
        });
        self.queries.send(query).await.ok()?;
        rx.await.ok()
    }
}

async fn run(
    mut engine: Engine,
    mut inputs: mpsc::Receiver<EngineInput>,
    mut queries: mpsc::Receiver<Query>,
    view: Arc<ArcSwap<EngineView>>,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    let mut batch = Vec::new();
    let mut published_at = Instant::now();
    // Whether the engine changed since the view was published.
    let mut stale = false;
    loop {
        let publish_at = stale.then_some(published_at + VIEW_INTERVAL);
        let wake = match (engine.next_deadline(), publish_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shutdown.wait() => return,
            Some(query) = queries.recv() => {
                query(&mut engine);
                continue;
            }
            n = inputs.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return;
                }
            }
            () = sleep => {}
        }
        let mut oldest: Option<Instant> = None;
        for input in batch.drain(..) {
            match input {
                EngineInput::Source(event, seen) => {
                    oldest = Some(oldest.map_or(seen, |o| o.min(seen)));
                    engine.apply(event, seen);
                }
                EngineInput::StaticZones(zones) => engine.set_static_zones(zones),
                EngineInput::Host(host, resolved) => engine.set_host(host, resolved),
            }
        }
        let now = Instant::now();
        engine.expire(now);
        if engine.has_pending() {
            engine.flush(now);
            stale = true;
        }
        if let Some(seen) = oldest {
            metrics
                .programming
                .observe(Instant::now().duration_since(seen).as_secs_f64());
        }
        let now = Instant::now();
        if stale && (inputs.is_empty() || now >= published_at + VIEW_INTERVAL) {
            view.store(Arc::new(EngineView::of(&engine)));
            published_at = now;
            stale = false;
        }
    }
}
