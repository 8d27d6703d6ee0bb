//! Static zones: RFC 1035 master files in the zones directory, served beside the computed records.
//!
//! One file is one zone. The origin is the file's `$ORIGIN`, else its name without a `.zone`,
//! `.db` or `.txt` suffix (`example.com.zone` → `example.com.`). Each zone needs exactly one SOA at
//! its apex. A file that fails to load keeps its last good content, and the error names the file.
//! Which wins on a collision is decided in [`crate::federation::engine`]: static names beat computed ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::dns::masterfile;
use crate::dns::store::{ADDITIONAL, Break, SoaFields, ZoneShape, push_full_rr};
use crate::dns::wire::rtype;
use crate::federation::engine::{StaticSet, StaticZone};

/// A zone file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ZoneFileError {
    pub file: PathBuf,
    /// The bad line, when one is to blame.
    pub line: Option<usize>,
    pub message: String,
}

/// Parses one master file.
pub fn parse_zone(text: &str, path: &Path) -> Result<StaticZone, ZoneFileError> {
    let fail = |line: Option<usize>, message: String| ZoneFileError {
        file: path.to_owned(),
        line,
        message,
    };
    let (origin, records) = masterfile::read(text, origin_from_file_name(path))
        .map_err(|e| fail(Some(e.line), e.message))?;
    let origin =
        origin.ok_or_else(|| fail(None, "no $ORIGIN and no origin in the file name".into()))?;
    let mut soa = None;
    let mut names: BTreeMap<Name, Vec<StaticSet>> = BTreeMap::new();
    let mut lines: BTreeMap<(Name, u16), usize> = BTreeMap::new();
    for record in records {
        let line = Some(record.line);
        let name = record.name;
        if !origin.zone_of(&name) {
            return Err(fail(
                line,
                format!("{name} is outside the zone's origin {origin}"),
            ));
        }
        if record.rtype == rtype::SOA {
            if name != origin {
                return Err(fail(
                    line,
                    format!("SOA at {name}, not at the origin {origin}"),
                ));
            }
            if soa.is_some() {
                return Err(fail(line, "a second SOA".into()));
            }
            soa = Some(
                soa_fields(&record.rdata, record.ttl)
                    .ok_or_else(|| fail(line, "bad SOA".into()))?,
            );
            continue;
        }
        let sets = names.entry(name.clone()).or_default();
        match sets.iter_mut().find(|s| s.rtype == record.rtype) {
            // Duplicate records are dropped (RFC 2181 5); the set keeps its first TTL.
            Some(set) if set.rdatas.contains(&record.rdata) => {}
            Some(set) => {
                if matches!(record.rtype, rtype::CNAME | rtype::DNAME) {
                    return Err(fail(
                        line,
                        format!(
                            "{name} has more than one {}",
                            masterfile::type_name(record.rtype)
                        ),
                    ));
                }
                set.rdatas.push(record.rdata);
            }
            None => {
                lines.insert((name, record.rtype), record.line);
                sets.push(StaticSet {
                    rtype: record.rtype,
                    ttl: record.ttl,
                    rdatas: vec![record.rdata],
                });
            }
        }
    }
    for (name, sets) in &names {
        if let Some(cname) = sets.iter().find(|s| s.rtype == rtype::CNAME)
            && sets.len() > 1
        {
            let line = lines.get(&(name.clone(), cname.rtype)).copied();
            return Err(fail(line, format!("{name} has a CNAME beside other data")));
        }
    }
    let (soa, serial) = soa.ok_or_else(|| fail(None, format!("no SOA record at {origin}")))?;
    add_additional_data(&origin, &mut names);
    Ok(StaticZone {
        apex: origin,
        soa,
        serial,
        names,
        error: None,
    })
}

/// Gives every NS set (the apex's and each delegation's) the addresses of its in-zone name
/// servers as additional data (glue, for a delegation), in an [`ADDITIONAL`] pseudo-set.
fn add_additional_data(origin: &Name, names: &mut BTreeMap<Name, Vec<StaticSet>>) {
    let mut additions = Vec::new();
    for (name, sets) in names.iter() {
        let Some(ns) = sets.iter().find(|s| s.rtype == rtype::NS) else {
            continue;
        };
        let mut records = Vec::new();
        for rdata in &ns.rdatas {
            let Ok(target) = Name::read(&mut BinDecoder::new(rdata)) else {
                continue;
            };
            if !origin.zone_of(&target) {
                continue;
            }
            let Some(target_sets) = names.get(&target) else {
                continue;
            };
            for set in target_sets
                .iter()
                .filter(|s| matches!(s.rtype, rtype::A | rtype::AAAA))
            {
                for rdata in &set.rdatas {
                    let mut rr = Vec::new();
                    push_full_rr(&mut rr, &target, set.rtype, set.ttl, rdata);
                    records.push(rr);
                }
            }
        }
        if !records.is_empty() {
            additions.push((name.clone(), records));
        }
    }
    for (name, records) in additions {
        if let Some(sets) = names.get_mut(&name) {
            sets.push(StaticSet {
                rtype: ADDITIONAL,
                ttl: 0,
                rdatas: records,
            });
        }
    }
}

/// Where the zone leaves plain lookup: its delegations, DNAMEs and wildcards.
pub fn shape_of(zone: &StaticZone) -> ZoneShape {
    let mut shape = ZoneShape {
        broken: zone.error.clone(),
        ..ZoneShape::default()
    };
    for (name, sets) in &zone.names {
        let key = crate::federation::naming::wire_key(name);
        shape.wildcards |= name.is_wildcard();
        if *name != zone.apex && sets.iter().any(|s| s.rtype == rtype::NS) {
            shape.breaks.insert(key, Break::Cut);
        } else if sets.iter().any(|s| s.rtype == rtype::DNAME) {
            shape.breaks.insert(key, Break::Dname);
        }
    }
    shape
}

/// The origin a file meant to have, for a zone that cannot be loaded: its first `$ORIGIN`,
/// else its file name.
fn intended_origin(text: &str, path: &Path) -> Option<Name> {
    text.lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            words
                .next()
                .filter(|w| w.eq_ignore_ascii_case("$ORIGIN"))
                .and_then(|_| words.next())
                .and_then(|o| masterfile::parse_name(o, None).ok())
        })
        .or_else(|| origin_from_file_name(path))
}

/// The placeholder for a zone whose file cannot be loaded and that has no last good content.
fn broken_zone(apex: Name, error: &ZoneFileError) -> StaticZone {
    StaticZone {
        soa: SoaFields {
            mname: apex.clone(),
            rname: apex.clone(),
            refresh: 0,
            retry: 0,
            expire: 0,
            minimum: 0,
            ttl: 0,
        },
        apex,
        serial: 1,
        names: BTreeMap::new(),
        error: Some(error.to_string()),
    }
}

/// The SOA fields and serial from SOA RDATA in wire form (names uncompressed).
fn soa_fields(rdata: &[u8], ttl: u32) -> Option<(SoaFields, u32)> {
    let mut decoder = BinDecoder::new(rdata);
    let mname = Name::read(&mut decoder).ok()?;
    let rname = Name::read(&mut decoder).ok()?;
    let mut next = || -> Option<u32> {
        let b = decoder.read_slice(4).ok()?.unverified();
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (serial, refresh, retry, expire, minimum) = (next()?, next()?, next()?, next()?, next()?);
    Some((
        SoaFields {
            mname,
            rname,
            refresh,
            retry,
            expire,
            minimum,
            ttl,
        },
        serial,
    ))
}

fn origin_from_file_name(path: &Path) -> Option<Name> {
    let file = path.file_name()?.to_str()?;
    let stem = ["zone", "db", "txt"]
        .iter()
        .find_map(|ext| file.strip_suffix(&format!(".{ext}")))
        .unwrap_or(file);
    let mut name = Name::from_ascii(stem).ok()?;
    name.set_fqdn(true);
    Some(name)
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
                    line: None,
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
            let text = std::fs::read_to_string(&path);
            let origin = match &text {
                Ok(text) => intended_origin(text, &path),
                Err(_) => origin_from_file_name(&path),
            };
            let parsed = text
                .map_err(|e| ZoneFileError {
                    file: path.clone(),
                    line: None,
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
                    self.rejected += 1;
                    let last_good = self
                        .files
                        .remove(&path)
                        .and_then(|(_, _, z)| z)
                        .filter(|z| z.error.is_none());
                    let serve = match last_good {
                        Some(zone) => {
                            tracing::error!(error = %err, "zone file rejected; serving its last good content");
                            Some(zone)
                        }
                        None => {
                            tracing::error!(error = %err, zone = ?origin.as_ref().map(Name::to_ascii), "zone file rejected and no good content to serve: its zone answers SERVFAIL");
                            origin.map(|apex| broken_zone(apex, &err))
                        }
                    };
                    changed = true;
                    self.files.insert(path.clone(), (stamp.0, stamp.1, serve));
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
        // Loadable files first: a broken file never hides a good one for the same zone.
        let files = self
            .files
            .iter()
            .filter_map(|(p, (_, _, z))| Some((p, z.as_ref()?)));
        let (good, broken): (Vec<_>, Vec<_>) = files.partition(|(_, z)| z.error.is_none());
        for (path, zone) in good.into_iter().chain(broken) {
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
    fn every_record_type_loads() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/zones/zonetest.org.zone"),
        )
        .unwrap();
        let zone = parse_zone(&text, Path::new("zonetest.org.zone")).unwrap();
        let types = |n: &str| -> Vec<u16> {
            zone.names[&Name::from_ascii(n).unwrap()]
                .iter()
                .map(|s| s.rtype)
                .collect()
        };
        for (name, rtype) in [
            ("old.zonetest.org.", 39),
            ("loc.zonetest.org.", 29),
            ("rp.zonetest.org.", 17),
            ("spf.zonetest.org.", 99),
            ("uri.zonetest.org.", 256),
            ("afsdb.zonetest.org.", 18),
            ("apl.zonetest.org.", 42),
            ("null.zonetest.org.", 10),
            ("unknown.zonetest.org.", 65534),
        ] {
            assert_eq!(types(name), [rtype], "{name}");
        }
    }

    #[test]
    fn a_bad_line_is_named_with_file_and_line() {
        let text = format!("{ZONE}www IN A 192.0.2.1\nbad IN A 300.1.2.3\n");
        let err = parse_zone(&text, Path::new("z/acme.com.zone")).unwrap_err();
        assert_eq!(err.line, Some(8));
        assert!(err.to_string().starts_with("z/acme.com.zone:8: "), "{err}");
        let text = format!("{ZONE}www IN WHATEVER 1\n");
        let err = parse_zone(&text, Path::new("acme.com.zone")).unwrap_err();
        assert_eq!(err.line, Some(7), "{err}");
    }

    #[test]
    fn delegations_get_glue_and_the_zone_shape_marks_cuts_dnames_and_wildcards() {
        let text = format!(
            "{ZONE}sub IN NS ns.sub\nns.sub IN A 192.0.2.7\n*.w IN A 192.0.2.8\nold IN DNAME new.org.\n"
        );
        let zone = parse_zone(&text, Path::new("acme.com.zone")).unwrap();
        let sub = &zone.names[&Name::from_ascii("sub.acme.com.").unwrap()];
        let glue = sub.iter().find(|s| s.rtype == ADDITIONAL).expect("glue");
        assert_eq!(glue.rdatas.len(), 1);
        assert!(glue.rdatas[0].starts_with(b"\x02ns\x03sub\x04acme\x03com\x00\x00\x01"));
        let apex = &zone.names[&zone.apex];
        assert!(
            apex.iter().any(|s| s.rtype == ADDITIONAL),
            "ns1's address with the apex NS"
        );
        let shape = shape_of(&zone);
        let key = |n: &str| crate::federation::naming::wire_key(&Name::from_ascii(n).unwrap());
        assert_eq!(shape.breaks.get(&key("sub.acme.com.")), Some(&Break::Cut));
        assert_eq!(shape.breaks.get(&key("old.acme.com.")), Some(&Break::Dname));
        assert_eq!(shape.breaks.len(), 2, "the apex NS is no cut");
        assert!(shape.wildcards);
        assert!(shape.broken.is_none());
    }

    #[test]
    fn an_unloadable_zone_without_good_content_is_served_as_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acme.com.zone");
        std::fs::write(&path, "$ORIGIN other.org.\n@ IN SOA (((\n").unwrap();
        let mut zones = ZoneDir::new(Some(dir.path().to_owned()));
        assert!(zones.refresh());
        let served = zones.zones();
        assert_eq!(served.len(), 1);
        assert_eq!(
            served[0].apex.to_ascii(),
            "other.org.",
            "the file's $ORIGIN"
        );
        let error = served[0].error.as_deref().expect("broken");
        assert!(error.contains("acme.com.zone:2"), "{error}");
        assert!(shape_of(&served[0]).broken.is_some());
        // Fixed: served normally.
        std::fs::write(&path, ZONE).unwrap();
        assert!(zones.refresh());
        assert!(zones.zones()[0].error.is_none());
        assert!(zones.errors().is_empty());
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
