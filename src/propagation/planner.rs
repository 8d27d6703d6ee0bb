//! Replica scheduling as pure functions: which clusters are candidates for a
//! `ReplicaSchedulingPreference`, how many replicas each gets ([`plan_replicas`], KubeFed's planner
//! kept bit-compatible so users see the same split), how much a cluster can hold
//! ([`estimate_capacity`]), what the federated object's `spec` becomes ([`apply_plan`]) and the RSP
//! status ([`rsp_status`]). No client, no clock: [`super::scheduler`] gathers the inputs and writes
//! the outputs.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::placement;
use super::types::{
    ClusterPreferences, ReplicaSchedulingPreferenceSpec, ReplicaSchedulingPreferenceStatus,
};

/// The path of the override the scheduler owns in each placed cluster.
pub const REPLICAS_PATH: &str = "/spec/replicas";
/// Kinds an RSP can target.
pub const TARGET_KINDS: [&str; 2] = ["FederatedDeployment", "FederatedReplicaSet"];
/// How long a pod must stay unschedulable before it lowers a cluster's capacity (KubeFed's value):
/// shorter waits are normal scheduling latency, not a full cluster.
pub const UNSCHEDULABLE_THRESHOLD: SignedDuration = SignedDuration::from_secs(60);
/// The `Ready` condition type of an RSP status.
pub const READY_CONDITION: &str = "Ready";

/// Replicas per cluster, as the planner decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Replicas that fit each candidate (every candidate has an entry, possibly 0).
    pub replicas: BTreeMap<String, i64>,
    /// Replicas beyond a cluster's estimated capacity. They are still asked of that cluster (they
    /// stay pending there and start if room frees up), so the write-back adds them to `replicas`.
    pub overflow: BTreeMap<String, i64>,
}

impl Plan {
    /// What the cluster's `/spec/replicas` override says: the fitting replicas plus the overflow.
    pub fn requested(&self, cluster: &str) -> i64 {
        self.replicas.get(cluster).copied().unwrap_or(0)
            + self.overflow.get(cluster).copied().unwrap_or(0)
    }
}

/// FNV-1 32-bit (multiply, then xor; not FNV-1a) over `parts` in order, as Go's `fnv.New32`.
/// KubeFed orders clusters of equal weight by this hash of name + key, so single replicas do not
/// all land on the alphabetically first cluster; the same hash keeps fedns's split identical.
fn fnv1_32(parts: &[&[u8]]) -> u32 {
    const OFFSET: u32 = 2_166_136_261;
    const PRIME: u32 = 16_777_619;
    let mut hash = OFFSET;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash = hash.wrapping_mul(PRIME);
        hash ^= u32::from(*byte);
    }
    hash
}

/// One candidate with a preference, sanitized.
#[derive(Debug)]
struct Ranked<'a> {
    name: &'a str,
    hash: u32,
    min: i64,
    max: Option<i64>,
    weight: i64,
}

/// The preferences the planner uses: an empty map means every cluster with weight 1.
fn effective_clusters(
    prefs: &ReplicaSchedulingPreferenceSpec,
) -> BTreeMap<String, ClusterPreferences> {
    if prefs.clusters.is_empty() {
        BTreeMap::from([(
            "*".to_string(),
            ClusterPreferences {
                weight: 1,
                ..Default::default()
            },
        )])
    } else {
        prefs.clusters.clone()
    }
}

/// Splits `prefs.total_replicas` among `candidates` (KubeFed's algorithm, same results):
///
/// 1. candidates with a preference (their own entry, else `*`) are ordered by weight descending,
///    then by FNV-1 of name + `key` ascending; the others get 0;
/// 2. minimums first, in that order, capped by what remains and by capacity;
/// 3. with `rebalance` false, replicas a cluster already runs (`current`) are kept, up to its max
///    and capacity, before anything else is shared out;
/// 4. the rest is shared in rounds, `ceil(pool * weight / weightSum)` each, capped by what remains,
///    by `maxReplicas` and by capacity (the excess over capacity is overflow); a full cluster
///    leaves the rounds, which stop when nothing changes or nothing remains.
///
/// `capacity` has entries only for clusters with a known limit. Negative numbers are read as 0,
/// and a `minReplicas` above `maxReplicas` as the max: KubeFed then planned more than the max,
/// fedns never does (the only deviation, and only for such invalid preferences).
pub fn plan_replicas(
    prefs: &ReplicaSchedulingPreferenceSpec,
    candidates: &[String],
    current: &BTreeMap<String, i64>,
    capacity: &BTreeMap<String, i64>,
    key: &str,
) -> Plan {
    let clusters = effective_clusters(prefs);
    let names: BTreeSet<&str> = candidates.iter().map(String::as_str).collect();
    let mut plan: BTreeMap<String, i64> = BTreeMap::new();
    let mut overflow: BTreeMap<String, i64> = BTreeMap::new();
    let mut ranked: Vec<Ranked> = Vec::with_capacity(names.len());
    for name in names {
        match clusters.get(name).or_else(|| clusters.get("*")) {
            Some(p) => {
                let max = p.max_replicas.map(|m| m.max(0));
                let min = p.min_replicas.max(0);
                ranked.push(Ranked {
                    name,
                    hash: fnv1_32(&[name.as_bytes(), key.as_bytes()]),
                    min: max.map_or(min, |m| min.min(m)),
                    max,
                    weight: p.weight.max(0),
                });
            }
            None => {
                plan.insert(name.to_string(), 0);
            }
        }
    }
    // Name last: only a hash collision reaches it, where Go's unstable sort had no defined order.
    ranked.sort_by(|a, b| {
        b.weight
            .cmp(&a.weight)
            .then(a.hash.cmp(&b.hash))
            .then(a.name.cmp(b.name))
    });
    let cap = |name: &str| capacity.get(name).map(|c| (*c).max(0));

    let mut remaining = i64::from(prefs.total_replicas.max(0));
    for r in &ranked {
        let mut min = r.min.min(remaining);
        if let Some(c) = cap(r.name) {
            min = min.min(c);
        }
        remaining -= min;
        plan.insert(r.name.to_string(), min);
    }

    // Replicas kept where they run (rebalance = false); the rounds consume these first so that
    // a cluster's kept replicas count towards its share instead of adding to it.
    let mut preallocated: BTreeMap<&str, i64> = BTreeMap::new();
    if !prefs.rebalance {
        for r in &ranked {
            let planned = plan[r.name];
            let Some(&count) = current.get(r.name) else {
                continue;
            };
            if count <= planned {
                continue;
            }
            let mut target = count;
            if let Some(max) = r.max {
                target = target.min(max);
            }
            if let Some(c) = cap(r.name) {
                target = target.min(c);
            }
            let extra = (target - planned).min(remaining).max(0);
            remaining -= extra;
            preallocated.insert(r.name, extra);
            plan.insert(r.name.to_string(), planned + extra);
        }
    }

    let mut active: Vec<&Ranked> = ranked.iter().collect();
    let mut modified = true;
    while modified && remaining > 0 {
        modified = false;
        let weight_sum: i128 = active.iter().map(|r| i128::from(r.weight)).sum();
        if weight_sum == 0 {
            break;
        }
        let pool = i128::from(remaining);
        let mut still_active = Vec::with_capacity(active.len());
        for r in active {
            let start = plan[r.name];
            let share = (pool * i128::from(r.weight) + weight_sum - 1) / weight_sum;
            let mut extra = i64::try_from(share).unwrap_or(i64::MAX).min(remaining);
            let prealloc = preallocated.get(r.name).copied().unwrap_or(0);
            let used = extra.min(prealloc);
            preallocated.insert(r.name, prealloc - used);
            extra -= used;
            if used > 0 {
                modified = true;
            }
            let mut total = start + extra;
            let mut full = false;
            if let Some(max) = r.max
                && total > max
            {
                total = max;
                full = true;
            }
            if let Some(c) = cap(r.name)
                && total > c
            {
                overflow.insert(r.name.to_string(), total - c);
                total = c;
                full = true;
            }
            if !full {
                still_active.push(r);
            }
            remaining -= total - start;
            plan.insert(r.name.to_string(), total);
            if total > start {
                modified = true;
            }
        }
        active = still_active;
    }

    if !prefs.rebalance {
        // Without rebalancing, overflow is only what could not be placed anywhere.
        overflow = overflow
            .into_iter()
            .map(|(k, v)| (k, v.min(remaining)))
            .filter(|(_, v)| *v > 0)
            .collect();
    }
    Plan {
        replicas: plan,
        overflow,
    }
}

/// What the capacity estimate needs of one pod of a workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodState {
    /// `status.phase == Running`.
    pub running: bool,
    /// Condition `Ready` is `True`.
    pub ready: bool,
    /// When condition `PodScheduled` turned `False` with reason `Unschedulable`, if it is so now.
    pub unschedulable_since: Option<Timestamp>,
}

impl PodState {
    /// Reads the fields the planner uses from a Pod.
    pub fn of(pod: &k8s_openapi::api::core::v1::Pod) -> PodState {
        let status = pod.status.as_ref();
        let conditions = status
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        let condition = |kind: &str| conditions.iter().find(|c| c.type_ == kind);
        PodState {
            running: status.and_then(|s| s.phase.as_deref()) == Some("Running"),
            ready: condition("Ready").is_some_and(|c| c.status == "True"),
            unschedulable_since: condition("PodScheduled")
                .filter(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
                .map(|c| {
                    c.last_transition_time
                        .as_ref()
                        .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
                }),
        }
    }
}

/// Pods that run and are ready: what a cluster "currently runs" for `rebalance: false`.
pub fn running_and_ready(pods: &[PodState]) -> i64 {
    pods.iter().filter(|p| p.running && p.ready).count() as i64
}

/// A cluster's capacity for a workload asking `spec_replicas`: lowered by the pods unschedulable
/// for more than [`UNSCHEDULABLE_THRESHOLD`] (they wait for room that is not there), `None` when
/// there is no such pod (no known limit).
pub fn estimate_capacity(spec_replicas: i64, pods: &[PodState], now: Timestamp) -> Option<i64> {
    let unschedulable = pods
        .iter()
        .filter(|p| !p.running)
        .filter_map(|p| p.unschedulable_since)
        .filter(|since| {
            since
                .saturating_add(UNSCHEDULABLE_THRESHOLD)
                .is_ok_and(|t| t < now)
        })
        .count() as i64;
    (unschedulable > 0).then(|| (spec_replicas - unschedulable).max(0))
}

/// A member cluster as candidate selection sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberState {
    pub name: String,
    /// `KubeFedCluster` labels.
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
}

/// The clusters an RSP plans over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidates {
    /// Ready members (that match the target's selector when the RSP asks for it): planned.
    pub ready: Vec<String>,
    /// Members that would be candidates but are not Ready. Not planned (their replicas go to the
    /// ready ones), but [`apply_plan`] leaves them placed with their last override, so a cluster
    /// that recovers still runs its workload instead of losing it in the window before the
    /// scheduler re-plans (KubeFed dropped it from placement, and the sync controller deleted it
    /// on recovery).
    pub unready: Vec<String>,
}

/// The candidates of an RSP: members, limited by the target's `placement.clusterSelector` when
/// `intersectWithClusterSelector` (the selector only: `placement.clusters` is the scheduler's own
/// output; an absent selector selects nothing, `{}` everything), split by readiness.
pub fn select_candidates(
    members: &[MemberState],
    prefs: &ReplicaSchedulingPreferenceSpec,
    target_spec: &Value,
) -> Candidates {
    let selector: Option<Option<LabelSelector>> =
        prefs.intersect_with_cluster_selector.then(|| {
            target_spec
                .pointer("/placement/clusterSelector")
                .filter(|v| !v.is_null())
                .map(|v| serde_json::from_value(v.clone()).unwrap_or_else(|_| nothing_selector()))
        });
    let mut out = Candidates::default();
    for m in members {
        let selected = match &selector {
            None => true,
            Some(None) => false,
            Some(Some(s)) => selector_matches(&m.labels, s),
        };
        if !selected {
            continue;
        }
        if m.ready {
            out.ready.push(m.name.clone());
        } else {
            out.unready.push(m.name.clone());
        }
    }
    out.ready.sort();
    out.unready.sort();
    out
}

/// A selector no label set matches (for selectors that do not parse: select nothing rather than
/// everything).
fn nothing_selector() -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: String::new(),
                operator: "Invalid".to_string(),
                values: None,
            },
        ]),
        match_labels: None,
    }
}

/// Kubernetes label-selector semantics ([`placement::selector_matches`]); a selector that is not
/// valid (unknown operator, `In`/`NotIn` without values) matches nothing.
fn selector_matches(labels: &BTreeMap<String, String>, selector: &LabelSelector) -> bool {
    placement::selector_matches(selector, labels).unwrap_or(false)
}

/// The new `spec` of the federated object (`federated` is the whole object) for `plan`, or `None`
/// when it would not change (so nothing is written).
///
/// `placement.clusters` becomes the ready candidates plus the unready ones that were placed
/// already (sorted); each ready candidate gets a `/spec/replicas` override of
/// [`Plan::requested`], updated in place when the cluster has one. Every other override, of any
/// cluster, is left as it is, and so are the unready clusters' overrides: they keep their last
/// replicas until they are Ready and planned again.
pub fn apply_plan(federated: &Value, plan: &Plan, candidates: &Candidates) -> Option<Value> {
    let old = federated.get("spec").cloned().unwrap_or(Value::Null);
    let mut spec = match &old {
        Value::Object(_) => old.clone(),
        _ => json!({}),
    };
    let placed: BTreeSet<String> = spec
        .pointer("/placement/clusters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    let mut names: BTreeSet<&str> = candidates.ready.iter().map(String::as_str).collect();
    names.extend(
        candidates
            .unready
            .iter()
            .filter(|c| placed.contains(*c))
            .map(String::as_str),
    );
    let clusters: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
    let placement = &mut spec["placement"];
    if !placement.is_object() {
        *placement = json!({});
    }
    placement["clusters"] = Value::Array(clusters);

    let overrides = &mut spec["overrides"];
    if !overrides.is_array() {
        *overrides = json!([]);
    }
    let Value::Array(list) = overrides else {
        return None;
    };
    let mut ready: Vec<&String> = candidates.ready.iter().collect();
    ready.sort();
    ready.dedup();
    for cluster in ready {
        let replicas = plan.requested(cluster);
        set_replicas_override(list, cluster, replicas);
    }
    if list.is_empty() && old.get("overrides").is_none() {
        spec.as_object_mut().map(|o| o.remove("overrides"));
    }
    (spec != old).then_some(spec)
}

/// Sets `cluster`'s `/spec/replicas` override to `replicas`, in place when there is one.
fn set_replicas_override(list: &mut Vec<Value>, cluster: &str, replicas: i64) {
    let wanted = json!({ "op": "replace", "path": REPLICAS_PATH, "value": replicas });
    let Some(entry) = list
        .iter_mut()
        .find(|e| e.get("clusterName").and_then(Value::as_str) == Some(cluster))
    else {
        list.push(json!({ "clusterName": cluster, "clusterOverrides": [wanted] }));
        return;
    };
    let ops = &mut entry["clusterOverrides"];
    if !ops.is_array() {
        *ops = json!([]);
    }
    let Value::Array(ops) = ops else { return };
    match ops
        .iter_mut()
        .find(|o| o.get("path").and_then(Value::as_str) == Some(REPLICAS_PATH))
    {
        Some(existing) => {
            let removes = existing.get("op").and_then(Value::as_str) == Some("remove");
            let same_value = existing
                .get("value")
                .and_then(Value::as_f64)
                .is_some_and(|v| v == replicas as f64);
            if removes || !same_value {
                existing["value"] = json!(replicas);
                if removes {
                    existing["op"] = json!("replace");
                }
            }
        }
        None => ops.push(wanted),
    }
}

/// Why an RSP is or is not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The plan is written to the target.
    Scheduled(Plan),
    /// No `targetKind` object of the RSP's namespace/name exists.
    TargetNotFound,
    /// `targetKind` is neither `FederatedDeployment` nor `FederatedReplicaSet`.
    UnsupportedTargetKind(String),
}

/// The RSP status for `outcome`. The `Ready` condition keeps its `lastTransitionTime` while its
/// status stays the same, so an unchanged outcome gives a status equal to `previous` (and no
/// write).
pub fn rsp_status(
    previous: Option<&ReplicaSchedulingPreferenceStatus>,
    outcome: &Outcome,
    generation: Option<i64>,
    now: Time,
) -> ReplicaSchedulingPreferenceStatus {
    let (status, reason, message, plan, overflow) = match outcome {
        Outcome::Scheduled(p) => (
            "True",
            "Scheduled",
            format!(
                "{} replicas planned over {} clusters",
                p.replicas.values().sum::<i64>(),
                p.replicas.values().filter(|r| **r > 0).count()
            ),
            p.replicas.clone(),
            p.overflow.clone(),
        ),
        Outcome::TargetNotFound => (
            "False",
            "TargetNotFound",
            "the target federated object does not exist".to_string(),
            BTreeMap::new(),
            BTreeMap::new(),
        ),
        Outcome::UnsupportedTargetKind(kind) => (
            "False",
            "UnsupportedTargetKind",
            format!(
                "targetKind {kind:?} is not one of {}",
                TARGET_KINDS.join(", ")
            ),
            BTreeMap::new(),
            BTreeMap::new(),
        ),
    };
    let before = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == READY_CONDITION));
    let last_transition_time = match before {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now,
    };
    ReplicaSchedulingPreferenceStatus {
        plan,
        overflow,
        conditions: vec![Condition {
            type_: READY_CONDITION.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time,
        }],
    }
}

/// A JSON merge patch turning status `old` into `new`: plan/overflow entries that disappear are
/// set to `null` (a merge patch merges maps), conditions are replaced whole.
pub fn status_patch(
    old: Option<&ReplicaSchedulingPreferenceStatus>,
    new: &ReplicaSchedulingPreferenceStatus,
) -> Value {
    let map = |old: Option<&BTreeMap<String, i64>>, new: &BTreeMap<String, i64>| {
        let mut out = serde_json::Map::new();
        for k in old.into_iter().flat_map(BTreeMap::keys) {
            out.insert(k.clone(), Value::Null);
        }
        for (k, v) in new {
            out.insert(k.clone(), json!(v));
        }
        Value::Object(out)
    };
    json!({ "status": {
        "plan": map(old.map(|o| &o.plan), &new.plan),
        "overflow": map(old.map(|o| &o.overflow), &new.overflow),
        "conditions": new.conditions,
    } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn counts(list: &[(&str, i64)]) -> BTreeMap<String, i64> {
        list.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn pref(min: i64, max: Option<i64>, weight: i64) -> ClusterPreferences {
        ClusterPreferences {
            min_replicas: min,
            max_replicas: max,
            weight,
        }
    }

    fn rsp(total: i32, clusters: &[(&str, ClusterPreferences)]) -> ReplicaSchedulingPreferenceSpec {
        ReplicaSchedulingPreferenceSpec {
            target_kind: "FederatedDeployment".into(),
            total_replicas: total,
            rebalance: false,
            intersect_with_cluster_selector: false,
            clusters: clusters
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn plan(spec: &ReplicaSchedulingPreferenceSpec, clusters: &[&str]) -> BTreeMap<String, i64> {
        plan_replicas(
            spec,
            &names(clusters),
            &BTreeMap::new(),
            &BTreeMap::new(),
            "",
        )
        .replicas
    }

    #[test]
    fn fnv1_matches_the_reference_vectors_and_is_not_fnv1a() {
        assert_eq!(fnv1_32(&[b""]), 0x811c_9dc5);
        assert_eq!(fnv1_32(&[b"a"]), 0x050c_5d7e);
        assert_eq!(fnv1_32(&[b"foobar"]), 0x31f0_b262);
        // Name and key are hashed as one byte stream.
        assert_eq!(fnv1_32(&[b"foo", b"bar"]), fnv1_32(&[b"foobar"]));
    }

    #[test]
    fn fifty_over_three_equal_clusters_gives_the_last_hash_the_smaller_share() {
        let spec = rsp(50, &[("*", pref(0, None, 1))]);
        assert_eq!(
            plan(&spec, &["A", "B", "C"]),
            counts(&[("A", 16), ("B", 17), ("C", 17)])
        );
    }

    #[test]
    fn a_single_replica_goes_to_the_smallest_hash_not_the_first_name() {
        let spec = rsp(1, &[("*", pref(0, None, 1))]);
        assert_eq!(plan(&spec, &["A", "B"]), counts(&[("A", 0), ("B", 1)]));
    }

    #[test]
    fn without_rebalance_running_replicas_stay_and_the_rest_is_shared() {
        let spec = rsp(50, &[("*", pref(0, None, 1))]);
        let got = plan_replicas(
            &spec,
            &names(&["A", "B", "C"]),
            &counts(&[("C", 30)]),
            &BTreeMap::new(),
            "",
        );
        assert_eq!(got.replicas, counts(&[("A", 10), ("B", 10), ("C", 30)]));
        assert!(got.overflow.is_empty());
    }

    #[test]
    fn with_rebalance_running_replicas_are_ignored() {
        let mut spec = rsp(50, &[("*", pref(0, None, 1))]);
        spec.rebalance = true;
        let got = plan_replicas(
            &spec,
            &names(&["A", "B", "C"]),
            &counts(&[("C", 30)]),
            &BTreeMap::new(),
            "",
        );
        assert_eq!(got.replicas, counts(&[("A", 16), ("B", 17), ("C", 17)]));
    }

    #[test]
    fn minimums_are_served_in_hash_order_when_they_exceed_the_total() {
        let spec = rsp(50, &[("*", pref(20, None, 0))]);
        assert_eq!(
            plan(&spec, &["A", "B", "C"]),
            counts(&[("A", 10), ("B", 20), ("C", 20)])
        );
    }

    #[test]
    fn named_weights_share_and_a_cluster_without_preference_gets_nothing() {
        let spec = rsp(60, &[("A", pref(0, None, 1)), ("B", pref(0, None, 2))]);
        assert_eq!(
            plan(&spec, &["A", "B", "C"]),
            counts(&[("A", 20), ("B", 40), ("C", 0)])
        );
    }

    #[test]
    fn empty_preferences_mean_every_cluster_with_weight_one() {
        let spec = rsp(50, &[]);
        assert_eq!(
            plan(&spec, &["A", "B", "C"]),
            counts(&[("A", 16), ("B", 17), ("C", 17)])
        );
    }

    #[test]
    fn a_named_entry_wins_over_the_star() {
        let spec = rsp(30, &[("*", pref(0, None, 1)), ("A", pref(0, None, 4))]);
        assert_eq!(
            plan(&spec, &["A", "B", "C"]),
            counts(&[("A", 20), ("B", 5), ("C", 5)])
        );
    }

    #[test]
    fn max_replicas_caps_a_cluster_and_the_rest_goes_elsewhere() {
        let spec = rsp(50, &[("A", pref(0, Some(5), 1)), ("*", pref(0, None, 1))]);
        assert_eq!(
            plan(&spec, &["A", "B", "C"]),
            counts(&[("A", 5), ("B", 22), ("C", 23)])
        );
    }

    #[test]
    fn capacity_caps_a_cluster_and_rebalance_reports_the_excess_as_overflow() {
        let mut spec = rsp(30, &[("*", pref(0, None, 1))]);
        spec.rebalance = true;
        let got = plan_replicas(
            &spec,
            &names(&["A", "B", "C"]),
            &BTreeMap::new(),
            &counts(&[("C", 4)]),
            "",
        );
        // Round 1: C 10 → 4 (overflow 6), B 10, A 10; round 2: 6 over A and B.
        assert_eq!(got.replicas, counts(&[("A", 13), ("B", 13), ("C", 4)]));
        assert_eq!(got.overflow, counts(&[("C", 6)]));
        assert_eq!(got.requested("C"), 10);
    }

    #[test]
    fn without_rebalance_overflow_is_only_what_fits_nowhere() {
        let spec = rsp(30, &[("*", pref(0, None, 1))]);
        let placed = plan_replicas(
            &spec,
            &names(&["A", "B", "C"]),
            &BTreeMap::new(),
            &counts(&[("C", 4)]),
            "",
        );
        assert_eq!(placed.replicas, counts(&[("A", 13), ("B", 13), ("C", 4)]));
        assert!(placed.overflow.is_empty());
        let full = plan_replicas(
            &spec,
            &names(&["A", "B", "C"]),
            &BTreeMap::new(),
            &counts(&[("A", 5), ("B", 5), ("C", 4)]),
            "",
        );
        assert_eq!(full.replicas, counts(&[("A", 5), ("B", 5), ("C", 4)]));
        assert_eq!(full.overflow.values().sum::<i64>(), 16);
        assert!(full.overflow.values().all(|v| *v <= 16));
    }

    #[test]
    fn no_preference_at_all_places_nothing() {
        let spec = rsp(10, &[("X", pref(0, None, 1))]);
        assert_eq!(plan(&spec, &["A", "B"]), counts(&[("A", 0), ("B", 0)]));
    }

    #[test]
    fn the_key_changes_the_tie_break() {
        let spec = rsp(1, &[("*", pref(0, None, 1))]);
        let winner = |key: &str| {
            let p = plan_replicas(
                &spec,
                &names(&["a", "b", "c"]),
                &BTreeMap::new(),
                &BTreeMap::new(),
                key,
            );
            p.replicas.into_iter().find(|(_, v)| *v == 1).unwrap().0
        };
        // FNV-1 of "a"+"test/web" is the smallest of the three; without a key, "c" is.
        assert_eq!(winner("test/web"), "a");
        assert_eq!(winner(""), "c");
    }

    fn pod(running: bool, ready: bool, unschedulable_for: Option<i64>) -> PodState {
        let now = Timestamp::from_second(10_000).unwrap();
        PodState {
            running,
            ready,
            unschedulable_since: unschedulable_for
                .map(|s| now.checked_sub(SignedDuration::from_secs(s)).unwrap()),
        }
    }

    #[test]
    fn capacity_drops_by_pods_unschedulable_for_over_a_minute() {
        let now = Timestamp::from_second(10_000).unwrap();
        let pods = [
            pod(true, true, None),
            pod(false, false, Some(61)),
            pod(false, false, Some(300)),
            pod(false, false, Some(30)),
        ];
        assert_eq!(estimate_capacity(4, &pods, now), Some(2));
        assert_eq!(running_and_ready(&pods), 1);
        assert_eq!(estimate_capacity(4, &pods[..1], now), None);
        assert_eq!(
            estimate_capacity(4, &[pod(false, false, Some(30))], now),
            None
        );
        assert_eq!(
            estimate_capacity(
                1,
                &[pod(false, false, Some(90)), pod(false, false, Some(90))],
                now
            ),
            Some(0)
        );
    }

    #[test]
    fn pod_state_reads_phase_and_conditions() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "lastTransitionTime": "2024-01-01T00:00:00Z"}
            ]}
        }))
        .unwrap();
        let state = PodState::of(&pod);
        assert!(!state.running && !state.ready);
        assert_eq!(
            state.unschedulable_since,
            Some("2024-01-01T00:00:00Z".parse().unwrap())
        );
        let ready: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}
            ]}
        }))
        .unwrap();
        assert_eq!(
            PodState::of(&ready),
            PodState {
                running: true,
                ready: true,
                unschedulable_since: None
            }
        );
    }

    fn member(name: &str, labels: &[(&str, &str)], ready: bool) -> MemberState {
        MemberState {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready,
        }
    }

    #[test]
    fn candidates_are_ready_members_split_from_unready_ones() {
        let members = [
            member("c", &[], true),
            member("a", &[], true),
            member("b", &[], false),
        ];
        let got = select_candidates(&members, &rsp(1, &[]), &json!({}));
        assert_eq!(got.ready, names(&["a", "c"]));
        assert_eq!(got.unready, names(&["b"]));
    }

    #[test]
    fn intersecting_with_the_selector_uses_labels_and_expressions() {
        let members = [
            member("a", &[("region", "eu"), ("tier", "gold")], true),
            member("b", &[("region", "us"), ("tier", "gold")], true),
            member("c", &[("region", "eu")], true),
            member("d", &[("region", "eu"), ("tier", "gold")], false),
        ];
        let mut spec = rsp(1, &[]);
        spec.intersect_with_cluster_selector = true;
        let target = json!({"placement": {"clusters": [{"name": "b"}], "clusterSelector": {
            "matchLabels": {"region": "eu"},
            "matchExpressions": [{"key": "tier", "operator": "Exists"}]
        }}});
        let got = select_candidates(&members, &spec, &target);
        assert_eq!(got.ready, names(&["a"]));
        assert_eq!(got.unready, names(&["d"]));
        let everything = select_candidates(
            &members,
            &spec,
            &json!({"placement": {"clusterSelector": {}}}),
        );
        assert_eq!(everything.ready, names(&["a", "b", "c"]));
        let nothing = select_candidates(&members, &spec, &json!({"placement": {}}));
        assert!(nothing.ready.is_empty() && nothing.unready.is_empty());
    }

    #[test]
    fn selector_operators_follow_kubernetes() {
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "env".into(),
                    operator: op.into(),
                    values: Some(names(values)),
                },
            ]),
        };
        assert!(selector_matches(&labels, &expr("In", &["prod", "dev"])));
        assert!(!selector_matches(&labels, &expr("In", &["dev"])));
        assert!(selector_matches(&labels, &expr("NotIn", &["dev"])));
        assert!(!selector_matches(&labels, &expr("NotIn", &["prod"])));
        assert!(selector_matches(
            &BTreeMap::new(),
            &expr("NotIn", &["prod"])
        ));
        assert!(selector_matches(&labels, &expr("Exists", &[])));
        assert!(!selector_matches(&labels, &expr("DoesNotExist", &[])));
        assert!(!selector_matches(&labels, &expr("Gt", &["1"])));
        assert!(selector_matches(&labels, &LabelSelector::default()));
    }

    fn plan_of(replicas: &[(&str, i64)]) -> Plan {
        Plan {
            replicas: counts(replicas),
            overflow: BTreeMap::new(),
        }
    }

    fn ready(list: &[&str]) -> Candidates {
        Candidates {
            ready: names(list),
            unready: vec![],
        }
    }

    #[test]
    fn write_back_places_all_candidates_and_adds_replica_overrides() {
        let fed = json!({"spec": {
            "template": {"spec": {"replicas": 1}},
            "placement": {"clusterSelector": {"matchLabels": {"x": "y"}}},
        }});
        let spec = apply_plan(&fed, &plan_of(&[("b", 3), ("a", 0)]), &ready(&["b", "a"])).unwrap();
        assert_eq!(
            spec,
            json!({
                "template": {"spec": {"replicas": 1}},
                "placement": {"clusterSelector": {"matchLabels": {"x": "y"}},
                              "clusters": [{"name": "a"}, {"name": "b"}]},
                "overrides": [
                    {"clusterName": "a", "clusterOverrides": [{"op": "replace", "path": "/spec/replicas", "value": 0}]},
                    {"clusterName": "b", "clusterOverrides": [{"op": "replace", "path": "/spec/replicas", "value": 3}]},
                ],
            })
        );
    }

    #[test]
    fn write_back_updates_in_place_and_keeps_other_overrides() {
        let fed = json!({"spec": {
            "placement": {"clusters": [{"name": "a"}, {"name": "gone"}]},
            "overrides": [
                {"clusterName": "gone", "clusterOverrides": [{"path": "/spec/replicas", "value": 9}]},
                {"clusterName": "a", "clusterOverrides": [
                    {"path": "/metadata/labels/x", "value": "1"},
                    {"path": "/spec/replicas", "value": 2},
                    {"op": "add", "path": "/spec/paused", "value": true},
                ]},
            ],
        }});
        let spec = apply_plan(&fed, &plan_of(&[("a", 5)]), &ready(&["a"])).unwrap();
        assert_eq!(spec["placement"], json!({"clusters": [{"name": "a"}]}));
        assert_eq!(
            spec["overrides"],
            json!([
                {"clusterName": "gone", "clusterOverrides": [{"path": "/spec/replicas", "value": 9}]},
                {"clusterName": "a", "clusterOverrides": [
                    {"path": "/metadata/labels/x", "value": "1"},
                    {"path": "/spec/replicas", "value": 5},
                    {"op": "add", "path": "/spec/paused", "value": true},
                ]},
            ])
        );
    }

    #[test]
    fn write_back_of_an_unchanged_plan_is_none() {
        let fed = json!({"spec": {
            "placement": {"clusters": [{"name": "a"}]},
            "overrides": [{"clusterName": "a", "clusterOverrides": [{"path": "/spec/replicas", "value": 5.0}]}],
        }});
        assert_eq!(
            apply_plan(&fed, &plan_of(&[("a", 5)]), &ready(&["a"])),
            None
        );
        let changed = apply_plan(&fed, &plan_of(&[("a", 6)]), &ready(&["a"]));
        assert!(changed.is_some());
    }

    #[test]
    fn write_back_turns_a_remove_of_replicas_into_a_replace() {
        let fed = json!({"spec": {
            "placement": {"clusters": [{"name": "a"}]},
            "overrides": [{"clusterName": "a", "clusterOverrides": [{"op": "remove", "path": "/spec/replicas"}]}],
        }});
        let spec = apply_plan(&fed, &plan_of(&[("a", 5)]), &ready(&["a"])).unwrap();
        assert_eq!(
            spec["overrides"][0]["clusterOverrides"][0],
            json!({"op": "replace", "path": "/spec/replicas", "value": 5})
        );
    }

    #[test]
    fn write_back_asks_for_overflow_too() {
        let fed = json!({"spec": {}});
        let plan = Plan {
            replicas: counts(&[("a", 4)]),
            overflow: counts(&[("a", 2)]),
        };
        let spec = apply_plan(&fed, &plan, &ready(&["a"])).unwrap();
        assert_eq!(
            spec["overrides"][0]["clusterOverrides"][0]["value"],
            json!(6)
        );
    }

    #[test]
    fn an_unready_cluster_stays_placed_with_its_last_replicas() {
        let fed = json!({"spec": {
            "placement": {"clusters": [{"name": "a"}, {"name": "b"}]},
            "overrides": [
                {"clusterName": "a", "clusterOverrides": [{"path": "/spec/replicas", "value": 5}]},
                {"clusterName": "b", "clusterOverrides": [{"path": "/spec/replicas", "value": 5}]},
            ],
        }});
        let candidates = Candidates {
            ready: names(&["a"]),
            unready: names(&["b", "never-placed"]),
        };
        let spec = apply_plan(&fed, &plan_of(&[("a", 10)]), &candidates).unwrap();
        assert_eq!(
            spec["placement"]["clusters"],
            json!([{"name": "a"}, {"name": "b"}])
        );
        assert_eq!(
            spec["overrides"][0]["clusterOverrides"][0]["value"],
            json!(10)
        );
        assert_eq!(
            spec["overrides"][1]["clusterOverrides"][0]["value"],
            json!(5)
        );
    }

    #[test]
    fn status_keeps_its_transition_time_while_the_outcome_holds() {
        let t0 = Time(Timestamp::from_second(1).unwrap());
        let t1 = Time(Timestamp::from_second(2).unwrap());
        let scheduled = Outcome::Scheduled(plan_of(&[("a", 3)]));
        let first = rsp_status(None, &scheduled, Some(1), t0.clone());
        let again = rsp_status(Some(&first), &scheduled, Some(1), t1.clone());
        assert_eq!(first, again);
        let missing = rsp_status(Some(&first), &Outcome::TargetNotFound, Some(1), t1.clone());
        assert_eq!(missing.conditions[0].reason, "TargetNotFound");
        assert_eq!(missing.conditions[0].status, "False");
        assert_eq!(missing.conditions[0].last_transition_time, t1);
        assert!(missing.plan.is_empty());
        let patch = status_patch(Some(&first), &missing);
        assert_eq!(patch["status"]["plan"], json!({"a": null}));
    }

    fn arb_spec() -> impl Strategy<Value = ReplicaSchedulingPreferenceSpec> {
        let pref =
            (0i64..8, proptest::option::of(0i64..30), 0i64..5).prop_map(|(min, max, weight)| {
                ClusterPreferences {
                    min_replicas: max.map_or(min, |m| min.min(m)),
                    max_replicas: max,
                    weight,
                }
            });
        let name = prop_oneof![
            Just("*"),
            Just("a"),
            Just("b"),
            Just("c"),
            Just("d"),
            Just("e")
        ];
        (
            0i32..120,
            any::<bool>(),
            proptest::collection::btree_map(name.prop_map(str::to_string), pref, 0..5),
        )
            .prop_map(
                |(total, rebalance, clusters)| ReplicaSchedulingPreferenceSpec {
                    target_kind: "FederatedDeployment".into(),
                    total_replicas: total,
                    rebalance,
                    intersect_with_cluster_selector: false,
                    clusters,
                },
            )
    }

    fn arb_counts() -> impl Strategy<Value = BTreeMap<String, i64>> {
        proptest::collection::btree_map(
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("d"), Just("e")]
                .prop_map(str::to_string),
            0i64..40,
            0..4,
        )
    }

    fn arb_candidates() -> impl Strategy<Value = Vec<String>> {
        proptest::sample::subsequence(names(&["a", "b", "c", "d", "e"]), 0..=5).prop_shuffle()
    }

    proptest! {
        #[test]
        fn plans_are_deterministic_and_ignore_candidate_order(
            spec in arb_spec(), candidates in arb_candidates(),
            current in arb_counts(), capacity in arb_counts(), key in "[a-z/]{0,8}",
        ) {
            let first = plan_replicas(&spec, &candidates, &current, &capacity, &key);
            let mut reversed = candidates.clone();
            reversed.reverse();
            prop_assert_eq!(&first, &plan_replicas(&spec, &reversed, &current, &capacity, &key));
            prop_assert_eq!(&first, &plan_replicas(&spec, &candidates, &current, &capacity, &key));
        }

        #[test]
        fn plans_respect_bounds_and_place_the_total_when_room_allows(
            spec in arb_spec(), candidates in arb_candidates(),
            current in arb_counts(), capacity in arb_counts(),
        ) {
            let plan = plan_replicas(&spec, &candidates, &current, &capacity, "ns/web");
            let clusters = effective_clusters(&spec);
            let pref = |c: &str| clusters.get(c).or_else(|| clusters.get("*")).cloned();
            let total = i64::from(spec.total_replicas);
            prop_assert_eq!(
                plan.replicas.keys().cloned().collect::<BTreeSet<_>>(),
                candidates.iter().cloned().collect::<BTreeSet<_>>()
            );
            let placed: i64 = plan.replicas.values().sum();
            prop_assert!(placed <= total);
            prop_assert!(plan.overflow.iter().all(|(c, v)| *v > 0 && capacity.contains_key(c)));
            let mut min_sum = 0;
            let mut weighted_room = 0i64;
            for c in &candidates {
                let r = plan.replicas[c];
                prop_assert!(r >= 0);
                let limit = pref(c).map(|p| {
                    let cap = capacity.get(c).copied().unwrap_or(i64::MAX);
                    p.max_replicas.unwrap_or(i64::MAX).min(cap)
                });
                match (pref(c), limit) {
                    (Some(p), Some(limit)) => {
                        prop_assert!(r <= limit, "{} has {} over its limit {}", c, r, limit);
                        min_sum += p.min_replicas.min(limit);
                        if p.weight > 0 {
                            weighted_room = weighted_room.saturating_add(limit);
                        }
                    }
                    _ => prop_assert_eq!(r, 0),
                }
            }
            if min_sum <= total {
                for c in &candidates {
                    if let Some(p) = pref(c) {
                        let cap = capacity.get(c).copied().unwrap_or(i64::MAX);
                        prop_assert!(plan.replicas[c] >= p.min_replicas.min(cap));
                    }
                }
            }
            // Rounds end only when every weighted cluster is full, so enough room places all.
            if weighted_room >= total {
                prop_assert_eq!(placed, total);
            }
        }
    }
}
