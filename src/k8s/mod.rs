//! The Kubernetes plumbing both products share.
//!
//! [`crd`] holds the KubeFed object shapes fedns reads (`Domain`, `ServiceDNSRecord`,
//! `IngressDNSRecord`, `KubeFedCluster`) and writes (`DNSEndpoint`, record status); [`lease`] the
//! Lease-based leader election that decides which replica writes; [`record_status`] computes, purely,
//! the status and DNSEndpoints written back for DNS records, and [`status_writer`] is the one task
//! that writes them (only while leading). Nothing here writes to a member cluster.

pub mod crd;
pub mod lease;
pub mod record_status;
pub mod status_writer;

use kube::api::{PatchParams, PostParams};

/// The field manager of every write fedns makes (server-side apply, and the `managedFields`
/// entry of every create, update and patch), so `kubectl get --show-managed-fields` says which
/// fields fedns set.
pub const FIELD_MANAGER: &str = "fedns";

/// Patch parameters for every non-apply patch fedns sends.
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Create and replace parameters for every such write fedns sends.
pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

/// The one timestamp format fedns writes (status conditions, probe times): RFC 3339 in UTC
/// with whole seconds, as Kubernetes writes its own (`2024-05-01T12:00:00Z`).
pub fn timestamp(t: k8s_openapi::jiff::Timestamp) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// [`timestamp`] of now, as text.
pub fn now_text() -> String {
    timestamp(k8s_openapi::jiff::Timestamp::now()).to_string()
}

/// A Kubernetes client error for people: an API error as its reason, code and message (the
/// client's own text repeats the whole response as a Rust debug dump).
pub fn error_text(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.reason.is_empty() => {
            format!("{} ({}): {}", status.reason, status.code, status.message)
        }
        kube::Error::Api(status) => format!("{}: {}", status.code, status.message),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_whole_seconds() {
        let t: k8s_openapi::jiff::Timestamp = "2024-05-01T12:00:00.123456Z".parse().unwrap();
        assert_eq!(timestamp(t).to_string(), "2024-05-01T12:00:00Z");
    }

    #[test]
    fn api_errors_read_as_reason_code_and_message() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 401, "reason": "Unauthorized", "message": "token expired"
        }))
        .unwrap();
        let text = error_text(&kube::Error::Api(Box::new(status)));
        assert_eq!(text, "Unauthorized (401): token expired");
    }
}
