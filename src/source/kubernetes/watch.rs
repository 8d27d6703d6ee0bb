//! One kube-runtime watcher turned into model changes, shared by the member and host watchers.
//!
//! A relist (first listing, 410 Gone, reconnect) is buffered until complete and handed over as one
//! [`Change::Reset`], so there is no window of missing records. Watch errors never withdraw
//! anything; they are retried with an exponential, jittered backoff that grows on *every* kind
//! of failure, the initial list included, and resets only after a successful list:
//!
//! - from [`RETRY_INITIAL`] (200 ms), doubling, up to [`RETRY_CAP_API`] (30 s) when the API server
//!   answered with an error status (401, 403, 404, 5xx, …: retrying faster will not fix RBAC);
//! - up to [`RETRY_CAP_CONNECT`] (5 s) when it did not answer at all (connection refused or
//!   reset, TLS, timeouts: a restarting API server is back within seconds);
//! - at once after 410 Gone (the history was compacted: relisting is the cure, not a failure).
//!
//! A persistently failing watcher therefore costs a few requests per minute, and it logs one WARN
//! when it starts failing (cluster, resource, URL, HTTP status, the API's message), one INFO when
//! it recovers, and everything in between at debug. `fedns_watch_errors_total{cluster,resource,
//! reason}` counts the failures and [`WatchHealth`] lists the failing watchers for `/status`.
//!
//! An *empty* (or wholly unparseable) relist of a kind that had objects is not trusted at once
//! (an API server restored empty, an RBAC slip): the old objects are kept, the event is counted
//! and logged, and the watcher lists again once the confirmation period has passed; only when
//! that second listing, at least the period later, is still empty is the emptiness applied.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::federation::model::SourceEvent;
use crate::metrics::Metrics;

/// First retry delay of a failing watcher.
pub const RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Longest retry delay after an error status from the API server (401, 403, 404, 5xx).
pub const RETRY_CAP_API: Duration = Duration::from_secs(30);
/// Longest retry delay when the API server could not be reached at all.
pub const RETRY_CAP_CONNECT: Duration = Duration::from_secs(5);
/// Default of `--empty-relist-confirm`.
pub const EMPTY_RELIST_CONFIRM: Duration = Duration::from_secs(30);

/// A change of one watched kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<O, I> {
    /// A complete relist: replaces everything of this kind.
    Reset(Vec<O>),
    Apply(O),
    Delete(I),
}

/// What happened to the watch itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A full listing completed (the first one matters for readiness).
    Listed,
    /// The watch failed and will be retried; records are kept.
    Failed(String),
    /// An empty relist was held back; the old objects are kept until it is confirmed.
    EmptyRelistIgnored,
}

/// Exponential backoff from `min`, doubling, capped at `max`, with jitter (×0.8–1.2); resets
/// after a success. The watchers here call [`CappedBackoff::next_delay`] with a cap per kind of
/// failure; as a kube-runtime [`Backoff`] it uses `max`.
#[derive(Debug, Clone)]
pub struct CappedBackoff {
    next: Duration,
    min: Duration,
    max: Duration,
    seed: u64,
}

impl CappedBackoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64)
            | 1;
        Self {
            next: min,
            min,
            max,
            seed,
        }
    }

    fn jitter(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        0.8 + (self.seed % 1000) as f64 / 2500.0
    }

    /// The next delay, at most `cap`; the one after it is twice as long (up to `max`).
    pub fn next_delay(&mut self, cap: Duration) -> Duration {
        let delay = self.next.mul_f64(self.jitter()).min(cap);
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

impl Default for CappedBackoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(4))
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let max = self.max;
        Some(self.next_delay(max))
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A kube-runtime watcher stream under fedns's retry policy, for watchers that feed a reflector
/// or a work queue (the propagation controller, the scheduler): after a failure it waits before
/// the watcher is polled again (exponential backoff with jitter from [`RETRY_INITIAL`], capped at
/// [`RETRY_CAP_API`], or [`RETRY_CAP_CONNECT`] for connection errors) and resets only once a
/// listing completes. kube-runtime's own `.backoff()` also resets on the `Init` that starts every
/// relist, so a list that keeps failing (a role without that resource, a missing CRD) was retried
/// at its minimum delay. The first failure is logged at WARN with what failed, later ones at
/// debug, the recovery at INFO. A 410 (history compacted) is relisted at once.
pub fn retried<K, S>(stream: S, what: String) -> impl futures::Stream<Item = S::Item> + Send
where
    K: Send,
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    let backoff = CappedBackoff::new(RETRY_INITIAL, RETRY_CAP_API);
    futures::stream::unfold(
        (Box::pin(stream), backoff, false, what),
        |(mut stream, mut backoff, mut failing, what)| async move {
            let item = stream.next().await?;
            match &item {
                Ok(Event::InitDone) => {
                    backoff.reset();
                    if std::mem::take(&mut failing) {
                        tracing::info!(watch = %what, "watch recovered");
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    let failure = Failure::of(error);
                    if !failure.is_expired() {
                        let delay = backoff.next_delay(failure.retry_cap());
                        let status = failure.status.map(|s| s.to_string());
                        let status = status.as_deref().unwrap_or("none");
                        if std::mem::replace(&mut failing, true) {
                            tracing::debug!(watch = %what, status, error = %failure.message, ?delay, "watch still failing");
                        } else {
                            tracing::warn!(
                                watch = %what,
                                status,
                                error = %failure.message,
                                "watch failing; retrying with backoff"
                            );
                        }
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            Some((item, (stream, backoff, failing, what)))
        },
    )
}

/// Why a watch request failed, as far as retrying and reporting care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The `reason` label of `fedns_watch_errors_total`.
    pub reason: &'static str,
    /// The HTTP status, when the API server answered.
    pub status: Option<u16>,
    /// The API's message, or the transport error with its causes.
    pub message: String,
}

impl Failure {
    /// Classifies a watcher error.
    pub fn of(error: &watcher::Error) -> Self {
        use watcher::Error as W;
        match error {
            W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => {
                Self::of_client(e)
            }
            W::WatchError(status) => Self::of_status(status),
            W::NoResourceVersion => Self {
                reason: "invalid_response",
                status: None,
                message: error.to_string(),
            },
        }
    }

    /// Classifies a client error (also what the health prober gets).
    pub fn of_client(error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => Self::of_status(status),
            kube::Error::HyperError(_)
            | kube::Error::Service(_)
            | kube::Error::ReadEvents(_)
            | kube::Error::RustlsTls(_) => Self {
                reason: "connect",
                status: None,
                message: error_chain(error),
            },
            kube::Error::SerdeError(_)
            | kube::Error::FromUtf8(_)
            | kube::Error::LinesCodecMaxLineLengthExceeded => Self {
                reason: "decode",
                status: None,
                message: error_chain(error),
            },
            _ => Self {
                reason: "other",
                status: None,
                message: error_chain(error),
            },
        }
    }

    fn of_status(status: &kube::core::Status) -> Self {
        let reason = match status.code {
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            410 => "expired",
            429 => "throttled",
            500..=599 => "server_error",
            _ => "client_error",
        };
        let message = match (status.reason.is_empty(), status.message.is_empty()) {
            (_, false) if !status.reason.is_empty() => {
                format!("{} {}: {}", status.code, status.reason, status.message)
            }
            (true, false) => format!("{}: {}", status.code, status.message),
            (false, true) => format!("{} {}", status.code, status.reason),
            _ => format!("HTTP {}", status.code),
        };
        Self {
            reason,
            status: Some(status.code),
            message,
        }
    }

    /// 410 Gone: the watch history was compacted; relisting at once is the normal cure.
    pub fn is_expired(&self) -> bool {
        self.status == Some(410)
    }

    /// The longest retry delay for this kind of failure.
    pub fn retry_cap(&self) -> Duration {
        if self.reason == "connect" {
            RETRY_CAP_CONNECT
        } else {
            RETRY_CAP_API
        }
    }
}

/// An error with its causes, each once ("ServiceError: client error (Connect): tcp connect
/// error: Connection refused (os error 111)").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// A watcher that is failing right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingWatch {
    pub cluster: String,
    pub resource: String,
    pub url: String,
    /// The HTTP status of the last failure, when the API server answered.
    pub status: Option<u16>,
    pub last_error: String,
    pub failures: u64,
    pub since: SystemTime,
}

impl std::fmt::Display for FailingWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = SystemTime::now()
            .duration_since(self.since)
            .unwrap_or_default()
            .as_secs();
        write!(
            f,
            "{}/{} {} failing for {since}s ({} attempts): {}",
            self.cluster, self.resource, self.url, self.failures, self.last_error
        )
    }
}

/// The watchers failing right now, by cluster and resource; shared by every watcher and read by
/// `/status`. Touched only when a watcher fails or recovers, never on the answer path.
#[derive(Debug, Clone, Default)]
pub struct WatchHealth {
    failing: Arc<Mutex<BTreeMap<(String, String), FailingWatch>>>,
}

impl WatchHealth {
    /// The failing watchers, sorted by cluster and resource.
    pub fn failing(&self) -> Vec<FailingWatch> {
        self.lock().values().cloned().collect()
    }

    /// Forgets a cluster's watchers (it was removed).
    pub fn forget_cluster(&self, cluster: &str) {
        self.lock().retain(|(c, _), _| c != cluster);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), FailingWatch>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one failure; true when the watcher was not failing before.
    fn fail(&self, watched: &Watched, failure: &Failure) -> bool {
        let mut map = self.lock();
        let key = (watched.cluster.clone(), watched.resource.to_owned());
        let first = !map.contains_key(&key);
        let entry = map.entry(key).or_insert_with(|| FailingWatch {
            cluster: watched.cluster.clone(),
            resource: watched.resource.to_owned(),
            url: watched.url.clone(),
            status: None,
            last_error: String::new(),
            failures: 0,
            since: SystemTime::now(),
        });
        entry.status = failure.status;
        entry.last_error.clone_from(&failure.message);
        entry.failures += 1;
        first
    }

    /// Clears a watcher; true when it was failing.
    fn recover(&self, watched: &Watched) -> bool {
        self.lock()
            .remove(&(watched.cluster.clone(), watched.resource.to_owned()))
            .is_some()
    }
}

/// What one watcher watches and where it reports.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The member's name, or `host` for the host cluster.
    pub cluster: String,
    /// The resource's plural (`services`, `domains`).
    pub resource: &'static str,
    /// The collection's URL, for the log and `/status`.
    pub url: String,
    pub health: WatchHealth,
    pub metrics: Metrics,
    /// How long an empty relist is distrusted before a second listing may confirm it.
    pub confirm_empty: Duration,
}

impl Watched {
    /// `base` is the cluster's URL; the collection's path is the API's.
    pub fn new<K: Resource>(
        cluster: &str,
        resource: &'static str,
        base: &str,
        api: &Api<K>,
        settings: &WatchSettings,
    ) -> Self {
        Self {
            cluster: cluster.to_owned(),
            resource,
            url: format!("{}{}", base.trim_end_matches('/'), api.resource_url()),
            health: settings.health.clone(),
            metrics: settings.metrics.clone(),
            confirm_empty: settings.confirm_empty,
        }
    }
}

/// What every watcher of a source shares.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub health: WatchHealth,
    pub metrics: Metrics,
    /// `--empty-relist-confirm`.
    pub confirm_empty: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            health: WatchHealth::default(),
            metrics: Metrics::default(),
            confirm_empty: EMPTY_RELIST_CONFIRM,
        }
    }
}

/// The distrust of empty relists of one kind in one cluster: a pure state machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmptyRelistGuard {
    had_objects: bool,
    /// When an empty relist was first held back.
    held_since: Option<Instant>,
}

/// What to do with a completed relist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelistVerdict {
    /// Apply it.
    Apply,
    /// Hold it back (first empty relist after objects); list again at the given time.
    Hold(Instant),
    /// Still within the confirmation period: keep holding; list again at the given time.
    StillHeld(Instant),
    /// Empty again at least the confirmation period later: apply it.
    Confirmed,
}

impl EmptyRelistGuard {
    /// Judges a relist of `objects` objects completed at `now`.
    pub fn relisted(&mut self, objects: usize, now: Instant, confirm: Duration) -> RelistVerdict {
        if objects > 0 {
            self.had_objects = true;
            self.held_since = None;
            return RelistVerdict::Apply;
        }
        if !self.had_objects {
            return RelistVerdict::Apply;
        }
        match self.held_since {
            None => {
                self.held_since = Some(now);
                RelistVerdict::Hold(now + confirm)
            }
            Some(since) if now.saturating_duration_since(since) >= confirm => {
                self.had_objects = false;
                self.held_since = None;
                RelistVerdict::Confirmed
            }
            Some(since) => RelistVerdict::StillHeld(since + confirm),
        }
    }

    /// An object arrived through the watch.
    pub fn applied(&mut self) {
        self.had_objects = true;
    }
}

/// Runs a watcher on `api` until `events` closes.
///
/// `strip` turns an object into what the model keeps (`None`: skip it, already logged); `id`
/// names a deleted object. `sink` turns each change into the event to send, if any; `notify`
/// receives the watch's own events.
pub async fn run<K, O, I>(
    api: Api<K>,
    watched: &Watched,
    strip: impl Fn(K) -> Option<O>,
    id: impl Fn(&K) -> Option<I>,
    mut sink: impl FnMut(Change<O, I>) -> Option<SourceEvent>,
    notify: impl Fn(Notice),
    events: &mpsc::Sender<SourceEvent>,
) where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let cluster = watched.cluster.as_str();
    let resource = watched.resource;
    let url = watched.url.as_str();
    let mut backoff = CappedBackoff::new(RETRY_INITIAL, RETRY_CAP_API);
    let mut guard = EmptyRelistGuard::default();
    // When a held-back empty relist is to be checked by listing again.
    let mut relist_at: Option<Instant> = None;
    let mut send = async |change| match sink(change) {
        Some(event) => events.send(event).await.is_ok(),
        None => !events.is_closed(),
    };
    loop {
        // A fresh watcher lists from scratch: that is how a held-back relist gets confirmed.
        let stream = watcher::watcher(api.clone(), watcher::Config::default());
        let mut stream = std::pin::pin!(stream);
        let mut relist: Option<Vec<O>> = None;
        loop {
            let event = match relist_at {
                Some(at) => tokio::select! {
                    event = stream.next() => event,
                    _ = tokio::time::sleep_until(at) => {
                        relist_at = None;
                        tracing::debug!(cluster, resource, "listing again to confirm an empty relist");
                        break;
                    }
                },
                None => stream.next().await,
            };
            let Some(event) = event else { return };
            let alive = match event {
                Ok(Event::Init) => {
                    relist = Some(Vec::new());
                    true
                }
                Ok(Event::InitApply(object)) => {
                    if let (Some(buffer), Some(object)) = (&mut relist, strip(object)) {
                        buffer.push(object);
                    }
                    true
                }
                Ok(Event::InitDone) => {
                    let objects = relist.take().unwrap_or_default();
                    backoff.reset();
                    if watched.health.recover(watched) {
                        tracing::info!(cluster, resource, url, "watch recovered");
                    }
                    let now = Instant::now();
                    let alive = match guard.relisted(objects.len(), now, watched.confirm_empty) {
                        RelistVerdict::Apply => send(Change::Reset(objects)).await,
                        RelistVerdict::Hold(at) => {
                            tracing::warn!(
                                cluster,
                                resource,
                                confirm_after = ?watched.confirm_empty,
                                "empty relist held back: keeping the objects seen before until a later listing confirms it"
                            );
                            watched
                                .metrics
                                .empty_relists
                                .with_label_values(&[cluster, resource])
                                .inc();
                            notify(Notice::EmptyRelistIgnored);
                            relist_at = Some(at);
                            true
                        }
                        RelistVerdict::StillHeld(at) => {
                            tracing::debug!(cluster, resource, "empty relist still held back");
                            relist_at = Some(at);
                            true
                        }
                        RelistVerdict::Confirmed => {
                            tracing::info!(
                                cluster,
                                resource,
                                "empty relist confirmed by a second listing: applying it"
                            );
                            send(Change::Reset(objects)).await
                        }
                    };
                    // Announced once the listing's objects are handed on: whoever waits for it
                    // (the sync gate's `Synced`, the KubeFedCluster watcher waiting for the
                    // Secrets) finds them applied, not on their way.
                    notify(Notice::Listed);
                    alive
                }
                Ok(Event::Apply(object)) => match strip(object) {
                    Some(object) => {
                        guard.applied();
                        send(Change::Apply(object)).await
                    }
                    None => true,
                },
                Ok(Event::Delete(object)) => match id(&object) {
                    Some(id) => send(Change::Delete(id)).await,
                    None => true,
                },
                Err(error) => {
                    let failure = Failure::of(&error);
                    watched
                        .metrics
                        .watch_errors
                        .with_label_values(&[cluster, resource, failure.reason])
                        .inc();
                    watched
                        .metrics
                        .watch_restarts
                        .with_label_values(&[cluster, resource])
                        .inc();
                    if failure.is_expired() {
                        tracing::debug!(
                            cluster,
                            resource,
                            "watch history expired (410): relisting"
                        );
                        continue;
                    }
                    let delay = backoff.next_delay(failure.retry_cap());
                    let status = failure.status.map(|s| s.to_string());
                    let status = status.as_deref().unwrap_or("none");
                    if watched.health.fail(watched, &failure) {
                        tracing::warn!(
                            cluster,
                            resource,
                            url,
                            status,
                            error = %failure.message,
                            "watch failing; retrying with backoff (records are kept)"
                        );
                    } else {
                        tracing::debug!(cluster, resource, url, status, error = %failure.message, ?delay, "watch still failing");
                    }
                    notify(Notice::Failed(failure.message));
                    if events.is_closed() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    true
                }
            };
            if !alive {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API server whose every LIST returns one ConfigMap and whose watches never answer.
    fn one_object_api() -> Api<k8s_openapi::api::core::v1::ConfigMap> {
        let service = tower::service_fn(|request: http::Request<kube::client::Body>| async move {
            if request
                .uri()
                .query()
                .is_some_and(|q| q.contains("watch=true"))
            {
                std::future::pending::<()>().await;
            }
            let list = r#"{"apiVersion": "v1", "kind": "ConfigMapList",
                "metadata": {"resourceVersion": "1"},
                "items": [{"metadata": {"name": "a", "namespace": "x", "resourceVersion": "1"}}]}"#;
            let body = kube::client::Body::from(list.as_bytes().to_vec());
            Ok::<_, std::convert::Infallible>(http::Response::new(body))
        });
        Api::all(kube::Client::new(service, "default"))
    }

    #[tokio::test]
    async fn a_listing_is_announced_only_after_its_objects_are_handed_on() {
        let api = one_object_api();
        let settings = WatchSettings::default();
        let watched = Watched::new("c1", "configmaps", "http://test", &api, &settings);
        let (events, mut received) = mpsc::channel(1);
        let seen = std::sync::Mutex::new(Vec::new());
        let watcher = run(
            api,
            &watched,
            |cm: k8s_openapi::api::core::v1::ConfigMap| cm.metadata.name,
            |cm| cm.metadata.name.clone(),
            |change| {
                if let Change::Reset(names) = change {
                    seen.lock().unwrap().push(format!("reset {names:?}"));
                }
                Some(SourceEvent::Synced)
            },
            |notice| seen.lock().unwrap().push(format!("{notice:?}")),
            &events,
        );
        let listed = async {
            received.recv().await;
            // The reset is queued; give the watcher every chance to announce the listing early.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            seen.lock().unwrap().clone()
        };
        let seen = tokio::select! {
            () = watcher => panic!("the watcher stopped"),
            seen = listed => seen,
        };
        assert_eq!(seen, [r#"reset ["a"]"#, "Listed"]);
    }

    #[test]
    fn backoff_is_capped_and_resets() {
        let mut b = CappedBackoff::new(Duration::from_millis(100), Duration::from_secs(4));
        let delays: Vec<Duration> = (&mut b).take(12).collect();
        assert!(delays[0] <= Duration::from_millis(120));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(4)));
        assert!(delays[11] >= Duration::from_millis(3200), "{delays:?}");
        b.reset();
        assert!(b.next().unwrap() <= Duration::from_millis(120));
    }

    #[test]
    fn watch_backoff_doubles_to_a_cap_per_kind_of_failure() {
        let mut b = CappedBackoff::new(RETRY_INITIAL, RETRY_CAP_API);
        let api: Vec<Duration> = (0..12).map(|_| b.next_delay(RETRY_CAP_API)).collect();
        assert!(api[0] >= Duration::from_millis(160) && api[0] <= Duration::from_millis(240));
        for pair in api.windows(2).take(6) {
            assert!(pair[1] > pair[0], "grows: {api:?}");
        }
        assert!(api[11] >= Duration::from_secs(24), "{api:?}");
        assert!(api.iter().all(|d| *d <= RETRY_CAP_API));
        let connect: Vec<Duration> = (0..4).map(|_| b.next_delay(RETRY_CAP_CONNECT)).collect();
        assert!(
            connect.iter().all(|d| *d <= RETRY_CAP_CONNECT),
            "{connect:?}"
        );
        b.reset();
        assert!(b.next_delay(RETRY_CAP_API) <= Duration::from_millis(240));
    }

    #[test]
    fn failures_are_classified_for_retry_and_report() {
        let status =
            kube::core::Status::failure("nodes is forbidden: User \"x\" cannot list", "Forbidden")
                .with_code(403);
        let f = Failure::of(&watcher::Error::InitialListFailed(kube::Error::Api(
            Box::new(status),
        )));
        assert_eq!(f.reason, "forbidden");
        assert_eq!(f.status, Some(403));
        assert_eq!(
            f.message,
            "403 Forbidden: nodes is forbidden: User \"x\" cannot list"
        );
        assert_eq!(f.retry_cap(), RETRY_CAP_API);
        let gone = kube::core::Status::failure("too old", "Expired").with_code(410);
        assert!(Failure::of(&watcher::Error::WatchError(Box::new(gone))).is_expired());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let f = Failure::of(&watcher::Error::WatchFailed(kube::Error::ReadEvents(io)));
        assert_eq!(f.reason, "connect");
        assert_eq!(f.retry_cap(), RETRY_CAP_CONNECT);
        assert!(f.message.contains("connection refused"), "{}", f.message);
    }

    #[test]
    fn an_empty_relist_is_held_until_a_later_listing_confirms_it() {
        let confirm = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut g = EmptyRelistGuard::default();
        assert_eq!(
            g.relisted(0, t0, confirm),
            RelistVerdict::Apply,
            "nothing to lose yet"
        );
        assert_eq!(g.relisted(3, t0, confirm), RelistVerdict::Apply);
        assert_eq!(
            g.relisted(0, t0, confirm),
            RelistVerdict::Hold(t0 + confirm)
        );
        let early = t0 + Duration::from_secs(10);
        assert_eq!(
            g.relisted(0, early, confirm),
            RelistVerdict::StillHeld(t0 + confirm)
        );
        assert_eq!(
            g.relisted(0, t0 + confirm, confirm),
            RelistVerdict::Confirmed
        );
        assert_eq!(
            g.relisted(0, t0 + confirm, confirm),
            RelistVerdict::Apply,
            "now empty is the truth"
        );
    }

    #[test]
    fn objects_in_between_cancel_a_held_relist() {
        let confirm = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut g = EmptyRelistGuard::default();
        g.relisted(2, t0, confirm);
        assert!(matches!(g.relisted(0, t0, confirm), RelistVerdict::Hold(_)));
        assert_eq!(
            g.relisted(1, t0 + Duration::from_secs(1), confirm),
            RelistVerdict::Apply
        );
        let later = t0 + Duration::from_secs(40);
        assert_eq!(
            g.relisted(0, later, confirm),
            RelistVerdict::Hold(later + confirm),
            "a new hold, not a confirmation"
        );
    }
}
