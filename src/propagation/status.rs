//! The status of a federated object (spec section 4): one `Propagation` condition, one entry per
//! cluster it is placed in (with the member object's own status), and the members' status summed
//! up. Pure; timestamps are kept when nothing else changed, so an unchanged result is not
//! rewritten.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::render::aggregate_status;
use super::types::FederatedTypeConfigStatus;

/// How propagation to one cluster went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterState {
    Ok,
    ClusterNotReady,
    ApplyOverridesFailed,
    CreationFailed,
    UpdateFailed,
    DeletionFailed,
    AlreadyExists,
    ManagedLabelFalse,
    WaitingForRemoval,
    CreationTimedOut,
    UpdateTimedOut,
    DeletionTimedOut,
    /// The member cache of this type cannot be listed (KubeFed's reason for the same case).
    CachedRetrievalFailed,
}

impl ClusterState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::Ok => "",
            ClusterState::ClusterNotReady => "ClusterNotReady",
            ClusterState::ApplyOverridesFailed => "ApplyOverridesFailed",
            ClusterState::CreationFailed => "CreationFailed",
            ClusterState::UpdateFailed => "UpdateFailed",
            ClusterState::DeletionFailed => "DeletionFailed",
            ClusterState::AlreadyExists => "AlreadyExists",
            ClusterState::ManagedLabelFalse => "ManagedLabelFalse",
            ClusterState::WaitingForRemoval => "WaitingForRemoval",
            ClusterState::CreationTimedOut => "CreationTimedOut",
            ClusterState::UpdateTimedOut => "UpdateTimedOut",
            ClusterState::DeletionTimedOut => "DeletionTimedOut",
            ClusterState::CachedRetrievalFailed => "CachedRetrievalFailed",
        }
    }

    /// Worth trying again with backoff (transient API trouble, objects still going away).
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ClusterState::CreationFailed
                | ClusterState::UpdateFailed
                | ClusterState::DeletionFailed
                | ClusterState::WaitingForRemoval
                | ClusterState::CreationTimedOut
                | ClusterState::UpdateTimedOut
                | ClusterState::DeletionTimedOut
        )
    }
}

/// One cluster's line in the status.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOutcome {
    pub state: ClusterState,
    /// The member object's `.status`, when it exists there.
    pub remote_status: Option<Value>,
}

/// Why nothing could be propagated at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectProblem {
    ComputePlacementFailed(String),
    NamespaceNotFederated,
    /// Whole-object override errors (also reported per cluster).
    ApplyOverridesFailed(String),
    /// The spec could not be read.
    InvalidSpec(String),
}

impl ObjectProblem {
    /// The `Propagation` condition's reason and message for this problem.
    pub fn reason(&self) -> (&'static str, String) {
        match self {
            ObjectProblem::ComputePlacementFailed(m) => ("ComputePlacementFailed", m.clone()),
            ObjectProblem::NamespaceNotFederated => (
                "NamespaceNotFederated",
                "no FederatedNamespace places this object's namespace".to_string(),
            ),
            ObjectProblem::ApplyOverridesFailed(m) => ("CheckClusters", m.clone()),
            ObjectProblem::InvalidSpec(m) => ("InvalidSpec", m.clone()),
        }
    }
}

/// Whether `previous` (a federated object's status) already reports `problem`: then its Event
/// was sent already.
pub fn reports(previous: &Value, problem: &ObjectProblem) -> bool {
    let (reason, message) = problem.reason();
    previous["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Propagation" && c["reason"] == reason && c["message"] == message)
}

/// A `FederatedTypeConfig`'s status as KubeFed writes it: the generation seen, and whether its
/// propagation controller runs (fedns has no separate status controller: member status is
/// summed into each federated object).
pub fn type_config_status(generation: i64, running: bool) -> FederatedTypeConfigStatus {
    let state = |on: bool| Some(if on { "Running" } else { "NotRunning" }.to_string());
    FederatedTypeConfigStatus {
        observed_generation: generation,
        propagation_controller: state(running),
        status_controller: state(false),
    }
}

/// The new `.status` of a federated object, or `None` when `previous` already says the same.
pub fn propagation_status(
    generation: i64,
    clusters: &BTreeMap<String, ClusterOutcome>,
    problem: Option<&ObjectProblem>,
    previous: &Value,
    now: &str,
) -> Option<Value> {
    let failing: Vec<&str> = clusters
        .iter()
        .filter(|(_, o)| o.state != ClusterState::Ok)
        .map(|(n, _)| n.as_str())
        .collect();
    let (ok, reason, message) = match problem {
        Some(p) => {
            let (reason, message) = p.reason();
            (false, reason, message)
        }
        None if failing.is_empty() => (true, "", String::new()),
        None => (
            false,
            "CheckClusters",
            format!("not propagated to {}", failing.join(", ")),
        ),
    };
    let entries: Vec<Value> = clusters
        .iter()
        .map(|(name, o)| {
            let mut e = json!({"name": name});
            if o.state != ClusterState::Ok {
                e["status"] = json!(o.state.as_str());
            }
            if let Some(s) = &o.remote_status {
                e["remoteStatus"] = s.clone();
            }
            e
        })
        .collect();
    let statuses: BTreeMap<String, Value> = clusters
        .iter()
        .filter_map(|(n, o)| Some((n.clone(), o.remote_status.clone()?)))
        .collect();
    let old_condition = previous["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Propagation"))
        .cloned()
        .unwrap_or(Value::Null);
    let status_word = if ok { "True" } else { "False" };
    let mut condition = json!({"type": "Propagation", "status": status_word});
    if !reason.is_empty() {
        condition["reason"] = json!(reason);
    }
    if !message.is_empty() {
        condition["message"] = json!(message);
    }
    let mut status = json!({
        "observedGeneration": generation,
        "clusters": entries,
        "aggregatedStatus": aggregate_status(&statuses),
    });
    let same_condition = old_condition["status"] == condition["status"]
        && old_condition["reason"] == condition["reason"]
        && old_condition["message"] == condition["message"];
    let transition = if old_condition["status"] == condition["status"] {
        old_condition["lastTransitionTime"].clone()
    } else {
        Value::Null
    };
    condition["lastTransitionTime"] = if transition.is_null() {
        json!(now)
    } else {
        transition
    };
    condition["lastUpdateTime"] = if same_condition && !old_condition["lastUpdateTime"].is_null() {
        old_condition["lastUpdateTime"].clone()
    } else {
        json!(now)
    };
    status["conditions"] = json!([condition]);
    (status != *previous).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(state: ClusterState) -> ClusterOutcome {
        ClusterOutcome {
            state,
            remote_status: None,
        }
    }

    #[test]
    fn all_clusters_ok_is_propagation_true() {
        let clusters = BTreeMap::from([
            ("a".to_string(), outcome(ClusterState::Ok)),
            (
                "b".to_string(),
                ClusterOutcome {
                    state: ClusterState::Ok,
                    remote_status: Some(json!({"readyReplicas": 2})),
                },
            ),
        ]);
        let s = propagation_status(3, &clusters, None, &Value::Null, "t1").unwrap();
        assert_eq!(s["conditions"][0]["status"], "True");
        assert!(s["conditions"][0].get("reason").is_none());
        assert_eq!(s["observedGeneration"], 3);
        assert_eq!(
            s["clusters"],
            json!([{"name": "a"}, {"name": "b", "remoteStatus": {"readyReplicas": 2}}])
        );
        assert_eq!(s["aggregatedStatus"]["readyReplicas"], 2);
    }

    #[test]
    fn a_failing_cluster_is_check_clusters_with_its_status() {
        let clusters = BTreeMap::from([
            ("a".to_string(), outcome(ClusterState::Ok)),
            ("b".to_string(), outcome(ClusterState::ClusterNotReady)),
        ]);
        let s = propagation_status(1, &clusters, None, &Value::Null, "t1").unwrap();
        assert_eq!(s["conditions"][0]["status"], "False");
        assert_eq!(s["conditions"][0]["reason"], "CheckClusters");
        assert_eq!(s["clusters"][1]["status"], "ClusterNotReady");
    }

    #[test]
    fn object_problems_name_their_reason() {
        let none = BTreeMap::new();
        let s = propagation_status(
            1,
            &none,
            Some(&ObjectProblem::NamespaceNotFederated),
            &Value::Null,
            "t",
        )
        .unwrap();
        assert_eq!(s["conditions"][0]["reason"], "NamespaceNotFederated");
        let s = propagation_status(
            1,
            &none,
            Some(&ObjectProblem::ComputePlacementFailed("bad".into())),
            &Value::Null,
            "t",
        )
        .unwrap();
        assert_eq!(s["conditions"][0]["reason"], "ComputePlacementFailed");
    }

    #[test]
    fn unchanged_status_is_not_rewritten_and_timestamps_are_kept() {
        let clusters = BTreeMap::from([("a".to_string(), outcome(ClusterState::Ok))]);
        let first = propagation_status(1, &clusters, None, &Value::Null, "t1").unwrap();
        assert_eq!(propagation_status(1, &clusters, None, &first, "t2"), None);
        let failing = BTreeMap::from([("a".to_string(), outcome(ClusterState::UpdateFailed))]);
        let second = propagation_status(1, &failing, None, &first, "t3").unwrap();
        assert_eq!(second["conditions"][0]["lastTransitionTime"], "t3");
        let third = propagation_status(2, &failing, None, &second, "t4").unwrap();
        assert_eq!(third["conditions"][0]["lastTransitionTime"], "t3");
        assert_eq!(third["conditions"][0]["lastUpdateTime"], "t3");
    }

    #[test]
    fn type_config_status_says_whether_propagation_runs() {
        let s = type_config_status(4, true);
        assert_eq!(s.observed_generation, 4);
        assert_eq!(s.propagation_controller.as_deref(), Some("Running"));
        assert_eq!(s.status_controller.as_deref(), Some("NotRunning"));
        let s = type_config_status(5, false);
        assert_eq!(s.propagation_controller.as_deref(), Some("NotRunning"));
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(ClusterState::UpdateFailed.retryable());
        assert!(ClusterState::WaitingForRemoval.retryable());
        assert!(!ClusterState::ManagedLabelFalse.retryable());
        assert!(!ClusterState::ApplyOverridesFailed.retryable());
        assert!(!ClusterState::ClusterNotReady.retryable());
    }
}
