//! Leader election with a `coordination.k8s.io/v1` Lease, so that several replicas can serve DNS
//! while exactly one of them writes to the host cluster (record status, DNSEndpoints, Events,
//! KubeFedCluster status).
//!
//! The semantics are client-go's `leaderelection`: a replica takes the Lease when it is absent,
//! released or expired (`renewTime + leaseDurationSeconds < now`), renews it every retry period,
//! and writes it only with the `resourceVersion` it read (a replace), so of two replicas racing
//! for it the second gets 409 Conflict and loses. A leader whose renewals have not succeeded for
//! the renew deadline steps down before anyone else may consider the Lease expired, which is why
//! the renew deadline must be shorter than the lease duration. On shutdown the holder releases the
//! Lease so a standby takes over within a retry period instead of a lease duration.
//!
//! The decision ([`decide`]) and the Lease it leads to ([`next_spec`]) are pure; [`start`] is the
//! thin loop around them.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::shutdown::Shutdown;

/// Whether this replica may write; cheap to clone. Every replica serves DNS regardless.
///
/// Inside is the current *term*: `Some(n)` while this replica holds the Lease, where `n` grows
/// with every acquisition. Writers that remember what they wrote compare terms, so a leadership
/// gap they did not observe (lost and regained between two looks) still makes them forget.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<Option<u64>>,
}

impl Leadership {
    /// A replica that always leads (directory source, or `--leader-elect=false`).
    pub fn always() -> Self {
        // The sender is dropped at once: a closed channel's last value is final (see `lost`).
        let (_, rx) = watch::channel(Some(0));
        Self { rx }
    }

    /// A replica that never writes (read-only runs such as `fedns explain --kubeconfig`).
    pub fn never() -> Self {
        let (_, rx) = watch::channel(None);
        Self { rx }
    }

    pub fn is_leader(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// The same as a plain leading/not-leading channel, for controllers that need only the flag
    /// (a closed channel's last value is final). Needs a Tokio runtime.
    pub fn flag(&self) -> watch::Receiver<bool> {
        let mut rx = self.rx.clone();
        let (tx, flag) = watch::channel(rx.borrow_and_update().is_some());
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let leading = rx.borrow_and_update().is_some();
                if tx.send(leading).is_err() {
                    return;
                }
            }
        });
        flag
    }

    /// The current term while leading; a new number after every gap.
    pub fn term(&self) -> Option<u64> {
        *self.rx.borrow()
    }

    /// Resolves when this replica holds the lease (immediately if it does).
    pub async fn acquired(&mut self) {
        if self.rx.wait_for(Option::is_some).await.is_err() {
            // The election ended without us leading: we never will.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when this replica stops holding it (immediately if it does not).
    pub async fn lost(&mut self) {
        if self.rx.wait_for(Option::is_none).await.is_err() {
            // The election ended while leading: only `always` does that (the election loop
            // steps down before it ends), so this replica never loses.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once the election loop has ended (after releasing the Lease on shutdown).
    pub async fn ended(&mut self) {
        while self.rx.changed().await.is_ok() {}
    }
}

/// Where the Lease is and how it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub name: String,
    /// The control-plane namespace.
    pub namespace: String,
    /// This replica's `holderIdentity`; unique per process.
    pub identity: String,
    /// How long a holder's claim lasts after its last renewal (what others wait for).
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renewal before it steps down.
    pub renew_deadline: Duration,
    /// How often the Lease is renewed, or tried for.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            name: "fedns".into(),
            namespace: namespace.into(),
            identity: default_identity(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// `POD_NAME` (set from the downward API), else the host name, plus a random suffix: a restarted
/// process must not mistake its predecessor's unexpired Lease for its own, and two processes on
/// one host must differ.
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "fedns".into());
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{base}_{:08x}", hasher.finish() as u32)
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds a valid lease (absent, released or expired): take it.
    Acquire,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds a valid lease: do not write.
    Follow { holder: String },
}

/// The decision for a Lease read at `now` (`None`: there is no Lease, or it has no spec).
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == me {
        return Decision::Renew;
    }
    // A holder that wrote no renew time or duration has no claim that can be checked.
    let expires = spec
        .renew_time
        .as_ref()
        .zip(spec.lease_duration_seconds)
        .and_then(|(renewed, seconds)| {
            renewed
                .0
                .checked_add(SignedDuration::from_secs(seconds.into()))
                .ok()
        });
    match expires {
        Some(at) if at >= now => Decision::Follow {
            holder: holder.to_owned(),
        },
        _ => Decision::Acquire,
    }
}

/// The spec to write when `me` acquires or renews at `now`: a renewal keeps the acquire time and
/// the transition count; an acquisition from another (or no) holder counts one more transition.
pub fn next_spec(
    current: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    lease_duration: Duration,
) -> LeaseSpec {
    let stamp = MicroTime(now);
    let ours = current.is_some_and(|c| c.holder_identity.as_deref() == Some(me));
    let transitions = current.and_then(|c| c.lease_transitions).unwrap_or(0);
    let mut spec = current.cloned().unwrap_or_default();
    spec.holder_identity = Some(me.to_owned());
    spec.lease_duration_seconds = Some(duration_seconds(lease_duration));
    spec.renew_time = Some(stamp.clone());
    if !ours || spec.acquire_time.is_none() {
        spec.acquire_time = Some(stamp);
    }
    spec.lease_transitions = Some(match (current, ours) {
        (None, _) => 0,
        (Some(_), true) => transitions,
        (Some(_), false) => transitions.saturating_add(1),
    });
    spec
}

/// The spec of a released Lease: no holder, and a one-second duration for electors that only
/// look at the times.
pub fn released_spec(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        acquire_time: Some(MicroTime(now)),
        ..current.clone()
    }
}

/// Whole seconds, rounded up: others must never see a shorter claim than we act on.
fn duration_seconds(d: Duration) -> i32 {
    let seconds = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(seconds.max(1)).unwrap_or(i32::MAX)
}

/// Why one attempt on the Lease did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("another replica wrote the Lease first (409 Conflict)")]
    Conflict,
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Api(#[from] kube::Error),
}

impl LeaseError {
    fn from_write(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(ref s) if s.code == 409 => Self::Conflict,
            e => Self::Api(e),
        }
    }
}

/// What one successful attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// We hold the Lease (just acquired or renewed).
    Held,
    /// Someone else does.
    HeldBy(String),
}

/// Runs the election until shutdown; returns the Leadership handle immediately (spawns the loop).
pub fn start(client: kube::Client, settings: LeaseSettings, shutdown: Shutdown) -> Leadership {
    let (tx, rx) = watch::channel(None);
    let election = Election {
        api: Api::namespaced(client, &settings.namespace),
        settings,
        tx,
        term: 0,
        renewed: None,
        holder: None,
    };
    tokio::spawn(election.run(shutdown));
    Leadership { rx }
}

#[derive(Debug)]
struct Election {
    api: Api<Lease>,
    settings: LeaseSettings,
    tx: watch::Sender<Option<u64>>,
    term: u64,
    /// While leading: when the renew time of our last successful write was stamped.
    renewed: Option<Instant>,
    /// The last holder seen, to log changes once.
    holder: Option<String>,
}

impl Election {
    fn leading(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Stops leading before anything else happens, so writers stop at once.
    fn step_down(&mut self, why: &str) {
        self.renewed = None;
        if self.tx.send_replace(None).is_some() {
            tracing::warn!(lease = %self.settings.name, identity = %self.settings.identity, why, "stepped down: no longer the leader");
        }
    }

    /// When leadership ends unless a renewal succeeds first.
    fn deadline(&self) -> Option<Instant> {
        self.renewed.map(|at| at + self.settings.renew_deadline)
    }

    async fn run(mut self, shutdown: Shutdown) {
        let mut conflicts = 0u32;
        loop {
            if self.deadline().is_some_and(|d| Instant::now() >= d) {
                self.step_down("renew deadline passed");
            }
            let started = Instant::now();
            let budget = self
                .deadline()
                .map_or(self.settings.renew_deadline, |d| {
                    d.saturating_duration_since(started)
                })
                .max(Duration::from_millis(1));
            let result = tokio::select! {
                r = tokio::time::timeout(budget, self.attempt()) => {
                    r.unwrap_or(Err(LeaseError::Timeout(budget)))
                }
                _ = shutdown.wait() => break,
            };
            let mut again_now = false;
            match result {
                Ok(Outcome::Held) => {
                    conflicts = 0;
                    self.renewed = Some(started);
                    self.holder = None;
                    if !self.leading() {
                        self.term += 1;
                        self.tx.send_replace(Some(self.term));
                        tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, term = self.term, "acquired the lease: leading");
                    }
                }
                Ok(Outcome::HeldBy(holder)) => {
                    conflicts = 0;
                    if self.holder.as_deref() != Some(holder.as_str()) {
                        tracing::info!(lease = %self.settings.name, %holder, "following the lease holder");
                        self.holder = Some(holder);
                    }
                }
                // Someone wrote the Lease between our read and our write: read again at once, so
                // a leader learns without delay whether it still holds it.
                Err(LeaseError::Conflict) if conflicts < 1 => {
                    conflicts += 1;
                    again_now = true;
                }
                Err(error) => {
                    conflicts = 0;
                    if self.leading() {
                        tracing::warn!(lease = %self.settings.name, %error, "lease renewal failed");
                    } else {
                        tracing::debug!(lease = %self.settings.name, %error, "lease not acquired");
                    }
                }
            }
            if self.deadline().is_some_and(|d| Instant::now() >= d) {
                self.step_down("renew deadline passed");
            }
            if again_now {
                continue;
            }
            let next = Instant::now() + self.settings.retry_period;
            let wake = self.deadline().map_or(next, |d| next.min(d));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.wait() => break,
            }
        }
        let was_leading = self.leading();
        self.step_down("shutting down");
        if was_leading {
            let limit = self.settings.renew_deadline;
            match tokio::time::timeout(limit, self.release()).await {
                Ok(Ok(())) => {
                    tracing::info!(lease = %self.settings.name, "released the lease")
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.settings.name, %error, "lease not released; it expires by itself")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.settings.name, "lease not released in time; it expires by itself")
                }
            }
        }
    }

    /// Reads the Lease and acquires, renews or follows it.
    async fn attempt(&mut self) -> Result<Outcome, LeaseError> {
        let current = self.api.get_opt(&self.settings.name).await?;
        let now = Timestamp::now();
        let me = self.settings.identity.clone();
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let decision = decide(spec, &me, now);
        if self.leading() && decision != Decision::Renew {
            // Our hold is broken (taken, released or expired): stop writing before anything else.
            self.step_down("the lease is no longer ours");
        }
        if let Decision::Follow { holder } = decision {
            return Ok(Outcome::HeldBy(holder));
        }
        let spec = next_spec(spec, &me, now, self.settings.lease_duration);
        match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api
                    .create(&crate::k8s::post_params(), &lease)
                    .await
                    .map_err(LeaseError::from_write)?;
            }
            Some(mut lease) => {
                // The resourceVersion we read stays in the body: the write is conditional on it.
                lease.spec = Some(spec);
                self.api
                    .replace(&self.settings.name, &crate::k8s::post_params(), &lease)
                    .await
                    .map_err(LeaseError::from_write)?;
            }
        }
        Ok(Outcome::Held)
    }

    /// Clears the holder if it is still us, so a standby need not wait for expiry.
    async fn release(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_ref() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(released_spec(spec, Timestamp::now()));
        self.api
            .replace(&self.settings.name, &crate::k8s::post_params(), &lease)
            .await
            .map_err(LeaseError::from_write)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "fedns-a_0001";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    /// A Lease held by `holder`, last renewed at `renewed` for 15 s.
    fn held(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(renewed - 100))),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn an_absent_lease_is_acquired() {
        assert_eq!(decide(None, ME, at(0)), Decision::Acquire);
    }

    #[test]
    fn someone_elses_valid_lease_is_followed() {
        let lease = held("other", 0);
        for now in [0, 10, 15] {
            assert_eq!(
                decide(Some(&lease), ME, at(now)),
                Decision::Follow {
                    holder: "other".into()
                },
                "{now} s after the renewal"
            );
        }
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        assert_eq!(
            decide(Some(&held("other", 0)), ME, at(16)),
            Decision::Acquire
        );
    }

    #[test]
    fn a_released_lease_is_taken_over_at_once() {
        let released = released_spec(&held("other", 0), at(1));
        assert_eq!(decide(Some(&released), ME, at(1)), Decision::Acquire);
    }

    #[test]
    fn our_lease_is_renewed_even_when_it_looks_expired() {
        assert_eq!(decide(Some(&held(ME, 0)), ME, at(1)), Decision::Renew);
        assert_eq!(decide(Some(&held(ME, 0)), ME, at(60)), Decision::Renew);
    }

    #[test]
    fn a_holder_without_renew_time_has_no_claim() {
        let mut lease = held("other", 0);
        lease.renew_time = None;
        assert_eq!(decide(Some(&lease), ME, at(0)), Decision::Acquire);
    }

    #[test]
    fn creating_the_lease_starts_at_zero_transitions() {
        let spec = next_spec(None, ME, at(5), Duration::from_secs(15));
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(5))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(5))));
    }

    #[test]
    fn renewing_keeps_the_acquire_time_and_transitions() {
        let spec = next_spec(Some(&held(ME, 0)), ME, at(2), Duration::from_secs(15));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(-100))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(2))));
        assert_eq!(spec.lease_transitions, Some(3));
    }

    #[test]
    fn taking_over_counts_a_transition_and_restarts_the_acquire_time() {
        let spec = next_spec(Some(&held("other", 0)), ME, at(20), Duration::from_secs(2));
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.lease_duration_seconds, Some(2));
    }

    #[test]
    fn releasing_clears_the_holder_and_keeps_the_transitions() {
        let spec = released_spec(&held(ME, 0), at(3));
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(spec.lease_transitions, Some(3));
    }

    #[test]
    fn identities_of_two_processes_on_one_host_differ() {
        assert_ne!(default_identity(), default_identity());
    }

    #[tokio::test]
    async fn always_leads_and_never_loses() {
        let mut l = Leadership::always();
        assert!(l.is_leader());
        l.acquired().await;
        let lost = tokio::time::timeout(Duration::from_millis(50), l.lost()).await;
        assert!(lost.is_err(), "an always-leader never loses");
        l.ended().await;
    }

    #[tokio::test]
    async fn acquired_and_lost_follow_the_term() {
        let (tx, rx) = watch::channel(None);
        let mut l = Leadership { rx };
        l.lost().await;
        assert!(!l.is_leader());
        tx.send_replace(Some(1));
        l.acquired().await;
        assert_eq!(l.term(), Some(1));
        let mut waiting = l.clone();
        let lost = tokio::spawn(async move { waiting.lost().await });
        tx.send_replace(None);
        tokio::time::timeout(Duration::from_secs(1), lost)
            .await
            .expect("lost resolves when stepping down")
            .unwrap();
        drop(tx);
        let acquired = tokio::time::timeout(Duration::from_millis(50), l.acquired()).await;
        assert!(acquired.is_err(), "an ended election is never acquired");
    }
}
