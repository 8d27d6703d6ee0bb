//! GeoIP for client locality: `--geoip-database` (a MaxMind DB file such as GeoLite2-Country)
//! and the config's `geoipRegions` (`{<ISO country or continent code>: <region>}`).
//!
//! The database is read once, at startup: [`load`] walks every network in it and keeps those
//! whose country (else continent) code `geoipRegions` maps ([`mapped`], pure). They become rows of
//! the [`LocationTable`](crate::federation::locality::LocationTable) beside `clientNetworks`,
//! so the answer path looks a client up in one allocation-free longest-prefix index and never
//! reads the database.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use rustc_hash::FxHashMap;

use crate::dns::rrl::Prefix;

/// The code a database network was mapped by: its country's ISO code, or its continent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GeoipCode {
    /// Whether `code` is the continent's (the country's was not in `geoipRegions`).
    pub continent: bool,
    /// Two ASCII capitals: `DE`, `US`; continents `EU`, `NA`, `AS`, ...
    pub code: [u8; 2],
}

impl GeoipCode {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("??")
    }
}

impl std::fmt::Display for GeoipCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.continent {
            "continent"
        } else {
            "country"
        };
        write!(f, "{kind} {}", self.as_str())
    }
}

/// A network of the database whose code `geoipRegions` maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeoipNetwork {
    /// As the database has it: the prefix length is what an answer for it depends on.
    pub network: Prefix,
    pub code: GeoipCode,
}

/// `geoipRegions`, validated: two-letter codes (any case; the database's are capitals) to
/// non-empty regions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoipRegions(BTreeMap<[u8; 2], String>);

impl GeoipRegions {
    /// A key that is not two letters or an empty region is an error naming the key.
    pub fn new(map: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut out = BTreeMap::new();
        for (key, region) in map {
            let code = two_letters(key).ok_or_else(|| {
                format!("{key:?} is not an ISO country or continent code (two letters: DE, EU)")
            })?;
            if region.trim().is_empty() {
                return Err(format!("{key}: region must not be empty"));
            }
            out.insert(code, region.clone());
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The region `code` maps to.
    pub fn region(&self, code: GeoipCode) -> Option<&str> {
        self.0.get(&code.code).map(String::as_str)
    }

    /// The code a network with this country and continent is mapped by: the country's when
    /// `geoipRegions` has it, else the continent's; `None` when neither.
    pub fn code_for(&self, country: Option<&str>, continent: Option<&str>) -> Option<GeoipCode> {
        let known = |text: Option<&str>, continent| {
            let code = two_letters(text?)?;
            self.0
                .contains_key(&code)
                .then_some(GeoipCode { continent, code })
        };
        known(country, false).or_else(|| known(continent, true))
    }
}

fn two_letters(text: &str) -> Option<[u8; 2]> {
    match text.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

/// The networks `regions` maps, from the database's networks with their country and continent
/// codes; the others are dropped.
pub fn mapped<'a>(
    networks: impl IntoIterator<Item = (Prefix, Option<&'a str>, Option<&'a str>)>,
    regions: &GeoipRegions,
) -> Vec<GeoipNetwork> {
    networks
        .into_iter()
        .filter_map(|(network, country, continent)| {
            let code = regions.code_for(country, continent)?;
            Some(GeoipNetwork { network, code })
        })
        .collect()
}

/// The part of a GeoIP2/GeoLite2 record we read (Country and City databases have it).
#[derive(Debug, serde::Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<CountryPart<'a>>,
    #[serde(borrow, default)]
    continent: Option<ContinentPart<'a>>,
}

#[derive(Debug, serde::Deserialize)]
struct CountryPart<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Debug, serde::Deserialize)]
struct ContinentPart<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

/// Reads the MaxMind DB file at `path` and returns the networks `regions` maps. Errors name the
/// path.
pub fn load(path: &Path, regions: &GeoipRegions) -> Result<Vec<GeoipNetwork>, String> {
    let at = |e: maxminddb::MaxMindDbError| {
        format!("cannot read GeoIP database {}: {e}", path.display())
    };
    let reader = maxminddb::Reader::open_readfile(path).map_err(at)?;
    // Networks share records (one per country): decode each record once.
    let mut codes: FxHashMap<usize, Option<GeoipCode>> = FxHashMap::default();
    let mut out = Vec::new();
    for found in reader
        .networks(maxminddb::WithinOptions::default())
        .map_err(at)?
    {
        let found = found.map_err(at)?;
        let Some(offset) = found.offset() else {
            continue;
        };
        let code = match codes.get(&offset) {
            Some(code) => *code,
            None => {
                let record: Option<Record> = found.decode().map_err(at)?;
                let code = record.and_then(|r| {
                    let country = r.country.and_then(|c| c.iso_code);
                    regions.code_for(country, r.continent.and_then(|c| c.code))
                });
                codes.insert(offset, code);
                code
            }
        };
        let Some(code) = code else {
            continue;
        };
        let network = found.network().map_err(at)?;
        let addr: IpAddr = network.ip();
        out.push(GeoipNetwork {
            network: Prefix {
                addr,
                len: network.prefix(),
            },
            code,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions(pairs: &[(&str, &str)]) -> GeoipRegions {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        GeoipRegions::new(&map).unwrap()
    }

    fn net(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    #[test]
    fn mapped_countries_become_rows_then_continents_and_the_rest_is_dropped() {
        let r = regions(&[("de", "eu"), ("US", "us"), ("AS", "ap")]);
        let rows = mapped(
            [
                (net("192.0.2.0/24"), Some("DE"), Some("EU")),
                (net("198.51.100.0/25"), Some("US"), Some("NA")),
                (net("2001:db8::/32"), Some("JP"), Some("AS")),
                (net("203.0.113.0/24"), Some("BR"), Some("SA")),
                (net("203.0.114.0/24"), None, None),
            ],
            &r,
        );
        let got: Vec<_> = rows
            .iter()
            .map(|n| (n.network.to_string(), n.code.to_string(), r.region(n.code)))
            .collect();
        assert_eq!(
            got,
            [
                ("192.0.2.0/24".into(), "country DE".into(), Some("eu")),
                ("198.51.100.0/25".into(), "country US".into(), Some("us")),
                ("2001:db8::/32".into(), "continent AS".into(), Some("ap")),
            ]
        );
    }

    #[test]
    fn bad_geoip_regions_are_errors_naming_the_key() {
        let bad = |k: &str, v: &str| {
            GeoipRegions::new(&[(k.to_string(), v.to_string())].into_iter().collect()).unwrap_err()
        };
        assert!(bad("DEU", "eu").starts_with("\"DEU\" is not an ISO country"));
        assert!(bad("D1", "eu").starts_with("\"D1\""));
        assert_eq!(bad("DE", " "), "DE: region must not be empty");
    }

    #[test]
    fn a_missing_or_bad_database_is_an_error_naming_its_path() {
        let r = regions(&[("DE", "eu")]);
        let err = load(Path::new("/nonexistent/geo.mmdb"), &r).unwrap_err();
        assert!(
            err.starts_with("cannot read GeoIP database /nonexistent/geo.mmdb:"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.mmdb");
        std::fs::write(&junk, b"not a maxmind database").unwrap();
        let err = load(&junk, &r).unwrap_err();
        assert!(err.contains(&junk.display().to_string()), "{err}");
    }
}
