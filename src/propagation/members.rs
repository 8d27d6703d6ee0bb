//! The member clusters as the controllers see them: a client, the KubeFedCluster labels that
//! placement selectors match, and readiness from the health prober. The host source publishes a
//! new [`MemberSet`] on every change; controllers read the latest through a [`MemberDirectory`].
//!
//! Two things here exist so that a controller never mistakes "not known yet" for "absent": the
//! set says whether the KubeFedClusters (and their token Secrets) have completed their first
//! listing ([`Members::listed`]), and each member whether the prober has given a first verdict
//! ([`MemberHandle::probed`]). And each connection has its own [`MemberHandle::connection`]
//! number, so a consumer that keeps per-member state (caches, watches) sees a re-join or a
//! credential rotation as a new member and rebuilds it with the new client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// One member cluster.
#[derive(Clone)]
pub struct MemberHandle {
    pub name: String,
    pub client: kube::Client,
    /// `KubeFedCluster` labels (placement `clusterSelector` matches these).
    pub labels: BTreeMap<String, String>,
    /// The prober's verdict (consecutive-failure thresholds applied).
    pub ready: bool,
    /// Whether the prober has given a verdict yet (`ready` means nothing before).
    pub probed: bool,
    /// Unique per client built: a new endpoint, CA or token gives a new number.
    pub connection: u64,
}

impl MemberHandle {
    /// A newly connected member: not probed yet, with a connection number of its own.
    pub fn new(name: &str, client: kube::Client, labels: BTreeMap<String, String>) -> Self {
        static CONNECTIONS: AtomicU64 = AtomicU64::new(1);
        Self {
            name: name.to_owned(),
            client,
            labels,
            ready: false,
            probed: false,
            connection: CONNECTIONS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Ready as far as the prober knows (`None` before its first verdict).
    pub fn readiness(&self) -> Option<bool> {
        self.probed.then_some(self.ready)
    }
}

impl std::fmt::Debug for MemberHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberHandle")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("ready", &self.ready)
            .field("probed", &self.probed)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// Every member cluster by name (dereferences to the map), and whether the set is complete.
#[derive(Debug, Clone, Default)]
pub struct Members {
    /// The KubeFedClusters and their Secrets have been listed once and connected: a name
    /// missing from the set is really not a member. Before that, nothing may be concluded from
    /// a missing name.
    pub listed: bool,
    clusters: BTreeMap<String, MemberHandle>,
}

impl std::ops::Deref for Members {
    type Target = BTreeMap<String, MemberHandle>;

    fn deref(&self) -> &Self::Target {
        &self.clusters
    }
}

impl std::ops::DerefMut for Members {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.clusters
    }
}

impl FromIterator<(String, MemberHandle)> for Members {
    /// A complete set (`listed`) of the given members, as tests and static setups build it.
    fn from_iter<I: IntoIterator<Item = (String, MemberHandle)>>(iter: I) -> Self {
        Members {
            listed: true,
            clusters: iter.into_iter().collect(),
        }
    }
}

/// The member set, immutable once published.
pub type MemberSet = Arc<Members>;

/// The latest [`MemberSet`]; `changed()` wakes on every publication.
pub type MemberDirectory = watch::Receiver<MemberSet>;

/// The publishing side, held by the host source.
pub type MemberPublisher = watch::Sender<MemberSet>;

/// A publisher/directory pair starting with no members, not listed.
pub fn directory() -> (MemberPublisher, MemberDirectory) {
    watch::channel(Arc::new(Members::default()))
}

/// Marks the set complete (published once, when it first becomes so).
pub fn mark_listed(publisher: &MemberPublisher) {
    publisher.send_if_modified(|set| {
        if set.listed {
            return false;
        }
        Arc::make_mut(set).listed = true;
        true
    });
}
