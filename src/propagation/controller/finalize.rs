//! The deletion flow of a federated object: every cluster it was placed in either releases
//! (orphaning) or deletes its copy, and only then does the `kubefed.io/sync-controller` finalizer
//! go.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{DeleteParams, DynamicObject, Patch};
use serde_json::{Value, json};

use super::report::outcome;
use super::sync::Step;
use super::{Key, TypeContext};
use crate::propagation::plan::{self, Managed, Presence, RemovalFacts, RemovalStep};
use crate::propagation::status::{ClusterOutcome, ClusterState};
use crate::propagation::types::{DELETE_OPTION_ANNOTATION, ORPHAN_ANNOTATION, SYNC_FINALIZER};

impl TypeContext {
    /// The deletion flow; returns whether to retry.
    pub(super) async fn finalize(self: &Arc<Self>, key: &Key, fed: &DynamicObject) -> bool {
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
            let mut facts = RemovalFacts {
                placed: live.is_some() || written || listed.contains(cluster),
                ready: member.readiness(),
                orphan,
                live: match &live {
                    Some(live) => Presence::Present(Managed::of(live)),
                    None => Presence::Unknown,
                },
            };
            match plan::removal_step(&facts) {
                RemovalStep::Skip => continue,
                // A member not judged yet: nothing is concluded, nothing reported.
                RemovalStep::Wait => return true,
                _ => {}
            }
            let ctx = self.clone();
            let cluster = cluster.clone();
            steps.push(async move {
                let step = |outcome: Option<ClusterOutcome>, blocks: bool| Step {
                    outcome,
                    cluster: cluster.clone(),
                    blocks,
                };
                let mut live = live;
                if plan::removal_step(&facts) == RemovalStep::Lookup {
                    // The cache holds only managed objects; a cluster listed in the status may
                    // hold one fedns never managed (refused adoption): read it.
                    live = match ctx.member_api(&cluster, key) {
                        Some(api) => match api.get_opt(&key.name).await {
                            Ok(found) => found.and_then(|o| serde_json::to_value(o).ok()),
                            Err(_) => {
                                return step(Some(outcome(ClusterState::DeletionFailed, None)), true);
                            }
                        },
                        None => None,
                    };
                    facts.live = match &live {
                        Some(live) => Presence::Present(Managed::of(live)),
                        None => Presence::Absent,
                    };
                }
                match plan::removal_step(&facts) {
                    RemovalStep::Skip | RemovalStep::Done | RemovalStep::Lookup => step(None, false),
                    RemovalStep::Wait => step(None, true),
                    RemovalStep::NotReady { blocks } => {
                        step(Some(outcome(ClusterState::ClusterNotReady, None)), blocks)
                    }
                    RemovalStep::Unlabel => {
                        let live = live.unwrap_or_default();
                        match ctx.unlabel(&cluster, key, &live).await {
                            Ok(_) => step(None, false),
                            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => {
                                step(None, false)
                            }
                            Err(error) => {
                                tracing::warn!(cluster, %error, "could not unlabel an orphaned object");
                                step(Some(outcome(ClusterState::UpdateFailed, None)), true)
                            }
                        }
                    }
                    RemovalStep::Delete => {
                        let state = ctx.delete_member(key, fed, &cluster).await;
                        if state != ClusterState::Ok {
                            return step(Some(outcome(state, None)), true);
                        }
                        // Confirm it is gone (it may have finalizers of its own).
                        let gone = match ctx.member_api(&cluster, key) {
                            Some(api) => matches!(api.get_opt(&key.name).await, Ok(None)),
                            None => false,
                        };
                        step(
                            (!gone).then(|| outcome(ClusterState::WaitingForRemoval, None)),
                            !gone,
                        )
                    }
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
            .patch(&key.name, &crate::k8s::patch_params(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {
                self.forget(key);
                false
            }
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(error) => {
                tracing::warn!(name = %key.name, %error, "could not remove the finalizer");
                true
            }
        }
    }
}

/// `kubefed.io/deleteoption` (JSON DeleteOptions) as delete parameters; defaults when absent or
/// invalid (logged).
pub(super) fn delete_params(fed: &DynamicObject) -> DeleteParams {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
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
