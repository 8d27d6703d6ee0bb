//! The one writer to the host cluster: ServiceDNSRecord / IngressDNSRecord status and their
//! DNSEndpoints (`service-<name>`, `ingress-<name>`, labelled as managed by fedns), written only when
//! their content changed, retried with backoff on failure. Nothing is ever written to members.
//!
//! With several replicas only the lease holder writes ([`Leadership`]): a write batch is abandoned
//! the moment leadership is lost, and a new term starts from nothing known, rewriting every record
//! (another replica may have written in between, so what this one remembers is not the truth).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::federation::engine::Owner;
use crate::federation::model::ObjectKey;
use crate::federation::worker::EngineHandle;
use crate::k8s::crd::{DNSEndpoint, IngressDNSRecord, KubeFedCluster, ServiceDNSRecord};
use crate::k8s::lease::Leadership;
use crate::k8s::record_status::{RecordOutputs, fingerprint};
use crate::shutdown::Shutdown;

/// Field manager of fedns's server-side applies.
pub use crate::k8s::FIELD_MANAGER;
/// Label on every DNSEndpoint fedns writes.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "fedns");

const TICK: Duration = Duration::from_millis(100);
/// Records whose outputs are computed per query to the engine thread, so its batches keep flowing.
const CHUNK: usize = 200;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Writes record outputs, and members' topology into their KubeFedCluster status, while this
/// replica leads, until shut down. `namespace` is the control-plane namespace.
pub async fn run(
    host: Client,
    namespace: String,
    engine: EngineHandle,
    mut leadership: Leadership,
    shutdown: Shutdown,
) {
    let clusters = Api::<KubeFedCluster>::namespaced(host.clone(), &namespace);
    let recorder = Recorder::new(
        host.clone(),
        Reporter {
            controller: "fedns".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let mut writer = Writer::default();
    // The term `writer` belongs to; `None` before the first.
    let mut term: Option<u64> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.wait() => return,
        }
        let Some(current) = leadership.term() else {
            // A follower writes nothing; the engine's dirty set stays bounded by the records.
            tokio::select! {
                _ = leadership.acquired() => {}
                _ = shutdown.wait() => return,
            }
            continue;
        };
        if term != Some(current) {
            tracing::info!(
                term = current,
                "leading: writing every record's status again"
            );
            writer = Writer {
                rewrite_all: true,
                ..Writer::default()
            };
            term = Some(current);
        }
        tokio::select! {
            keep = writer.write_batch(&host, &clusters, &recorder, &engine) => if !keep {
                return;
            },
            // Lost mid-batch: stop at once; the next term starts afresh anyway.
            _ = leadership.lost() => {
                tracing::info!("no longer the leader: status writes stopped");
            }
        }
    }
}

/// What the writer knows about what it wrote, within one term.
#[derive(Debug, Default)]
struct Writer {
    /// What was last written per record, as a fingerprint (and its Ready reason, for Events).
    written: HashMap<Owner, (u64, (String, String))>,
    pending: Vec<Owner>,
    topologies: HashMap<String, (Vec<String>, Option<String>)>,
    retry: BTreeMap<Owner, (Instant, u32)>,
    /// Every record is due once the view is complete (the start of a term).
    rewrite_all: bool,
}

/// The node topology a KubeFedCluster's status reports (nothing unless fedns wrote it there).
fn reported_topology(cluster: &KubeFedCluster) -> (Vec<String>, Option<String>) {
    match &cluster.status {
        Some(s)
            if s.topology_source.as_deref()
                == Some(crate::source::kubernetes::host::TOPOLOGY_FROM_NODES) =>
        {
            (s.zones.clone(), s.region.clone())
        }
        _ => (Vec::new(), None),
    }
}

impl Writer {
    /// One batch: at most [`CHUNK`] records, and members' topology. False when the engine is gone.
    async fn write_batch(
        &mut self,
        host: &Client,
        clusters: &Api<KubeFedCluster>,
        recorder: &Recorder,
        engine: &EngineHandle,
    ) -> bool {
        let Self {
            written,
            pending,
            topologies,
            retry,
            rewrite_all,
        } = self;
        let now = Instant::now();
        let stamp = Time(crate::k8s::timestamp(k8s_openapi::jiff::Timestamp::now()));
        let due: Vec<Owner> = retry
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(o, _)| o.clone())
            .collect();
        // Nothing is written from a partial view: wait for the first full listing.
        // Computed on the engine thread; `pending` goes there and comes back without the chunk.
        let mut queue = std::mem::take(pending);
        let rewrite = *rewrite_all;
        let answer = engine
            .query(move |e| {
                if !e.store().is_synced() {
                    return (queue, None);
                }
                let topology = e.node_topologies();
                queue.extend(e.take_status_dirty());
                if rewrite {
                    queue.extend(e.record_owners());
                }
                queue.extend(due);
                queue.sort();
                queue.dedup();
                let chunk: Vec<Owner> = queue.drain(..queue.len().min(CHUNK)).collect();
                let work: Vec<(Owner, Option<RecordOutputs>)> = chunk
                    .into_iter()
                    .map(|o| {
                        let out = e.outputs(&o, now, stamp.clone());
                        (o, out)
                    })
                    .collect();
                (queue, Some((work, topology)))
            })
            .await;
        let Some((queue, computed)) = answer else {
            return false;
        };
        *pending = queue;
        let Some((work, topology)) = computed else {
            return true;
        };
        *rewrite_all = false;
        for (member, zones, region) in topology {
            let current = (zones, region);
            if topologies.get(&member) == Some(&current) {
                continue;
            }
            let first = !topologies.contains_key(&member);
            if first {
                // First time in this process: write only what the KubeFedCluster does not
                // already say (a restart rewrites nothing; stale node topology is cleared).
                match clusters.get_opt(&member).await {
                    Ok(Some(c)) if reported_topology(&c) == current => {
                        topologies.insert(member, current);
                        continue;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        topologies.insert(member, current);
                        continue;
                    }
                    Err(_) => continue,
                }
            }
            let empty = current.0.is_empty() && current.1.is_none();
            let patch = json!({ "status": {
                "zones": current.0,
                "region": current.1,
                "topologySource": (!empty).then_some(crate::source::kubernetes::host::TOPOLOGY_FROM_NODES),
            } });
            match clusters
                .patch_status(&member, &crate::k8s::patch_params(), &Patch::Merge(&patch))
                .await
            {
                // Members listed as contexts have no KubeFedCluster: nothing to write.
                Ok(_) => {
                    topologies.insert(member, current);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    topologies.insert(member, current);
                }
                Err(error) => {
                    tracing::debug!(%member, %error, "KubeFedCluster topology not written; retrying");
                }
            }
        }
        for (owner, outputs) in work {
            let print = outputs.as_ref().map(|o| (fingerprint(o), ready_reason(o)));
            let result = match (&outputs, &print) {
                (Some(_), Some(p)) if written.get(&owner).is_some_and(|w| w.0 == p.0) => {
                    retry.remove(&owner);
                    continue;
                }
                (Some(out), _) => write(host, &owner, out).await,
                (None, _) if written.contains_key(&owner) => remove(host, &owner).await,
                (None, _) => {
                    retry.remove(&owner);
                    continue;
                }
            };
            match result {
                Ok(()) => {
                    retry.remove(&owner);
                    match (outputs, print) {
                        (Some(out), Some(print)) => {
                            let before = written.get(&owner).map(|w| &w.1);
                            if before != Some(&print.1) {
                                event(recorder, &owner, &out).await;
                            }
                            written.insert(owner, print);
                        }
                        _ => {
                            written.remove(&owner);
                        }
                    }
                }
                Err(error) => {
                    let attempts = retry.get(&owner).map_or(0, |(_, n)| *n) + 1;
                    let delay = (Duration::from_millis(500) * 2u32.saturating_pow(attempts))
                        .min(MAX_BACKOFF);
                    tracing::warn!(%owner, %error, attempts, "status write failed; retrying");
                    retry.insert(owner, (now + delay, attempts));
                }
            }
        }
        true
    }
}

/// The `Ready` condition's status and reason.
fn ready_reason(out: &RecordOutputs) -> (String, String) {
    let c = &out.status["conditions"][0];
    (
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

/// An Event on the record when its `Ready` condition changes: why it does or does not answer.
async fn event(recorder: &Recorder, owner: &Owner, out: &RecordOutputs) {
    let (kind, key) = match owner {
        Owner::Service(k) => ("ServiceDNSRecord", k),
        Owner::Ingress(k) => ("IngressDNSRecord", k),
        Owner::Static(_) | Owner::Apex(_) => return,
    };
    let condition = &out.status["conditions"][0];
    let ready = condition["status"] == "True";
    let reference = ObjectReference {
        api_version: Some("multiclusterdns.kubefed.io/v1alpha1".into()),
        kind: Some(kind.into()),
        name: Some(key.name.clone()),
        namespace: Some(key.namespace.clone()),
        ..Default::default()
    };
    let ev = Event {
        type_: if ready {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: condition["reason"].as_str().unwrap_or("Unknown").to_owned(),
        note: condition["message"].as_str().map(str::to_owned),
        action: "ComputeRecords".into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&ev, &reference).await {
        tracing::debug!(%owner, %error, "event not recorded");
    }
}

fn endpoint_name(owner: &Owner) -> Option<(&ObjectKey, String)> {
    match owner {
        Owner::Service(k) => Some((k, format!("service-{}", k.name))),
        Owner::Ingress(k) => Some((k, format!("ingress-{}", k.name))),
        Owner::Static(_) | Owner::Apex(_) => None,
    }
}

async fn write(host: &Client, owner: &Owner, out: &RecordOutputs) -> Result<(), kube::Error> {
    let Some((key, endpoint)) = endpoint_name(owner) else {
        return Ok(());
    };
    // A merge patch keeps fields it does not mention: send explicit nulls for the ones our status
    // no longer has (no clusters left, the Domain gone), so nothing stale stays behind.
    let mut status_patch = out.status.clone();
    if let Some(fields) = status_patch.as_object_mut() {
        for key in ["domain", "dns", "conditions"] {
            fields.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    let status = Patch::Merge(json!({ "status": status_patch }));
    let params = crate::k8s::patch_params();
    let result = match owner {
        Owner::Service(_) => Api::<ServiceDNSRecord>::namespaced(host.clone(), &key.namespace)
            .patch_status(&key.name, &params, &status)
            .await
            .map(drop),
        _ => Api::<IngressDNSRecord>::namespaced(host.clone(), &key.namespace)
            .patch_status(&key.name, &params, &status)
            .await
            .map(drop),
    };
    match result {
        // The record was deleted meanwhile: its removal comes as its own change.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        other => other?,
    }
    let mut object = json!({
        "apiVersion": "multiclusterdns.kubefed.io/v1alpha1",
        "kind": "DNSEndpoint",
        "metadata": {
            "name": endpoint,
            "namespace": key.namespace,
            "labels": { MANAGED_BY.0: MANAGED_BY.1 },
        },
        "spec": out.endpoint,
    });
    // Owned by its record: Kubernetes deletes it with the record, even while fedns is down.
    if let Some(uid) = &out.owner_uid {
        object["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "multiclusterdns.kubefed.io/v1alpha1",
            "kind": if matches!(owner, Owner::Service(_)) { "ServiceDNSRecord" } else { "IngressDNSRecord" },
            "name": key.name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": false,
        }]);
    }
    Api::<DNSEndpoint>::namespaced(host.clone(), &key.namespace)
        .patch(
            &endpoint,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .map(drop)
}

async fn remove(host: &Client, owner: &Owner) -> Result<(), kube::Error> {
    let Some((key, endpoint)) = endpoint_name(owner) else {
        return Ok(());
    };
    match Api::<DNSEndpoint>::namespaced(host.clone(), &key.namespace)
        .delete(&endpoint, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
