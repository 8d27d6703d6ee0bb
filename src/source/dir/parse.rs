//! Parsing one file: JSON or YAML documents (and `List`s) into normalized federation or member
//! objects, with every error located by document, list item, object and field path.
//!
//! Reads the files it is given and nothing else; it keeps no state between files.

use std::borrow::Cow;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::listing::{Listed, Placement, is_json};
use super::scopes::Keyed;
use crate::federation::model::{FederationObject, MemberObject};
use crate::k8s::crd::{self, Domain, IngressDNSRecord, KubeFedCluster, ServiceDNSRecord};
use crate::source::normalize::{self, NormalizeError};

/// What one file contributes: federation objects for a top-level file, member objects for a file in
/// a cluster directory. Each list is sorted by key, one object per key.
#[derive(Debug, Default)]
pub(super) struct FileObjects {
    pub(super) federation: Vec<FederationObject>,
    pub(super) members: Vec<MemberObject>,
    /// Objects whose document failed (skipped), by their sort key: the file keeps their last good
    /// version, if it had one.
    pub(super) failed: Vec<FailedKey>,
}

/// (kind rank, namespace, name) of a skipped object, as [`Keyed::sort_key`] would give it.
pub(super) type FailedKey = (u8, String, String);

/// A file that was read: its good objects, and the errors of the documents that were skipped.
/// `Err` means the file as a whole failed (unreadable, or a syntax error that stops the document
/// stream) and keeps contributing what it held at its last good parse.
pub(super) type ParsedFile = Result<(FileObjects, Vec<String>), Vec<String>>;

/// Parses files on all cores, biggest first; results in input order.
pub(super) fn parse_files(files: &[(PathBuf, Listed)]) -> Vec<ParsedFile> {
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
    let mut done: Vec<(usize, ParsedFile)> = std::thread::scope(|scope| {
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

/// Reads one file: its good objects and the errors of its bad documents, or (`Err`) the errors
/// that stopped the whole file.
fn parse_file(path: &Path, placement: &Placement) -> ParsedFile {
    let text = fs::read_to_string(path).map_err(|err| vec![format!("cannot read: {err}")])?;
    let mut reader = FileReader {
        path,
        placement,
        objects: FileObjects::default(),
        errors: Vec::new(),
        broken: false,
    };
    if is_json(path) {
        reader.read_json(&text);
    } else {
        reader.read_yaml(&text);
    }
    if reader.broken {
        return Err(reader.errors);
    }
    let mut objects = reader.objects;
    sort_unique(&mut objects.federation, path);
    sort_unique(&mut objects.members, path);
    // Kept until the file changes: without the growth slack (a third of the source's memory
    // at 100 clusters × 10,000 services).
    objects.federation.shrink_to_fit();
    objects.members.shrink_to_fit();
    Ok((objects, reader.errors))
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

    /// The first part of the [`Keyed::sort_key`] of an object of this kind.
    fn key_rank(self) -> u8 {
        match self {
            Kind::Service | Kind::Domain => 0,
            Kind::EndpointSlice | Kind::ServiceDNSRecord => 1,
            Kind::Endpoints | Kind::IngressDNSRecord => 2,
            Kind::Ingress | Kind::KubeFedCluster => 3,
            Kind::Node => 4,
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
    /// The document stream itself failed: nothing of the file can be trusted.
    broken: bool,
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
                self.broken = true;
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
                    self.broken = true;
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
                    self.broken = true;
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
            Err(err) => {
                self.errors.push(format!("{described}: {err}"));
                if let Some(name) = header.name.as_deref() {
                    let namespace = match kind {
                        Kind::Service
                        | Kind::EndpointSlice
                        | Kind::Endpoints
                        | Kind::Ingress
                        | Kind::ServiceDNSRecord
                        | Kind::IngressDNSRecord => header
                            .namespace
                            .as_deref()
                            .unwrap_or(normalize::DEFAULT_NAMESPACE),
                        Kind::Node | Kind::Domain | Kind::KubeFedCluster => "",
                    };
                    let key = (kind.key_rank(), namespace.to_owned(), name.to_owned());
                    self.objects.failed.push(key);
                }
            }
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
