//! Per-resource response delays: a fake cluster whose list of one resource is slow (a slow
//! FederatedNamespace list on the host, a slow member list), as real API servers are under load
//! or with many objects. The whole-cluster [`FakeCluster::delay`] slows everything instead.

use std::time::Duration;

use super::FakeCluster;
use super::apiserver::{Shared, lock};

/// Lists of `resource` (plural, or `"*"`) are answered after `delay`.
#[derive(Clone, Debug)]
pub struct SlowList {
    pub resource: String,
    pub delay: Duration,
}

/// How long a request with this verb on this resource is held back.
pub fn list_delay(shared: &Shared, verb: &str, resource: &str) -> Duration {
    if verb != "list" {
        return Duration::ZERO;
    }
    lock(&shared.slow_lists)
        .iter()
        .filter(|s| s.resource == "*" || s.resource == resource)
        .map(|s| s.delay)
        .max()
        .unwrap_or(Duration::ZERO)
}

impl FakeCluster {
    /// Every list (not watch, not get) of `resource` (plural, e.g. `federatednamespaces`, or
    /// `"*"` for all) is answered after `delay`; zero removes the rule.
    pub fn slow_list(&self, resource: &str, delay: Duration) {
        let mut rules = lock(&self.shared().slow_lists);
        rules.retain(|s| s.resource != resource);
        if !delay.is_zero() {
            rules.push(SlowList {
                resource: resource.to_string(),
                delay,
            });
        }
    }

    /// Requests refused with 401 so far (a token that is wrong or was rotated away).
    pub fn unauthorized(&self) -> usize {
        self.shared()
            .unauthorized
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Create, update, patch and delete requests on resources other than Events and Leases,
    /// and the deletes among them: what a controller changed in this cluster.
    pub fn object_writes(&self) -> (u64, u64) {
        let counts = self.request_counts();
        let mut writes = 0;
        let mut deletes = 0;
        for ((verb, resource), n) in counts {
            if resource.starts_with("events") || resource.starts_with("leases") {
                continue;
            }
            match verb.as_str() {
                "create" | "update" | "patch" => writes += n,
                "delete" | "deletecollection" => {
                    writes += n;
                    deletes += n;
                }
                _ => {}
            }
        }
        (writes, deletes)
    }
}
