//! `fedns corefile`: the cluster DNS configuration that sends the federation zones to fedns — a
//! CoreDNS server block per zone, or the kube-dns `stubDomains` ConfigMap. Pure text from the
//! Domains and fedns's DNS Service address; reading the Domains is the caller's job.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;

use crate::federation::model::DomainSpec;

/// What to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// CoreDNS server blocks, to add to the `Corefile` key of the `coredns` ConfigMap.
    #[default]
    Corefile,
    /// The kube-dns `ConfigMap` with `stubDomains` (clusters still on kube-dns).
    Stubdomains,
}

/// Why no configuration can be printed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorefileError {
    #[error("no Domain objects found: there is no federation zone to forward")]
    NoDomains,
    #[error("Domain {federation}: {zone:?} is not a DNS zone name CoreDNS can serve")]
    InvalidZone { federation: String, zone: String },
}

/// One zone to forward and the federations (Domain names) that use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedZone {
    /// Lowercase, without the trailing dot: `example.com`.
    pub zone: String,
    pub federations: Vec<String>,
}

/// The distinct zones of `domains`, sorted; several Domains on one zone give one entry.
pub fn forwarded_zones(domains: &[DomainSpec]) -> Result<Vec<ForwardedZone>, CorefileError> {
    let mut zones: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in domains {
        let zone = d.zone.trim().trim_end_matches('.').to_ascii_lowercase();
        if !is_zone_name(&zone) {
            return Err(CorefileError::InvalidZone {
                federation: d.federation.clone(),
                zone: d.zone.clone(),
            });
        }
        let federations = zones.entry(zone).or_default();
        if !federations.contains(&d.federation) {
            federations.push(d.federation.clone());
            federations.sort();
        }
    }
    if zones.is_empty() {
        return Err(CorefileError::NoDomains);
    }
    Ok(zones
        .into_iter()
        .map(|(zone, federations)| ForwardedZone { zone, federations })
        .collect())
}

/// Hostname-style labels only: anything else (spaces, braces, quotes) would break the Corefile or
/// the ConfigMap it is pasted into.
fn is_zone_name(zone: &str) -> bool {
    !zone.is_empty()
        && zone.len() <= 253
        && zone.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The configuration for `domains` in `format`, forwarding to fedns at `fedns`.
pub fn render(
    domains: &[DomainSpec],
    fedns: SocketAddr,
    format: Format,
) -> Result<String, CorefileError> {
    let zones = forwarded_zones(domains)?;
    Ok(match format {
        Format::Corefile => corefile(&zones, fedns),
        Format::Stubdomains => stub_domains(&zones, fedns),
    })
}

/// CoreDNS server blocks, one per zone. `cache` keeps fedns's TTLs (so a failover shows within the
/// record TTL, and negative answers for the SOA minimum); `forward` sends the whole zone to fedns.
pub fn corefile(zones: &[ForwardedZone], fedns: SocketAddr) -> String {
    let mut out = String::new();
    for (i, z) in zones.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "# fedns: federation zone of Domain {}",
            z.federations.join(", ")
        );
        let _ = writeln!(out, "{}:53 {{", z.zone);
        out.push_str("    errors\n    cache\n");
        let _ = writeln!(out, "    forward . {fedns}");
        out.push_str("}\n");
    }
    out
}

/// The kube-dns ConfigMap (`kube-system/kube-dns`) whose `stubDomains` send the zones to fedns.
/// kube-dns takes a bare IP (port 53) or `ip:port`.
pub fn stub_domains(zones: &[ForwardedZone], fedns: SocketAddr) -> String {
    let server = if fedns.port() == 53 {
        fedns.ip().to_string()
    } else {
        fedns.to_string()
    };
    let entries: Vec<String> = zones
        .iter()
        .map(|z| format!("\"{}\": [\"{server}\"]", z.zone))
        .collect();
    let mut out = String::new();
    out.push_str(
        "# fedns: kube-dns forwards the federation zones to fedns. Merge `stubDomains` into an\n\
         # existing kube-dns ConfigMap instead of replacing it.\n",
    );
    out.push_str("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kube-dns\n");
    out.push_str("  namespace: kube-system\ndata:\n  stubDomains: |\n");
    let _ = writeln!(out, "    {{{}}}", entries.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(federation: &str, zone: &str) -> DomainSpec {
        DomainSpec {
            federation: federation.into(),
            namespace: "kube-federation-system".into(),
            zone: zone.into(),
            name_server: None,
            default_strategy: None,
            name_server_addresses: Vec::new(),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_domain_gives_one_server_block_forwarding_to_fedns() {
        let text = render(
            &[domain("galactic", "example.com")],
            addr("10.96.0.53:53"),
            Format::Corefile,
        )
        .unwrap();
        assert_eq!(
            text,
            "# fedns: federation zone of Domain galactic\n\
             example.com:53 {\n    errors\n    cache\n    forward . 10.96.0.53:53\n}\n"
        );
    }

    #[test]
    fn zones_are_normalized_deduplicated_and_sorted() {
        let zones = forwarded_zones(&[
            domain("zeta", "Example.COM."),
            domain("alpha", "example.com"),
            domain("beta", "acme.org"),
        ])
        .unwrap();
        assert_eq!(
            zones,
            vec![
                ForwardedZone {
                    zone: "acme.org".into(),
                    federations: vec!["beta".into()],
                },
                ForwardedZone {
                    zone: "example.com".into(),
                    federations: vec!["alpha".into(), "zeta".into()],
                },
            ]
        );
        let text = corefile(&zones, addr("10.0.0.1:5353"));
        assert_eq!(text.matches(":53 {").count(), 2);
        assert!(text.find("acme.org:53").unwrap() < text.find("example.com:53").unwrap());
        assert!(text.contains("Domain alpha, zeta"), "{text}");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let text = render(
            &[domain("galactic", "example.com")],
            addr("[fd00::53]:5353"),
            Format::Corefile,
        )
        .unwrap();
        assert!(text.contains("forward . [fd00::53]:5353\n"), "{text}");
    }

    #[test]
    fn stub_domains_use_a_bare_ip_on_port_53_and_ip_port_otherwise() {
        let domains = [domain("galactic", "example.com"), domain("b", "acme.org")];
        let text = render(&domains, addr("10.96.0.53:53"), Format::Stubdomains).unwrap();
        assert!(
            text.contains(
                "  stubDomains: |\n    {\"acme.org\": [\"10.96.0.53\"], \"example.com\": [\"10.96.0.53\"]}\n"
            ),
            "{text}"
        );
        assert!(text.contains("name: kube-dns\n  namespace: kube-system\n"));
        let text = render(&domains, addr("10.96.0.53:5353"), Format::Stubdomains).unwrap();
        assert!(text.contains("[\"10.96.0.53:5353\"]"), "{text}");
    }

    #[test]
    fn stub_domains_json_parses() {
        let text = render(
            &[domain("galactic", "example.com")],
            addr("[fd00::53]:5353"),
            Format::Stubdomains,
        )
        .unwrap();
        let json = text.lines().last().unwrap().trim();
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(value["example.com"][0], "[fd00::53]:5353");
    }

    #[test]
    fn no_domains_is_an_error() {
        assert_eq!(
            render(&[], addr("10.0.0.1:53"), Format::Corefile),
            Err(CorefileError::NoDomains)
        );
    }

    #[test]
    fn a_zone_that_would_break_the_corefile_is_rejected() {
        for bad in ["exa mple.com", "example..com", "example.com {", ""] {
            assert_eq!(
                forwarded_zones(&[domain("galactic", bad)]),
                Err(CorefileError::InvalidZone {
                    federation: "galactic".into(),
                    zone: bad.into(),
                }),
                "{bad:?}"
            );
        }
    }
}
