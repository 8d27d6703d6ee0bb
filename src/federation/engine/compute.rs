//! What one owner claims now: the model's slices and liveness turned into the inputs of the pure
//! record computation in [`crate::federation::records`].

use std::collections::BTreeSet;
use std::time::Instant;

use crate::federation::locality;
use crate::federation::naming::NameError;
use crate::federation::records::{self, Computed, MemberInput, ShardInput};

use super::{ClusterSlice, Engine, Owner};

/// A member's name, zones and region, and whether its targets may be served.
pub(super) type Topology<'a> = (&'a String, (&'a BTreeSet<String>, Option<&'a str>), bool);

impl Engine {
    /// Computes what `owner` claims now. `Ok(None)` means the owner no longer exists.
    pub(super) fn compute(
        &self,
        owner: &Owner,
        now: Instant,
    ) -> Result<Option<Computed>, NameError> {
        let empty = ClusterSlice::default();
        let topologies: Vec<Topology<'_>> = self
            .members
            .keys()
            .map(|c| {
                let slice = self.slices.get(c).unwrap_or(&empty);
                (
                    c,
                    (&slice.zones, slice.region.as_deref()),
                    self.is_serving(c, now),
                )
            })
            .collect();
        match owner {
            Owner::Service(key) => {
                let Some(record) = self.services.get(key) else {
                    return Ok(None);
                };
                let Some(domain) = self.domains.get(&record.domain_ref) else {
                    return Err(NameError::UnknownDomain(record.domain_ref.clone()));
                };
                let inputs: Vec<MemberInput<'_>> = topologies
                    .iter()
                    .map(|(c, (zones, region), serving)| {
                        let slice = self.slices.get(*c);
                        MemberInput {
                            cluster: c,
                            zones,
                            region: *region,
                            serving: *serving,
                            shard: slice.and_then(|s| {
                                s.services.get(key).map(|svc| ShardInput {
                                    load_balancer: &svc.load_balancer,
                                    ready_endpoints: s.ready_endpoints(key),
                                })
                            }),
                        }
                    })
                    .collect();
                let mut computed = records::compute_service(
                    record,
                    domain,
                    &inputs,
                    &self.hosts,
                    &self.settings.ttl,
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
                let inputs: Vec<MemberInput<'_>> = topologies
                    .iter()
                    .map(|(c, (zones, region), serving)| MemberInput {
                        cluster: c,
                        zones,
                        region: *region,
                        serving: *serving,
                        shard: self.slices.get(*c).and_then(|s| {
                            s.ingresses.get(key).map(|lb| ShardInput {
                                load_balancer: lb,
                                ready_endpoints: 1,
                            })
                        }),
                    })
                    .collect();
                Ok(Some(records::compute_ingress(
                    record,
                    &inputs,
                    &self.hosts,
                    &self.settings.ttl,
                )))
            }
            Owner::Static(_) | Owner::Apex(_) => Ok(None),
        }
    }
}
