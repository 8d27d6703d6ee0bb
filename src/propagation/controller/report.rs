//! What the controller reports back to the host: the federated object's status and Events.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch};
use kube::runtime::events::{Event as KubeEvent, EventType};
use serde_json::{Value, json};

use super::{Key, TypeContext};
use crate::propagation::status::{self, ClusterOutcome, ClusterState, ObjectProblem};
use crate::propagation::types::FederatedTypeConfig;

impl TypeContext {
    pub(super) async fn write_status(
        &self,
        key: &Key,
        fed: &DynamicObject,
        outcomes: &BTreeMap<String, ClusterOutcome>,
        problem: Option<&ObjectProblem>,
        previous: &Value,
    ) {
        let now = crate::k8s::now_text();
        let Some(status) = status::propagation_status(
            fed.metadata.generation.unwrap_or(0),
            outcomes,
            problem,
            previous,
            &now,
        ) else {
            return;
        };
        let patch = json!([{"op": "add", "path": "/status", "value": status}]);
        if let Err(error) = self
            .fed_api(key)
            .patch_status(
                &key.name,
                &crate::k8s::patch_params(),
                &Patch::Json::<()>(json_patch_of(patch)),
            )
            .await
        {
            tracing::debug!(name = %key.name, %error, "status not written");
        }
    }

    /// A Warning Event for a problem that stops the whole object, once: not again while the
    /// status already reports it.
    pub(super) async fn problem_event(
        &self,
        fed: &DynamicObject,
        problem: &ObjectProblem,
        previous: &Value,
    ) {
        if status::reports(previous, problem) {
            return;
        }
        let (reason, message) = problem.reason();
        let note = match problem {
            ObjectProblem::ComputePlacementFailed(_) => {
                format!("{message}; member objects are left as they are")
            }
            _ => message,
        };
        self.event(fed, EventType::Warning, reason, &note, "Place")
            .await;
    }

    /// How an Event names the member object: `Kind namespace/name` or `Kind name`.
    pub(super) fn member_object(&self, key: &Key) -> String {
        if self.target.namespaced() && !key.namespace.is_empty() {
            format!("{} {}/{}", self.target.kind, key.namespace, key.name)
        } else {
            format!("{} {}", self.target.kind, key.name)
        }
    }

    pub(super) async fn event(
        &self,
        fed: &DynamicObject,
        type_: EventType,
        reason: &str,
        note: &str,
        action: &str,
    ) {
        let reference = ObjectReference {
            api_version: Some(self.federated.api_version()),
            kind: Some(self.federated.kind.clone()),
            name: fed.metadata.name.clone(),
            namespace: fed.metadata.namespace.clone(),
            uid: fed.metadata.uid.clone(),
            ..Default::default()
        };
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&ev, &reference).await {
            tracing::debug!(%error, "event not recorded");
        }
    }
}

/// Writes each `FederatedTypeConfig`'s status where it differs from what it says now (its watch
/// brings the written status back, equal, so this settles).
pub(super) async fn write_type_config_statuses<T>(
    api: &Api<FederatedTypeConfig>,
    ftcs: &[Arc<FederatedTypeConfig>],
    running: &BTreeMap<String, T>,
) {
    for ftc in ftcs {
        let name = ftc.name_any();
        let wanted = status::type_config_status(
            ftc.metadata.generation.unwrap_or(0),
            running.contains_key(&name),
        );
        if ftc.status.as_ref() == Some(&wanted) {
            continue;
        }
        let patch = json!({"status": wanted});
        if let Err(error) = api
            .patch_status(&name, &crate::k8s::patch_params(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(ftc = %name, error = %crate::k8s::error_text(&error), "FederatedTypeConfig status not written");
        }
    }
}

pub(super) fn outcome(state: ClusterState, remote_status: Option<Value>) -> ClusterOutcome {
    ClusterOutcome {
        state,
        remote_status,
    }
}

pub(super) fn json_patch_of(v: Value) -> json_patch::Patch {
    serde_json::from_value(v).expect("patches built here are valid")
}
