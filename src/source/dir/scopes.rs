//! Per-scope state (the top level, or one cluster directory): the objects each file contributed
//! at its last good parse, which definition wins when files overlap, and the per-object changes
//! when a file is replaced.
//!
//! Pure bookkeeping: no file-system access.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::listing::Fingerprint;
use super::parse::FailedKey;
use super::snapshot::Change;
use crate::federation::model::{FederationObject, MemberObject, MemberSpec};

/// Borrowed identity of an object, to sort and find it without cloning its names:
/// (kind rank, namespace, name).
pub(super) type SortKey<'a> = (u8, &'a str, &'a str);

/// An object of one scope (federation or one member), with an identity.
pub(super) trait Keyed: Clone + PartialEq {
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

/// The files of one scope (the top level, or one cluster directory) and the objects each
/// contributed at its last good parse. When files define the same object, the last in path order
/// wins.
pub(super) struct Scope<O> {
    pub(super) files: BTreeMap<PathBuf, FileEntry<O>>,
}

impl<O> Default for Scope<O> {
    fn default() -> Self {
        Self {
            files: BTreeMap::new(),
        }
    }
}

pub(super) struct FileEntry<O> {
    pub(super) fingerprint: Fingerprint,
    /// Sorted by [`Keyed::sort_key`], one object per key.
    pub(super) objects: Vec<O>,
    /// The members implied by the cluster directories (keyed by the root, so it sorts first and any
    /// KubeFedCluster overrides it). Not a file: never re-read, never warned about.
    pub(super) implicit: bool,
}

impl<O: Keyed> FileEntry<O> {
    pub(super) fn new(fingerprint: Fingerprint, objects: Vec<O>) -> Self {
        Self {
            fingerprint,
            objects,
            implicit: false,
        }
    }

    pub(super) fn get(&self, key: SortKey<'_>) -> Option<&O> {
        let index = self
            .objects
            .binary_search_by(|object| object.sort_key().cmp(&key))
            .ok()?;
        self.objects.get(index)
    }
}

impl FileEntry<FederationObject> {
    pub(super) fn implicit_members(clusters: &BTreeSet<String>) -> Self {
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
    pub(super) fn replace(&mut self, path: &Path, new: Option<FileEntry<O>>) -> Vec<Change<O>> {
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
    pub(super) fn defined_after(&self, path: &Path, key: SortKey<'_>) -> Option<(&Path, &O)> {
        self.files
            .range::<Path, _>((Bound::Excluded(path), Bound::Unbounded))
            .rev()
            .find_map(|(p, entry)| entry.get(key).map(|o| (p.as_path(), o)))
    }

    /// The last file before `path` that defines `key`: the one that wins when `path` does not.
    pub(super) fn defined_before(
        &self,
        path: &Path,
        key: SortKey<'_>,
    ) -> Option<(&Path, &FileEntry<O>)> {
        self.files
            .range::<Path, _>((Bound::Unbounded, Bound::Excluded(path)))
            .rev()
            .find(|(_, entry)| entry.get(key).is_some())
            .map(|(p, entry)| (p.as_path(), entry))
    }

    /// Fingerprints of the real files (not the implicit entry).
    pub(super) fn file_fingerprints(&self) -> impl Iterator<Item = (PathBuf, Fingerprint)> + '_ {
        self.files
            .iter()
            .filter(|(_, entry)| !entry.implicit)
            .map(|(path, entry)| (path.clone(), entry.fingerprint))
    }

    /// Adds to `objects` (a new parse of `path`, sorted by key) the last good version of each object
    /// whose document now fails: a bad edit of one object neither deletes it nor touches the rest.
    pub(super) fn with_last_good(
        &self,
        path: &Path,
        failed: &[FailedKey],
        mut objects: Vec<O>,
    ) -> Vec<O> {
        let Some(old) = self.files.get(path) else {
            return objects;
        };
        let before = objects.len();
        for (rank, namespace, name) in failed {
            let key = (*rank, namespace.as_str(), name.as_str());
            let parsed = objects.binary_search_by(|o| o.sort_key().cmp(&key)).is_ok();
            if let (false, Some(object)) = (parsed, old.get(key)) {
                objects.push(object.clone());
            }
        }
        if objects.len() != before {
            objects.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        }
        objects
    }

    /// Marks a file that failed to parse as seen, keeping its last good objects.
    pub(super) fn keep_last_good(&mut self, path: &Path, fingerprint: Fingerprint) {
        match self.files.get_mut(path) {
            Some(entry) => entry.fingerprint = fingerprint,
            None => {
                self.files
                    .insert(path.to_path_buf(), FileEntry::new(fingerprint, Vec::new()));
            }
        }
    }

    /// The effective objects: per identity, the version of the last file in path order.
    pub(super) fn effective(&self) -> Vec<O> {
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
    pub(super) fn warn_overrides(&self, scope: &str) {
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
