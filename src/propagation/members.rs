//! The member clusters as the controllers see them: a client, the KubeFedCluster labels that
//! placement selectors match, and readiness from the health prober. The host source publishes a
//! new [`MemberSet`] on every change; controllers read the latest through a [`MemberDirectory`].

use std::collections::BTreeMap;
use std::sync::Arc;

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
}

impl std::fmt::Debug for MemberHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberHandle")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

/// Every member cluster by name, immutable once published.
pub type MemberSet = Arc<BTreeMap<String, MemberHandle>>;

/// The latest [`MemberSet`]; `changed()` wakes on every publication.
pub type MemberDirectory = watch::Receiver<MemberSet>;

/// The publishing side, held by the host source.
pub type MemberPublisher = watch::Sender<MemberSet>;

/// A publisher/directory pair starting with no members.
pub fn directory() -> (MemberPublisher, MemberDirectory) {
    watch::channel(Arc::new(BTreeMap::new()))
}
