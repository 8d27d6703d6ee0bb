//! Human-readable explanations of why a name answers what it answers (`fedns explain`,
//! `GET /explain?name=`). Pure formatting over [`crate::federation::engine::Explanation`].

use std::fmt::Write;

use crate::federation::engine::{Claim, Explanation, Owner};
use crate::federation::records::{RecordData, ShardHealth};

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
    match &e.served {
        Some((owner, claim)) => {
            let _ = writeln!(out, "owner:  {owner}");
            let _ = writeln!(out, "answer: {}", describe_claim(claim));
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

fn describe_claim(claim: &Claim) -> String {
    match claim {
        Claim::Record(RecordData::Address { v4, v6, ttl }) => {
            let mut parts: Vec<String> = v4.iter().map(|a| format!("A {a}")).collect();
            parts.extend(v6.iter().map(|a| format!("AAAA {a}")));
            format!("{} (ttl {ttl})", parts.join(", "))
        }
        Claim::Record(RecordData::Cname { target, ttl }) => format!(
            "CNAME {target} (ttl {ttl}): no healthy shard covers this name, so it falls back"
        ),
        Claim::Static { sets, .. } => {
            let types: Vec<String> = sets
                .iter()
                .filter(|s| s.rtype != crate::dns::store::ADDITIONAL)
                .map(|s| hickory_proto::rr::RecordType::from(s.rtype).to_string())
                .collect();
            format!("static records from a zone file: {}", types.join(", "))
        }
        Claim::Apex { name_servers, .. } => {
            let ns: Vec<String> = name_servers.iter().map(|n| n.to_string()).collect();
            format!("zone apex: SOA, NS {}", ns.join(" "))
        }
    }
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
