//! What one owner claims now: the model's slices and liveness turned into the inputs of the pure
//! record computation in [`crate::federation::records`].

use std::collections::BTreeSet;
use std::time::Instant;

use crate::federation::locality;
use crate::federation::naming::NameError;
use crate::federation::records::{self, Computed, MemberInput, Reported, ShardInput};

use super::{ClusterSlice, Engine, Owner};

/// One member as every owner computed in a batch sees it: built once per batch instead of once
/// per owner (at start-up that is once, not 10,000 times, for 100 members).
pub(super) struct MemberView<'a> {
    name: &'a String,
    zones: &'a BTreeSet<String>,
    region: Option<&'a str>,
    /// Its targets may be served (ready, or inside the grace period).
    serving: bool,
    slice: Option<&'a ClusterSlice>,
}

impl<'a> MemberView<'a> {
    /// This member as a record's input, with the record's object found by `shard` in its slice.
    fn input(
        &self,
        shard: impl FnOnce(&'a ClusterSlice) -> Option<ShardInput<'a>>,
    ) -> MemberInput<'a> {
        MemberInput {
            cluster: self.name,
            zones: self.zones,
            region: self.region,
            serving: self.serving,
            shard: self.slice.and_then(shard),
        }
    }
}

/// The zones of a member without a slice yet.
static NO_ZONES: BTreeSet<String> = BTreeSet::new();

impl Engine {
    /// Every member, as of `now`.
    pub(super) fn member_views(&self, now: Instant) -> Vec<MemberView<'_>> {
        self.members
            .keys()
            .map(|name| {
                let slice = self.slices.get(name);
                MemberView {
                    name,
                    zones: slice.map_or(&NO_ZONES, |s| &s.zones),
                    region: slice.and_then(|s| s.region.as_deref()),
                    serving: self.is_serving(name, now),
                    slice,
                }
            })
            .collect()
    }

    /// Computes what `owner` claims now, reporting every member. `Ok(None)` means the owner no
    /// longer exists.
    pub(super) fn compute(
        &self,
        owner: &Owner,
        now: Instant,
    ) -> Result<Option<Computed>, NameError> {
        self.compute_with(owner, &self.member_views(now), Reported::EveryMember)
    }

    /// [`Self::compute`] over members already viewed, reporting the members `reported` says.
    pub(super) fn compute_with(
        &self,
        owner: &Owner,
        views: &[MemberView<'_>],
        reported: Reported,
    ) -> Result<Option<Computed>, NameError> {
        match owner {
            Owner::Service(key) => {
                let Some(record) = self.services.get(key) else {
                    return Ok(None);
                };
                let Some(domain) = self.domains.get(&record.domain_ref) else {
                    return Err(NameError::UnknownDomain(record.domain_ref.clone()));
                };
                let inputs: Vec<MemberInput<'_>> = views
                    .iter()
                    .map(|view| {
                        view.input(|s| {
                            s.services.get(key).map(|svc| ShardInput {
                                load_balancer: &svc.load_balancer,
                                ready_endpoints: s.ready_endpoints(key),
                            })
                        })
                    })
                    .collect();
                let mut computed = records::compute_service(
                    record,
                    domain,
                    &inputs,
                    &self.hosts,
                    &self.settings.ttl,
                    reported,
                )?;
                let strategy = record
                    .strategy
                    .as_ref()
                    .or(domain.default_strategy.as_ref());
                if let Some(strategy) = strategy
                    && let Some(localized) =
                        locality::localize(strategy, &computed.shards, &self.settings.locality)
                {
                    computed.localized = Some((records::global_name(record, domain)?, localized));
                }
                Ok(Some(computed))
            }
            Owner::Ingress(key) => {
                let Some(record) = self.ingresses.get(key) else {
                    return Ok(None);
                };
                let inputs: Vec<MemberInput<'_>> = views
                    .iter()
                    .map(|view| {
                        view.input(|s| {
                            s.ingresses.get(key).map(|lb| ShardInput {
                                load_balancer: lb,
                                ready_endpoints: 1,
                            })
                        })
                    })
                    .collect();
                Ok(Some(records::compute_ingress(
                    record,
                    &inputs,
                    &self.hosts,
                    &self.settings.ttl,
                    reported,
                )))
            }
            Owner::Static(_) | Owner::Apex(_) => Ok(None),
        }
    }
}
