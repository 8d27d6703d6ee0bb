//! `fedns status`: what a federation looks like, from a running fedns (`--admin`, its
//! `/status`) or from the host cluster: KubeFedClusters with their Ready condition, zones and
//! region; how many Domains, ServiceDNSRecords and IngressDNSRecords exist; and per enabled
//! FederatedTypeConfig, how many federated objects exist and how many are propagated.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde_json::Value;

use super::join::DEFAULT_NAMESPACE;
use super::kubeconfig::KubeconfigFile;
use super::{Error, Output, api_code, dynamic_api, render_data};
use crate::k8s::crd::{Domain, IngressDNSRecord, KubeFedCluster, ServiceDNSRecord};
use crate::propagation::types::{FederatedTypeConfig, PropagationMode};

/// Flags of `fedns status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Admin address of a running fedns (its `/status`); without it the host cluster is read.
    #[arg(long, env = "FEDNS_ADMIN", conflicts_with_all = ["kubeconfig", "context"])]
    pub admin: Option<SocketAddr>,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context of the host cluster (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Control-plane namespace.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
}

/// A running fedns's `/status`, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminStatus {
    pub ready: bool,
    pub members: u64,
    pub ready_members: u64,
    pub service_records: u64,
    pub ingress_records: u64,
    pub names_served: u64,
    pub zones: Vec<ZoneSerial>,
    pub conflicts: Vec<String>,
    pub problems: Vec<String>,
    pub source_errors: Vec<String>,
    /// Watchers failing right now: cluster/resource, URL, for how long, the last error.
    pub failing_watches: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ZoneSerial {
    pub zone: String,
    pub serial: u64,
}

/// Parses the text of the admin `/status` (`key: value` lines; see `admin.rs`).
pub fn parse_admin_status(text: &str) -> AdminStatus {
    let mut s = AdminStatus::default();
    let number = |v: &str| v.split_whitespace().next().and_then(|n| n.parse().ok());
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "ready" => s.ready = value == "true",
            "members" => {
                s.members = number(value).unwrap_or_default();
                s.ready_members = value
                    .split_once('(')
                    .and_then(|(_, r)| number(r))
                    .unwrap_or_default();
            }
            "service records" => s.service_records = number(value).unwrap_or_default(),
            "ingress records" => s.ingress_records = number(value).unwrap_or_default(),
            "names served" => s.names_served = number(value).unwrap_or_default(),
            "zone" => {
                let mut parts = value.split_whitespace();
                let zone = parts.next().unwrap_or_default().to_string();
                let serial = parts
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_default();
                s.zones.push(ZoneSerial { zone, serial });
            }
            "conflict" => s.conflicts.push(value.to_string()),
            "problem" => s.problems.push(value.to_string()),
            "source error" => s.source_errors.push(value.to_string()),
            "watch failing" => s.failing_watches.push(value.to_string()),
            _ => {}
        }
    }
    s
}

/// The federation as the host cluster holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FederationStatus {
    pub namespace: String,
    pub clusters: Vec<ClusterRow>,
    /// `None`: the kind's CRD is not installed.
    pub domains: Option<usize>,
    pub service_dns_records: Option<usize>,
    pub ingress_dns_records: Option<usize>,
    pub types: Vec<TypeRow>,
}

/// One member cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRow {
    pub name: String,
    /// The Ready condition's status: `True`, `False` or `Unknown` (no condition yet).
    pub ready: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub api_endpoint: String,
    pub zones: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// One FederatedTypeConfig and its federated objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeRow {
    pub name: String,
    pub federated_kind: String,
    pub propagation: String,
    pub objects: usize,
    /// Propagation condition `True`.
    pub propagated: usize,
    /// Propagation condition `False`.
    pub not_propagated: usize,
    /// `None` when the objects could be listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A member's row from its KubeFedCluster.
pub fn cluster_row(cluster: &KubeFedCluster) -> ClusterRow {
    let status = cluster.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    ClusterRow {
        name: cluster.metadata.name.clone().unwrap_or_default(),
        ready: ready.map_or("Unknown".to_string(), |c| c.status.clone()),
        reason: ready
            .filter(|c| c.status != "True")
            .and_then(|c| c.reason.clone().or_else(|| c.message.clone())),
        api_endpoint: cluster.spec.api_endpoint.clone(),
        zones: status.zones,
        region: status.region,
    }
}

/// A type's row from its FTC and its federated objects.
pub fn type_row(ftc: &FederatedTypeConfig, objects: &[Value]) -> TypeRow {
    let condition = |o: &Value| {
        o["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Propagation"))
            .and_then(|c| c["status"].as_str())
            .map(str::to_string)
    };
    let statuses: Vec<Option<String>> = objects.iter().map(condition).collect();
    TypeRow {
        name: ftc.metadata.name.clone().unwrap_or_default(),
        federated_kind: ftc.spec.federated_type.kind.clone(),
        propagation: match ftc.spec.propagation {
            PropagationMode::Enabled => "Enabled",
            PropagationMode::Disabled => "Disabled",
        }
        .to_string(),
        objects: objects.len(),
        propagated: statuses
            .iter()
            .filter(|s| s.as_deref() == Some("True"))
            .count(),
        not_propagated: statuses
            .iter()
            .filter(|s| s.as_deref() == Some("False"))
            .count(),
        error: None,
    }
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line += cell;
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

fn count(n: Option<usize>) -> String {
    n.map_or("CRD not installed".to_string(), |n| n.to_string())
}

/// The report as readable tables.
pub fn render_text(s: &FederationStatus) -> String {
    let mut out = format!("Member clusters (namespace {}):\n", s.namespace);
    if s.clusters.is_empty() {
        out += "  none joined (fedns join <name> --cluster-context … --host-cluster-context …)\n";
    } else {
        let mut rows = vec![
            ["NAME", "READY", "ZONES", "REGION", "API ENDPOINT"]
                .map(String::from)
                .to_vec(),
        ];
        for c in &s.clusters {
            let ready = match &c.reason {
                Some(r) => format!("{} ({r})", c.ready),
                None => c.ready.clone(),
            };
            rows.push(vec![
                c.name.clone(),
                ready,
                if c.zones.is_empty() {
                    "-".into()
                } else {
                    c.zones.join(",")
                },
                c.region.clone().unwrap_or_else(|| "-".into()),
                c.api_endpoint.clone(),
            ]);
        }
        out += &indent(&table(&rows));
    }
    out += "\nDNS:\n";
    out += &indent(&table(&[
        vec!["Domains".into(), count(s.domains)],
        vec!["ServiceDNSRecords".into(), count(s.service_dns_records)],
        vec!["IngressDNSRecords".into(), count(s.ingress_dns_records)],
    ]));
    out += "\nFederated types:\n";
    if s.types.is_empty() {
        out += "  none enabled (fedns enable <type>)\n";
    } else {
        let mut rows = vec![
            [
                "TYPE",
                "KIND",
                "PROPAGATION",
                "OBJECTS",
                "PROPAGATED",
                "NOT PROPAGATED",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for t in &s.types {
            let mut row = vec![
                t.name.clone(),
                t.federated_kind.clone(),
                t.propagation.clone(),
            ];
            match &t.error {
                Some(e) => row.push(format!("cannot list: {e}")),
                None => row.extend([
                    t.objects.to_string(),
                    t.propagated.to_string(),
                    t.not_propagated.to_string(),
                ]),
            }
            rows.push(row);
        }
        out += &indent(&table(&rows));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// Runs `fedns status`.
pub async fn run(args: StatusArgs) -> Result<(), Error> {
    if let Some(addr) = args.admin {
        let body = tokio::task::spawn_blocking(move || admin_get(addr, "/status"))
            .await
            .map_err(|e| Error::Admin {
                addr: addr.to_string(),
                message: e.to_string(),
            })??;
        match args.output {
            Output::Text => print!("{body}"),
            output => print!("{}", render_data(&parse_admin_status(&body), output)),
        }
        return Ok(());
    }
    let client = KubeconfigFile::load(args.kubeconfig.as_deref())?
        .client(args.context.as_deref())
        .await?;
    let status = read_federation(&client, &args.namespace).await?;
    match args.output {
        Output::Text => print!("{}", render_text(&status)),
        output => print!("{}", render_data(&status, output)),
    }
    Ok(())
}

/// Counts objects of a kind; `None` when its CRD is not installed.
async fn count_of<K>(api: Api<K>, what: &str) -> Result<Option<usize>, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(Some(list.items.len())),
        Err(e) if api_code(&e) == Some(404) => Ok(None),
        Err(e) => Err(Error::kube(format!("listing {what} in the host"), &e)),
    }
}

/// Reads the federation's state from the host.
pub async fn read_federation(client: &Client, namespace: &str) -> Result<FederationStatus, Error> {
    let clusters: Api<KubeFedCluster> = Api::namespaced(client.clone(), namespace);
    let clusters = match clusters.list(&ListParams::default()).await {
        Ok(list) => list.items.iter().map(cluster_row).collect(),
        Err(e) if api_code(&e) == Some(404) => {
            return Err(Error::NotServed {
                what: "listing KubeFedClusters in the host".into(),
                api_version: crate::k8s::crd::CORE_API_VERSION.into(),
            });
        }
        Err(e) => return Err(Error::kube("listing KubeFedClusters in the host", &e)),
    };
    let mut status = FederationStatus {
        namespace: namespace.to_string(),
        clusters,
        domains: count_of(
            Api::<Domain>::namespaced(client.clone(), namespace),
            "Domains",
        )
        .await?,
        service_dns_records: count_of(
            Api::<ServiceDNSRecord>::all(client.clone()),
            "ServiceDNSRecords",
        )
        .await?,
        ingress_dns_records: count_of(
            Api::<IngressDNSRecord>::all(client.clone()),
            "IngressDNSRecords",
        )
        .await?,
        types: Vec::new(),
    };
    let ftcs: Api<FederatedTypeConfig> = Api::namespaced(client.clone(), namespace);
    let ftcs = match ftcs.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) if api_code(&e) == Some(404) => Vec::new(),
        Err(e) => return Err(Error::kube("listing FederatedTypeConfigs in the host", &e)),
    };
    for ftc in ftcs {
        let api: Api<DynamicObject> =
            dynamic_api(client, &ftc.spec.federated_type.api_resource(), None);
        let row = match api.list(&ListParams::default()).await {
            Ok(list) => {
                let objects: Vec<Value> = list
                    .items
                    .iter()
                    .map(|o| serde_json::to_value(o).unwrap_or_default())
                    .collect();
                type_row(&ftc, &objects)
            }
            Err(e) => TypeRow {
                error: Some(match api_code(&e) {
                    Some(404) => format!(
                        "{} CRD not installed (fedns enable {})",
                        ftc.spec.federated_type.kind,
                        ftc.spec.target_type.config_name()
                    ),
                    _ => e.to_string(),
                }),
                ..type_row(&ftc, &[])
            },
        };
        status.types.push(row);
    }
    Ok(status)
}

/// A minimal HTTP/1.0 GET for the admin endpoints: the body of a 200 answer.
pub fn admin_get(addr: SocketAddr, path: &str) -> Result<String, Error> {
    let err = |message: String| Error::Admin {
        addr: addr.to_string(),
        message,
    };
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| err(e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| err(e.to_string()))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| err(e.to_string()))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| err(e.to_string()))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| err("malformed HTTP response".into()))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(err(format!(
            "{}: {}",
            head.lines().next().unwrap_or(""),
            body.trim()
        )));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::crd::{ClusterCondition, KubeFedClusterSpec, KubeFedClusterStatus};
    use crate::propagation::types::{default_type, type_config};
    use serde_json::json;

    #[test]
    fn the_admin_status_text_parses_into_data() {
        let text = "ready:            true\nmembers:          3 (2 ready)\n\
            service records:  4\ningress records:  1\nnames served:     17\n\
            zone:             example.com. serial 12\n\
            conflict:         a served from x, y rejected\nproblem:          p1\n\
            watch failing:    c1/nodes http://c1/api/v1/nodes failing for 9s (4 attempts): 403 Forbidden: no\n";
        let s = parse_admin_status(text);
        assert!(s.ready);
        assert_eq!((s.members, s.ready_members), (3, 2));
        assert_eq!(
            (s.service_records, s.ingress_records, s.names_served),
            (4, 1, 17)
        );
        assert_eq!(
            s.zones,
            [ZoneSerial {
                zone: "example.com.".into(),
                serial: 12
            }]
        );
        assert_eq!(s.conflicts.len(), 1);
        assert_eq!(s.problems, ["p1"]);
        assert_eq!(
            s.failing_watches,
            ["c1/nodes http://c1/api/v1/nodes failing for 9s (4 attempts): 403 Forbidden: no"]
        );
    }

    fn cluster(name: &str, ready: Option<(&str, &str)>) -> KubeFedCluster {
        KubeFedCluster {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: KubeFedClusterSpec {
                api_endpoint: format!("https://{name}:6443"),
                ..Default::default()
            },
            status: ready.map(|(status, reason)| KubeFedClusterStatus {
                conditions: vec![ClusterCondition {
                    type_: "Ready".into(),
                    status: status.into(),
                    reason: Some(reason.into()),
                    ..Default::default()
                }],
                zones: vec!["us-a".into()],
                region: Some("us".into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn cluster_rows_show_readiness_and_why_not() {
        let up = cluster_row(&cluster("east", Some(("True", "ClusterReady"))));
        assert_eq!((up.ready.as_str(), up.reason), ("True", None));
        assert_eq!(up.region.as_deref(), Some("us"));
        let down = cluster_row(&cluster("west", Some(("False", "ClusterNotReachable"))));
        assert_eq!(down.reason.as_deref(), Some("ClusterNotReachable"));
        assert_eq!(cluster_row(&cluster("new", None)).ready, "Unknown");
    }

    #[test]
    fn type_rows_count_the_propagation_condition() {
        let ftc = type_config(&default_type("deployments").unwrap(), DEFAULT_NAMESPACE);
        let with =
            |s: &str| json!({"status": {"conditions": [{"type": "Propagation", "status": s}]}});
        let row = type_row(
            &ftc,
            &[with("True"), with("True"), with("False"), json!({})],
        );
        assert_eq!((row.objects, row.propagated, row.not_propagated), (4, 2, 1));
        assert_eq!(row.federated_kind, "FederatedDeployment");
    }

    #[test]
    fn the_text_report_is_a_table() {
        let status = FederationStatus {
            namespace: "fed".into(),
            clusters: vec![cluster_row(&cluster(
                "east",
                Some(("True", "ClusterReady")),
            ))],
            domains: Some(1),
            service_dns_records: None,
            ingress_dns_records: Some(0),
            types: vec![type_row(
                &type_config(&default_type("services").unwrap(), "fed"),
                &[],
            )],
        };
        let text = render_text(&status);
        assert!(
            text.contains("  NAME  READY  ZONES  REGION  API ENDPOINT\n"),
            "{text}"
        );
        assert!(
            text.contains("  east  True   us-a   us      https://east:6443\n"),
            "{text}"
        );
        assert!(
            text.contains("ServiceDNSRecords  CRD not installed"),
            "{text}"
        );
        assert!(
            text.contains("services  FederatedService  Enabled"),
            "{text}"
        );
    }
}
