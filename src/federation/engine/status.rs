//! What the status writer reads back: the records to write, which changed, and each one's outputs.

use std::time::Instant;

use super::claims::key_to_text;
use super::{Engine, Owner};

impl Engine {
    /// Every ServiceDNSRecord and IngressDNSRecord: what a new leader writes status for.
    pub fn record_owners(&self) -> Vec<Owner> {
        let services = self.services.keys().cloned().map(Owner::Service);
        let ingresses = self.ingresses.keys().cloned().map(Owner::Ingress);
        services.chain(ingresses).collect()
    }

    /// Records whose status and DNSEndpoint may have changed since the last call.
    pub fn take_status_dirty(&mut self) -> Vec<Owner> {
        std::mem::take(&mut self.status_dirty).into_iter().collect()
    }

    /// Names `owner` claims but another owner serves.
    pub(super) fn lost_names(&self, owner: &Owner) -> Vec<String> {
        let Some(owned) = self.owned.get(owner) else {
            return Vec::new();
        };
        owned
            .iter()
            .filter(|&&id| {
                self.names
                    .state(id)
                    .claimants
                    .first()
                    .is_some_and(|winner| **winner != *owner)
            })
            .map(|&id| key_to_text(self.names.key(id)))
            .collect()
    }

    /// What to write back for a record (`None`: the record is gone).
    pub fn outputs(
        &self,
        owner: &Owner,
        now: Instant,
        stamp: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    ) -> Option<crate::k8s::record_status::RecordOutputs> {
        match owner {
            Owner::Service(key) => {
                let record = self.services.get(key)?;
                let zone = self
                    .domains
                    .get(&record.domain_ref)
                    .map(|d| d.zone.as_str());
                let lost = self.lost_names(owner);
                let mut out = match self.compute(owner, now) {
                    Ok(Some(c)) => {
                        crate::k8s::record_status::service_outputs(zone, Ok(&c), &lost, stamp)
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        crate::k8s::record_status::service_outputs(zone, Err(&e), &lost, stamp)
                    }
                };
                out.owner_uid = record.uid.clone();
                Some(out)
            }
            Owner::Ingress(key) => match self.compute(owner, now) {
                Ok(Some(c)) => {
                    let mut out = crate::k8s::record_status::ingress_outputs(&c, stamp);
                    out.owner_uid = self.ingresses.get(key).and_then(|r| r.uid.clone());
                    Some(out)
                }
                _ => None,
            },
            Owner::Static(_) | Owner::Apex(_) => None,
        }
    }
}
