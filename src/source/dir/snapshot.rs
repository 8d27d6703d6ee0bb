//! Keeping a [`DirectorySnapshot`] current: a rescan lists the tree, re-reads what changed, and
//! turns the per-scope changes into [`SourceEvent`]s.
//!
//! Blocking file-system work: the async [`super::watch`] runs it on a blocking thread.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::listing::{Fingerprint, Listed, Listing, Placement, list_tree};
use super::parse::parse_files;
use super::scopes::{FileEntry, Keyed, Scope};
use super::{DirectorySnapshot, LoadError, SETTLE};
use crate::federation::model::{FederationObject, MemberObject, SourceEvent};

impl DirectorySnapshot {
    /// Lists the tree again, re-reads files that changed (or that `touched` names), and returns the
    /// events for objects whose effective value changed.
    ///
    /// A changed file modified less than [`SETTLE`] before `now` may be half written (a truncate
    /// seen before the write that follows it): it is left as it was and returned in
    /// [`Rescan::settling`], to be read by a later rescan.
    pub(super) fn rescan(&mut self, touched: &HashSet<PathBuf>, now: SystemTime) -> Rescan {
        match list_tree(&self.root) {
            Ok(listing) => {
                let mut diff = self.update(listing, touched, Some(now));
                let settling = std::mem::take(&mut diff.settling);
                Rescan {
                    events: self.events(diff),
                    settling,
                }
            }
            Err(err) => {
                // Keep serving what we have: a directory briefly gone (remount, rename) is not
                // "every object deleted".
                tracing::warn!(dir = %self.root.display(), "cannot list source directory: {err}");
                Rescan::default()
            }
        }
    }

    /// Brings the state in line with `listing`: re-reads changed files (and those in `touched`),
    /// drops removed ones, and reports what changed. With `now`, a changed file modified less than
    /// [`SETTLE`] before it is not read yet (see [`Self::rescan`]); [`super::load`] reads everything.
    pub(super) fn update(
        &mut self,
        listing: Listing,
        touched: &HashSet<PathBuf>,
        now: Option<SystemTime>,
    ) -> Diff {
        let known: HashMap<PathBuf, Fingerprint> = self.known_files().collect();
        let mut settling = Vec::new();
        let changed: Vec<(PathBuf, Listed)> = listing
            .files
            .iter()
            .filter(|(path, listed)| {
                known.get(*path) != Some(&listed.fingerprint) || touched.contains(*path)
            })
            .filter(|(path, listed)| {
                let recent = now.is_some_and(|now| is_recent(listed.fingerprint, now));
                if recent {
                    settling.push((*path).clone());
                }
                !recent
            })
            .map(|(path, listed)| (path.clone(), listed.clone()))
            .collect();
        let removed: Vec<PathBuf> = known
            .into_keys()
            .filter(|path| !listing.files.contains_key(path))
            .filter(|path| match self.placement_of(path) {
                Some(Placement::Member(cluster)) => !listing.unlisted.contains(&cluster),
                _ => true,
            })
            .collect();

        let added_clusters: Vec<String> = listing
            .clusters
            .iter()
            .filter(|c| !self.members.contains_key(*c))
            .cloned()
            .collect();
        let removed_clusters: Vec<String> = self
            .members
            .keys()
            .filter(|c| !listing.clusters.contains(*c))
            .cloned()
            .collect();

        let mut federation_changes = Vec::new();
        if !added_clusters.is_empty() || !removed_clusters.is_empty() {
            let implicit = FileEntry::implicit_members(&listing.clusters);
            federation_changes.extend(self.federation.replace(&self.root, Some(implicit)));
        }
        for cluster in &added_clusters {
            self.members.insert(cluster.clone(), Scope::default());
        }
        let mut member_changes: BTreeMap<String, Vec<Change<MemberObject>>> = BTreeMap::new();
        for path in removed {
            self.errors.remove(&path);
            match self.placement_of(&path) {
                Some(Placement::Federation) => {
                    federation_changes.extend(self.federation.replace(&path, None));
                }
                Some(Placement::Member(cluster)) => {
                    if let Some(scope) = self.members.get_mut(&cluster) {
                        let changes = scope.replace(&path, None);
                        member_changes.entry(cluster).or_default().extend(changes);
                    }
                }
                None => {}
            }
        }

        let parsed = parse_files(&changed);
        for ((path, listed), result) in changed.into_iter().zip(parsed) {
            let objects = match result {
                Ok((objects, skipped)) => {
                    self.record_skipped(&path, skipped);
                    objects
                }
                Err(messages) => {
                    self.record_failure(path, listed, messages);
                    continue;
                }
            };
            match listed.placement {
                Placement::Federation => {
                    let kept =
                        self.federation
                            .with_last_good(&path, &objects.failed, objects.federation);
                    let entry = FileEntry::new(listed.fingerprint, kept);
                    federation_changes.extend(self.federation.replace(&path, Some(entry)));
                }
                Placement::Member(cluster) => {
                    let Some(scope) = self.members.get_mut(&cluster) else {
                        continue;
                    };
                    let kept = scope.with_last_good(&path, &objects.failed, objects.members);
                    let entry = FileEntry::new(listed.fingerprint, kept);
                    if added_clusters.contains(&cluster) {
                        // A new cluster is sent whole as a ResetMember: no diff needed.
                        scope.files.insert(path, entry);
                    } else {
                        let changes = scope.replace(&path, Some(entry));
                        member_changes.entry(cluster).or_default().extend(changes);
                    }
                }
            }
        }
        self.publish_errors();

        for cluster in &added_clusters {
            if let Some(scope) = self.members.get(cluster) {
                scope.warn_overrides(cluster);
            }
        }
        for cluster in &removed_clusters {
            self.members.remove(cluster);
            member_changes.remove(cluster);
        }
        Diff {
            federation: federation_changes,
            added_clusters,
            removed_clusters,
            members: member_changes,
            settling,
        }
    }

    /// The events for a [`Diff`]: federation changes first (so a new member exists before its
    /// objects arrive), then whole new clusters, emptied removed ones, and per-object changes.
    pub(super) fn events(&self, diff: Diff) -> Vec<SourceEvent> {
        let mut events: Vec<SourceEvent> = diff
            .federation
            .into_iter()
            .map(|change| match change {
                Change::Apply(object) => SourceEvent::ApplyFederation(object),
                Change::Delete(id) => SourceEvent::DeleteFederation(id),
            })
            .collect();
        for cluster in diff.added_clusters {
            if let Some(scope) = self.members.get(&cluster) {
                events.push(SourceEvent::ResetMember(cluster, scope.effective()));
            }
        }
        for cluster in diff.removed_clusters {
            events.push(SourceEvent::ResetMember(cluster, Vec::new()));
        }
        for (cluster, changes) in diff.members {
            events.extend(changes.into_iter().map(|change| match change {
                Change::Apply(object) => SourceEvent::ApplyMember(cluster.clone(), object),
                Change::Delete(id) => SourceEvent::DeleteMember(cluster.clone(), id),
            }));
        }
        events
    }

    /// The errors of a file's skipped documents (none: the file is clean again). The rest of the
    /// file is used.
    fn record_skipped(&mut self, path: &Path, messages: Vec<String>) {
        if messages.is_empty() {
            self.errors.remove(path);
            return;
        }
        let errors = self.report(
            path,
            messages,
            "document skipped; the rest of the file is used",
        );
        self.errors.insert(path.to_path_buf(), errors);
    }

    /// Logs each problem of `path` with what happens because of it.
    fn report(&self, path: &Path, messages: Vec<String>, outcome: &str) -> Vec<LoadError> {
        let errors: Vec<LoadError> = messages
            .into_iter()
            .map(|message| LoadError {
                path: path.to_path_buf(),
                message,
            })
            .collect();
        for error in &errors {
            tracing::error!("{error} ({outcome})");
        }
        errors
    }

    /// A file that failed keeps its last good objects; only its fingerprint moves on, so it is
    /// re-read when it changes again rather than on every rescan.
    pub(super) fn record_failure(&mut self, path: PathBuf, listed: Listed, messages: Vec<String>) {
        let errors = self.report(&path, messages, "the file keeps its last good content");
        match listed.placement {
            Placement::Federation => self.federation.keep_last_good(&path, listed.fingerprint),
            Placement::Member(cluster) => {
                if let Some(scope) = self.members.get_mut(&cluster) {
                    scope.keep_last_good(&path, listed.fingerprint);
                }
            }
        }
        self.errors.insert(path, errors);
    }

    pub(super) fn publish_errors(&self) {
        let current = self.errors();
        self.published_errors.send_if_modified(|published| {
            if *published == current {
                return false;
            }
            *published = current;
            true
        });
    }

    pub(super) fn known_files(&self) -> impl Iterator<Item = (PathBuf, Fingerprint)> + '_ {
        let members = self
            .members
            .values()
            .flat_map(|scope| scope.file_fingerprints());
        self.federation.file_fingerprints().chain(members)
    }

    /// Where a known file sits, from its path: directly under the root, or in a cluster directory.
    pub(super) fn placement_of(&self, path: &Path) -> Option<Placement> {
        let parent = path.parent()?;
        if parent == self.root {
            return Some(Placement::Federation);
        }
        let cluster = parent.file_name()?.to_str()?;
        self.members
            .contains_key(cluster)
            .then(|| Placement::Member(cluster.to_owned()))
    }
}

/// Whether a file was modified less than [`SETTLE`] before `now`. A modification time ahead of
/// `now` (another host's clock, on a network file system) does not count: such a file would
/// otherwise never settle.
fn is_recent(fingerprint: Fingerprint, now: SystemTime) -> bool {
    fingerprint
        .modified
        .and_then(|modified| now.duration_since(modified).ok())
        .is_some_and(|age| age < SETTLE)
}

/// What a rescan sends, and which changed files it left to settle.
#[derive(Debug, Default)]
pub(super) struct Rescan {
    pub(super) events: Vec<SourceEvent>,
    /// Changed files modified too recently to be read: rescan again after [`SETTLE`].
    pub(super) settling: Vec<PathBuf>,
}

impl Rescan {
    /// When to look at the settling files again, if there are any.
    pub(super) fn retry_after(&self) -> Option<Duration> {
        (!self.settling.is_empty()).then_some(SETTLE)
    }
}

/// What a rescan changed, before it becomes events.
pub(super) struct Diff {
    pub(super) federation: Vec<Change<FederationObject>>,
    /// Cluster directories that appeared: sent whole.
    pub(super) added_clusters: Vec<String>,
    pub(super) removed_clusters: Vec<String>,
    pub(super) members: BTreeMap<String, Vec<Change<MemberObject>>>,
    /// Changed files not read yet because they were modified a moment ago.
    pub(super) settling: Vec<PathBuf>,
}

/// A change of an object's effective value in one scope.
pub(super) enum Change<O: Keyed> {
    Apply(O),
    Delete(O::Id),
}
