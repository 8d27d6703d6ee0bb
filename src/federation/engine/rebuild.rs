//! Recomputing everything against a new zone table, without a name ever going missing.

use std::sync::Arc;
use std::time::Instant;

use crate::federation::naming;
use crate::federation::records::RecordData;

use super::claims::{entry_digest, render};
use super::zones::name_server;
use super::{Claim, Engine, Owner};

impl Engine {
    /// Recomputes everything against a new zone table. Each name goes straight from its old to its
    /// new entry, so no name is ever missing in between.
    pub(super) fn rebuild(&mut self, now: Instant) {
        let table = self.zone_table();
        // Zones created or re-created here start at their new serial: no extra bump for this load.
        let fresh: Vec<Box<[u8]>> = {
            let old = self.store.zones();
            table
                .iter()
                .filter(|z| !old.iter().any(|o| Arc::ptr_eq(o, z)))
                .map(|z| z.key().into())
                .collect()
        };
        self.store.set_zones(table);
        // Every name in the store now: published, or an empty non-terminal.
        let known = self.names.len();
        let before = std::mem::replace(&mut self.names, super::names::Names::with_capacity(known));
        self.rebuilding = true;
        self.owned.clear();
        self.published = 0;
        self.problems.clear();

        self.file_digests.clear();
        for zone in self.static_zones.clone() {
            if zone.error.is_some() {
                // Answered SERVFAIL from its zone table entry; nothing to claim.
                continue;
            }
            let owner = Owner::Static(zone.apex.to_ascii());
            let claims = zone
                .names
                .iter()
                .map(|(name, sets)| {
                    let apex = name == &zone.apex;
                    (
                        naming::wire_key(name),
                        render(&Claim::Static {
                            apex,
                            sets: sets.clone(),
                        }),
                    )
                })
                .chain(
                    // A zone file may omit every record at the apex but its SOA.
                    (!zone.names.contains_key(&zone.apex)).then(|| {
                        (
                            naming::wire_key(&zone.apex),
                            render(&Claim::Static {
                                apex: true,
                                sets: Vec::new(),
                            }),
                        )
                    }),
                )
                .collect::<Vec<_>>();
            let file_digest = claims.iter().fold(0u64, |sum, (key, entry)| {
                sum.wrapping_add(entry_digest(key, entry))
            });
            self.file_digests
                .insert(naming::wire_key(&zone.apex), file_digest);
            self.set_claims(owner, claims);
        }
        for domain in self.domains.values().cloned().collect::<Vec<_>>() {
            let Ok(apex) = naming::parse_dotted("domain", &domain.zone) else {
                continue;
            };
            let ns = name_server(&domain, &apex);
            let in_zone = apex.zone_of(&ns) && ns != apex;
            let addresses = match in_zone {
                true if domain.name_server_addresses.is_empty() => {
                    self.settings.name_server_addresses.clone()
                }
                true => domain.name_server_addresses.clone(),
                false => Vec::new(),
            };
            let owner = Owner::Apex(apex.to_ascii());
            let mut claims = vec![(
                naming::wire_key(&apex),
                render(&Claim::Apex {
                    name_servers: vec![ns.clone()],
                    ttl: self.settings.apex_ttl,
                    addresses: addresses.clone(),
                }),
            )];
            if in_zone && addresses.is_empty() {
                let problem = format!(
                    "name server {ns} is inside the zone but has no address: it does not resolve \
                     (set nameServerAddresses)"
                );
                tracing::warn!(domain = %domain.federation, %problem, "Domain problem");
                self.problems.insert(owner.clone(), vec![problem]);
            } else if in_zone {
                let (v4, v6) = split_addresses(&addresses);
                let data = RecordData::Address {
                    v4,
                    v6,
                    ttl: self.settings.apex_ttl,
                };
                claims.push((naming::wire_key(&ns), render(&Claim::Record(data))));
            }
            self.set_claims(owner, claims);
        }
        self.recompute_all(self.computed_owners(), now);
        self.rebuilding = false;
        for key in before.keys() {
            if !self
                .names
                .get(key)
                .is_some_and(|s| s.published || s.below > 0)
            {
                self.store.remove(key);
            }
        }
        drop(before);
        for key in fresh {
            self.dirty_zones.remove(&key);
        }
        // Names may have moved between zones: count every zone's digest afresh, over the
        // names as published.
        self.store.commit();
        let zones = self.store.zones();
        let mut digests: super::HashMap<Box<[u8]>, u64> = zones
            .iter()
            .map(|z| (Box::<[u8]>::from(z.key()), 0))
            .collect();
        self.store.for_each(|key, entry| {
            if let Some(zone) = zones.find(key)
                && let Some(sum) = digests.get_mut(zone.key())
            {
                *sum = sum.wrapping_add(entry_digest(key, entry));
            }
        });
        drop(zones);
        self.digests = digests;
        for c in self.conflicts() {
            tracing::warn!(name = %c.name, winner = %c.winner, loser = %c.loser, "name conflict: the loser's data is not served");
        }
    }
}

/// IPv4 and IPv6 addresses apart.
pub(super) fn split_addresses(
    addresses: &[std::net::IpAddr],
) -> (Vec<std::net::Ipv4Addr>, Vec<std::net::Ipv6Addr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for a in addresses {
        match a {
            std::net::IpAddr::V4(a) => v4.push(*a),
            std::net::IpAddr::V6(a) => v6.push(*a),
        }
    }
    (v4, v6)
}
