//! Static zones: RFC 1035 master files in the zones directory, served beside the computed records.
//!
//! One file is one zone. The origin is the file's `$ORIGIN`, else its name without a `.zone`,
//! `.db` or `.txt` suffix (`example.com.zone` → `example.com.`). Each zone needs exactly one SOA at
//! its apex. A file that fails to load keeps its last good content, and the error names the file.
//! Which wins on a collision is decided in [`crate::federation::engine`]: static names beat computed ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use hickory_proto::serialize::txt::Parser;

use crate::dns::store::SoaFields;
use crate::federation::engine::{StaticSet, StaticZone};

/// A zone file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ZoneFileError {
    pub file: PathBuf,
    pub message: String,
}

/// Parses one master file.
pub fn parse_zone(text: &str, path: &Path) -> Result<StaticZone, ZoneFileError> {
    let fail = |message: String| ZoneFileError {
        file: path.to_owned(),
        message,
    };
    let origin = origin_from_file_name(path);
    let (origin, sets) = Parser::new(text, Some(path.to_owned()), origin)
        .parse()
        .map_err(|e| fail(e.to_string()))?;
    let mut soa = None;
    let mut names: BTreeMap<Name, Vec<StaticSet>> = BTreeMap::new();
    for (key, set) in sets {
        let name: Name = set.name().clone();
        if !origin.zone_of(&name) {
            return Err(fail(format!(
                "{name} is outside the zone's origin {origin}"
            )));
        }
        if key.record_type == RecordType::SOA {
            if name != origin {
                return Err(fail(format!("SOA at {name}, not at the origin {origin}")));
            }
            let record = set
                .records_without_rrsigs()
                .next()
                .ok_or_else(|| fail("empty SOA set".into()))?;
            if let RData::SOA(s) = &record.data {
                soa = Some((
                    SoaFields {
                        mname: s.mname.clone(),
                        rname: s.rname.clone(),
                        refresh: s.refresh as u32,
                        retry: s.retry as u32,
                        expire: s.expire as u32,
                        minimum: s.minimum,
                        ttl: record.ttl,
                    },
                    s.serial,
                ));
            }
            continue;
        }
        let mut rdatas = Vec::new();
        for record in set.records_without_rrsigs() {
            let mut buf = Vec::new();
            let mut encoder = BinEncoder::new(&mut buf);
            encoder.set_name_encoding(NameEncoding::Uncompressed);
            record
                .data
                .emit(&mut encoder)
                .map_err(|e| fail(format!("{name} {}: {e}", key.record_type)))?;
            rdatas.push(buf);
        }
        if key.record_type == RecordType::CNAME && set.records_count() > 1 {
            return Err(fail(format!("{name} has more than one CNAME")));
        }
        names.entry(name).or_default().push(StaticSet {
            rtype: u16::from(key.record_type),
            ttl: set.ttl(),
            rdatas,
        });
    }
    for (name, sets) in &names {
        if sets.len() > 1 && sets.iter().any(|s| s.rtype == u16::from(RecordType::CNAME)) {
            return Err(fail(format!("{name} has a CNAME beside other data")));
        }
    }
    let (soa, serial) = soa.ok_or_else(|| fail(format!("no SOA record at {origin}")))?;
    Ok(StaticZone {
        apex: origin,
        soa,
        serial,
        names,
    })
}

fn origin_from_file_name(path: &Path) -> Option<Name> {
    let file = path.file_name()?.to_str()?;
    let stem = ["zone", "db", "txt"]
        .iter()
        .find_map(|ext| file.strip_suffix(&format!(".{ext}")))
        .unwrap_or(file);
    Name::from_ascii(stem).ok()
}

/// The zone files of a directory with their last good parse.
#[derive(Debug, Default)]
pub struct ZoneDir {
    dir: Option<PathBuf>,
    files: BTreeMap<PathBuf, (SystemTime, u64, Option<StaticZone>)>,
    errors: BTreeMap<PathBuf, ZoneFileError>,
    /// Loads rejected since [`ZoneDir::take_rejected`] was last called (for the metrics).
    rejected: u64,
}

impl ZoneDir {
    /// `None` serves no static zones.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            ..Self::default()
        }
    }

    /// Re-reads files that changed since the last call. Returns `true` if the zone set changed.
    pub fn refresh(&mut self) -> bool {
        let Some(dir) = &self.dir else {
            return false;
        };
        let mut seen = Vec::new();
        let mut changed = false;
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                let err = ZoneFileError {
                    file: dir.clone(),
                    message: e.to_string(),
                };
                if self.errors.insert(dir.clone(), err.clone()).is_none() {
                    tracing::error!(error = %err, "cannot read zones directory");
                }
                return false;
            }
        };
        self.errors.remove(dir);
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.ends_with('~') || !path.is_file() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let stamp = (
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            );
            seen.push(path.clone());
            if let Some((m, l, _)) = self.files.get(&path)
                && (*m, *l) == stamp
            {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| ZoneFileError {
                    file: path.clone(),
                    message: e.to_string(),
                })
                .and_then(|text| parse_zone(&text, &path));
            match parsed {
                Ok(zone) => {
                    tracing::info!(file = %path.display(), zone = %zone.apex, names = zone.names.len(), "zone file loaded");
                    self.errors.remove(&path);
                    self.files.insert(path, (stamp.0, stamp.1, Some(zone)));
                    changed = true;
                }
                Err(err) => {
                    tracing::error!(error = %err, "zone file rejected; serving its last good content");
                    self.rejected += 1;
                    let last_good = self.files.remove(&path).and_then(|(_, _, z)| z);
                    self.files
                        .insert(path.clone(), (stamp.0, stamp.1, last_good));
                    self.errors.insert(path, err);
                }
            }
        }
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains(p));
        self.errors.retain(|p, _| seen.contains(p) || p == dir);
        changed || self.files.len() != before
    }

    /// The zones to serve. Two files for one origin: the first in path order wins, reported.
    pub fn zones(&self) -> Vec<StaticZone> {
        let mut out: Vec<StaticZone> = Vec::new();
        for (path, (_, _, zone)) in &self.files {
            let Some(zone) = zone else { continue };
            if out.iter().any(|z| z.apex == zone.apex) {
                tracing::error!(file = %path.display(), zone = %zone.apex, "a second file for the same zone is ignored");
                continue;
            }
            out.push(zone.clone());
        }
        out
    }

    pub fn errors(&self) -> Vec<ZoneFileError> {
        self.errors.values().cloned().collect()
    }

    /// How many file loads were rejected since the last call.
    pub fn take_rejected(&mut self) -> u64 {
        std::mem::take(&mut self.rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "\
$ORIGIN acme.com.
$TTL 300
@       IN SOA ns1.acme.com. hostmaster.acme.com. 2024010101 3600 600 86400 30
@       IN NS  ns1.acme.com.
ns1     IN A   192.0.2.53
nginx   IN CNAME nginx.mynamespace.myfederation.svc.example.com.
";

    #[test]
    fn parses_soa_ns_glue_and_vanity_cname() {
        let zone = parse_zone(ZONE, Path::new("acme.com.zone")).unwrap();
        assert_eq!(zone.apex.to_ascii(), "acme.com.");
        assert_eq!(zone.serial, 2024010101);
        assert_eq!(zone.soa.minimum, 30);
        assert_eq!(zone.names.len(), 3);
        let nginx = &zone.names[&Name::from_ascii("nginx.acme.com.").unwrap()];
        assert_eq!(nginx[0].rtype, 5);
        assert!(nginx[0].rdatas[0].ends_with(b"\x07example\x03com\x00"));
    }

    #[test]
    fn origin_comes_from_the_file_name_without_origin_directive() {
        let text = ZONE.replace("$ORIGIN acme.com.\n", "");
        let zone = parse_zone(&text, Path::new("/z/acme.com.zone")).unwrap();
        assert_eq!(zone.apex.to_ascii(), "acme.com.");
    }

    #[test]
    fn zone_without_soa_is_rejected_naming_the_file() {
        let text = "$ORIGIN a.org.\nwww 60 IN A 192.0.2.1\n";
        let err = parse_zone(text, Path::new("a.org.zone")).unwrap_err();
        assert!(err.to_string().starts_with("a.org.zone: no SOA"), "{err}");
    }

    #[test]
    fn cname_beside_other_data_is_rejected() {
        let text = format!("{ZONE}nginx IN A 192.0.2.9\n");
        assert!(parse_zone(&text, Path::new("acme.com.zone")).is_err());
    }

    #[test]
    fn garbage_is_rejected_with_the_file_name() {
        let err = parse_zone("@ IN SOA ((( nonsense", Path::new("bad.zone")).unwrap_err();
        assert_eq!(err.file, Path::new("bad.zone"));
    }

    #[test]
    fn a_broken_edit_keeps_the_last_good_zone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acme.com.zone");
        std::fs::write(&path, ZONE).unwrap();
        let mut zones = ZoneDir::new(Some(dir.path().to_owned()));
        assert!(zones.refresh());
        assert_eq!(zones.zones().len(), 1);
        std::fs::write(&path, "garbage garbage\n").unwrap();
        zones.refresh();
        assert_eq!(zones.zones().len(), 1, "last good content still served");
        assert_eq!(zones.errors().len(), 1);
        std::fs::remove_file(&path).unwrap();
        assert!(zones.refresh());
        assert!(zones.zones().is_empty());
        assert!(zones.errors().is_empty());
    }
}
