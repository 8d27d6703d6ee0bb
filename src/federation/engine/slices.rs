//! Per-cluster slices (everything one member reported, so a relist replaces only that cluster),
//! member liveness (declared readiness, observed reachability, the grace period) and the zones and
//! region each member is in.

use std::collections::BTreeSet;

use super::HashMap;
use std::time::{Duration, Instant};

use crate::federation::model::{
    EndpointsState, LoadBalancer, MemberKind, MemberObject, MemberObjectId, NodeTopology,
    ObjectKey, ServiceState, topology_from_nodes,
};

use super::{Engine, Touched};

/// Everything one member cluster reported.
#[derive(Debug, Default, Clone)]
pub(super) struct ClusterSlice {
    pub(super) services: HashMap<ObjectKey, ServiceState>,
    pub(super) endpoint_slices: HashMap<ObjectKey, EndpointsState>,
    pub(super) endpoints: HashMap<ObjectKey, EndpointsState>,
    pub(super) ingresses: HashMap<ObjectKey, LoadBalancer>,
    pub(super) nodes: HashMap<String, NodeTopology>,
    /// Ready endpoints per Service from its EndpointSlices: slice name, ready. A list: a Service
    /// has one slice or a few (one per 100 endpoints), and a map per Service cost ~150 bytes.
    pub(super) slices_by_service: HashMap<ObjectKey, Vec<(Box<str>, u32)>>,
    pub(super) zones: BTreeSet<String>,
    pub(super) region: Option<String>,
    /// Load-balancer hostnames referenced by this slice's Services and Ingresses, with counts.
    pub(super) hostnames: HashMap<String, u32>,
}

impl ClusterSlice {
    pub(super) fn count_hosts(&mut self, lb: Option<&LoadBalancer>, delta: i32) {
        for host in lb.into_iter().flat_map(|lb| &lb.hostnames) {
            let n = self.hostnames.entry(host.clone()).or_insert(0);
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                self.hostnames.remove(host);
            }
        }
    }

    pub(super) fn ready_endpoints(&self, service: &ObjectKey) -> u32 {
        match self.slices_by_service.get(service) {
            Some(slices) if !slices.is_empty() => slices.iter().map(|(_, ready)| ready).sum(),
            // Services without any EndpointSlice fall back to core/v1 Endpoints.
            _ => self.endpoints.get(service).map_or(0, |e| e.ready),
        }
    }

    pub(super) fn service_of_slice(key: &ObjectKey, eps: &EndpointsState) -> ObjectKey {
        ObjectKey::new(key.namespace.clone(), eps.service.clone())
    }

    /// Applies one object; returns the record keys it may affect.
    pub(super) fn apply(&mut self, object: MemberObject, touched: &mut Touched) {
        match object {
            MemberObject::Service(key, state) => {
                self.count_hosts(Some(&state.load_balancer), 1);
                let old = self.services.insert(key.clone(), state);
                self.count_hosts(old.as_ref().map(|s| &s.load_balancer), -1);
                touched.services.insert(key);
            }
            MemberObject::EndpointSlice(key, eps) => {
                if let Some(old) = self.endpoint_slices.remove(&key) {
                    self.unindex_slice(&key, &old, touched);
                }
                let service = Self::service_of_slice(&key, &eps);
                let slices = self.slices_by_service.entry(service.clone()).or_default();
                match slices.iter_mut().find(|(name, _)| **name == *key.name) {
                    Some((_, ready)) => *ready = eps.ready,
                    None => {
                        // Exact: most Services have one slice.
                        slices.reserve_exact(1);
                        slices.push((key.name.as_str().into(), eps.ready));
                    }
                }
                touched.services.insert(service);
                self.endpoint_slices.insert(key, eps);
            }
            MemberObject::Endpoints(key, eps) => {
                touched
                    .services
                    .insert(ObjectKey::new(key.namespace.clone(), eps.service.clone()));
                self.endpoints.insert(key, eps);
            }
            MemberObject::Ingress(key, lb) => {
                self.count_hosts(Some(&lb), 1);
                let old = self.ingresses.insert(key.clone(), lb);
                self.count_hosts(old.as_ref(), -1);
                touched.ingresses.insert(key);
            }
            MemberObject::Node(name, topo) => {
                self.nodes.insert(name, topo);
                touched.topology = true;
            }
        }
    }

    pub(super) fn unindex_slice(
        &mut self,
        key: &ObjectKey,
        eps: &EndpointsState,
        touched: &mut Touched,
    ) {
        let service = Self::service_of_slice(key, eps);
        if let Some(slices) = self.slices_by_service.get_mut(&service) {
            slices.retain(|(name, _)| **name != *key.name);
            if slices.is_empty() {
                self.slices_by_service.remove(&service);
            }
        }
        touched.services.insert(service);
    }

    pub(super) fn delete(&mut self, id: &MemberObjectId, touched: &mut Touched) {
        match id {
            MemberObjectId::Service(key) => {
                let old = self.services.remove(key);
                self.count_hosts(old.as_ref().map(|s| &s.load_balancer), -1);
                touched.services.insert(key.clone());
            }
            MemberObjectId::EndpointSlice(key) => {
                if let Some(old) = self.endpoint_slices.remove(key) {
                    self.unindex_slice(key, &old, touched);
                }
            }
            MemberObjectId::Endpoints(key) => {
                if let Some(old) = self.endpoints.remove(key) {
                    touched
                        .services
                        .insert(ObjectKey::new(key.namespace.clone(), old.service));
                }
            }
            MemberObjectId::Ingress(key) => {
                let old = self.ingresses.remove(key);
                self.count_hosts(old.as_ref(), -1);
                touched.ingresses.insert(key.clone());
            }
            MemberObjectId::Node(name) => {
                self.nodes.remove(name);
                touched.topology = true;
            }
        }
    }

    /// Removes every object of `kind` (before a relist of that kind is applied).
    pub(super) fn clear_kind(&mut self, kind: MemberKind, touched: &mut Touched) {
        let ids: Vec<MemberObjectId> = match kind {
            MemberKind::Service => self
                .services
                .keys()
                .map(|k| MemberObjectId::Service(k.clone()))
                .collect(),
            MemberKind::EndpointSlice => self
                .endpoint_slices
                .keys()
                .map(|k| MemberObjectId::EndpointSlice(k.clone()))
                .collect(),
            MemberKind::Endpoints => self
                .endpoints
                .keys()
                .map(|k| MemberObjectId::Endpoints(k.clone()))
                .collect(),
            MemberKind::Ingress => self
                .ingresses
                .keys()
                .map(|k| MemberObjectId::Ingress(k.clone()))
                .collect(),
            MemberKind::Node => self
                .nodes
                .keys()
                .map(|n| MemberObjectId::Node(n.clone()))
                .collect(),
        };
        for id in ids {
            self.delete(&id, touched);
        }
    }

    /// Every record key this slice may affect (used around a relist).
    pub(super) fn all_keys(&self, touched: &mut Touched) {
        touched.services.extend(self.services.keys().cloned());
        touched
            .services
            .extend(self.slices_by_service.keys().cloned());
        touched.services.extend(
            self.endpoints
                .iter()
                .map(|(k, e)| ObjectKey::new(k.namespace.clone(), e.service.clone())),
        );
        touched.ingresses.extend(self.ingresses.keys().cloned());
    }
}

/// Per-member liveness: declared readiness and observed reachability.
#[derive(Debug, Clone)]
pub(super) struct Liveness {
    pub(super) reachable: bool,
    /// When the member stopped being ready (declared or observed); grace runs from here.
    pub(super) down_since: Option<Instant>,
    /// The grace period ran out and the member's targets were withdrawn.
    pub(super) withdrawn: bool,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            reachable: true,
            down_since: None,
            withdrawn: false,
        }
    }
}

impl Engine {
    /// Marks the records with a shard in `cluster` for recomputation: its serving state changed.
    /// Records without a shard there only take its zone and region names, which do not depend
    /// on readiness.
    pub(super) fn touch_member(&mut self, cluster: &str) {
        match self.slices.get(cluster) {
            Some(slice) => slice.all_keys(&mut self.touched),
            None => self.touched.everything = true,
        }
    }

    pub(super) fn is_ready(&self, cluster: &str) -> bool {
        let declared = self.members.get(cluster).is_some_and(|m| m.ready);
        let reachable = self.liveness.get(cluster).is_none_or(|l| l.reachable);
        declared && reachable
    }

    pub(super) fn refresh_down_since(&mut self, cluster: &str, now: Instant) {
        let ready = self.is_ready(cluster);
        let live = self.liveness.entry(cluster.to_owned()).or_default();
        match (ready, live.down_since) {
            (true, _) => {
                live.down_since = None;
                live.withdrawn = false;
            }
            (false, None) => live.down_since = Some(now),
            (false, Some(_)) => {}
        }
    }

    /// A member's targets may be served: ready, or down for less than the grace period.
    pub(super) fn is_serving(&self, cluster: &str, now: Instant) -> bool {
        if self.is_ready(cluster) {
            return true;
        }
        match self.liveness.get(cluster).and_then(|l| l.down_since) {
            Some(since) => now.saturating_duration_since(since) < self.settings.grace,
            None => false,
        }
    }

    /// When the next grace period ends, so the caller can wake up and call [`Engine::expire`].
    pub fn next_deadline(&self) -> Option<Instant> {
        // A change waiting for its serial is numbered just after the next second starts.
        let serial = self.serial_pending.then(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Instant::now()
                + Duration::from_nanos(1_000_000_000 - now.subsec_nanos() as u64)
                + Duration::from_millis(5)
        });
        if self.settings.grace.is_zero() {
            return serial;
        }
        let grace = self
            .liveness
            .values()
            .filter(|l| !l.withdrawn)
            .filter_map(|l| l.down_since.map(|s| s + self.settings.grace))
            .min();
        match (grace, serial) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Withdraws the targets of members whose grace period has run out by `now`.
    pub fn expire(&mut self, now: Instant) {
        let grace = self.settings.grace;
        let mut expired = Vec::new();
        for (cluster, live) in &mut self.liveness {
            if !live.withdrawn && live.down_since.is_some_and(|s| s + grace <= now) {
                live.withdrawn = true;
                expired.push(cluster.clone());
            }
        }
        for cluster in expired {
            self.touch_member(&cluster);
        }
    }

    /// Recomputes each member's zones and region; returns whether any changed.
    pub(super) fn refresh_topology(&mut self) -> bool {
        let mut changed = false;
        for (name, slice) in &mut self.slices {
            let (zones, region) = topology_from_nodes(slice.nodes.values());
            let declared = self.members.get(name);
            let zones = match declared {
                Some(m) if !m.zones.is_empty() => m.zones.iter().cloned().collect(),
                _ => zones,
            };
            let region = declared.and_then(|m| m.region.clone()).or(region);
            if slice.zones != zones || slice.region != region {
                slice.zones = zones;
                slice.region = region;
                changed = true;
            }
        }
        changed
    }

    /// Zones and region of the members whose topology comes from node labels (not declared).
    pub fn node_topologies(&self) -> Vec<(String, Vec<String>, Option<String>)> {
        self.members
            .iter()
            .filter(|(_, m)| m.zones.is_empty() && m.region.is_none())
            .filter_map(|(name, _)| {
                // Empty too: labels removed from the Nodes clear what was reported before.
                let slice = self.slices.get(name)?;
                Some((
                    name.clone(),
                    slice.zones.iter().cloned().collect(),
                    slice.region.clone(),
                ))
            })
            .collect()
    }

    /// Each member and whether it is ready now.
    pub fn member_readiness(&self) -> Vec<(&str, bool)> {
        self.members
            .keys()
            .map(|m| (m.as_str(), self.is_ready(m)))
            .collect()
    }
}
