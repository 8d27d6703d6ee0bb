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
    /// The zones fedns serves now: Domains and static zones (a static file's SOA wins). A zone
    /// whose SOA fields and file serial are unchanged is kept as it is (with its serial); a new
    /// or changed one starts at its old serial, or its file's, or the clock, and gets its final
    /// serial from [`Engine::settle_serials`] once its content is known.
    pub(super) fn zone_table(&self) -> ZoneTable {
        let old = self.store.zones();
        let mut by_apex: BTreeMap<Box<[u8]>, Arc<Zone>> = BTreeMap::new();
        let keep_or_new = |apex: &Name,
                           soa: SoaFields,
                           file_serial: Option<u32>,
                           shape: ZoneShape| match old.by_apex(apex) {
            Some(z) if z.soa == soa && z.file_serial == file_serial && z.shape == shape => {
                z.clone()
            }
            Some(z) => {
                let zone = Zone::new(apex.clone(), soa, z.serial()).with_shape(shape);
                Arc::new(match file_serial {
                    Some(f) => zone.with_file_serial(f),
                    None => zone,
                })
            }
            None => Arc::new(match file_serial {
                Some(f) => Zone::new(apex.clone(), soa, f)
                    .with_file_serial(f)
                    .with_shape(shape),
                None => Zone::new(apex.clone(), soa, self.clock).with_shape(shape),
            }),
        };
        for domain in self.domains.values() {
            let Ok(apex) = naming::parse_dotted("domain", &domain.zone) else {
                tracing::warn!(domain = %domain.federation, zone = %domain.zone, "invalid Domain zone: not served");
                continue;
            };
            let soa = self.domain_soa(domain, &apex);
            let zone = keep_or_new(&apex, soa, None, ZoneShape::default());
            by_apex.insert(naming::wire_key(&apex), zone);
        }
        for zone in &self.static_zones {
            let shape = crate::dns::zonefile::shape_of(zone);
            let z = keep_or_new(&zone.apex, zone.soa.clone(), Some(zone.serial), shape);
            // A zone file for a Domain's zone replaces its generated SOA and NS.
            by_apex.insert(naming::wire_key(&zone.apex), z);
        }
        ZoneTable::new(by_apex.into_values().collect())
    }

    /// Gives every zone whose content changed since its serial was last set a new serial, by the
    /// rule of [`next_serial`]; a zone the clock cannot number yet stays pending (see
    /// [`Engine::serial_deadline`]). Returns the zones whose serial changed.
    pub(super) fn settle_serials(&mut self, now_unix: u32) -> Vec<Arc<Zone>> {
        let zones = self.store.zones();
        let mut changed = Vec::new();
        for zone in zones.iter() {
            let digest = self.digests.get(zone.key()).copied().unwrap_or(0);
            let numbered = self.numbered.get(zone.key()).copied();
            let file_only = zone.file_serial.is_some()
                && self.file_digests.get(zone.key()).copied() == Some(digest);
            let current = zone.serial();
            let target = match (zone.file_serial, numbered) {
                // A static zone serving exactly its file has the file's serial, unless that would
                // take the serial back within this process.
                (Some(f), _) if file_only && !serial_gt(current, f) => Some(f),
                (_, Some(n)) if n == digest => None,
                // First numbering of a zone with computed content: the clock (a Domain zone
                // starts there), or its file's serial if that is ahead of the clock.
                (None, None) => Some(current),
                (Some(f), None) => Some(if serial_gt(f, now_unix) { f } else { now_unix }),
                _ => {
                    let next = next_serial(current, zone.file_serial, now_unix);
                    if next.is_none() {
                        self.serial_pending = true;
                        continue;
                    }
                    next
                }
            };
            self.numbered.insert(zone.key().into(), digest);
            if let Some(serial) = target
                && serial != current
            {
                zone.set_serial(serial);
                changed.push(zone.clone());
            }
        }
        changed
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

/// RFC 1982 serial number arithmetic: whether `a` is after `b`.
pub fn serial_gt(a: u32, b: u32) -> bool {
    a != b && (a.wrapping_sub(b) as i32) > 0
}

/// The serial of a zone whose content changed, from its current serial `prev`, its file's serial
/// (`floor`, for a zone file that also holds computed names) and the clock in seconds: the later
/// of the clock and the floor, if that is after `prev`. `None` when the clock has not passed
/// `prev` yet: the change gets its serial in the next second. So serials advance at most once a
/// second and never pass the clock, and a restart, which starts at the clock, never takes them
/// back. A floor ahead of the clock (a date-style `YYYYMMDDnn` serial) cannot be numbered by the
/// clock: it counts up by one from `prev`.
pub fn next_serial(prev: u32, floor: Option<u32>, now: u32) -> Option<u32> {
    let candidate = match floor {
        Some(f) if serial_gt(f, now) => f,
        _ => now,
    };
    if serial_gt(candidate, prev) {
        return Some(candidate);
    }
    floor
        .filter(|f| serial_gt(*f, now))
        .map(|_| prev.wrapping_add(1))
}

/// A starting SOA serial: seconds since the epoch, so restarts keep serials increasing.
pub(super) fn unix_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_follow_the_clock_at_most_once_a_second() {
        assert_eq!(next_serial(100, None, 200), Some(200));
        // A second change within the same second waits for the clock.
        assert_eq!(next_serial(200, None, 200), None);
        assert_eq!(next_serial(200, None, 201), Some(201));
    }

    #[test]
    fn a_file_serial_ahead_of_the_clock_counts_up() {
        let date = 2_030_010_100;
        assert_eq!(next_serial(1_000, Some(date), 1_800_000_000), Some(date));
        assert_eq!(next_serial(date, Some(date), 1_800_000_000), Some(date + 1));
        // A file serial behind the clock is passed by the clock.
        assert_eq!(next_serial(5, Some(7), 1_800_000_000), Some(1_800_000_000));
    }

    #[test]
    fn serial_comparison_wraps_as_rfc_1982_says() {
        assert!(serial_gt(1, u32::MAX));
        assert!(!serial_gt(u32::MAX, 1));
        assert!(serial_gt(2_025_010_101, 1_764_000_000));
    }
}
