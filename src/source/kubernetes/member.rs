//! The watcher set of one member cluster: Services, EndpointSlices (with the core/v1 Endpoints
//! fallback), Ingresses and Nodes, each a [`watch::run`] whose objects are stripped by
//! [`normalize`] as they arrive. A relist of one kind replaces only that kind in this member
//! ([`SourceEvent::ResetMemberKind`]).

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::watch::{self, Change, Notice, WatchHealth, WatchSettings, Watched};
use crate::federation::model::{MemberKind, MemberObject, MemberObjectId, ObjectKey, SourceEvent};
use crate::source::normalize::{self, NormalizeError};

/// What the watchers of one member report besides model events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchNotice {
    pub cluster: String,
    pub kind: MemberKind,
    pub notice: Notice,
}

/// The running watchers of one member; dropping it stops them (and forgets their failures).
#[derive(Debug)]
pub struct MemberWatchers {
    cluster: String,
    health: WatchHealth,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for MemberWatchers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.health.forget_cluster(&self.cluster);
    }
}

/// Starts one watcher per [`MemberKind`] for `cluster`, whose API server is at `url`.
pub fn spawn(
    cluster: &str,
    url: &str,
    client: Client,
    settings: &WatchSettings,
    events: mpsc::Sender<SourceEvent>,
    notices: mpsc::UnboundedSender<WatchNotice>,
) -> MemberWatchers {
    let ctx = |kind| Ctx {
        cluster: cluster.to_owned(),
        url: url.to_owned(),
        settings: settings.clone(),
        kind,
        events: events.clone(),
        notices: notices.clone(),
    };
    let tasks = vec![
        tokio::spawn(
            ctx(MemberKind::Service).run(Api::<Service>::all(client.clone()), normalize::service),
        ),
        tokio::spawn(ctx(MemberKind::EndpointSlice).run(
            Api::<EndpointSlice>::all(client.clone()),
            normalize::endpoint_slice,
        )),
        tokio::spawn(
            ctx(MemberKind::Endpoints)
                .run(Api::<Endpoints>::all(client.clone()), normalize::endpoints),
        ),
        tokio::spawn(
            ctx(MemberKind::Ingress).run(Api::<Ingress>::all(client.clone()), normalize::ingress),
        ),
        tokio::spawn(ctx(MemberKind::Node).run(Api::<Node>::all(client), normalize::node)),
    ];
    MemberWatchers {
        cluster: cluster.to_owned(),
        health: settings.health.clone(),
        tasks,
    }
}

/// One kind in one member.
struct Ctx {
    cluster: String,
    url: String,
    settings: WatchSettings,
    kind: MemberKind,
    events: mpsc::Sender<SourceEvent>,
    notices: mpsc::UnboundedSender<WatchNotice>,
}

impl Ctx {
    async fn run<K>(self, api: Api<K>, normalize: fn(K) -> Result<MemberObject, NormalizeError>)
    where
        K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
        K::DynamicType: Default,
    {
        let watched = Watched::new(
            &self.cluster,
            self.kind.as_str(),
            &self.url,
            &api,
            &self.settings,
        );
        let cluster = &self.cluster;
        let kind = self.kind;
        let events = &self.events;
        watch::run(
            api,
            &watched,
            |object| match normalize(object) {
                Ok(o) => Some(o),
                Err(error) => {
                    tracing::warn!(cluster = %cluster, %error, "object skipped");
                    None
                }
            },
            |object: &K| id_of(kind, object),
            |change| {
                Some(match change {
                    Change::Reset(objects) => {
                        SourceEvent::ResetMemberKind(cluster.clone(), kind, objects)
                    }
                    Change::Apply(object) => SourceEvent::ApplyMember(cluster.clone(), object),
                    Change::Delete(id) => SourceEvent::DeleteMember(cluster.clone(), id),
                })
            },
            |notice| {
                let _ = self.notices.send(WatchNotice {
                    cluster: cluster.clone(),
                    kind,
                    notice,
                });
            },
            events,
        )
        .await;
    }
}

fn id_of<K: Resource>(kind: MemberKind, object: &K) -> Option<MemberObjectId> {
    let name = object.meta().name.clone()?;
    let key = || ObjectKey::new(object.namespace().unwrap_or_default(), name.clone());
    Some(match kind {
        MemberKind::Service => MemberObjectId::Service(key()),
        MemberKind::EndpointSlice => MemberObjectId::EndpointSlice(key()),
        MemberKind::Endpoints => MemberObjectId::Endpoints(key()),
        MemberKind::Ingress => MemberObjectId::Ingress(key()),
        MemberKind::Node => MemberObjectId::Node(name),
    })
}
