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
//! only what changed. A bad document is skipped (an object it held before keeps that last good
//! version) and the rest of its file is used; a file that cannot be read or parsed as a whole (a
//! YAML syntax error) keeps contributing what it held at its last good parse. Either way the error
//! is listed in [`DirectorySnapshot::errors`].
//!
//! - `listing`: which files count, where they sit, and their fingerprints;
//! - `parse`: JSON/YAML decoding with located errors;
//! - `scopes`: per-file "last good content" and which definition wins;
//! - `snapshot`: the rescan and its diff, as events.
//!
//! The directory source only reads: it writes no file and computes no record.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch as latest};
use tokio::time::{Instant, MissedTickBehavior};

use crate::federation::model::{FederationObject, MemberObject, SourceEvent};
use listing::list_tree;
use scopes::Scope;

mod listing;
mod parse;
mod scopes;
mod snapshot;
#[cfg(test)]
mod tests;

/// Quiet time after a file-system event before the tree is rescanned: editors write in bursts.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// A steady stream of events still gets a rescan this often.
const MAX_DEBOUNCE: Duration = Duration::from_millis(250);
/// A file modified less than this long ago is not read yet: a writer that truncates and then
/// writes (`>` in a shell, most `write_file` helpers) leaves it empty in between, and an empty file
/// would be taken as "all its objects deleted". The rescan comes back once the file has been quiet
/// this long.
const SETTLE: Duration = DEBOUNCE;
/// Rescan (stat only; files are re-read when their size or mtime changed) when the file-system
/// watcher cannot be started.
const RESCAN_INTERVAL: Duration = Duration::from_secs(2);
/// Fallback rescan while the watcher runs, for events it misses: network file systems, symlinked
/// directories, overflowed queues. Rare: a rescan stats every file of the tree, a burst of CPU
/// that delays the answers queued behind it on a busy core (every 2 s it was the largest part of
/// fedns's p99.9 latency at 26,000 names).
const WATCHED_RESCAN_INTERVAL: Duration = Duration::from_secs(30);

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
    let _ = snapshot.update(listing, &HashSet::new(), None);
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
}

/// Follows the directory: sends `Apply*`/`Delete*`/`ResetMember` events for what changes, until
/// `tx` is closed. Does not send the snapshot's [`DirectorySnapshot::initial_events`]; send those
/// first.
///
/// File-system events trigger a rescan after 50 ms of quiet; a stat-only rescan also runs every
/// 30 s (every 2 s when the watcher cannot start, and once at start, for changes made since
/// [`load`]) in case events are missed. Only changed files are re-read, once they have not been
/// modified for 50 ms, and only objects whose value changed are sent. If `dir` is not the
/// snapshot's directory, the first rescan turns the snapshot into `dir`'s contents.
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
    let watcher = start_file_watcher(&snapshot.root, notify_tx);
    let every = match watcher.is_some() {
        true => WATCHED_RESCAN_INTERVAL,
        false => RESCAN_INTERVAL,
    };
    let mut poll = tokio::time::interval(every);
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
        let scan = tokio::task::spawn_blocking(move || {
            let rescan = snapshot.rescan(&forced, SystemTime::now());
            (snapshot, rescan)
        });
        let rescan: snapshot::Rescan;
        (snapshot, rescan) = match scan.await {
            Ok(done) => done,
            Err(err) => {
                tracing::error!("directory source stopped: rescan failed: {err}");
                return;
            }
        };
        if let Some(retry) = rescan.retry_after() {
            let now = Instant::now();
            pending = Some((now, now + retry));
            touched.extend(rescan.settling);
        }
        let events = rescan.events;
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
