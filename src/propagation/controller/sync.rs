//! The reconcile of one federated object that is not being deleted: finalizer, placement
//! (with the FederatedNamespace intersection), one step per cluster run concurrently, status and
//! the per-object metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use super::report::{json_patch_of, outcome};
use super::{Key, TypeContext};
use crate::propagation::placement::{self, NamespacePlacement};
use crate::propagation::plan::{self, ClusterAction, ClusterFacts, Managed};
use crate::propagation::render;
use crate::propagation::status::{ClusterOutcome, ClusterState, ObjectProblem};
use crate::propagation::types::{FederatedSpec, SYNC_FINALIZER, default_type, federated_type_of};

impl TypeContext {
    pub(super) async fn reconcile(self: &Arc<Self>, key: &Key) {
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
                    &PatchParams::default(),
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
        let (selected, mut problem) = match placed {
            Ok(s) => (s, None),
            Err(p) => (BTreeSet::new(), Some(p)),
        };
        if matches!(ns_placement, Ok(NamespacePlacement::NotFederated)) {
            problem = Some(ObjectProblem::NamespaceNotFederated);
        }
        let overrides_ok = render::validate_overrides(&spec.overrides);
        if let Err(e) = &overrides_ok {
            problem = Some(ObjectProblem::ApplyOverridesFailed(e.to_string()));
        }
        for warning in render::template_warnings(&spec.template) {
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
        let mut steps = Vec::new();
        for (cluster, member) in set.iter() {
            let live = self.cached(cluster, key);
            let facts = ClusterFacts {
                selected: selected.contains(cluster),
                ready: member.ready,
                live: live.as_ref().map(Managed::of),
                overrides_valid: overrides_ok.is_ok(),
                adopt,
            };
            let ctx = self.clone();
            let spec = &spec;
            let cluster = cluster.clone();
            steps.push(async move {
                let outcome = match plan::cluster_action(&facts) {
                    ClusterAction::Leave => None,
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
            serde_json::from_value(ns.data.get("spec").cloned().unwrap_or(Value::Null))
                .unwrap_or_default();
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
