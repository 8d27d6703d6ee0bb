//! Human-readable explanations of why a name answers what it answers (`fedns explain`,
//! `GET /explain?name=`). Pure formatting over [`crate::federation::engine::Explanation`].

use std::fmt::Write;

use crate::federation::engine::{ClientExplanation, Explanation, Owner};
use crate::federation::locality::{self, Outcome, Strategy};
use crate::federation::records::{Computed, ShardHealth, ShardReport};

/// Renders an explanation as indented text.
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "name:   {}", e.name);
    match &e.zone {
        Some(zone) => {
            let _ = writeln!(out, "zone:   {zone}");
        }
        None => {
            let _ = writeln!(out, "zone:   none of ours (queries get REFUSED)");
        }
    }
    if let Some(apex) = &e.apex {
        let _ = writeln!(out, "serial: {}", apex.serial);
        for (peer, status) in &apex.secondaries {
            let _ = writeln!(out, "secondary: {peer}; {status}");
        }
    }
    match &e.served {
        Some((owner, entry)) => {
            let _ = writeln!(out, "owner:  {owner}");
            let _ = writeln!(out, "answer: {}", describe_entry(owner, entry));
        }
        None if e.empty_non_terminal => {
            let _ = writeln!(
                out,
                "answer: NOERROR, no data (empty non-terminal: names exist below it)"
            );
        }
        None if e.zone.is_some() => {
            let _ = writeln!(out, "answer: NXDOMAIN (no record owns this name)");
        }
        None => {}
    }
    for loser in &e.rejected {
        let _ = writeln!(
            out,
            "conflict: {loser} also claims this name; its data is NOT served"
        );
    }
    if let Some(err) = &e.record_error {
        let _ = writeln!(out, "error:  {err}");
    }
    if let Some(client) = &e.client {
        render_client(&mut out, client, e.computed.as_ref());
    }
    if let Some(computed) = &e.computed {
        if !computed.shards.is_empty() {
            let _ = writeln!(out, "shards:");
        }
        for s in &computed.shards {
            let topo = match (&s.region, s.zones.is_empty()) {
                (Some(r), false) => format!("region {r}, zones {}", s.zones.join(",")),
                (Some(r), true) => format!("region {r}, no zone label"),
                (None, _) => "no region label (global name only)".into(),
            };
            let targets: Vec<String> = s.targets.iter().map(|t| t.to_string()).collect();
            let mark = if s.health == ShardHealth::Healthy {
                "+"
            } else {
                "-"
            };
            let _ = writeln!(
                out,
                "  {mark} {:<16} {:<34} {} {}",
                s.cluster,
                s.health.describe(),
                topo,
                if targets.is_empty() {
                    String::new()
                } else {
                    format!("[{}]", targets.join(" "))
                }
            );
            for host in &s.unresolved {
                let _ = writeln!(out, "      hostname {host} not resolved");
            }
        }
        for p in &computed.problems {
            let cluster = p.cluster.as_deref().unwrap_or("record");
            let _ = writeln!(out, "problem ({cluster}): {}", p.error);
        }
    }
    out
}

/// The `--client` part: where the client is, the strategy, and why each cluster is in or out.
fn render_client(out: &mut String, c: &ClientExplanation, computed: Option<&Computed>) {
    let _ = writeln!(out, "client: {}", c.client);
    if let Some(err) = &c.error {
        let _ = writeln!(out, "  error: {err}");
        return;
    }
    match &c.location {
        Some((location, row)) => {
            let _ = writeln!(
                out,
                "  location: {location} ({row}; ECS scope /{})",
                c.scope
            );
        }
        None => {
            let searched = if c.geoip {
                "no clientNetworks row or mapped GeoIP network matches"
            } else {
                "no clientNetworks row matches"
            };
            let _ = writeln!(
                out,
                "  location: nowhere ({searched}; ECS scope /{})",
                c.scope
            );
        }
    }
    let (Some(choice), Some(computed)) = (&c.choice, computed) else {
        let _ = writeln!(
            out,
            "  strategy: none: this name answers every client alike (ECS scope /0)"
        );
        return;
    };
    let _ = writeln!(
        out,
        "  strategy: {} -> {}",
        c.strategy.label(),
        choice.outcome.label()
    );
    let shards = &computed.shards;
    let split = locality::weighted_split(&c.strategy, shards);
    let total: u64 = split.iter().map(|(_, w)| *w as u64).sum();
    let location = c.location.as_ref().map(|(l, _)| l);
    for (i, s) in shards.iter().enumerate() {
        let chosen = choice.clusters.contains(&i);
        let why = if s.health != ShardHealth::Healthy {
            format!("unhealthy: {}", s.health.describe())
        } else {
            cluster_reason(c, choice.outcome, s, location, chosen, &split, total, i)
        };
        let _ = writeln!(
            out,
            "  {} {:<16} {}",
            if chosen { "in " } else { "out" },
            s.cluster,
            why
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn cluster_reason(
    c: &ClientExplanation,
    outcome: Outcome,
    s: &ShardReport,
    location: Option<&locality::Location>,
    chosen: bool,
    split: &[(usize, u32)],
    total: u64,
    index: usize,
) -> String {
    let region = s.region.as_deref().unwrap_or("(none)");
    match (outcome, chosen) {
        (Outcome::Zone, true) => "in the client's zone".into(),
        (Outcome::Zone, false) => "not in the client's zone".into(),
        (Outcome::Region, true) => format!("in the client's region {region}"),
        (Outcome::Region, false) => format!("region {region} is not the client's"),
        (Outcome::Preferred, true) => format!(
            "region {region}: the first preferred region of {} with a healthy cluster",
            location.map_or("", |l| l.region.as_str())
        ),
        (Outcome::Preferred, false) => {
            format!("region {region}: a preferred region with a healthy cluster comes first")
        }
        (Outcome::Nowhere, _) => "the client is nowhere: every healthy cluster".into(),
        (Outcome::Primary, true) => format!("region {region} is a primary region"),
        (Outcome::Primary, false) => {
            format!("region {region} is not primary, and a primary region is healthy")
        }
        (Outcome::Secondary, _) => "no primary region has a healthy cluster: every healthy cluster".into(),
        (Outcome::Weighted, true) => {
            let w = split.iter().find(|(i, _)| *i == index).map_or(0, |(_, w)| *w);
            format!(
                "weight {w}: {:.1}% of answers (one cluster per answer)",
                w as f64 * 100.0 / total.max(1) as f64
            )
        }
        (Outcome::Weighted, false) => "weight 0 (not listed, or listed with 0)".into(),
        (Outcome::All, _) if matches!(c.strategy, Strategy::All) => "every healthy cluster".into(),
        (Outcome::All, _) if matches!(c.strategy, Strategy::Weighted { .. }) => {
            "no listed cluster is healthy: every healthy cluster".into()
        }
        (Outcome::All, _) => {
            "no healthy cluster in the client's zone, region or preferred regions: every healthy cluster".into()
        }
    }
}

/// What a served entry answers, in words.
fn describe_entry(owner: &Owner, entry: &[u8]) -> String {
    use crate::dns::store::{self, ADDITIONAL};
    use crate::dns::wire::rtype;
    match owner {
        Owner::Static(_) => {
            let types: Vec<String> = store::sets(entry)
                .filter(|s| s.rtype != ADDITIONAL && !s.is_apex_marker())
                .map(|s| hickory_proto::rr::RecordType::from(s.rtype).to_string())
                .collect();
            return format!("static records from a zone file: {}", types.join(", "));
        }
        Owner::Apex(_) if store::sets(entry).any(|s| s.is_apex_marker()) => {
            let ns: Vec<String> = store::sets(entry)
                .filter(|s| s.rtype == rtype::NS)
                .flat_map(rdatas)
                .map(|(_, rdata)| name_text(rdata))
                .collect();
            return format!("zone apex: SOA, NS {}", ns.join(" "));
        }
        _ => {}
    }
    let mut parts = Vec::new();
    let mut ttl = 0;
    let mut cname = None;
    for set in store::sets(entry) {
        for (set_ttl, rdata) in rdatas(set) {
            ttl = set_ttl;
            match set.rtype {
                rtype::A => {
                    if let Ok(a) = <[u8; 4]>::try_from(rdata) {
                        parts.push(format!("A {}", std::net::Ipv4Addr::from(a)));
                    }
                }
                rtype::AAAA => {
                    if let Ok(a) = <[u8; 16]>::try_from(rdata) {
                        parts.push(format!("AAAA {}", std::net::Ipv6Addr::from(a)));
                    }
                }
                rtype::CNAME => cname = Some(name_text(rdata)),
                _ => {}
            }
        }
    }
    let plain = match cname {
        Some(target) => format!(
            "CNAME {target} (ttl {ttl}): no healthy shard covers this name, so it falls back"
        ),
        None => format!("{} (ttl {ttl})", parts.join(", ")),
    };
    match crate::dns::variants::table(entry).and_then(|t| t.first()) {
        Some(&strategy) => format!(
            "{plain} for transfers and status; strategy {}: per-client answers (see --client)",
            crate::federation::locality::STRATEGY_LABELS
                .get(strategy as usize)
                .unwrap_or(&"unknown")
        ),
        None => plain,
    }
}

/// TTL and rdata of each record of a set.
fn rdatas<'a>(set: crate::dns::store::SetView<'a>) -> impl Iterator<Item = (u32, &'a [u8])> {
    set.records().map(|record| {
        let ttl = record
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        (ttl, record.get(10..).unwrap_or_default())
    })
}

/// An uncompressed wire name as presentation text.
fn name_text(wire: &[u8]) -> String {
    use hickory_proto::serialize::binary::BinDecodable;
    hickory_proto::rr::Name::from_bytes(wire)
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "(unreadable name)".into())
}

/// One line per owner with problems, for `/status`.
pub fn render_problems<'a>(
    problems: impl IntoIterator<Item = (&'a Owner, &'a Vec<String>)>,
) -> String {
    let mut out = String::new();
    for (owner, list) in problems {
        for p in list {
            let _ = writeln!(out, "{owner}: {p}");
        }
    }
    out
}
