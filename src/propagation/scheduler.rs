//! The replica scheduler's I/O shell: watches ReplicaSchedulingPreferences and their targets
//! (`FederatedDeployment` / `FederatedReplicaSet` of the same namespace/name), reads what each
//! Ready member runs, and writes the [`planner`]'s result into the target's placement and
//! `/spec/replicas` overrides and into the RSP status. Only the lease holder writes, and only
//! what changed. All decisions are in [`planner`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DynamicObject, ListParams, Patch};
use kube::discovery::ApiResource;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::members::{MemberDirectory, MemberHandle, MemberSet};
use super::planner::{
    self, Candidates, MemberState, Outcome, PodState, TARGET_KINDS, apply_plan, plan_replicas,
    rsp_status, select_candidates, status_patch,
};
use super::types::{ReplicaSchedulingPreference, default_type, federated_type_of};
use crate::shutdown::Shutdown;
use crate::source::kubernetes::watch::retried;

/// Re-plan every RSP this often even without events: capacity comes from pods, which are not
/// watched.
pub const RESYNC: Duration = Duration::from_secs(30);
/// A member that does not answer within this is treated as failed for this attempt (kube-rs has
/// no read timeout, and one hung member must not stall every RSP).
const MEMBER_TIMEOUT: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(200);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why one reconcile of an RSP failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("host: {0}")]
    Host(#[source] kube::Error),
    #[error("member {cluster}: {source}")]
    Member {
        cluster: String,
        #[source]
        source: kube::Error,
    },
    #[error("member {0} did not answer within {MEMBER_TIMEOUT:?}")]
    MemberTimeout(String),
    #[error("object does not serialize: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl ScheduleError {
    /// A stale `resourceVersion`: someone else wrote first; retry at once with a fresh read.
    fn is_conflict(&self) -> bool {
        matches!(self, ScheduleError::Host(kube::Error::Api(e)) if e.code == 409)
    }
}

/// An RSP and its target share this namespace/name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    namespace: String,
    name: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl Key {
    fn of<K: Resource>(object: &K) -> Option<Key> {
        Some(Key {
            namespace: object.meta().namespace.clone()?,
            name: object.meta().name.clone()?,
        })
    }
}

/// What the watch tasks tell the loop.
#[derive(Debug)]
enum Trigger {
    /// An RSP was added or changed.
    Rsp(Key),
    /// An RSP was deleted.
    RspGone(Key),
    /// The RSP watch relisted: these are all of them.
    RspRelisted(BTreeSet<Key>),
    /// A target changed or was deleted.
    Target(Key),
}

/// Schedules replicas until shut down. `namespace_scope` limits it to one namespace (a
/// namespaced control plane); `leader` gates every write.
pub async fn run(
    host: Client,
    namespace_scope: Option<String>,
    mut members: MemberDirectory,
    mut leader: watch::Receiver<bool>,
    shutdown: Shutdown,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    let rsps: Api<ReplicaSchedulingPreference> = match &namespace_scope {
        Some(ns) => Api::namespaced(host.clone(), ns),
        None => Api::all(host.clone()),
    };
    tasks.spawn(watch_rsps(rsps, tx.clone()));
    for kind in TARGET_KINDS {
        let Some((federated, _)) = resources(kind) else {
            continue;
        };
        let api: Api<DynamicObject> = match &namespace_scope {
            Some(ns) => Api::namespaced_with(host.clone(), ns, &federated),
            None => Api::all_with(host.clone(), &federated),
        };
        tasks.spawn(watch_targets(api, kind, tx.clone()));
    }
    drop(tx);

    let mut known: BTreeSet<Key> = BTreeSet::new();
    let mut dirty: BTreeSet<Key> = BTreeSet::new();
    let mut retry: BTreeMap<Key, (Instant, u32)> = BTreeMap::new();
    let mut members_open = true;
    let mut leader_open = true;
    let mut last_resync = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            trigger = rx.recv() => match trigger {
                Some(t) => {
                    apply_trigger(t, &mut known, &mut dirty);
                    while let Ok(t) = rx.try_recv() {
                        apply_trigger(t, &mut known, &mut dirty);
                    }
                }
                // The watch tasks only end with the runtime.
                None => return,
            },
            changed = members.changed(), if members_open => match changed {
                Ok(()) => dirty.extend(known.iter().cloned()),
                Err(_) => members_open = false,
            },
            changed = leader.changed(), if leader_open => match changed {
                // A new leader re-plans everything: the previous one may have left work undone.
                Ok(()) if *leader.borrow() => dirty.extend(known.iter().cloned()),
                Ok(()) => {}
                Err(_) => leader_open = false,
            },
            _ = tokio::time::sleep(TICK) => {}
        }
        let now = Instant::now();
        if now.duration_since(last_resync) >= RESYNC {
            last_resync = now;
            dirty.extend(known.iter().cloned());
        }
        let due: Vec<Key> = retry
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        dirty.extend(due);
        for key in std::mem::take(&mut dirty) {
            if shutdown.is_triggered() {
                return;
            }
            let members_now = members.borrow().clone();
            match reconcile(&host, &key, &members_now, &leader).await {
                Ok(()) => {
                    retry.remove(&key);
                }
                Err(error) => {
                    let attempts = retry.get(&key).map_or(0, |(_, n)| *n) + 1;
                    let delay = if error.is_conflict() {
                        Duration::ZERO
                    } else {
                        (MIN_BACKOFF * 2u32.saturating_pow(attempts.min(16) - 1)).min(MAX_BACKOFF)
                    };
                    tracing::warn!(rsp = %key, %error, attempts, ?delay, "scheduling failed; retrying");
                    retry.insert(key, (Instant::now() + delay, attempts));
                }
            }
        }
    }
}

fn apply_trigger(trigger: Trigger, known: &mut BTreeSet<Key>, dirty: &mut BTreeSet<Key>) {
    match trigger {
        Trigger::Rsp(key) => {
            known.insert(key.clone());
            dirty.insert(key);
        }
        Trigger::RspGone(key) => {
            known.remove(&key);
        }
        Trigger::RspRelisted(keys) => {
            dirty.extend(keys.iter().cloned());
            *known = keys;
        }
        Trigger::Target(key) => {
            if known.contains(&key) {
                dirty.insert(key);
            }
        }
    }
}

/// The federated type and the member workload type of an RSP `targetKind`.
fn resources(target_kind: &str) -> Option<(ApiResource, ApiResource)> {
    if !TARGET_KINDS.contains(&target_kind) {
        return None;
    }
    let workload = default_type(target_kind.strip_prefix("Federated")?)?;
    Some((
        federated_type_of(&workload).api_resource(),
        workload.api_resource(),
    ))
}

async fn watch_rsps(api: Api<ReplicaSchedulingPreference>, tx: mpsc::UnboundedSender<Trigger>) {
    let mut relist: Option<BTreeSet<Key>> = None;
    watch_events(api, "ReplicaSchedulingPreference", |event| {
        let trigger = match event {
            Event::Init => {
                relist = Some(BTreeSet::new());
                None
            }
            Event::InitApply(rsp) => {
                if let (Some(keys), Some(key)) = (&mut relist, Key::of(&rsp)) {
                    keys.insert(key);
                }
                None
            }
            Event::InitDone => Some(Trigger::RspRelisted(relist.take().unwrap_or_default())),
            Event::Apply(rsp) => Key::of(&rsp).map(Trigger::Rsp),
            Event::Delete(rsp) => Key::of(&rsp).map(Trigger::RspGone),
        };
        trigger.is_none_or(|t| tx.send(t).is_ok())
    })
    .await;
}

async fn watch_targets(
    api: Api<DynamicObject>,
    kind: &'static str,
    tx: mpsc::UnboundedSender<Trigger>,
) {
    watch_events(api, kind, |event| {
        let key = match event {
            Event::Apply(o) | Event::Delete(o) | Event::InitApply(o) => Key::of(&o),
            Event::Init | Event::InitDone => None,
        };
        key.is_none_or(|k| tx.send(Trigger::Target(k)).is_ok())
    })
    .await;
}

/// Feeds watch events of `api` to `handle` until it returns false; failures are logged and the
/// watch retried with backoff ([`retried`]).
async fn watch_events<K>(api: Api<K>, label: &str, mut handle: impl FnMut(Event<K>) -> bool)
where
    K: Resource + Clone + fmt::Debug + DeserializeOwned + Send + 'static,
{
    let stream = retried(
        watcher::watcher(api, watcher::Config::default()),
        label.to_owned(),
    );
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        // Failures are logged and backed off by `retried`.
        if let Ok(event) = event
            && !handle(event)
        {
            return;
        }
    }
}

/// Plans one RSP and writes what changed (when leading).
async fn reconcile(
    host: &Client,
    key: &Key,
    members: &MemberSet,
    leader: &watch::Receiver<bool>,
) -> Result<(), ScheduleError> {
    let rsps: Api<ReplicaSchedulingPreference> = Api::namespaced(host.clone(), &key.namespace);
    let Some(rsp) = rsps.get_opt(&key.name).await.map_err(ScheduleError::Host)? else {
        return Ok(());
    };
    let Some((federated, workload)) = resources(&rsp.spec.target_kind) else {
        let outcome = Outcome::UnsupportedTargetKind(rsp.spec.target_kind.clone());
        return write_status(&rsps, &rsp, &outcome, leader).await;
    };
    let targets: Api<DynamicObject> =
        Api::namespaced_with(host.clone(), &key.namespace, &federated);
    let Some(target) = targets
        .get_opt(&key.name)
        .await
        .map_err(ScheduleError::Host)?
    else {
        return write_status(&rsps, &rsp, &Outcome::TargetNotFound, leader).await;
    };
    // Members not all known yet (the KubeFedClusters not listed, or a member the prober has not
    // judged): a placement computed now could drop clusters that are fine and delete the
    // workload there. The member set's next publication wakes this again.
    if !members.listed || members.is_empty() || members.values().any(|m| !m.probed) {
        return Ok(());
    }
    let target_json = serde_json::to_value(&target)?;
    let states: Vec<MemberState> = members
        .values()
        .map(|m| MemberState {
            name: m.name.clone(),
            labels: m.labels.clone(),
            ready: m.ready,
        })
        .collect();
    let candidates = select_candidates(&states, &rsp.spec, &target_json["spec"]);
    let (current, capacity) = replica_state(members, &candidates, &workload, key).await?;
    let plan = plan_replicas(
        &rsp.spec,
        &candidates.ready,
        &current,
        &capacity,
        &key.to_string(),
    );
    if let Some(spec) = apply_plan(&target_json, &plan, &candidates)
        && *leader.borrow()
    {
        // Only placement and overrides: a merge patch of the whole spec would drop the `null`s
        // templates carry (`creationTimestamp: null`). The resourceVersion makes it conditional.
        let patch = json!({
            "metadata": {"resourceVersion": target.resource_version()},
            "spec": {"placement": spec["placement"], "overrides": spec["overrides"]},
        });
        targets
            .patch(
                &key.name,
                &crate::k8s::patch_params(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(ScheduleError::Host)?;
        tracing::info!(rsp = %key, replicas = ?plan.replicas, overflow = ?plan.overflow, "replicas scheduled");
    }
    write_status(&rsps, &rsp, &Outcome::Scheduled(plan), leader).await
}

/// Writes the RSP status for `outcome` when it differs from the current one.
async fn write_status(
    api: &Api<ReplicaSchedulingPreference>,
    rsp: &ReplicaSchedulingPreference,
    outcome: &Outcome,
    leader: &watch::Receiver<bool>,
) -> Result<(), ScheduleError> {
    // Whole seconds: API servers store condition times that way, so a re-read compares equal.
    let now = crate::k8s::timestamp(Timestamp::now());
    let status = rsp_status(
        rsp.status.as_ref(),
        outcome,
        rsp.metadata.generation,
        Time(now),
    );
    if rsp.status.as_ref() == Some(&status) || !*leader.borrow() {
        return Ok(());
    }
    let patch = status_patch(rsp.status.as_ref(), &status);
    api.patch_status(
        &rsp.name_any(),
        &crate::k8s::patch_params(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(ScheduleError::Host)?;
    Ok(())
}

/// What each ready candidate runs of the workload, and its capacity where pods are stuck.
async fn replica_state(
    members: &MemberSet,
    candidates: &Candidates,
    workload: &ApiResource,
    key: &Key,
) -> Result<(BTreeMap<String, i64>, BTreeMap<String, i64>), ScheduleError> {
    let handles: Vec<&MemberHandle> = candidates
        .ready
        .iter()
        .filter_map(|c| members.get(c))
        .collect();
    let results = join_all(handles.into_iter().map(|m| async move {
        let state = tokio::time::timeout(MEMBER_TIMEOUT, member_state(m, workload, key))
            .await
            .map_err(|_| ScheduleError::MemberTimeout(m.name.clone()))?;
        state
            .map_err(|source| ScheduleError::Member {
                cluster: m.name.clone(),
                source,
            })
            .map(|s| (m.name.clone(), s))
    }))
    .await;
    let mut current = BTreeMap::new();
    let mut capacity = BTreeMap::new();
    for result in results {
        let (cluster, (running, cap)) = result?;
        if let Some(r) = running {
            current.insert(cluster.clone(), r);
        }
        if let Some(c) = cap {
            capacity.insert(cluster, c);
        }
    }
    Ok((current, capacity))
}

/// One member's running replicas (`None` without a workload) and capacity estimate. Like
/// KubeFed, a workload whose ready replicas equal its spec runs them all; otherwise its pods (by
/// `spec.selector.matchLabels`) are counted.
async fn member_state(
    member: &MemberHandle,
    workload: &ApiResource,
    key: &Key,
) -> Result<(Option<i64>, Option<i64>), kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(member.client.clone(), &key.namespace, workload);
    let Some(object) = api.get_opt(&key.name).await? else {
        return Ok((None, None));
    };
    let number = |path: &str| {
        object
            .data
            .pointer(path)
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let replicas = number("/spec/replicas");
    let ready = number("/status/readyReplicas");
    let selector: Vec<String> = object
        .data
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    if replicas == ready || selector.is_empty() {
        return Ok((Some(ready), None));
    }
    let pods: Api<Pod> = Api::namespaced(member.client.clone(), &key.namespace);
    let list = pods
        .list(&ListParams::default().labels(&selector.join(",")))
        .await?;
    let states: Vec<PodState> = list.items.iter().map(PodState::of).collect();
    Ok((
        Some(planner::running_and_ready(&states)),
        planner::estimate_capacity(replicas, &states, Timestamp::now()),
    ))
}
