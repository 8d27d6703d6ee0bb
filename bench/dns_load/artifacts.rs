//! Files written from the generated [`Federation`]: the fedns directory source, the equivalent RFC
//! 1035 zone file for Knot and NSD, the dnsperf query file, and the `flip.json` EndpointSlice that
//! the update-latency step rewrites.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::federation::{
    self, DOMAIN, FEDERATION, Federation, FlipTarget, NAME_SERVER, NAMESPACE, NameRecord, Query,
    Rrset, TTL,
};

/// Name of the per-cluster file holding the flipped shard's EndpointSlice.
pub const FLIP_FILE: &str = "flip.json";

/// SOA timers of the peers' zone: refresh, retry, expire, minimum (negative TTL 30, spec section 5).
pub const SOA: &str = "ns1.example.com. hostmaster.example.com. 1 3600 600 86400 30";

fn list(items: Vec<Value>) -> Value {
    json!({ "apiVersion": "v1", "kind": "List", "items": items })
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn slice_name(service: usize, cluster: usize) -> String {
    let suffix = (cluster as u64 * 1_000_003 + service as u64).wrapping_mul(0x9E37_79B9) % 0xF_FFFF;
    format!("{}-{suffix:05x}", federation::service_name(service))
}

fn endpoint_slice(service: usize, cluster: usize, ready: bool) -> Value {
    let svc = federation::service_name(service);
    let pod = |n: u32| {
        let index = (cluster * 2 + n as usize) as u32;
        format!(
            "172.{}.{}.{}",
            16 + (index >> 16) % 16,
            (index >> 8) & 0xff,
            index & 0xff
        )
    };
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(service, cluster),
            "namespace": NAMESPACE,
            "labels": { "kubernetes.io/service-name": svc },
        },
        "addressType": "IPv4",
        "endpoints": [
            { "addresses": [pod(0)], "conditions": { "ready": ready } },
            { "addresses": [pod(1)], "conditions": { "ready": ready } },
        ],
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
    })
}

/// Writes the directory source into `dir` (which must not exist yet or be empty of stale clusters);
/// `strategy`, when given, is the Domain's default strategy for its records.
pub fn write_source(
    fed: &Federation,
    flip: Option<&FlipTarget>,
    strategy: Option<Value>,
    dir: &Path,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut domain = json!({
        "apiVersion": "multiclusterdns.kubefed.io/v1alpha1",
        "kind": "Domain",
        "metadata": { "name": FEDERATION, "namespace": "kube-federation-system" },
        "domain": DOMAIN,
        "nameServer": NAME_SERVER,
    });
    if let Some(strategy) = strategy {
        domain["strategy"] = strategy;
    }
    let mut federation_items = vec![domain];
    for service in 0..fed.params.services {
        federation_items.push(json!({
            "apiVersion": "multiclusterdns.kubefed.io/v1alpha1",
            "kind": "ServiceDNSRecord",
            "metadata": { "name": federation::service_name(service), "namespace": NAMESPACE },
            "spec": { "domainRef": FEDERATION, "recordTTL": 0 },
        }));
    }
    write_json(&dir.join("federation.json"), &list(federation_items))?;

    let mut services: Vec<Vec<Value>> = vec![Vec::new(); fed.clusters.len()];
    let mut slices: Vec<Vec<Value>> = vec![Vec::new(); fed.clusters.len()];
    for (service, shards) in fed.shards.iter().enumerate() {
        for shard in shards {
            let mut ingress = Vec::new();
            if let Some(ip) = shard.v4 {
                ingress.push(json!({ "ip": ip.to_string() }));
            }
            if let Some(ip) = shard.v6 {
                ingress.push(json!({ "ip": ip.to_string() }));
            }
            let svc = federation::service_name(service);
            services[shard.cluster].push(json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": svc, "namespace": NAMESPACE },
                "spec": {
                    "type": "LoadBalancer",
                    "selector": { "app": svc },
                    "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080 }],
                },
                "status": { "loadBalancer": { "ingress": ingress } },
            }));
            let flipped = flip.is_some_and(|f| f.service == service && f.cluster == shard.cluster);
            if !flipped {
                slices[shard.cluster].push(endpoint_slice(service, shard.cluster, shard.healthy));
            }
        }
    }

    for (index, cluster) in fed.clusters.iter().enumerate() {
        let cluster_dir = dir.join(&cluster.name);
        fs::create_dir_all(&cluster_dir)
            .with_context(|| format!("creating {}", cluster_dir.display()))?;
        let zone = &fed.zones[cluster.zone].name;
        let region = &fed.regions[cluster.region];
        let nodes = (0..3)
            .map(|n| {
                json!({
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": format!("{}-node-{n}", cluster.name),
                        "labels": {
                            "kubernetes.io/hostname": format!("{}-node-{n}", cluster.name),
                            "topology.kubernetes.io/zone": zone,
                            "topology.kubernetes.io/region": region,
                        },
                    },
                })
            })
            .collect();
        write_json(&cluster_dir.join("nodes.json"), &list(nodes))?;
        write_json(
            &cluster_dir.join("services.json"),
            &list(std::mem::take(&mut services[index])),
        )?;
        write_json(
            &cluster_dir.join("endpointslices.json"),
            &list(std::mem::take(&mut slices[index])),
        )?;
    }
    if let Some(flip) = flip {
        let path = dir.join(&fed.clusters[flip.cluster].name).join(FLIP_FILE);
        fs::write(&path, flip_contents(flip, true))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Contents of `<cluster>/flip.json`: a List holding the flipped shard's one EndpointSlice.
pub fn flip_contents(flip: &FlipTarget, ready: bool) -> Vec<u8> {
    serde_json::to_vec_pretty(&list(vec![endpoint_slice(
        flip.service,
        flip.cluster,
        ready,
    )]))
    .expect("a JSON value always serializes")
}

/// Writes the RFC 1035 master file equivalent to the directory source.
pub fn write_zone_file(records: &[NameRecord], path: &Path) -> Result<()> {
    let mut out = String::with_capacity(records.len() * 80);
    let _ = writeln!(
        out,
        "; generated by bench/dns_load: same data as the fedns source"
    );
    let _ = writeln!(out, "$ORIGIN {DOMAIN}.");
    let _ = writeln!(out, "$TTL {TTL}");
    let _ = writeln!(out, "@ 3600 IN SOA {SOA}");
    let _ = writeln!(out, "@ 3600 IN NS {NAME_SERVER}.");
    for record in records {
        match &record.rrset {
            Rrset::Addrs { v4, v6 } => {
                for a in v4 {
                    let _ = writeln!(out, "{}. {TTL} IN A {a}", record.name);
                }
                for a in v6 {
                    let _ = writeln!(out, "{}. {TTL} IN AAAA {a}", record.name);
                }
            }
            Rrset::Cname(target) => {
                let _ = writeln!(out, "{}. {TTL} IN CNAME {target}.", record.name);
            }
        }
    }
    fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Writes the dnsperf data file: one `name type` per line.
pub fn write_query_file(queries: &[Query], path: &Path) -> Result<()> {
    let mut out = String::with_capacity(queries.len() * 64);
    for q in queries {
        let _ = writeln!(out, "{} {}", q.name, q.qtype.as_str());
    }
    fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}
