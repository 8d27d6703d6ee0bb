//! Listing the tree: which files are manifests, where each sits (top level or a cluster
//! directory), and the size/mtime fingerprint that decides whether a file is re-read.
//!
//! Reads directory metadata only: no file contents, no parsing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Size and modification time: a file whose fingerprint is unchanged is not re-read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub(super) len: u64,
    pub(super) modified: Option<SystemTime>,
}

impl Fingerprint {
    pub(super) fn of(metadata: &fs::Metadata) -> Self {
        Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Placement {
    Federation,
    Member(String),
}

#[derive(Debug, Clone)]
pub(super) struct Listed {
    pub(super) placement: Placement,
    pub(super) fingerprint: Fingerprint,
}

#[derive(Debug, Default)]
pub(super) struct Listing {
    pub(super) clusters: BTreeSet<String>,
    pub(super) files: BTreeMap<PathBuf, Listed>,
    /// Cluster directories that could not be listed: their files are kept as they were.
    pub(super) unlisted: BTreeSet<String>,
}

/// Lists manifests at the top and one level down (symlinks followed, so ConfigMap mounts work).
pub(super) fn list_tree(root: &Path) -> io::Result<Listing> {
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

pub(super) fn is_json(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
}
