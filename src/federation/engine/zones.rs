//! The zones fedns serves: Domains (generated SOA and NS) and static zone files, with serials
//! that never go back.

use std::collections::BTreeMap;
use std::sync::Arc;

use hickory_proto::rr::Name;

use crate::dns::store::{SoaFields, Zone, ZoneShape, ZoneTable};
use crate::federation::model::DomainSpec;
use crate::federation::naming;

use super::Engine;

impl Engine {
    /// The zones fedns serves now: Domains and static zones (a static file's SOA wins).
    pub(super) fn zone_table(&self) -> ZoneTable {
        let old = self.store.zones();
        let mut by_apex: BTreeMap<Box<[u8]>, Arc<Zone>> = BTreeMap::new();
        let serial_base = unix_serial();
        let keep_or_new = |apex: &Name, soa: SoaFields, serial: u32, shape: ZoneShape| {
            match old.by_apex(apex) {
                Some(z) if z.soa == soa && z.shape == shape => z.clone(),
                // Serials never go back: secondaries and caches compare them.
                Some(z) => Arc::new(
                    Zone::new(apex.clone(), soa, serial.max(z.serial().wrapping_add(1)))
                        .with_shape(shape),
                ),
                None => Arc::new(Zone::new(apex.clone(), soa, serial).with_shape(shape)),
            }
        };
        for domain in self.domains.values() {
            let Ok(apex) = naming::parse_dotted("domain", &domain.zone) else {
                tracing::warn!(domain = %domain.federation, zone = %domain.zone, "invalid Domain zone: not served");
                continue;
            };
            let soa = self.domain_soa(domain, &apex);
            let zone = keep_or_new(&apex, soa, serial_base, ZoneShape::default());
            by_apex.insert(naming::wire_key(&apex), zone);
        }
        for zone in &self.static_zones {
            let shape = crate::dns::zonefile::shape_of(zone);
            let z = keep_or_new(&zone.apex, zone.soa.clone(), zone.serial.max(1), shape);
            // A zone file for a Domain's zone replaces its generated SOA and NS.
            by_apex.insert(naming::wire_key(&zone.apex), z);
        }
        ZoneTable::new(by_apex.into_values().collect())
    }

    pub(super) fn domain_soa(&self, domain: &DomainSpec, apex: &Name) -> SoaFields {
        let mname = name_server(domain, apex);
        let rname = naming::under(&["hostmaster"], apex).unwrap_or_else(|_| apex.clone());
        SoaFields {
            mname,
            rname,
            refresh: 3600,
            retry: 600,
            expire: 1_209_600,
            minimum: self.settings.negative_ttl,
            ttl: self.settings.apex_ttl,
        }
    }
}

pub(super) fn name_server(domain: &DomainSpec, apex: &Name) -> Name {
    domain
        .name_server
        .as_deref()
        .and_then(|ns| naming::parse_dotted("nameServer", ns).ok())
        .unwrap_or_else(|| naming::under(&["ns"], apex).unwrap_or_else(|_| apex.clone()))
}

/// A starting SOA serial: seconds since the epoch, so restarts keep serials increasing.
pub(super) fn unix_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32)
}
