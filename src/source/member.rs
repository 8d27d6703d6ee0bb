//! The watcher set of one member cluster: LoadBalancer Services, EndpointSlices (with the core/v1
//! Endpoints fallback), Ingresses and Nodes, each a kube-runtime watcher whose objects are stripped
//! by [`normalize`] as they arrive.
//!
//! A relist of one kind (first listing, 410 Gone, reconnect) is buffered until complete and then
//! replaces that kind's objects atomically ([`SourceEvent::ResetMemberKind`]), so there is no window
//! of missing records. Watch errors, timeouts and 403s are logged and retried with a backoff capped
//! at a few seconds; they never withdraw anything. An *empty* relist of a kind that had objects is
//! not trusted (an API server restored empty, an RBAC slip): the old objects are kept and the event
//! is counted. Records go only when their objects are deleted, or when the member's grace period runs
//! out (see [`crate::engine`]).

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::normalize::{self, NormalizeError};
use crate::model::{MemberKind, MemberObject, MemberObjectId, ObjectKey, SourceEvent};

/// What the watchers of one member report besides model events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchNotice {
    /// The first full listing of this kind completed.
    Listed(String, MemberKind),
    /// The watch failed and will be retried.
    Restarted(String, MemberKind, String),
    /// An empty relist was ignored (the old objects are kept).
    EmptyRelistIgnored(String, MemberKind),
}

/// Exponential backoff from 100 ms, doubling, capped (default 4 s), with ±20% jitter; resets after
/// a success. kube-runtime's default grows to 30 s, which users measured as minute-long recoveries.
#[derive(Debug, Clone)]
pub struct CappedBackoff {
    next: Duration,
    min: Duration,
    max: Duration,
    seed: u64,
}

impl CappedBackoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64)
            | 1;
        Self {
            next: min,
            min,
            max,
            seed,
        }
    }

    fn jitter(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        0.8 + (self.seed % 1000) as f64 / 2500.0
    }
}

impl Default for CappedBackoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(4))
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next.mul_f64(self.jitter()).min(self.max);
        self.next = (self.next * 2).min(self.max);
        Some(delay)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The running watchers of one member; dropping it stops them.
#[derive(Debug)]
pub struct MemberWatchers {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for MemberWatchers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts one watcher per [`MemberKind`] for `cluster`.
pub fn spawn(
    cluster: &str,
    client: Client,
    events: mpsc::Sender<SourceEvent>,
    notices: mpsc::UnboundedSender<WatchNotice>,
) -> MemberWatchers {
    let w = |kind| Watch {
        cluster: cluster.to_owned(),
        kind,
        events: events.clone(),
        notices: notices.clone(),
    };
    let tasks = vec![
        tokio::spawn(
            w(MemberKind::Service).run(Api::<Service>::all(client.clone()), normalize::service),
        ),
        tokio::spawn(w(MemberKind::EndpointSlice).run(
            Api::<EndpointSlice>::all(client.clone()),
            normalize::endpoint_slice,
        )),
        tokio::spawn(
            w(MemberKind::Endpoints)
                .run(Api::<Endpoints>::all(client.clone()), normalize::endpoints),
        ),
        tokio::spawn(
            w(MemberKind::Ingress).run(Api::<Ingress>::all(client.clone()), normalize::ingress),
        ),
        tokio::spawn(w(MemberKind::Node).run(Api::<Node>::all(client), normalize::node)),
    ];
    MemberWatchers { tasks }
}

/// One kind in one member.
struct Watch {
    cluster: String,
    kind: MemberKind,
    events: mpsc::Sender<SourceEvent>,
    notices: mpsc::UnboundedSender<WatchNotice>,
}

impl Watch {
    async fn run<K>(self, api: Api<K>, normalize: fn(K) -> Result<MemberObject, NormalizeError>)
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
        K::DynamicType: Default,
    {
        let stream =
            watcher::watcher(api, watcher::Config::default()).backoff(CappedBackoff::default());
        let mut stream = std::pin::pin!(stream);
        let mut relist: Option<Vec<MemberObject>> = None;
        let mut listed_once = false;
        let mut had_objects = false;
        while let Some(event) = stream.next().await {
            let sent = match event {
                Ok(Event::Init) => {
                    relist = Some(Vec::new());
                    true
                }
                Ok(Event::InitApply(object)) => {
                    if let Some(buffer) = &mut relist
                        && let Some(object) = self.strip(object, normalize)
                    {
                        buffer.push(object);
                    }
                    true
                }
                Ok(Event::InitDone) => {
                    let objects = relist.take().unwrap_or_default();
                    if !listed_once {
                        listed_once = true;
                        let _ = self
                            .notices
                            .send(WatchNotice::Listed(self.cluster.clone(), self.kind));
                    }
                    if objects.is_empty() && had_objects {
                        tracing::warn!(cluster = %self.cluster, kind = self.kind.as_str(), "empty relist ignored: keeping the objects seen before");
                        let _ = self.notices.send(WatchNotice::EmptyRelistIgnored(
                            self.cluster.clone(),
                            self.kind,
                        ));
                        true
                    } else {
                        had_objects = !objects.is_empty();
                        self.send(SourceEvent::ResetMemberKind(
                            self.cluster.clone(),
                            self.kind,
                            objects,
                        ))
                        .await
                    }
                }
                Ok(Event::Apply(object)) => match self.strip(object, normalize) {
                    Some(object) => {
                        had_objects = true;
                        self.send(SourceEvent::ApplyMember(self.cluster.clone(), object))
                            .await
                    }
                    None => true,
                },
                Ok(Event::Delete(object)) => match self.id_of(&object) {
                    Some(id) => {
                        self.send(SourceEvent::DeleteMember(self.cluster.clone(), id))
                            .await
                    }
                    None => true,
                },
                Err(error) => {
                    tracing::warn!(cluster = %self.cluster, kind = self.kind.as_str(), %error, "watch failed; retrying (records are kept)");
                    let _ = self.notices.send(WatchNotice::Restarted(
                        self.cluster.clone(),
                        self.kind,
                        error.to_string(),
                    ));
                    true
                }
            };
            if !sent {
                return;
            }
        }
    }

    fn strip<K>(
        &self,
        object: K,
        normalize: fn(K) -> Result<MemberObject, NormalizeError>,
    ) -> Option<MemberObject> {
        match normalize(object) {
            Ok(o) => Some(o),
            Err(error) => {
                tracing::warn!(cluster = %self.cluster, %error, "object skipped");
                None
            }
        }
    }

    fn id_of<K: Resource>(&self, object: &K) -> Option<MemberObjectId> {
        let name = object.meta().name.clone()?;
        let key = || ObjectKey::new(object.namespace().unwrap_or_default(), name.clone());
        Some(match self.kind {
            MemberKind::Service => MemberObjectId::Service(key()),
            MemberKind::EndpointSlice => MemberObjectId::EndpointSlice(key()),
            MemberKind::Endpoints => MemberObjectId::Endpoints(key()),
            MemberKind::Ingress => MemberObjectId::Ingress(key()),
            MemberKind::Node => MemberObjectId::Node(name),
        })
    }

    /// Sends an event; `false` once the engine is gone.
    async fn send(&self, event: SourceEvent) -> bool {
        self.events.send(event).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_resets() {
        let mut b = CappedBackoff::new(Duration::from_millis(100), Duration::from_secs(4));
        let delays: Vec<Duration> = (&mut b).take(12).collect();
        assert!(delays[0] <= Duration::from_millis(120));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(4)));
        assert!(delays[11] >= Duration::from_millis(3200), "{delays:?}");
        b.reset();
        assert!(b.next().unwrap() <= Duration::from_millis(120));
    }
}
