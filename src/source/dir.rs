//! The embedded directory source: a tree of Kubernetes manifests stands in for a federation, so fedns
//! runs (demo, tests, benchmarks) without any cluster.
//!
//! ```text
//! <dir>/
//!   *.yaml | *.yml | *.json     Domain, ServiceDNSRecord, IngressDNSRecord, KubeFedCluster
//!   <cluster>/                  one member cluster per sub-directory, named after it
//!     *.yaml | *.yml | *.json   Service, EndpointSlice, Endpoints, Ingress, Node
//! ```
//!
//! YAML files may hold several documents; any document may be a `List` with `items`. Hidden entries
//! and editor leftovers are ignored. [`load`] reads the tree once; [`watch`] follows it and sends
//! only what changed. A file is applied whole or not at all: a file with an error keeps contributing
//! what it held at its last good parse, and the error is listed in [`DirectorySnapshot::errors`].

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch as latest};
use tokio::time::{Instant, MissedTickBehavior};

use super::normalize::{self, NormalizeError};
use crate::federation::model::{FederationObject, MemberObject, MemberSpec, SourceEvent};
use crate::k8s::crd::{self, Domain, IngressDNSRecord, KubeFedCluster, ServiceDNSRecord};

/// Quiet time after a file-system event before the tree is rescanned: editors write in bursts.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// A steady stream of events still gets a rescan this often.
const MAX_DEBOUNCE: Duration = Duration::from_millis(250);
/// Fallback rescan (stat only; files are re-read when their size or mtime changed), for events the
/// file-system watcher misses: network file systems, symlinked directories, overflowed queues.
const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

/// The source directory itself cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot read source directory {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("source directory {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
}

/// A problem in one file, e.g.
/// `demo/c1/svc.yaml: document 2 (Service test/nginx): status.loadBalancer.ingress[0].ip: invalid IP address "10.0.0.x"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    /// Where in the file (document, list item, object) and what is wrong, field path first.
    pub message: String,
}

/// Everything the directory holds, per file, plus the errors of files that failed to load.
///
/// Made by [`load`]; [`watch`] keeps it current and turns its changes into events.
pub struct DirectorySnapshot {
    root: PathBuf,
    federation: Scope<FederationObject>,
    members: BTreeMap<String, Scope<MemberObject>>,
    errors: BTreeMap<PathBuf, Vec<LoadError>>,
    published_errors: latest::Sender<Vec<LoadError>>,
}

impl fmt::Debug for DirectorySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectorySnapshot")
            .field("root", &self.root)
            .field("federation_files", &self.federation.files.len())
            .field("members", &self.members.keys().collect::<Vec<_>>())
            .field("errors", &self.errors.len())
            .finish()
    }
}

/// Reads the whole tree under `dir`. Blocking: call it from `spawn_blocking` in async code.
///
/// Fails only when `dir` itself cannot be read; a bad file is logged, listed in
/// [`DirectorySnapshot::errors`] and contributes nothing.
pub fn load(dir: impl AsRef<Path>) -> Result<DirectorySnapshot, DirError> {
    let root = dir.as_ref().to_path_buf();
    let metadata = fs::metadata(&root).map_err(|source| DirError::Unreadable {
        path: root.clone(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(DirError::NotADirectory { path: root });
    }
    let listing = list_tree(&root).map_err(|source| DirError::Unreadable {
        path: root.clone(),
        source,
    })?;
    let mut snapshot = DirectorySnapshot {
        root,
        federation: Scope::default(),
        members: BTreeMap::new(),
        errors: BTreeMap::new(),
        published_errors: latest::Sender::new(Vec::new()),
    };
    // Everything is new, so the diff is not needed: initial_events() resets instead.
    let _ = snapshot.update(listing, &HashSet::new());
    Ok(snapshot)
}

impl DirectorySnapshot {
    /// The events that hand the whole snapshot to the engine: `ResetFederation` (with one member per
    /// cluster sub-directory or KubeFedCluster), one `ResetMember` per cluster, then `Synced`.
    pub fn initial_events(&self) -> Vec<SourceEvent> {
        let mut events = Vec::with_capacity(self.members.len() + 2);
        events.push(SourceEvent::ResetFederation(self.federation.effective()));
        for (cluster, scope) in &self.members {
            events.push(SourceEvent::ResetMember(cluster.clone(), scope.effective()));
        }
        events.push(SourceEvent::Synced);
        events
    }

    /// Files that currently fail to load, in path order.
    pub fn errors(&self) -> Vec<LoadError> {
        self.errors.values().flatten().cloned().collect()
    }

    /// The current errors, kept up to date while [`watch`] runs (the snapshot moves into it).
    pub fn subscribe_errors(&self) -> latest::Receiver<Vec<LoadError>> {
        self.published_errors.subscribe()
    }

    /// The directory this snapshot reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Names of the member clusters that have a sub-directory.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }

    /// Lists the tree again, re-reads files that changed (or that `touched` names), and returns the
    /// events for objects whose effective value changed.
    fn rescan(&mut self, touched: &HashSet<PathBuf>) -> Vec<SourceEvent> {
        match list_tree(&self.root) {
            Ok(listing) => {
                let diff = self.update(listing, touched);
                self.events(diff)
            }
            Err(err) => {
                // Keep serving what we have: a directory briefly gone (remount, rename) is not
                // "every object deleted".
                tracing::warn!(dir = %self.root.display(), "cannot list source directory: {err}");
                Vec::new()
            }
        }
    }

    /// Brings the state in line with `listing`: re-reads changed files (and those in `touched`),
    /// drops removed ones, and reports what changed.
    fn update(&mut self, listing: Listing, touched: &HashSet<PathBuf>) -> Diff {
        let known: HashMap<PathBuf, Fingerprint> = self.known_files().collect();
        let changed: Vec<(PathBuf, Listed)> = listing
            .files
            .iter()
            .filter(|(path, listed)| {
                known.get(*path) != Some(&listed.fingerprint) || touched.contains(*path)
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
                Ok(objects) => {
                    self.errors.remove(&path);
                    objects
                }
                Err(messages) => {
                    self.record_failure(path, listed, messages);
                    continue;
                }
            };
            match listed.placement {
                Placement::Federation => {
                    let entry = FileEntry::new(listed.fingerprint, objects.federation);
                    federation_changes.extend(self.federation.replace(&path, Some(entry)));
                }
                Placement::Member(cluster) => {
                    let entry = FileEntry::new(listed.fingerprint, objects.members);
                    let Some(scope) = self.members.get_mut(&cluster) else {
                        continue;
                    };
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
        }
    }

    /// The events for a [`Diff`]: federation changes first (so a new member exists before its
    /// objects arrive), then whole new clusters, emptied removed ones, and per-object changes.
    fn events(&self, diff: Diff) -> Vec<SourceEvent> {
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

    /// A file that failed keeps its last good objects; only its fingerprint moves on, so it is
    /// re-read when it changes again rather than on every rescan.
    fn record_failure(&mut self, path: PathBuf, listed: Listed, messages: Vec<String>) {
        let errors: Vec<LoadError> = messages
            .into_iter()
            .map(|message| LoadError {
                path: path.clone(),
                message,
            })
            .collect();
        for error in &errors {
            tracing::error!("{error}");
        }
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

    fn publish_errors(&self) {
        let current = self.errors();
        self.published_errors.send_if_modified(|published| {
            if *published == current {
                return false;
            }
            *published = current;
            true
        });
    }

    fn known_files(&self) -> impl Iterator<Item = (PathBuf, Fingerprint)> + '_ {
        let members = self
            .members
            .values()
            .flat_map(|scope| scope.file_fingerprints());
        self.federation.file_fingerprints().chain(members)
    }

    /// Where a known file sits, from its path: directly under the root, or in a cluster directory.
    fn placement_of(&self, path: &Path) -> Option<Placement> {
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

/// Follows the directory: sends `Apply*`/`Delete*`/`ResetMember` events for what changes, until
/// `tx` is closed. Does not send the snapshot's [`DirectorySnapshot::initial_events`]; send those
/// first.
///
/// File-system events trigger a rescan after 50 ms of quiet; a stat-only rescan also runs every
/// 2 s (and once at start, for changes made since [`load`]) in case events are missed. Only changed
/// files are re-read, and only objects whose value changed are sent. If `dir` is not the snapshot's directory, the first rescan turns the snapshot into
/// `dir`'s contents.
pub async fn watch(
    dir: impl Into<PathBuf>,
    snapshot: DirectorySnapshot,
    tx: mpsc::Sender<SourceEvent>,
) {
    let mut snapshot = snapshot;
    let root = dir.into();
    if root != snapshot.root {
        if let Some(implicit) = snapshot.federation.files.remove(&snapshot.root) {
            snapshot.federation.files.insert(root.clone(), implicit);
        }
        snapshot.root = root;
    }
    let (notify_tx, mut notify_rx) = mpsc::unbounded_channel();
    // Dropping the watcher stops it, so it lives as long as this function.
    let _watcher = start_file_watcher(&snapshot.root, notify_tx);
    let mut poll = tokio::time::interval(RESCAN_INTERVAL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut touched: HashSet<PathBuf> = HashSet::new();
    // (first unhandled event, when to rescan)
    let mut pending: Option<(Instant, Instant)> = None;
    loop {
        tokio::select! {
            biased;
            () = tx.closed() => return,
            Some(paths) = notify_rx.recv() => {
                touched.extend(paths);
                let now = Instant::now();
                let first = pending.map_or(now, |(first, _)| first);
                pending = Some((first, (now + DEBOUNCE).min(first + MAX_DEBOUNCE)));
                continue;
            }
            () = sleep_until_due(pending) => {}
            _ = poll.tick() => {}
        }
        pending = None;
        let forced = std::mem::take(&mut touched);
        let rescan = tokio::task::spawn_blocking(move || {
            let events = snapshot.rescan(&forced);
            (snapshot, events)
        });
        let events;
        (snapshot, events) = match rescan.await {
            Ok(done) => done,
            Err(err) => {
                tracing::error!("directory source stopped: rescan failed: {err}");
                return;
            }
        };
        if !events.is_empty() {
            tracing::info!(source = %snapshot.root.display(), changes = events.len(), errors = snapshot.errors().len(), "source reloaded");
        }
        for event in events {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

async fn sleep_until_due(pending: Option<(Instant, Instant)>) {
    match pending {
        Some((_, due)) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Starts the OS file watcher; without one (e.g. inotify limits reached) the periodic rescan still
/// notices every change, only later.
fn start_file_watcher(
    root: &Path,
    tx: mpsc::UnboundedSender<Vec<PathBuf>>,
) -> Option<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode, EventKind};
    use notify::{RecursiveMode, Watcher};

    let handler = move |result: notify::Result<notify::Event>| match result {
        Ok(event) => {
            // Opening and reading (our own re-reads included) change nothing.
            let relevant = match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                EventKind::Access(_) => false,
                _ => true,
            };
            if relevant {
                let _ = tx.send(event.paths);
            }
        }
        Err(err) => {
            tracing::debug!("file watcher: {err}");
            let _ = tx.send(Vec::new());
        }
    };
    let started = notify::recommended_watcher(handler).and_then(|mut watcher| {
        watcher.watch(root, RecursiveMode::Recursive)?;
        Ok(watcher)
    });
    match started {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            tracing::warn!(
                dir = %root.display(),
                "cannot watch source directory, polling every {RESCAN_INTERVAL:?}: {err}"
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-file state and the diff

/// Borrowed identity of an object, to sort and find it without cloning its names:
/// (kind rank, namespace, name).
type SortKey<'a> = (u8, &'a str, &'a str);

/// An object of one scope (federation or one member), with an identity.
trait Keyed: Clone + PartialEq {
    type Id: fmt::Debug;
    fn id(&self) -> Self::Id;
    fn sort_key(&self) -> SortKey<'_>;
}

impl Keyed for FederationObject {
    type Id = crate::federation::model::FederationObjectId;

    fn id(&self) -> Self::Id {
        FederationObject::id(self)
    }

    fn sort_key(&self) -> SortKey<'_> {
        match self {
            FederationObject::Domain(d) => (0, "", &d.federation),
            FederationObject::ServiceRecord(r) => (1, &r.key.namespace, &r.key.name),
            FederationObject::IngressRecord(r) => (2, &r.key.namespace, &r.key.name),
            FederationObject::Member(m) => (3, "", &m.name),
        }
    }
}

impl Keyed for MemberObject {
    type Id = crate::federation::model::MemberObjectId;

    fn id(&self) -> Self::Id {
        MemberObject::id(self)
    }

    fn sort_key(&self) -> SortKey<'_> {
        match self {
            MemberObject::Service(k, _) => (0, &k.namespace, &k.name),
            MemberObject::EndpointSlice(k, _) => (1, &k.namespace, &k.name),
            MemberObject::Endpoints(k, _) => (2, &k.namespace, &k.name),
            MemberObject::Ingress(k, _) => (3, &k.namespace, &k.name),
            MemberObject::Node(name, _) => (4, "", name),
        }
    }
}

/// What a rescan changed, before it becomes events.
struct Diff {
    federation: Vec<Change<FederationObject>>,
    /// Cluster directories that appeared: sent whole.
    added_clusters: Vec<String>,
    removed_clusters: Vec<String>,
    members: BTreeMap<String, Vec<Change<MemberObject>>>,
}

/// A change of an object's effective value in one scope.
enum Change<O: Keyed> {
    Apply(O),
    Delete(O::Id),
}

/// The files of one scope (the top level, or one cluster directory) and the objects each
/// contributed at its last good parse. When files define the same object, the last in path order
/// wins.
struct Scope<O> {
    files: BTreeMap<PathBuf, FileEntry<O>>,
}

impl<O> Default for Scope<O> {
    fn default() -> Self {
        Self {
            files: BTreeMap::new(),
        }
    }
}

struct FileEntry<O> {
    fingerprint: Fingerprint,
    /// Sorted by [`Keyed::sort_key`], one object per key.
    objects: Vec<O>,
    /// The members implied by the cluster directories (keyed by the root, so it sorts first and any
    /// KubeFedCluster overrides it). Not a file: never re-read, never warned about.
    implicit: bool,
}

impl<O: Keyed> FileEntry<O> {
    fn new(fingerprint: Fingerprint, objects: Vec<O>) -> Self {
        Self {
            fingerprint,
            objects,
            implicit: false,
        }
    }

    fn get(&self, key: SortKey<'_>) -> Option<&O> {
        let index = self
            .objects
            .binary_search_by(|object| object.sort_key().cmp(&key))
            .ok()?;
        self.objects.get(index)
    }
}

impl FileEntry<FederationObject> {
    fn implicit_members(clusters: &BTreeSet<String>) -> Self {
        let objects = clusters
            .iter()
            .map(|name| {
                FederationObject::Member(MemberSpec {
                    name: name.clone(),
                    ready: true,
                    ..MemberSpec::default()
                })
            })
            .collect();
        Self {
            fingerprint: Fingerprint::default(),
            objects,
            implicit: true,
        }
    }
}

impl<O: Keyed> Scope<O> {
    /// Replaces (or with `None` removes) what `path` contributes, and returns the changes of the
    /// effective objects: an object shadowed by a later file does not change; one that this file
    /// shadowed falls back to the earlier file's version.
    fn replace(&mut self, path: &Path, new: Option<FileEntry<O>>) -> Vec<Change<O>> {
        let old = self.files.remove(path);
        let implicit = new.as_ref().or(old.as_ref()).is_some_and(|e| e.implicit);
        let old_objects = old.as_ref().map_or(&[][..], |e| e.objects.as_slice());
        let new_objects = new.as_ref().map_or(&[][..], |e| e.objects.as_slice());
        let mut changes = Vec::new();
        for (before_here, after_here) in merge_by_key(old_objects, new_objects) {
            if before_here == after_here {
                continue;
            }
            let Some(key) = before_here.or(after_here).map(Keyed::sort_key) else {
                continue;
            };
            if let Some((upper, object)) = self.defined_after(path, key) {
                if before_here.is_none() && !implicit {
                    tracing::warn!(
                        "{:?} in {} is overridden by {}",
                        object.id(),
                        path.display(),
                        upper.display()
                    );
                }
                continue;
            }
            let lower = self.defined_before(path, key);
            if let (None, Some(object), Some((lower_path, lower_entry))) =
                (before_here, after_here, lower)
                && !implicit
                && !lower_entry.implicit
            {
                tracing::warn!(
                    "{:?} in {} overrides {}",
                    object.id(),
                    path.display(),
                    lower_path.display()
                );
            }
            let fallback = lower.and_then(|(_, entry)| entry.get(key));
            let before = before_here.or(fallback);
            let after = after_here.or(fallback);
            match (before, after) {
                (_, Some(after)) if before != Some(after) => {
                    changes.push(Change::Apply(after.clone()));
                }
                (Some(before), None) => changes.push(Change::Delete(before.id())),
                _ => {}
            }
        }
        if let Some(new) = new {
            self.files.insert(path.to_path_buf(), new);
        }
        changes
    }

    /// The last file after `path` that defines `key`.
    fn defined_after(&self, path: &Path, key: SortKey<'_>) -> Option<(&Path, &O)> {
        self.files
            .range::<Path, _>((Bound::Excluded(path), Bound::Unbounded))
            .rev()
            .find_map(|(p, entry)| entry.get(key).map(|o| (p.as_path(), o)))
    }

    /// The last file before `path` that defines `key`: the one that wins when `path` does not.
    fn defined_before(&self, path: &Path, key: SortKey<'_>) -> Option<(&Path, &FileEntry<O>)> {
        self.files
            .range::<Path, _>((Bound::Unbounded, Bound::Excluded(path)))
            .rev()
            .find(|(_, entry)| entry.get(key).is_some())
            .map(|(p, entry)| (p.as_path(), entry))
    }

    /// Fingerprints of the real files (not the implicit entry).
    fn file_fingerprints(&self) -> impl Iterator<Item = (PathBuf, Fingerprint)> + '_ {
        self.files
            .iter()
            .filter(|(_, entry)| !entry.implicit)
            .map(|(path, entry)| (path.clone(), entry.fingerprint))
    }

    /// Marks a file that failed to parse as seen, keeping its last good objects.
    fn keep_last_good(&mut self, path: &Path, fingerprint: Fingerprint) {
        match self.files.get_mut(path) {
            Some(entry) => entry.fingerprint = fingerprint,
            None => {
                self.files
                    .insert(path.to_path_buf(), FileEntry::new(fingerprint, Vec::new()));
            }
        }
    }

    /// The effective objects: per identity, the version of the last file in path order.
    fn effective(&self) -> Vec<O> {
        // Each file's objects are sorted already: the stable sort only merges those runs, and
        // keeps equal keys in path order.
        let mut all: Vec<&O> = self.files.values().flat_map(|e| &e.objects).collect();
        all.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        let mut effective = Vec::with_capacity(all.len());
        let mut objects = all.into_iter().peekable();
        while let Some(object) = objects.next() {
            let shadowed = objects
                .peek()
                .is_some_and(|next| next.sort_key() == object.sort_key());
            if !shadowed {
                effective.push(object.clone());
            }
        }
        effective
    }

    /// Logs every object that more than one file defines.
    fn warn_overrides(&self, scope: &str) {
        if self.files.len() < 2 {
            return;
        }
        let mut first_seen: BTreeMap<SortKey<'_>, (&Path, bool)> = BTreeMap::new();
        for (path, entry) in &self.files {
            for object in &entry.objects {
                let seen = first_seen.insert(object.sort_key(), (path, entry.implicit));
                if let Some((earlier, false)) = seen
                    && !entry.implicit
                {
                    tracing::warn!(
                        "{scope}: {:?} in {} overrides {}",
                        object.id(),
                        path.display(),
                        earlier.display()
                    );
                }
            }
        }
    }
}

/// Pairs up two key-sorted object lists by key: `(in a, in b)`.
fn merge_by_key<'a, O: Keyed>(a: &'a [O], b: &'a [O]) -> Vec<(Option<&'a O>, Option<&'a O>)> {
    let mut pairs = Vec::with_capacity(a.len().max(b.len()));
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.sort_key().cmp(&y.sort_key()),
        };
        pairs.push(match order {
            std::cmp::Ordering::Less => (a.next(), None),
            std::cmp::Ordering::Greater => (None, b.next()),
            std::cmp::Ordering::Equal => (a.next(), b.next()),
        });
    }
    pairs
}

// ---------------------------------------------------------------------------------------------
// Listing the tree

/// Size and modification time: a file whose fingerprint is unchanged is not re-read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
}

impl Fingerprint {
    fn of(metadata: &fs::Metadata) -> Self {
        Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Placement {
    Federation,
    Member(String),
}

#[derive(Debug, Clone)]
struct Listed {
    placement: Placement,
    fingerprint: Fingerprint,
}

#[derive(Debug, Default)]
struct Listing {
    clusters: BTreeSet<String>,
    files: BTreeMap<PathBuf, Listed>,
    /// Cluster directories that could not be listed: their files are kept as they were.
    unlisted: BTreeSet<String>,
}

/// Lists manifests at the top and one level down (symlinks followed, so ConfigMap mounts work).
fn list_tree(root: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    for (path, name, metadata) in list_dir(root)? {
        if metadata.is_dir() {
            listing.clusters.insert(name.clone());
            match list_dir(&path) {
                Ok(entries) => {
                    for (path, _, metadata) in entries {
                        if metadata.is_file() && is_manifest(&path) {
                            let placement = Placement::Member(name.clone());
                            let fingerprint = Fingerprint::of(&metadata);
                            listing.files.insert(
                                path,
                                Listed {
                                    placement,
                                    fingerprint,
                                },
                            );
                        } else if metadata.is_dir() {
                            tracing::debug!("ignoring nested directory {}", path.display());
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!("cannot list cluster directory {}: {err}", path.display());
                    listing.unlisted.insert(name);
                }
            }
        } else if metadata.is_file() && is_manifest(&path) {
            let listed = Listed {
                placement: Placement::Federation,
                fingerprint: Fingerprint::of(&metadata),
            };
            listing.files.insert(path, listed);
        }
    }
    Ok(listing)
}

/// Visible entries of a directory, with their (symlink-followed) metadata.
fn list_dir(dir: &Path) -> io::Result<Vec<(PathBuf, String, fs::Metadata)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::debug!("ignoring non-UTF-8 name {}", path.display());
            continue;
        };
        if is_ignored(&name) {
            continue;
        }
        match fs::metadata(&path) {
            Ok(metadata) => entries.push((path, name, metadata)),
            // A dangling symlink or a file deleted while listing.
            Err(err) => tracing::debug!("ignoring {}: {err}", path.display()),
        }
    }
    Ok(entries)
}

/// Hidden entries and editor leftovers (`foo.yaml~`, `.foo.yaml.swp`, `foo.swp`).
fn is_ignored(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".swx")
}

fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| {
            ["yaml", "yml", "json"]
                .iter()
                .any(|m| ext.eq_ignore_ascii_case(m))
        })
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
}

// ---------------------------------------------------------------------------------------------
// Parsing files

/// What one file contributes: federation objects for a top-level file, member objects for a file in
/// a cluster directory. Each list is sorted by key, one object per key.
#[derive(Debug, Default)]
struct FileObjects {
    federation: Vec<FederationObject>,
    members: Vec<MemberObject>,
}

/// Parses files on all cores, biggest first; results in input order.
fn parse_files(files: &[(PathBuf, Listed)]) -> Vec<Result<FileObjects, Vec<String>>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(files.len());
    if workers <= 1 {
        return files
            .iter()
            .map(|(path, listed)| parse_file(path, &listed.placement))
            .collect();
    }
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].1.fingerprint.len));
    let next = AtomicUsize::new(0);
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let mut done: Vec<(usize, Result<FileObjects, Vec<String>>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    tracing::dispatcher::with_default(&dispatch, || {
                        let mut done = Vec::new();
                        while let Some(&index) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                            let (path, listed) = &files[index];
                            done.push((index, parse_file(path, &listed.placement)));
                        }
                        done
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
            .collect()
    });
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}

/// Reads one file: all its objects, or every error found in it.
fn parse_file(path: &Path, placement: &Placement) -> Result<FileObjects, Vec<String>> {
    let text = fs::read_to_string(path).map_err(|err| vec![format!("cannot read: {err}")])?;
    let mut reader = FileReader {
        path,
        placement,
        objects: FileObjects::default(),
        errors: Vec::new(),
    };
    if is_json(path) {
        reader.read_json(&text);
    } else {
        reader.read_yaml(&text);
    }
    if !reader.errors.is_empty() {
        return Err(reader.errors);
    }
    let mut objects = reader.objects;
    sort_unique(&mut objects.federation, path);
    sort_unique(&mut objects.members, path);
    Ok(objects)
}

/// Sorts by key; of objects defined twice in one file the later definition wins.
fn sort_unique<O: Keyed>(objects: &mut Vec<O>, path: &Path) {
    objects.reverse();
    // Stable: among equal keys the (originally) later object now comes first, and dedup keeps it.
    objects.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    objects.dedup_by(|duplicate, kept| {
        let same = duplicate.sort_key() == kept.sort_key();
        if same {
            tracing::warn!(
                "{:?} is defined twice in {}; the later definition wins",
                kept.id(),
                path.display()
            );
        }
        same
    });
}

/// Kinds the directory source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Service,
    EndpointSlice,
    Endpoints,
    Ingress,
    Node,
    Domain,
    ServiceDNSRecord,
    IngressDNSRecord,
    KubeFedCluster,
}

impl Kind {
    /// The kind of a document by its `kind` and the group of its `apiVersion` (any version: a wrong
    /// version is reported by the typed parse). Without `apiVersion` the kind alone decides.
    fn classify(api_version: Option<&str>, kind: &str) -> Option<Kind> {
        let (group, found) = match kind {
            "Service" => ("", Kind::Service),
            "EndpointSlice" => ("discovery.k8s.io", Kind::EndpointSlice),
            "Endpoints" => ("", Kind::Endpoints),
            "Ingress" => ("networking.k8s.io", Kind::Ingress),
            "Node" => ("", Kind::Node),
            "Domain" => (crd::MULTICLUSTERDNS_GROUP, Kind::Domain),
            "ServiceDNSRecord" => (crd::MULTICLUSTERDNS_GROUP, Kind::ServiceDNSRecord),
            "IngressDNSRecord" => (crd::MULTICLUSTERDNS_GROUP, Kind::IngressDNSRecord),
            "KubeFedCluster" => (crd::CORE_GROUP, Kind::KubeFedCluster),
            _ => return None,
        };
        let document_group = api_version.map(|v| v.rsplit_once('/').map_or("", |(g, _)| g));
        match document_group {
            Some(document_group) if document_group != group => None,
            _ => Some(found),
        }
    }

    fn is_federation(self) -> bool {
        matches!(
            self,
            Kind::Domain | Kind::ServiceDNSRecord | Kind::IngressDNSRecord | Kind::KubeFedCluster
        )
    }
}

/// Where a document sits in its file: `document 2`, or `document 1, items[37]` inside a List.
#[derive(Debug, Clone, Copy)]
struct Location {
    document: usize,
    item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, ", items[{item}]")?;
        }
        Ok(())
    }
}

/// The fields read before the typed parse: what the document is and what it is called.
struct Header<'a, D> {
    api_version: Option<Cow<'a, str>>,
    kind: Option<Cow<'a, str>>,
    namespace: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    /// `items` of a `List`.
    items: Option<Vec<D>>,
}

/// One parsed-but-untyped document of either format.
trait Document<'a>: Copy {
    fn header(self) -> Result<Header<'a, Self>, String>;
    /// The typed parse; errors read `field.path: what is wrong`.
    fn decode<T: DeserializeOwned>(self) -> Result<T, String>;
}

struct FileReader<'p> {
    path: &'p Path,
    placement: &'p Placement,
    objects: FileObjects,
    errors: Vec<String>,
}

impl FileReader<'_> {
    fn read_json(&mut self, text: &str) {
        // Each top-level document is read as a header straight away (no separate pass to split
        // the stream); its span, for the typed parse, is where the stream stood before and after.
        let mut documents =
            serde_json::Deserializer::from_str(text).into_iter::<Option<JsonHeader>>();
        let mut start = 0;
        for index in 1.. {
            let at = Location {
                document: index,
                item: None,
            };
            // Serde would read an array as a struct, field by field: refuse it up front.
            if text
                .get(start..)
                .unwrap_or_default()
                .trim_start()
                .starts_with('[')
            {
                let found = "expected a Kubernetes object or List, found an array";
                self.errors.push(format!("{at}: {found}"));
                return;
            }
            match documents.next() {
                None => return,
                Some(Ok(header)) => {
                    let end = documents.byte_offset();
                    let raw = text.get(start..end).unwrap_or_default().trim_start();
                    start = end;
                    if let Some(header) = header {
                        let document = JsonDocument { raw, text };
                        self.read_document(document, Ok(document.header_from(header)), at);
                    }
                }
                Some(Err(err)) => {
                    // The stream cannot resume after an error.
                    self.errors.push(format!("{at}: {err}"));
                    return;
                }
            }
        }
    }

    fn read_yaml(&mut self, text: &str) {
        for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let at = Location {
                document: index + 1,
                item: None,
            };
            let value = serde_yaml_ng::Value::deserialize(document).and_then(|mut value| {
                value.apply_merge()?;
                Ok(value)
            });
            match value {
                Ok(value) if value.is_null() => {}
                Ok(value) => self.read_document(&value, value.header(), at),
                Err(err) => {
                    // The YAML deserializer repeats a syntax error forever: stop at the first.
                    self.errors.push(format!("{at}: {err}"));
                    return;
                }
            }
        }
    }

    /// A top-level document: an object, or a List of objects.
    fn read_document<'a, D: Document<'a>>(
        &mut self,
        document: D,
        header: Result<Header<'a, D>, String>,
        at: Location,
    ) {
        match header {
            Ok(Header {
                kind: Some(kind),
                items: Some(items),
                ..
            }) if kind.ends_with("List") => {
                for (index, item) in items.into_iter().enumerate() {
                    let at = Location {
                        item: Some(index),
                        ..at
                    };
                    match item.header() {
                        Ok(header) => self.read_object(item, header, at),
                        Err(err) => self.errors.push(format!("{at}: {err}")),
                    }
                }
            }
            Ok(header) => self.read_object(document, header, at),
            Err(err) => self.errors.push(format!("{at}: {err}")),
        }
    }

    fn read_object<'a, D: Document<'a>>(
        &mut self,
        document: D,
        header: Header<'a, D>,
        at: Location,
    ) {
        let Some(kind_name) = header.kind.as_deref() else {
            self.errors.push(format!("{at}: missing field `kind`"));
            return;
        };
        let Some(kind) = Kind::classify(header.api_version.as_deref(), kind_name) else {
            tracing::debug!("{}: {at}: ignoring kind {kind_name}", self.path.display());
            return;
        };
        let described = match (header.namespace.as_deref(), header.name.as_deref()) {
            (Some(namespace), Some(name)) => format!("{at} ({kind_name} {namespace}/{name})"),
            (None, Some(name)) => format!("{at} ({kind_name} {name})"),
            (_, None) => format!("{at} ({kind_name})"),
        };
        match (self.placement, kind.is_federation()) {
            (Placement::Federation, false) => {
                tracing::warn!(
                    "{}: {described}: ignored: member objects belong in a cluster directory",
                    self.path.display()
                );
                return;
            }
            (Placement::Member(_), true) => {
                tracing::warn!(
                    "{}: {described}: ignored: federation objects belong at the top level",
                    self.path.display()
                );
                return;
            }
            _ => {}
        }
        let result = match kind {
            Kind::Service => {
                decode::<_, Service, _>(document, normalize::service).map(Parsed::Member)
            }
            Kind::EndpointSlice => {
                decode::<_, EndpointSlice, _>(document, normalize::endpoint_slice)
                    .map(Parsed::Member)
            }
            Kind::Endpoints => {
                decode::<_, Endpoints, _>(document, normalize::endpoints).map(Parsed::Member)
            }
            Kind::Ingress => {
                decode::<_, Ingress, _>(document, normalize::ingress).map(Parsed::Member)
            }
            Kind::Node => decode::<_, Node, _>(document, normalize::node).map(Parsed::Member),
            Kind::Domain => {
                decode::<_, Domain, _>(document, normalize::domain).map(Parsed::Federation)
            }
            Kind::ServiceDNSRecord => {
                decode::<_, ServiceDNSRecord, _>(document, normalize::service_dns_record)
                    .map(Parsed::Federation)
            }
            Kind::IngressDNSRecord => {
                decode::<_, IngressDNSRecord, _>(document, normalize::ingress_dns_record)
                    .map(Parsed::Federation)
            }
            Kind::KubeFedCluster => {
                decode::<_, KubeFedCluster, _>(document, normalize::kubefed_cluster)
                    .map(Parsed::Federation)
            }
        };
        match result {
            Ok(Parsed::Member(object)) => self.objects.members.push(object),
            Ok(Parsed::Federation(object)) => self.objects.federation.push(object),
            Err(err) => self.errors.push(format!("{described}: {err}")),
        }
    }
}

enum Parsed {
    Member(MemberObject),
    Federation(FederationObject),
}

/// Typed parse, then normalization; both report `field.path: problem`.
fn decode<'a, D: Document<'a>, T: DeserializeOwned, R>(
    document: D,
    normalize: fn(T) -> Result<R, NormalizeError>,
) -> Result<R, String> {
    let typed = document.decode::<T>()?;
    normalize(typed).map_err(|err| err.problem.to_string())
}

/// A JSON document or List item: a slice of the file, parsed only as far as needed.
#[derive(Clone, Copy)]
struct JsonDocument<'a> {
    raw: &'a str,
    /// The whole file, to turn positions inside `raw` into positions in the file.
    text: &'a str,
}

#[derive(Deserialize)]
#[serde(expecting = "a Kubernetes object")]
struct JsonHeader<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<JsonMetadata<'a>>,
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
#[serde(expecting = "object metadata")]
struct JsonMetadata<'a> {
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

impl<'a> Document<'a> for JsonDocument<'a> {
    fn header(self) -> Result<Header<'a, Self>, String> {
        let header = serde_json::from_str(self.raw).or_else(|_| {
            let mut de = serde_json::Deserializer::from_str(self.raw);
            serde_path_to_error::deserialize(&mut de).map_err(|err| self.describe(err))
        })?;
        Ok(self.header_from(header))
    }

    fn decode<T: DeserializeOwned>(self) -> Result<T, String> {
        // Tracking the field path costs an allocation per key: parse without it, and again with
        // it only to explain a failure.
        serde_json::from_str(self.raw).or_else(|_| {
            let mut de = serde_json::Deserializer::from_str(self.raw);
            serde_path_to_error::deserialize(&mut de).map_err(|err| self.describe(err))
        })
    }
}

impl<'a> JsonDocument<'a> {
    fn header_from(self, header: JsonHeader<'a>) -> Header<'a, Self> {
        let (namespace, name) = header
            .metadata
            .map_or((None, None), |m| (m.namespace, m.name));
        let text = self.text;
        Header {
            api_version: header.api_version,
            kind: header.kind,
            namespace,
            name,
            items: header.items.map(|items| {
                let documents = items.into_iter().map(|raw| JsonDocument {
                    raw: raw.get(),
                    text,
                });
                documents.collect()
            }),
        }
    }

    /// `path: message at line L column C`, with the position counted in the whole file (serde_json
    /// counts it in the slice it parsed).
    fn describe(self, err: serde_path_to_error::Error<serde_json::Error>) -> String {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let mut message = inner.to_string();
        if inner.line() > 0 {
            let suffix = format!(" at line {} column {}", inner.line(), inner.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                let offset = (self.raw.as_ptr() as usize)
                    .saturating_sub(self.text.as_ptr() as usize)
                    .min(self.text.len());
                let before = self.text.get(..offset).unwrap_or_default();
                let start_line = before.matches('\n').count() + 1;
                let start_column = offset - before.rfind('\n').map_or(0, |i| i + 1);
                let line = start_line + inner.line() - 1;
                let column = if inner.line() == 1 {
                    start_column + inner.column()
                } else {
                    inner.column()
                };
                message = format!("{stripped} at line {line} column {column}");
            }
        }
        if path == "." {
            message
        } else {
            format!("{path}: {message}")
        }
    }
}

impl<'a> Document<'a> for &'a serde_yaml_ng::Value {
    fn header(self) -> Result<Header<'a, Self>, String> {
        if !self.is_mapping() {
            return Err("expected a mapping (a Kubernetes object)".to_owned());
        }
        let text = |value: Option<&'a serde_yaml_ng::Value>| {
            value
                .and_then(serde_yaml_ng::Value::as_str)
                .map(Cow::Borrowed)
        };
        let metadata = self.get("metadata");
        Ok(Header {
            api_version: text(self.get("apiVersion")),
            kind: text(self.get("kind")),
            namespace: text(metadata.and_then(|m| m.get("namespace"))),
            name: text(metadata.and_then(|m| m.get("name"))),
            items: self
                .get("items")
                .and_then(serde_yaml_ng::Value::as_sequence)
                .map(|items| items.iter().collect()),
        })
    }

    fn decode<T: DeserializeOwned>(self) -> Result<T, String> {
        // As for JSON: the path is tracked only to explain a failure.
        T::deserialize(self)
            .or_else(|_| serde_path_to_error::deserialize(self))
            .map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                if path == "." {
                    inner.to_string()
                } else {
                    format!("{path}: {inner}")
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::federation::model::{
        DomainSpec, EndpointsState, FederationObjectId, LoadBalancer, MemberObjectId, ObjectKey,
        ServiceState,
    };

    /// A source directory in a tempdir.
    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn path(&self, relative: &str) -> PathBuf {
            self.dir.path().join(relative)
        }

        fn write(&self, relative: &str, content: &str) -> PathBuf {
            let path = self.path(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            path
        }

        fn remove(&self, relative: &str) {
            let path = self.path(relative);
            if path.is_dir() {
                fs::remove_dir_all(path).unwrap();
            } else {
                fs::remove_file(path).unwrap();
            }
        }

        fn load(&self) -> DirectorySnapshot {
            load(self.dir.path()).unwrap()
        }
    }

    /// A rescan as after a file-system event naming `touched`.
    fn rescan(snapshot: &mut DirectorySnapshot, touched: &[PathBuf]) -> Vec<SourceEvent> {
        snapshot.rescan(&touched.iter().cloned().collect())
    }

    fn service_yaml(namespace: &str, name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
             spec: {{type: LoadBalancer}}\n\
             status: {{loadBalancer: {{ingress: [{{ip: \"{ip}\"}}]}}}}\n"
        )
    }

    fn slice_yaml(namespace: &str, name: &str, service: &str) -> String {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}, namespace: {namespace}, \
             labels: {{kubernetes.io/service-name: {service}}}}}\n\
             addressType: IPv4\nendpoints: [{{addresses: [10.1.0.1]}}]\n"
        )
    }

    fn domain_yaml(name: &str, zone: &str) -> String {
        format!(
            "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: Domain\n\
             metadata: {{name: {name}}}\ndomain: {zone}\n"
        )
    }

    fn kubefed_cluster_yaml(name: &str, region: &str, ready: &str) -> String {
        format!(
            "apiVersion: core.kubefed.io/v1beta1\nkind: KubeFedCluster\nmetadata: {{name: {name}}}\n\
             spec: {{apiEndpoint: 'https://{name}:6443', secretRef: {{name: {name}}}}}\n\
             status:\n  conditions: [{{type: Ready, status: '{ready}'}}]\n  \
             zones: [{region}a]\n  region: {region}\n"
        )
    }

    fn lb_service(namespace: &str, name: &str, ip: &str) -> MemberObject {
        MemberObject::Service(
            ObjectKey::new(namespace, name),
            ServiceState {
                load_balancer: LoadBalancer {
                    ips: vec![ip.parse::<IpAddr>().unwrap()],
                    hostnames: vec![],
                },
            },
        )
    }

    fn slice(namespace: &str, name: &str, service: &str) -> MemberObject {
        MemberObject::EndpointSlice(
            ObjectKey::new(namespace, name),
            EndpointsState {
                service: service.into(),
                ready: 1,
            },
        )
    }

    fn domain(name: &str, zone: &str) -> FederationObject {
        FederationObject::Domain(DomainSpec {
            federation: name.into(),
            namespace: normalize::CONTROL_PLANE_NAMESPACE.into(),
            zone: zone.into(),
            name_server: None,
        })
    }

    fn member(name: &str) -> FederationObject {
        FederationObject::Member(MemberSpec {
            name: name.into(),
            ready: true,
            ..MemberSpec::default()
        })
    }

    fn member_in(name: &str, region: &str, ready: bool) -> FederationObject {
        FederationObject::Member(MemberSpec {
            name: name.into(),
            zones: vec![format!("{region}a")],
            region: Some(region.into()),
            ready,
        })
    }

    fn service_id(namespace: &str, name: &str) -> MemberObjectId {
        MemberObjectId::Service(ObjectKey::new(namespace, name))
    }

    fn member_objects(snapshot: &DirectorySnapshot, cluster: &str) -> Vec<MemberObject> {
        snapshot
            .initial_events()
            .into_iter()
            .find_map(|event| match event {
                SourceEvent::ResetMember(name, objects) if name == cluster => Some(objects),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no ResetMember for {cluster}"))
    }

    fn federation_objects(snapshot: &DirectorySnapshot) -> Vec<FederationObject> {
        match snapshot.initial_events().into_iter().next() {
            Some(SourceEvent::ResetFederation(objects)) => objects,
            other => panic!("expected ResetFederation first, got {other:?}"),
        }
    }

    fn messages(snapshot: &DirectorySnapshot) -> Vec<String> {
        snapshot.errors().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn load_resets_federation_then_each_cluster_then_reports_synced() {
        let tree = Tree::new();
        tree.write("domain.yaml", &domain_yaml("myfed", "example.com"));
        tree.write("c1/svc.yaml", &service_yaml("test", "nginx", "10.0.0.1"));
        tree.write("c2/svc.yaml", &service_yaml("test", "nginx", "10.0.0.2"));
        let events = tree.load().initial_events();
        assert_eq!(
            events,
            [
                SourceEvent::ResetFederation(vec![
                    domain("myfed", "example.com"),
                    member("c1"),
                    member("c2")
                ]),
                SourceEvent::ResetMember(
                    "c1".into(),
                    vec![lb_service("test", "nginx", "10.0.0.1")]
                ),
                SourceEvent::ResetMember(
                    "c2".into(),
                    vec![lb_service("test", "nginx", "10.0.0.2")]
                ),
                SourceEvent::Synced,
            ]
        );
    }

    #[test]
    fn missing_directory_is_an_error() {
        let tree = Tree::new();
        let err = load(tree.path("nope")).unwrap_err();
        assert!(matches!(err, DirError::Unreadable { .. }), "{err}");
        let file = tree.write("file.yaml", "");
        assert!(matches!(load(file), Err(DirError::NotADirectory { .. })));
    }

    #[test]
    fn yaml_documents_and_lists_are_all_read() {
        let tree = Tree::new();
        let list = format!(
            "apiVersion: v1\nkind: List\nitems:\n- {}\n- {}",
            service_yaml("test", "b", "10.0.0.2").replace('\n', "\n  "),
            slice_yaml("test", "b-1", "b").replace('\n', "\n  "),
        );
        let text = format!(
            "{}---\n# empty document\n---\n{list}\n---\n{}",
            service_yaml("test", "a", "10.0.0.1"),
            service_yaml("test", "c", "10.0.0.3"),
        );
        tree.write("c1/all.yaml", &text);
        let snapshot = tree.load();
        assert_eq!(messages(&snapshot), Vec::<String>::new());
        assert_eq!(
            member_objects(&snapshot, "c1"),
            [
                lb_service("test", "a", "10.0.0.1"),
                lb_service("test", "b", "10.0.0.2"),
                lb_service("test", "c", "10.0.0.3"),
                slice("test", "b-1", "b"),
            ]
        );
    }

    #[test]
    fn json_lists_and_concatenated_documents_are_read() {
        let tree = Tree::new();
        let items: Vec<String> = (0..3)
            .map(|i| {
                format!(
                    r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"s{i}","namespace":"test"}},
                       "spec":{{"type":"LoadBalancer"}},
                       "status":{{"loadBalancer":{{"ingress":[{{"ip":"10.0.0.{i}"}}]}}}}}}"#
                )
            })
            .collect();
        let text = format!(
            r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}
               {{"apiVersion":"v1","kind":"Node","metadata":{{"name":"n1"}}}}"#,
            items.join(",")
        );
        tree.write("c1/services.json", &text);
        let objects = member_objects(&tree.load(), "c1");
        assert_eq!(objects.len(), 4);
        assert_eq!(objects[2], lb_service("test", "s2", "10.0.0.2"));
        assert!(matches!(&objects[3], MemberObject::Node(name, _) if name == "n1"));
    }

    #[test]
    fn every_kind_is_read_where_it_belongs() {
        let tree = Tree::new();
        tree.write(
            "records.yaml",
            "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
             metadata: {name: nginx, namespace: test}\nspec: {domainRef: myfed}\n---\n\
             apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: IngressDNSRecord\n\
             metadata: {name: web, namespace: test}\nspec: {hosts: [web.example.com]}\n",
        );
        tree.write(
            "c1/objects.yml",
            "apiVersion: v1\nkind: Endpoints\nmetadata: {name: nginx, namespace: test}\n\
             subsets: [{addresses: [{ip: 10.1.0.1}]}]\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: test}\n\
             status: {loadBalancer: {ingress: [{hostname: lb.example.com}]}}\n---\n\
             apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {topology.kubernetes.io/zone: z1}}\n",
        );
        let snapshot = tree.load();
        assert_eq!(snapshot.errors(), []);
        let federation: Vec<_> = federation_objects(&snapshot)
            .iter()
            .map(FederationObject::id)
            .collect();
        assert_eq!(
            federation,
            [
                FederationObjectId::ServiceRecord(ObjectKey::new("test", "nginx")),
                FederationObjectId::IngressRecord(ObjectKey::new("test", "web")),
                FederationObjectId::Member("c1".into()),
            ]
        );
        let members: Vec<_> = member_objects(&snapshot, "c1")
            .iter()
            .map(MemberObject::id)
            .collect();
        assert_eq!(
            members,
            [
                MemberObjectId::Endpoints(ObjectKey::new("test", "nginx")),
                MemberObjectId::Ingress(ObjectKey::new("test", "web")),
                MemberObjectId::Node("n1".into()),
            ]
        );
    }

    #[test]
    fn unsupported_api_version_of_a_known_group_is_an_error() {
        let tree = Tree::new();
        tree.write(
            "c1/slice.yaml",
            &slice_yaml("test", "a-1", "a")
                .replace("discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"),
        );
        let errors = messages(&tree.load());
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].ends_with(
                "document 1 (EndpointSlice test/a-1): invalid value: \
                 string \"discovery.k8s.io/v1beta1\", expected discovery.k8s.io/v1"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn json_null_documents_are_skipped_and_non_objects_reported() {
        let tree = Tree::new();
        tree.write("c1/null.json", "null\n");
        tree.write("c1/array.json", "[1, 2]");
        let errors = messages(&tree.load());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].ends_with(
                "array.json: document 1: expected a Kubernetes object or List, found an array"
            ),
            "{errors:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_files_load_like_a_mounted_config_map() {
        // A ConfigMap volume: visible names are symlinks into a hidden, atomically swapped directory.
        let tree = Tree::new();
        tree.write(
            "c1/..2024_01_01/svc.yaml",
            &service_yaml("test", "a", "10.0.0.1"),
        );
        std::os::unix::fs::symlink("..2024_01_01", tree.path("c1/..data")).unwrap();
        std::os::unix::fs::symlink("..data/svc.yaml", tree.path("c1/svc.yaml")).unwrap();
        let mut snapshot = tree.load();
        assert_eq!(
            member_objects(&snapshot, "c1"),
            [lb_service("test", "a", "10.0.0.1")]
        );

        tree.write(
            "c1/..2024_01_02/svc.yaml",
            &service_yaml("test", "a", "10.0.0.22"),
        );
        std::os::unix::fs::symlink("..2024_01_02", tree.path("c1/..data_tmp")).unwrap();
        fs::rename(tree.path("c1/..data_tmp"), tree.path("c1/..data")).unwrap();
        assert_eq!(
            rescan(&mut snapshot, &[]),
            [SourceEvent::ApplyMember(
                "c1".into(),
                lb_service("test", "a", "10.0.0.22")
            )]
        );
    }

    #[test]
    fn invalid_ip_error_names_file_document_object_and_field() {
        let tree = Tree::new();
        let path = tree.write(
            "c1/svc.yaml",
            &format!(
                "{}---\n{}",
                service_yaml("test", "ok", "10.0.0.1"),
                service_yaml("test", "nginx", "10.0.0.x")
            ),
        );
        let snapshot = tree.load();
        assert_eq!(
            messages(&snapshot),
            [format!(
                r#"{}: document 2 (Service test/nginx): status.loadBalancer.ingress[0].ip: invalid IP address "10.0.0.x""#,
                path.display()
            )]
        );
        // The file is applied whole or not at all.
        assert_eq!(member_objects(&snapshot, "c1"), []);
    }

    #[test]
    fn wrong_field_type_in_a_json_list_names_item_field_and_file_position() {
        let tree = Tree::new();
        let path = tree.write(
            "c1/svc.json",
            "{\"kind\": \"List\", \"items\": [\n  {\"kind\": \"Service\", \"metadata\": {\"name\": \"a\"}},\n  \
             {\"kind\": \"Service\", \"metadata\": {\"name\": \"b\", \"namespace\": \"test\"},\n   \
             \"spec\": {\"ports\": [{\"port\": \"eighty\"}]}}\n]}\n",
        );
        assert_eq!(
            messages(&tree.load()),
            [format!(
                "{}: document 1, items[1] (Service test/b): spec.ports[0].port: invalid type: \
                 string \"eighty\", expected i32 at line 4 column 39",
                path.display()
            )]
        );
    }

    #[test]
    fn missing_required_field_is_named() {
        let tree = Tree::new();
        let path = tree.write(
            "records.yaml",
            "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
             metadata: {name: nginx, namespace: test}\nspec: {recordTTL: 300}\n",
        );
        assert_eq!(
            messages(&tree.load()),
            [format!(
                "{}: document 1 (ServiceDNSRecord test/nginx): spec: missing field `domainRef`",
                path.display()
            )]
        );
    }

    #[test]
    fn yaml_syntax_error_and_missing_kind_are_reported() {
        let tree = Tree::new();
        tree.write("c1/broken.yaml", "kind: Service\nmetadata: {name: [x\n");
        tree.write("c1/kindless.yaml", "metadata: {name: x}\n");
        let errors = messages(&tree.load());
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("broken.yaml: document 1: "),
            "{errors:?}"
        );
        assert!(
            errors[1].ends_with("kindless.yaml: document 1: missing field `kind`"),
            "{errors:?}"
        );
    }

    #[test]
    fn bad_file_at_startup_contributes_nothing_but_others_load() {
        let tree = Tree::new();
        tree.write("c1/good.yaml", &service_yaml("test", "good", "10.0.0.1"));
        tree.write("c1/bad.yaml", &service_yaml("test", "bad", "nope"));
        let snapshot = tree.load();
        assert_eq!(snapshot.errors().len(), 1);
        assert_eq!(
            member_objects(&snapshot, "c1"),
            [lb_service("test", "good", "10.0.0.1")]
        );
    }

    #[test]
    fn bad_edit_keeps_last_good_objects_until_fixed() {
        let tree = Tree::new();
        let path = tree.write("c1/svc.yaml", &service_yaml("test", "nginx", "10.0.0.1"));
        let mut snapshot = tree.load();
        let errors = snapshot.subscribe_errors();

        tree.write("c1/svc.yaml", &service_yaml("test", "nginx", "10.0.0.x"));
        assert_eq!(rescan(&mut snapshot, std::slice::from_ref(&path)), []);
        assert_eq!(snapshot.errors().len(), 1);
        assert_eq!(errors.borrow().len(), 1);
        assert_eq!(
            member_objects(&snapshot, "c1"),
            [lb_service("test", "nginx", "10.0.0.1")]
        );
        // Not re-read (nor re-reported) while it does not change.
        assert_eq!(rescan(&mut snapshot, &[]), []);

        tree.write("c1/svc.yaml", &service_yaml("test", "nginx", "10.0.0.2"));
        assert_eq!(
            rescan(&mut snapshot, &[path]),
            [SourceEvent::ApplyMember(
                "c1".into(),
                lb_service("test", "nginx", "10.0.0.2")
            )]
        );
        assert_eq!(snapshot.errors(), []);
        assert!(errors.borrow().is_empty());
    }

    #[test]
    fn editing_one_object_sends_only_that_object() {
        let tree = Tree::new();
        let services = |second_ip: &str| {
            format!(
                "{}---\n{}---\n{}",
                service_yaml("test", "a", "10.0.0.1"),
                service_yaml("test", "b", second_ip),
                service_yaml("test", "c", "10.0.0.3")
            )
        };
        let path = tree.write("c1/svc.yaml", &services("10.0.0.2"));
        tree.write("c2/svc.yaml", &services("10.0.0.2"));
        let mut snapshot = tree.load();
        assert_eq!(rescan(&mut snapshot, &[]), []);

        tree.write("c1/svc.yaml", &services("10.0.0.9"));
        assert_eq!(
            rescan(&mut snapshot, &[path]),
            [SourceEvent::ApplyMember(
                "c1".into(),
                lb_service("test", "b", "10.0.0.9")
            )]
        );
    }

    #[test]
    fn changed_size_is_noticed_without_a_file_system_event() {
        let tree = Tree::new();
        tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
        let mut snapshot = tree.load();
        tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.100"));
        assert_eq!(
            rescan(&mut snapshot, &[]),
            [SourceEvent::ApplyMember(
                "c1".into(),
                lb_service("test", "a", "10.0.0.100")
            )]
        );
    }

    #[test]
    fn removing_a_file_deletes_its_objects() {
        let tree = Tree::new();
        tree.write("c1/a.yaml", &service_yaml("test", "a", "10.0.0.1"));
        tree.write("c1/b.yaml", &service_yaml("test", "b", "10.0.0.2"));
        tree.write("records.yaml", &domain_yaml("myfed", "example.com"));
        let mut snapshot = tree.load();
        tree.remove("c1/b.yaml");
        tree.remove("records.yaml");
        assert_eq!(
            rescan(&mut snapshot, &[]),
            [
                SourceEvent::DeleteFederation(FederationObjectId::Domain("myfed".into())),
                SourceEvent::DeleteMember("c1".into(), service_id("test", "b")),
            ]
        );
    }

    #[test]
    fn adding_a_cluster_directory_adds_the_member_and_its_objects() {
        let tree = Tree::new();
        tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
        let mut snapshot = tree.load();
        tree.write("c2/svc.yaml", &service_yaml("test", "a", "10.0.0.2"));
        assert_eq!(
            rescan(&mut snapshot, &[]),
            [
                SourceEvent::ApplyFederation(member("c2")),
                SourceEvent::ResetMember("c2".into(), vec![lb_service("test", "a", "10.0.0.2")]),
            ]
        );
        assert_eq!(snapshot.clusters().collect::<Vec<_>>(), ["c1", "c2"]);
    }

    #[test]
    fn removing_a_cluster_directory_removes_the_member_and_its_objects() {
        let tree = Tree::new();
        tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
        tree.write("c2/svc.yaml", &service_yaml("test", "a", "10.0.0.2"));
        let mut snapshot = tree.load();
        tree.remove("c2");
        assert_eq!(
            rescan(&mut snapshot, &[]),
            [
                SourceEvent::DeleteFederation(FederationObjectId::Member("c2".into())),
                SourceEvent::ResetMember("c2".into(), vec![]),
            ]
        );
        assert_eq!(federation_objects(&snapshot), [member("c1")]);
    }

    #[test]
    fn kubefed_cluster_topology_and_readiness_win_over_the_directory() {
        let tree = Tree::new();
        tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
        tree.write("clusters.yaml", &kubefed_cluster_yaml("c1", "eu", "False"));
        let mut snapshot = tree.load();
        assert_eq!(
            federation_objects(&snapshot),
            [member_in("c1", "eu", false)]
        );

        // Back to the directory's defaults when the KubeFedCluster goes away.
        tree.remove("clusters.yaml");
        assert_eq!(
            rescan(&mut snapshot, &[]),
            [SourceEvent::ApplyFederation(member("c1"))]
        );
    }

    #[test]
    fn kubefed_cluster_without_directory_is_still_a_member() {
        let tree = Tree::new();
        tree.write("clusters.yaml", &kubefed_cluster_yaml("c9", "us", "True"));
        let mut snapshot = tree.load();
        assert_eq!(federation_objects(&snapshot), [member_in("c9", "us", true)]);
        assert_eq!(snapshot.clusters().count(), 0);

        // A directory appearing for it adds its objects but does not touch the member.
        tree.write("c9/svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
        assert_eq!(
            rescan(&mut snapshot, &[]),
            [SourceEvent::ResetMember(
                "c9".into(),
                vec![lb_service("test", "a", "10.0.0.1")]
            )]
        );
        // Nor does its removal.
        tree.remove("c9");
        assert_eq!(
            rescan(&mut snapshot, &[]),
            [SourceEvent::ResetMember("c9".into(), vec![])]
        );
    }

    #[test]
    fn same_object_in_two_files_last_path_wins() {
        let tree = Tree::new();
        tree.write("c1/a.yaml", &service_yaml("test", "web", "10.0.0.1"));
        let later = tree.write("c1/b.yaml", &service_yaml("test", "web", "10.0.0.2"));
        let mut snapshot = tree.load();
        assert_eq!(
            member_objects(&snapshot, "c1"),
            [lb_service("test", "web", "10.0.0.2")]
        );

        // Editing the shadowed file changes nothing.
        let earlier = tree.write("c1/a.yaml", &service_yaml("test", "web", "10.0.0.3"));
        assert_eq!(rescan(&mut snapshot, &[earlier]), []);

        // Removing the winner falls back to the other file's version.
        tree.remove("c1/b.yaml");
        assert_eq!(
            rescan(&mut snapshot, &[later]),
            [SourceEvent::ApplyMember(
                "c1".into(),
                lb_service("test", "web", "10.0.0.3")
            )]
        );
    }

    #[test]
    fn same_object_twice_in_one_file_later_definition_wins() {
        let tree = Tree::new();
        tree.write(
            "c1/svc.yaml",
            &format!(
                "{}---\n{}",
                service_yaml("test", "web", "10.0.0.1"),
                service_yaml("test", "web", "10.0.0.2")
            ),
        );
        assert_eq!(
            member_objects(&tree.load(), "c1"),
            [lb_service("test", "web", "10.0.0.2")]
        );
    }

    #[test]
    fn hidden_editor_and_foreign_files_are_ignored() {
        let tree = Tree::new();
        let bad = service_yaml("test", "x", "not-an-ip");
        tree.write("c1/.hidden.yaml", &bad);
        tree.write("c1/svc.yaml~", &bad);
        tree.write("c1/.svc.yaml.swp", &bad);
        tree.write("c1/notes.txt", &bad);
        tree.write(".git/config.yaml", &bad);
        tree.write("c1/nested/svc.yaml", &bad);
        tree.write(
            "c1/other.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n\
             apiVersion: example.com/v1\nkind: Service\nmetadata: {name: not-core}\n",
        );
        let snapshot = tree.load();
        assert_eq!(messages(&snapshot), Vec::<String>::new());
        assert_eq!(snapshot.clusters().collect::<Vec<_>>(), ["c1"]);
        assert_eq!(member_objects(&snapshot, "c1"), []);
    }

    #[test]
    fn objects_in_the_wrong_place_are_ignored() {
        let tree = Tree::new();
        tree.write("svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
        tree.write("c1/domain.yaml", &domain_yaml("myfed", "example.com"));
        let snapshot = tree.load();
        assert_eq!(snapshot.errors(), []);
        assert_eq!(federation_objects(&snapshot), [member("c1")]);
        assert_eq!(member_objects(&snapshot, "c1"), []);
    }

    #[test]
    fn big_json_lists_load_in_parallel_and_in_order() {
        let tree = Tree::new();
        for cluster in 0..4 {
            let items: Vec<String> = (0..500)
                .map(|i| {
                    format!(
                        r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
                           "metadata":{{"name":"s{i}-x","namespace":"ns",
                           "labels":{{"kubernetes.io/service-name":"s{i}"}}}},
                           "addressType":"IPv4","endpoints":[]}}"#
                    )
                })
                .collect();
            let text = format!(r#"{{"kind":"List","items":[{}]}}"#, items.join(","));
            tree.write(&format!("c{cluster}/slices.json"), &text);
        }
        let events = tree.load().initial_events();
        assert_eq!(events.len(), 6);
        for (cluster, event) in events[1..5].iter().enumerate() {
            let SourceEvent::ResetMember(name, objects) = event else {
                panic!("expected ResetMember, got {event:?}")
            };
            assert_eq!(name, &format!("c{cluster}"));
            assert_eq!(objects.len(), 500);
        }
    }

    #[tokio::test]
    async fn watch_sends_an_edit_within_a_second() {
        let tree = Tree::new();
        tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
        let snapshot = tree.load();
        let (tx, mut rx) = mpsc::channel(16);
        let watcher = tokio::spawn(watch(tree.dir.path().to_path_buf(), snapshot, tx));
        // Let the watcher start and do its first rescan.
        tokio::time::sleep(Duration::from_millis(200)).await;

        let edited = std::time::Instant::now();
        tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.2"));
        let event = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .expect("no event within a second of the edit");
        assert_eq!(
            event,
            Some(SourceEvent::ApplyMember(
                "c1".into(),
                lb_service("test", "a", "10.0.0.2")
            ))
        );
        assert!(edited.elapsed() < Duration::from_secs(1));

        // Dropping the receiver stops the watch.
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("watch did not stop")
            .unwrap();
    }
}
