//! The writes to members: create or update one rendered object, delete one, release (unlabel)
//! one, each counted and reported as an Event.

use kube::api::{DynamicObject, Patch};
use kube::runtime::events::EventType;
use serde_json::Value;

use super::finalize::delete_params;
use super::report::{json_patch_of, outcome};
use super::{Key, TypeContext};
use crate::propagation::plan::{self, Cache, ClusterAction, ClusterFacts, Managed, Placement};
use crate::propagation::render::{self, Federated, Propagated};
use crate::propagation::status::{ClusterOutcome, ClusterState};
use crate::propagation::types::FederatedSpec;

impl TypeContext {
    /// Member objects still labeled managed whose federated object is gone are released
    /// (unlabeled), never deleted.
    pub(super) async fn release_orphans(&self, key: &Key) {
        let set = self.members.borrow().clone();
        for (cluster, member) in set.iter() {
            if !member.ready {
                continue;
            }
            let Some(live) = self.cached(cluster, key) else {
                continue;
            };
            match self.unlabel(cluster, key, &live).await {
                Ok(true) => {
                    tracing::info!(cluster, namespace = %key.namespace, name = %key.name, kind = %self.target.kind,
                        "released a managed object whose federated object is gone");
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(cluster, %error, "could not release an orphaned object")
                }
            }
        }
    }

    /// Removes the managed label from a member object (it stays, unmanaged); `Ok(false)` when
    /// there was nothing to remove or no connection to the member.
    pub(super) async fn unlabel(
        &self,
        cluster: &str,
        key: &Key,
        live: &Value,
    ) -> Result<bool, kube::Error> {
        let (Some(patch), Some(api)) = (render::unlabel_patch(live), self.member_api(cluster, key))
        else {
            return Ok(false);
        };
        api.patch(
            &key.name,
            &crate::k8s::patch_params(),
            &Patch::Json::<()>(json_patch_of(patch)),
        )
        .await?;
        self.count_write(cluster, "unlabel");
        Ok(true)
    }

    pub(super) fn count_write(&self, cluster: &str, verb: &str) {
        self.metrics
            .propagation_writes
            .with_label_values(&[cluster, verb])
            .inc();
    }

    /// Create or update the object in one ready, selected cluster.
    pub(super) async fn apply_member(
        &self,
        key: &Key,
        fed: &DynamicObject,
        spec: &FederatedSpec,
        cluster: &str,
        live: Option<Value>,
        adopt: bool,
    ) -> ClusterOutcome {
        let Some(api) = self.member_api(cluster, key) else {
            return outcome(ClusterState::ClusterNotReady, None);
        };
        let view = Federated {
            target: &self.target,
            name: &key.name,
            namespace: (!key.namespace.is_empty()).then_some(key.namespace.as_str()),
            template: &spec.template,
            overrides: &spec.overrides,
            retain_replicas: spec.retain_replicas,
        };
        let pkey = (key.clone(), cluster.to_string());
        let timeout = self.write_timeout;
        let live = match live {
            Some(live) => live,
            None => {
                let desired = match render::render_for_cluster(view, cluster, None) {
                    Ok(d) => render::with_managed_record(d.clone(), &d, None),
                    Err(e) => return self.render_failed(fed, cluster, e).await,
                };
                let obj: DynamicObject = match serde_json::from_value(desired.clone()) {
                    Ok(o) => o,
                    Err(e) => return self.render_failed(fed, cluster, e).await,
                };
                let mut created =
                    tokio::time::timeout(timeout, api.create(&crate::k8s::post_params(), &obj))
                        .await;
                if matches!(&created, Ok(Err(kube::Error::Api(e))) if e.code == 404)
                    && self.namespace_appears(cluster, &key.namespace).await
                {
                    // The namespace was being propagated beside it; now it is there.
                    created =
                        tokio::time::timeout(timeout, api.create(&crate::k8s::post_params(), &obj))
                            .await;
                }
                match created {
                    Err(_) => return outcome(ClusterState::CreationTimedOut, None),
                    Ok(Ok(obj)) => {
                        self.count_write(cluster, "create");
                        let v = serde_json::to_value(&obj).unwrap_or_default();
                        self.record(&pkey, &desired, &v);
                        self.event(
                            fed,
                            EventType::Normal,
                            "CreateInCluster",
                            &format!("Created {} in cluster {cluster}", self.member_object(key)),
                            "Create",
                        )
                        .await;
                        return outcome(ClusterState::Ok, v.get("status").cloned());
                    }
                    Ok(Err(kube::Error::Api(e))) if e.code == 409 => {
                        // Exists unlabeled (or our cache lags): look at it.
                        match api.get_opt(&key.name).await {
                            Ok(Some(existing)) => {
                                serde_json::to_value(existing).unwrap_or_default()
                            }
                            Ok(None) => return outcome(ClusterState::CreationFailed, None),
                            Err(error) => {
                                tracing::warn!(cluster, %error, "could not read an existing object");
                                return outcome(ClusterState::CreationFailed, None);
                            }
                        }
                    }
                    Ok(Err(error)) => {
                        self.event(
                            fed,
                            EventType::Warning,
                            "CreateInClusterFailed",
                            &format!(
                                "Creating {} in cluster {cluster} failed: {}",
                                self.member_object(key),
                                crate::k8s::error_text(&error)
                            ),
                            "Create",
                        )
                        .await;
                        return outcome(ClusterState::CreationFailed, None);
                    }
                }
            }
        };
        // An object found by a create that conflicted: is it fedns's to update?
        let facts = ClusterFacts {
            placement: Placement::Selected,
            ready: Some(true),
            cache: Cache::Listed,
            live: Some(Managed::of(&live)),
            overrides_valid: true,
            adopt,
        };
        if let ClusterAction::Report(state) = plan::cluster_action(&facts) {
            return outcome(state, None);
        }
        // What fedns renders (its fields), and that with the member's retained fields.
        let rendered = render::render_for_cluster(view, cluster, None).and_then(|config| {
            let desired = render::render_for_cluster(view, cluster, Some(&live))?;
            Ok(render::with_managed_record(desired, &config, Some(&live)))
        });
        let desired = match rendered {
            Ok(d) => d,
            Err(e) => return self.render_failed(fed, cluster, e).await,
        };
        let last = self
            .propagated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pkey)
            .cloned();
        if !render::needs_update(&desired, &live, last.as_ref()) {
            self.record(&pkey, &desired, &live);
            return outcome(ClusterState::Ok, live.get("status").cloned());
        }
        let obj: DynamicObject = match serde_json::from_value(desired.clone()) {
            Ok(o) => o,
            Err(e) => return self.render_failed(fed, cluster, e).await,
        };
        let replaced = tokio::time::timeout(
            timeout,
            api.replace(&key.name, &crate::k8s::post_params(), &obj),
        )
        .await;
        match replaced {
            Err(_) => outcome(ClusterState::UpdateTimedOut, None),
            Ok(Ok(obj)) => {
                self.count_write(cluster, "update");
                let v = serde_json::to_value(&obj).unwrap_or_default();
                self.record(&pkey, &desired, &v);
                self.event(
                    fed,
                    EventType::Normal,
                    "UpdateInCluster",
                    &format!("Updated {} in cluster {cluster}", self.member_object(key)),
                    "Update",
                )
                .await;
                outcome(ClusterState::Ok, v.get("status").cloned())
            }
            Ok(Err(error)) => {
                // A conflict means our view was stale: the retry reads it afresh.
                self.event(
                    fed,
                    EventType::Warning,
                    "UpdateInClusterFailed",
                    &format!(
                        "Updating {} in cluster {cluster} failed: {}",
                        self.member_object(key),
                        crate::k8s::error_text(&error)
                    ),
                    "Update",
                )
                .await;
                outcome(ClusterState::UpdateFailed, None)
            }
        }
    }

    pub(super) async fn render_failed(
        &self,
        fed: &DynamicObject,
        cluster: &str,
        error: impl std::fmt::Display,
    ) -> ClusterOutcome {
        self.event(
            fed,
            EventType::Warning,
            "ApplyOverridesFailed",
            &format!("Rendering for cluster {cluster} failed: {error}"),
            "Render",
        )
        .await;
        outcome(ClusterState::ApplyOverridesFailed, None)
    }

    pub(super) fn record(&self, pkey: &(Key, String), desired: &Value, live: &Value) {
        self.propagated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                pkey.clone(),
                Propagated {
                    desired_hash: render::desired_hash(desired),
                    version: render::live_version(live),
                },
            );
    }

    /// Deletes the managed object from one cluster (no longer placed there, or the federated
    /// object is being deleted). A Namespace of the host cluster itself is never deleted.
    pub(super) async fn delete_member(
        &self,
        key: &Key,
        fed: &DynamicObject,
        cluster: &str,
    ) -> ClusterState {
        let Some(api) = self.member_api(cluster, key) else {
            return ClusterState::ClusterNotReady;
        };
        if self.target.group.is_empty()
            && self.target.kind == "Namespace"
            && self.is_host_member(cluster).await
        {
            // Keep it, just stop managing it.
            let live = self.cached(cluster, key).unwrap_or(Value::Null);
            if let Err(error) = self.unlabel(cluster, key, &live).await {
                tracing::warn!(cluster, %error, "could not unlabel the host cluster's namespace");
            }
            return ClusterState::Ok;
        }
        let params = delete_params(fed);
        let deleted =
            tokio::time::timeout(self.write_timeout, api.delete(&key.name, &params)).await;
        match deleted {
            Err(_) => ClusterState::DeletionTimedOut,
            Ok(Ok(_)) => {
                self.count_write(cluster, "delete");
                self.propagated
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(key.clone(), cluster.to_string()));
                self.event(
                    fed,
                    EventType::Normal,
                    "DeleteInCluster",
                    &format!("Deleted {} in cluster {cluster}", self.member_object(key)),
                    "Delete",
                )
                .await;
                ClusterState::Ok
            }
            Ok(Err(kube::Error::Api(e))) if e.code == 404 => ClusterState::Ok,
            Ok(Err(error)) => {
                self.event(
                    fed,
                    EventType::Warning,
                    "DeleteInClusterFailed",
                    &format!(
                        "Deleting {} in cluster {cluster} failed: {}",
                        self.member_object(key),
                        crate::k8s::error_text(&error)
                    ),
                    "Delete",
                )
                .await;
                ClusterState::DeletionFailed
            }
        }
    }
}
