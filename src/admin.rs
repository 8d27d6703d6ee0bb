//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` (the process answers),
//! `/ready` (first sync done and not shutting down), `/explain?name=` and `/status` (which also says
//! whether this replica is the elected writer).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::watch;

use crate::dns::store::RecordStore;
use crate::federation::worker::{EngineHandle, EngineView};
use crate::k8s::lease::Leadership;
use crate::metrics::Metrics;
use crate::source::kubernetes::watch::WatchHealth;

/// Shared state of the admin handlers.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub metrics: Metrics,
    pub store: Arc<RecordStore>,
    /// Read through its published view (and `/explain` through a query): handlers never wait on
    /// the engine's work.
    pub engine: EngineHandle,
    /// Set when shutting down: `/ready` fails first so load balancers drain us (lame duck).
    pub draining: Arc<AtomicBool>,
    /// Current problems of the sources (bad files), as text lines.
    pub source_errors: watch::Receiver<Vec<String>>,
    /// The Kubernetes watchers failing right now (empty for the directory source).
    pub watches: WatchHealth,
    /// Whether this replica writes to the host cluster (it serves DNS either way).
    pub leadership: Leadership,
    /// The Lease and identity this replica is elected with; `None` without election.
    pub election: Option<String>,
    /// Zone transfers, when configured: what each secondary last did.
    pub transfers: Option<Arc<crate::dns::xfr::Transfers>>,
}

impl AdminState {
    fn is_ready(&self) -> bool {
        self.store.is_synced() && !self.draining.load(Ordering::Relaxed)
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/explain", get(explain))
        .route("/status", get(status))
        .with_state(state)
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    s.metrics.records.set(s.store.len() as i64);
    s.metrics.leader.set(i64::from(s.leadership.is_leader()));
    publish_gauges(&s.engine.view(), &s.metrics);
    for zone in s.store.zones().iter() {
        s.metrics
            .zone_serial
            .with_label_values(&[&zone.apex.to_ascii()])
            .set(zone.serial() as i64);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    if s.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if s.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first full sync of every source\n",
        )
    }
}

#[derive(Debug, Deserialize)]
struct ExplainQuery {
    name: String,
    /// An address or subnet: what that client gets from the name.
    client: Option<String>,
}

async fn explain(State(s): State<AdminState>, Query(q): Query<ExplainQuery>) -> impl IntoResponse {
    let mut explanation = match s
        .engine
        .query(move |e| e.explain_for(&q.name, q.client.as_deref(), Instant::now()))
        .await
    {
        Some(explanation) => explanation,
        None => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "engine unavailable\n".into(),
            );
        }
    };
    // A zone apex also shows what the secondaries last did (the engine does not know them).
    if let (Some(apex), Some(transfers)) = (&mut explanation.apex, &s.transfers) {
        apex.secondaries = transfers.secondaries();
    }
    (
        StatusCode::OK,
        crate::federation::explain::render(&explanation),
    )
}

async fn status(State(s): State<AdminState>) -> impl IntoResponse {
    let mut out = String::new();
    let view = s.engine.view();
    let counts = view.counts;
    let problems = crate::federation::explain::render_problems(&view.problems);
    let conflicts = &view.conflicts;
    let _ = writeln!(out, "ready:            {}", s.is_ready());
    let _ = match &s.election {
        Some(election) => writeln!(
            out,
            "leader:           {} ({election})",
            s.leadership.is_leader()
        ),
        None => writeln!(out, "leader:           true (no election)"),
    };
    let _ = writeln!(
        out,
        "members:          {} ({} ready)",
        counts.members, counts.ready_members
    );
    let _ = writeln!(out, "service records:  {}", counts.service_records);
    let _ = writeln!(out, "ingress records:  {}", counts.ingress_records);
    // The same count as fedns_records: every owner name the store answers for.
    let _ = writeln!(out, "names served:     {}", s.store.len());
    let _ = writeln!(
        out,
        "computed names:   {} (from records; the rest are static zones and empty non-terminals)",
        counts.names
    );
    for zone in s.store.zones().iter() {
        let _ = writeln!(
            out,
            "zone:             {} serial {}",
            zone.apex,
            zone.serial()
        );
    }
    for c in conflicts {
        let _ = writeln!(
            out,
            "conflict:         {} served from {}, {} rejected",
            c.name, c.winner, c.loser
        );
    }
    for line in problems.lines() {
        let _ = writeln!(out, "problem:          {line}");
    }
    for e in s.source_errors.borrow().iter() {
        let _ = writeln!(out, "source error:     {e}");
    }
    for w in s.watches.failing() {
        let _ = writeln!(out, "watch failing:    {w}");
    }
    if let Some(transfers) = &s.transfers {
        for (peer, p) in transfers.secondaries() {
            let _ = writeln!(out, "secondary:        {peer}; {p}");
        }
    }
    (StatusCode::OK, out)
}

/// Model-size gauges, from the engine's last published view.
fn publish_gauges(view: &EngineView, metrics: &Metrics) {
    let counts = view.counts;
    metrics.members.set(counts.members as i64);
    metrics.members_ready.set(counts.ready_members as i64);
    metrics.name_conflicts.set(counts.conflicts as i64);
    metrics.record_problems.set(counts.problems as i64);
    metrics.member_ready.reset();
    for (member, ready) in &view.member_readiness {
        metrics
            .member_ready
            .with_label_values(&[member])
            .set(i64::from(*ready));
    }
}
