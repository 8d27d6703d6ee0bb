//! The reconcile of one federated object that is not being deleted: finalizer, placement
//! (with the FederatedNamespace intersection), one step per cluster run concurrently, status and
//! the per-object metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use kube::api::{DynamicObject, Patch};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use super::report::{json_patch_of, outcome};
use super::{Key, TypeContext};
use crate::propagation::placement::{self, NamespacePlacement};
use crate::propagation::plan::{self, ClusterAction, ClusterFacts, Managed, Placement};
use crate::propagation::render;
use crate::propagation::status::{ClusterOutcome, ClusterState, ObjectProblem};
use crate::propagation::types::{FederatedSpec, SYNC_FINALIZER, default_type, federated_type_of};

impl TypeContext {
    pub(super) async fn reconcile(self: &Arc<Self>, key: &Key) {
        // Restart safety: nothing is concluded from an input that has not listed yet. Every
        // input wakes the whole type when it lists, so nothing needs to be retried here.
        if !self.inputs_listed(&self.members.borrow()) {
            self.queue.forget(key);
            return;
        }
        let r = ObjectRef::new_with(&key.name, self.federated.api_resource());
        let r = if self.federated.namespaced() {
            r.within(&key.namespace)
        } else {
            r
        };
        let retry = match self.fed_store.get(&r) {
            None => {
                self.release_orphans(key).await;
                self.forget(key);
                false
            }
            Some(fed) if fed.metadata.deletion_timestamp.is_some() => {
                self.finalize(key, &fed).await
            }
            Some(fed) => self.sync(key, &fed).await,
        };
        if retry {
            self.queue.retry(key.clone());
        } else {
            self.queue.forget(key);
        }
    }

    pub(super) fn forget(&self, key: &Key) {
        self.propagated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(k, _), _| k != key);
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let Some(state) = self
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
        {
            self.metrics
                .propagation_objects
                .with_label_values(&[&self.federated.kind, state])
                .dec();
        }
    }

    pub(super) fn set_state(&self, key: &Key, state: &'static str) {
        let old = self
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), state);
        if old == Some(state) {
            return;
        }
        let g = &self.metrics.propagation_objects;
        if let Some(old) = old {
            g.with_label_values(&[&self.federated.kind, old]).dec();
        }
        g.with_label_values(&[&self.federated.kind, state]).inc();
    }

    /// Propagates one live federated object; returns whether to retry with backoff.
    pub(super) async fn sync(self: &Arc<Self>, key: &Key, fed: &DynamicObject) -> bool {
        let generation = fed.metadata.generation.unwrap_or(0);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.get(key).is_none_or(|(g, _)| *g != generation) {
                seen.insert(key.clone(), (generation, Some(Instant::now())));
            }
        }
        if !fed.finalizers().iter().any(|f| f == SYNC_FINALIZER) {
            let patch = if fed.metadata.finalizers.is_none() {
                json!([{"op": "add", "path": "/metadata/finalizers", "value": [SYNC_FINALIZER]}])
            } else {
                json!([{"op": "add", "path": "/metadata/finalizers/-", "value": SYNC_FINALIZER}])
            };
            if let Err(error) = self
                .fed_api(key)
                .patch(
                    &key.name,
                    &crate::k8s::patch_params(),
                    &Patch::Json::<()>(json_patch_of(patch)),
                )
                .await
            {
                tracing::warn!(name = %key.name, %error, "could not add the finalizer");
                return true;
            }
        }
        let previous = fed.data.get("status").cloned().unwrap_or(Value::Null);
        let spec: FederatedSpec =
            match serde_json::from_value(fed.data.get("spec").cloned().unwrap_or(Value::Null)) {
                Ok(spec) => spec,
                Err(e) => {
                    let problem = ObjectProblem::InvalidSpec(format!("spec: {e}"));
                    self.write_status(key, fed, &BTreeMap::new(), Some(&problem), &previous)
                        .await;
                    self.set_state(key, "failed");
                    return false;
                }
            };
        let set = self.members.borrow().clone();
        let labels: BTreeMap<String, BTreeMap<String, String>> = set
            .iter()
            .map(|(n, m)| (n.clone(), m.labels.clone()))
            .collect();
        let ns_placement = self.namespace_placement(key, &labels);
        let placed = match &ns_placement {
            Err(problem) => Err(problem.clone()),
            Ok(nsp) => placement::place(&spec.placement, &labels, nsp)
                .map_err(|e| ObjectProblem::ComputePlacementFailed(e.to_string())),
        };
        // A placement that cannot be computed decides nothing: every member copy stays as it
        // is, and the status and an Event say why.
        let (selected, mut problem) = match placed {
            Ok(s) => (Some(s), None),
            Err(p) => (None, Some(p)),
        };
        if matches!(ns_placement, Ok(NamespacePlacement::NotFederated)) {
            problem = Some(ObjectProblem::NamespaceNotFederated);
        }
        let overrides_ok = render::validate_overrides(&spec.overrides);
        if let Err(e) = &overrides_ok {
            problem = Some(ObjectProblem::ApplyOverridesFailed(e.to_string()));
        }
        // Once per generation, not on every resync or restart.
        let new_generation = previous["observedGeneration"].as_i64() != Some(generation);
        for warning in render::template_warnings(&spec.template)
            .into_iter()
            .filter(|_| new_generation)
        {
            self.event(
                fed,
                EventType::Warning,
                "TemplateFieldIgnored",
                &warning,
                "Render",
            )
            .await;
        }
        let adopt = self.config.borrow().adopts();
        let mut plans = Vec::new();
        for (cluster, member) in set.iter() {
            let live = self.cached(cluster, key);
            let facts = ClusterFacts {
                placement: match &selected {
                    None => Placement::Unknown,
                    Some(s) if s.contains(cluster) => Placement::Selected,
                    Some(_) => Placement::NotSelected,
                },
                ready: member.readiness(),
                cache: self.cache_state(cluster),
                live: live.as_ref().map(Managed::of),
                overrides_valid: overrides_ok.is_ok(),
                adopt,
            };
            plans.push((cluster, live, plan::cluster_action(&facts)));
        }
        if plans.iter().any(|(_, _, a)| *a == ClusterAction::Wait) {
            // A member not judged or not listed yet: no write anywhere, no status; its first
            // verdict or listing wakes this object again.
            return false;
        }
        if let Some(problem) = &problem {
            self.problem_event(fed, problem, &previous).await;
        }
        let mut steps = Vec::new();
        for (cluster, live, action) in plans {
            let ctx = self.clone();
            let spec = &spec;
            let cluster = cluster.clone();
            steps.push(async move {
                let outcome = match action {
                    ClusterAction::Leave | ClusterAction::Wait => None,
                    ClusterAction::Report(state) => Some(outcome(state, None)),
                    ClusterAction::Delete => {
                        let state = ctx.delete_member(key, fed, &cluster).await;
                        (state != ClusterState::Ok).then(|| outcome(state, None))
                    }
                    ClusterAction::Create | ClusterAction::Update => Some(
                        ctx.apply_member(key, fed, spec, &cluster, live, adopt)
                            .await,
                    ),
                };
                Step {
                    outcome,
                    cluster,
                    blocks: false,
                }
            });
        }
        let steps = futures::future::join_all(steps).await;
        let outcomes: BTreeMap<String, ClusterOutcome> = steps
            .into_iter()
            .filter_map(|s| Some((s.cluster, s.outcome?)))
            .collect();
        let retry = outcomes.values().any(|o| o.state.retryable());
        let all_ok = problem.is_none() && outcomes.values().all(|o| o.state == ClusterState::Ok);
        self.write_status(key, fed, &outcomes, problem.as_ref(), &previous)
            .await;
        if all_ok {
            self.set_state(key, "propagated");
            let since = match self
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(key)
            {
                // Observed once per generation: later resyncs of it are not propagations.
                Some((g, since)) if *g == generation => since.take(),
                _ => None,
            };
            if let Some(since) = since {
                self.metrics
                    .propagation_duration
                    .observe(since.elapsed().as_secs_f64());
            }
        } else {
            self.set_state(key, if retry { "pending" } else { "failed" });
        }
        retry
    }

    /// Where a namespaced object may go given its namespace's FederatedNamespace.
    pub(super) fn namespace_placement(
        &self,
        key: &Key,
        labels: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<NamespacePlacement, ObjectProblem> {
        if self.target.group.is_empty() && self.target.kind == "Namespace" {
            if key.namespace != key.name {
                return Err(ObjectProblem::InvalidSpec(format!(
                    "a FederatedNamespace must be named after its namespace ({:?}), not {:?}",
                    key.namespace, key.name
                )));
            }
            return Ok(NamespacePlacement::Unconstrained);
        }
        let Some(store) = &self.namespaces else {
            return Ok(NamespacePlacement::Unconstrained);
        };
        let ns_type = federated_type_of(&default_type("namespaces").expect("a default type"));
        let r = ObjectRef::new_with(&key.namespace, ns_type.api_resource()).within(&key.namespace);
        let Some(ns) = store.get(&r) else {
            return Ok(NamespacePlacement::NotFederated);
        };
        let spec: FederatedSpec =
            serde_json::from_value(ns.data.get("spec").cloned().unwrap_or(Value::Null)).map_err(
                |e| ObjectProblem::ComputePlacementFailed(format!("FederatedNamespace spec: {e}")),
            )?;
        placement::selected_clusters(&spec.placement, labels)
            .map(NamespacePlacement::Within)
            .map_err(|e| ObjectProblem::ComputePlacementFailed(format!("FederatedNamespace: {e}")))
    }
}

/// Outcome of one cluster's step, with what to record.
pub(super) struct Step {
    pub(super) cluster: String,
    pub(super) outcome: Option<ClusterOutcome>,
    /// The cluster still holds the object (deletion flow: blocks the finalizer).
    pub(super) blocks: bool,
}
