//! What fedns writes back to the host cluster, computed purely from the engine's results:
//! `ServiceDNSRecord.status` / `IngressDNSRecord.status` the way KubeFed wrote them (one `dns[]`
//! entry per member cluster, sorted by cluster, with the Service's load balancer when its shard is
//! healthy), a `Ready` condition saying why a record has no answer, and the `DNSEndpoint` spec
//! (`service-<name>` / `ingress-<name>`) that ExternalDNS users push to their provider.

use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;

use crate::federation::model::LoadBalancer;
use crate::federation::naming::NameError;
use crate::federation::records::{Computed, NamedRecord, RecordData, ShardHealth};
use crate::k8s::crd::{
    ClusterDNS, ClusterIngressDNS, DNSEndpointSpec, Endpoint, IngressDNSRecordStatus,
    ServiceDNSRecordStatus,
};

/// Why a record does (not) answer, as a `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Everything written for one record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordOutputs {
    /// The whole `status` object (merge-patched).
    pub status: Value,
    pub endpoint: DNSEndpointSpec,
    /// The record's uid: the DNSEndpoint's owner, so Kubernetes removes it with the record.
    pub owner_uid: Option<String>,
}

fn lb_status(lb: &LoadBalancer) -> LoadBalancerStatus {
    let mut ingress: Vec<LoadBalancerIngress> = lb
        .ips
        .iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ..Default::default()
        })
        .collect();
    ingress.extend(lb.hostnames.iter().map(|h| LoadBalancerIngress {
        hostname: Some(h.clone()),
        ..Default::default()
    }));
    LoadBalancerStatus {
        ingress: (!ingress.is_empty()).then_some(ingress),
    }
}

/// The `Ready` condition of a ServiceDNSRecord.
pub fn service_readiness(
    computed: Result<&Computed, &NameError>,
    conflicts: &[String],
) -> Readiness {
    let computed = match computed {
        Ok(c) => c,
        Err(error) => {
            let reason = match error {
                NameError::UnknownDomain(_) => "DomainNotFound",
                NameError::InvalidLabel { .. } | NameError::TooLong { .. } => "InvalidName",
            };
            return Readiness {
                ready: false,
                reason,
                message: error.to_string(),
            };
        }
    };
    if !conflicts.is_empty() {
        return Readiness {
            ready: false,
            reason: "NameConflict",
            message: format!("names served by another owner: {}", conflicts.join(", ")),
        };
    }
    let healthy = computed
        .shards
        .iter()
        .filter(|s| s.health == ShardHealth::Healthy)
        .count();
    if healthy == 0 {
        let why: Vec<String> = computed
            .shards
            .iter()
            .map(|s| format!("{}: {}", s.cluster, s.health.describe()))
            .collect();
        return Readiness {
            ready: false,
            reason: "NoHealthyShard",
            message: if why.is_empty() {
                "no member cluster".into()
            } else {
                why.join("; ")
            },
        };
    }
    if let Some(p) = computed.problems.first() {
        return Readiness {
            ready: true,
            reason: "InvalidLabel",
            message: format!(
                "served, but {}{}",
                p.cluster
                    .as_deref()
                    .map(|c| format!("cluster {c}: "))
                    .unwrap_or_default(),
                p.error
            ),
        };
    }
    Readiness {
        ready: true,
        reason: "RecordsServed",
        message: format!("{healthy} of {} clusters healthy", computed.shards.len()),
    }
}

fn condition(r: &Readiness, now: Time) -> Vec<Condition> {
    vec![Condition {
        type_: "Ready".into(),
        status: if r.ready { "True" } else { "False" }.into(),
        reason: r.reason.into(),
        message: r.message.clone(),
        last_transition_time: now,
        observed_generation: None,
    }]
}

/// `ServiceDNSRecord.status`: `domain`, `dns[]` sorted by cluster, and the `Ready` condition.
pub fn service_status(zone: Option<&str>, computed: Option<&Computed>) -> ServiceDNSRecordStatus {
    let dns = computed
        .map(|c| {
            c.shards
                .iter()
                .map(|s| ClusterDNS {
                    cluster: Some(s.cluster.clone()),
                    load_balancer: if s.health == ShardHealth::Healthy {
                        lb_status(&s.load_balancer)
                    } else {
                        LoadBalancerStatus::default()
                    },
                    zones: s.zones.clone(),
                    region: s.region.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    ServiceDNSRecordStatus {
        domain: zone.map(str::to_owned),
        dns,
        conditions: Vec::new(),
    }
}

/// `IngressDNSRecord.status`: the Ingress load balancer of every serving cluster that has one.
pub fn ingress_status(computed: &Computed) -> IngressDNSRecordStatus {
    IngressDNSRecordStatus {
        dns: computed
            .shards
            .iter()
            .filter(|s| s.health == ShardHealth::Healthy)
            .map(|s| ClusterIngressDNS {
                cluster: Some(s.cluster.clone()),
                load_balancer: lb_status(&s.load_balancer),
            })
            .collect(),
        conditions: Vec::new(),
    }
}

/// The DNSEndpoint spec for a record's names: sorted by name, then type; no trailing dots.
pub fn endpoint_spec(records: &[NamedRecord]) -> DNSEndpointSpec {
    let mut endpoints = Vec::new();
    for r in records {
        let dns_name = r.name.to_ascii().trim_end_matches('.').to_owned();
        match &r.data {
            RecordData::Address { v4, v6, ttl } => {
                for (rtype, targets) in [
                    ("A", v4.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
                    ("AAAA", v6.iter().map(|a| a.to_string()).collect()),
                ] {
                    if !targets.is_empty() {
                        endpoints.push(Endpoint {
                            dns_name: dns_name.clone(),
                            targets,
                            record_type: rtype.into(),
                            record_ttl: Some(i64::from(*ttl)),
                            ..Default::default()
                        });
                    }
                }
            }
            RecordData::Cname { target, ttl } => endpoints.push(Endpoint {
                dns_name: dns_name.clone(),
                targets: vec![target.to_ascii().trim_end_matches('.').to_owned()],
                record_type: "CNAME".into(),
                record_ttl: Some(i64::from(*ttl)),
                ..Default::default()
            }),
        }
    }
    endpoints.sort_by(|a, b| (&a.dns_name, &a.record_type).cmp(&(&b.dns_name, &b.record_type)));
    DNSEndpointSpec { endpoints }
}

/// Outputs of a ServiceDNSRecord. `now` stamps the condition.
pub fn service_outputs(
    zone: Option<&str>,
    computed: Result<&Computed, &NameError>,
    conflicts: &[String],
    now: Time,
) -> RecordOutputs {
    let readiness = service_readiness(computed, conflicts);
    let ok = computed.ok();
    let mut status = service_status(zone, ok);
    status.conditions = condition(&readiness, now);
    let status = serde_json::to_value(status).unwrap_or(Value::Null);
    RecordOutputs {
        status,
        endpoint: endpoint_spec(ok.map_or(&[][..], |c| &c.records)),
        owner_uid: None,
    }
}

/// Outputs of an IngressDNSRecord.
pub fn ingress_outputs(computed: &Computed, now: Time) -> RecordOutputs {
    let served = !computed.records.is_empty();
    let readiness = Readiness {
        ready: served,
        reason: if served { "RecordsServed" } else { "NoTargets" },
        message: if served {
            format!("{} hosts served", computed.records.len())
        } else if let Some(p) = computed.problems.first() {
            p.error.to_string()
        } else {
            "no serving cluster has an Ingress load balancer for it".into()
        },
    };
    let mut status = ingress_status(computed);
    status.conditions = condition(&readiness, now);
    let status = serde_json::to_value(status).unwrap_or(Value::Null);
    RecordOutputs {
        status,
        endpoint: endpoint_spec(&computed.records),
        owner_uid: None,
    }
}

/// A fingerprint of what a write would change: everything but condition timestamps. The writer
/// keeps this (8 bytes) per record instead of the written JSON.
pub fn fingerprint(out: &RecordOutputs) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut status = out.status.clone();
    if let Some(conds) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conds {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastTransitionTime");
            }
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    status.to_string().hash(&mut h);
    out.endpoint.endpoints.hash(&mut h);
    // A record deleted and created again is a new object: write its status again.
    out.owner_uid.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::records::tests::{Member, domain, record};
    use crate::federation::records::{MemberInput, Reported, TtlPolicy, compute_service};
    use std::collections::BTreeMap;

    fn computed(members: &[Member]) -> Computed {
        let inputs: Vec<MemberInput<'_>> = members.iter().map(Member::input).collect();
        compute_service(
            &record("nginx"),
            &domain(),
            &inputs,
            &BTreeMap::new(),
            &TtlPolicy::default(),
            Reported::EveryMember,
        )
        .unwrap()
    }

    fn c1() -> Member {
        Member::new("c1").region("us").zone("us1")
    }
    fn c2() -> Member {
        Member::new("c2").region("eu").zone("eu1")
    }

    #[test]
    fn status_lists_every_cluster_sorted_with_lb_only_when_healthy() {
        let c = computed(&[c2().lb("10.0.0.2").not_ready(), c1().lb("10.0.0.1")]);
        let status = service_status(Some("example.com"), Some(&c));
        assert_eq!(status.domain.as_deref(), Some("example.com"));
        let clusters: Vec<_> = status
            .dns
            .iter()
            .map(|d| d.cluster.clone().unwrap())
            .collect();
        assert_eq!(clusters, ["c1", "c2"]);
        let ip = status.dns[0].load_balancer.ingress.as_ref().unwrap()[0]
            .ip
            .clone();
        assert_eq!(ip.as_deref(), Some("10.0.0.1"));
        assert!(
            status.dns[1].load_balancer.ingress.is_none(),
            "unhealthy: empty LB"
        );
        assert_eq!(status.dns[1].zones, ["eu1"]);
        assert_eq!(status.dns[1].region.as_deref(), Some("eu"));
    }

    #[test]
    fn endpoints_match_the_worked_case_sorted_and_without_trailing_dots() {
        let c = computed(&[c1().lb("10.20.30.1"), c2().service_without_lb()]);
        let spec = endpoint_spec(&c.records);
        let rows: Vec<String> = spec
            .endpoints
            .iter()
            .map(|e| format!("{} {} {}", e.dns_name, e.record_type, e.targets.join(",")))
            .collect();
        assert_eq!(
            rows,
            [
                "nginx.test.galactic.svc.eu.example.com CNAME nginx.test.galactic.svc.example.com",
                "nginx.test.galactic.svc.eu1.eu.example.com CNAME nginx.test.galactic.svc.eu.example.com",
                "nginx.test.galactic.svc.example.com A 10.20.30.1",
                "nginx.test.galactic.svc.us.example.com A 10.20.30.1",
                "nginx.test.galactic.svc.us1.us.example.com A 10.20.30.1",
            ]
        );
        assert!(spec.endpoints.iter().all(|e| e.record_ttl == Some(180)));
    }

    #[test]
    fn readiness_says_why_there_is_no_answer() {
        let r = service_readiness(Ok(&computed(&[c1().lb("10.0.0.1").not_ready()])), &[]);
        assert!(!r.ready);
        assert_eq!(r.reason, "NoHealthyShard");
        assert!(
            r.message.contains("c1: no ready endpoints"),
            "{}",
            r.message
        );
        let r = service_readiness(Err(&NameError::UnknownDomain("x".into())), &[]);
        assert_eq!(r.reason, "DomainNotFound");
        let r = service_readiness(
            Ok(&computed(&[c1().lb("10.0.0.1")])),
            &["a.example.com.".into()],
        );
        assert_eq!(r.reason, "NameConflict");
        let r = service_readiness(Ok(&computed(&[c1().lb("10.0.0.1")])), &[]);
        assert!(r.ready);
    }

    fn at(text: &str) -> Time {
        Time(text.parse().unwrap())
    }

    #[test]
    fn condition_timestamps_alone_are_not_a_change() {
        let c = computed(&[c1().lb("10.0.0.1")]);
        let a = service_outputs(Some("example.com"), Ok(&c), &[], at("2026-01-01T00:00:00Z"));
        let b = service_outputs(Some("example.com"), Ok(&c), &[], at("2026-01-02T00:00:00Z"));
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let d = computed(&[c1().lb("10.0.0.9")]);
        let c = service_outputs(Some("example.com"), Ok(&d), &[], at("2026-01-02T00:00:00Z"));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(a.status["conditions"][0]["type"], "Ready");
    }
}
