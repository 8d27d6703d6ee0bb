//! The in-memory object store of one fake cluster: objects per collection, the resource-version
//! counter, a bounded watch history per collection and the broadcast channels watches read.
//!
//! Every operation runs synchronously under the cluster's store lock and touches only the
//! objects it involves (a `BTreeMap` range for lists, one key for writes).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::ops::Bound;
use std::sync::Arc;

use axum::body::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::registry::{self, Registry, ResourceId, ResourceType};
use super::selector::ObjectFilter;

/// An error the API server returns as a `Status` object.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = json!({"name": name, "group": rt.group, "kind": rt.plural});
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_name()),
        )
        .with_details(rt, name)
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified_name()),
        )
        .with_details(rt, name)
    }

    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified_name()
            ),
        )
        .with_details(rt, name)
    }

    pub fn invalid(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {why}", rt.kind),
        )
        .with_details(rt, name)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// The reason the API server uses for a bare HTTP status code.
    pub fn reason_for(code: u16) -> &'static str {
        match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            406 => "NotAcceptable",
            409 => "Conflict",
            410 => "Expired",
            413 => "RequestEntityTooLarge",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        }
    }

    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.is_null() {
            status["details"] = self.details.clone();
        }
        status
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// An object as stored: its JSON, and what selectors look at. Serialized once per write, so a
/// list or watch copies bytes, and 200,000 objects take a fraction of what `Value` trees would.
#[derive(Debug)]
pub struct Stored {
    pub json: Bytes,
    pub api_version: String,
    pub namespace: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl Stored {
    pub fn new(object: &Value) -> Stored {
        let metadata = meta(object);
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Stored {
            json: Bytes::from(serde_json::to_vec(object).expect("JSON values serialize")),
            api_version: text(&object["apiVersion"]),
            namespace: text(&metadata["namespace"]),
            name: text(&metadata["name"]),
            labels: metadata["labels"]
                .as_object()
                .map(|labels| {
                    labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The object as a JSON tree (parsed on demand: writes and seeding reads only).
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).expect("stored objects are valid JSON")
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One change, as kept in the watch history and fanned out to open watches.
#[derive(Debug)]
pub struct WatchRecord {
    pub rv: u64,
    pub event: EventType,
    pub object: Arc<Stored>,
    /// The object before a modification, so a watch with a selector can tell an object that
    /// left its selection (sent as DELETED) from one that entered it (ADDED).
    pub previous: Option<Arc<Stored>>,
}

/// Key of an object within its collection: (namespace or "", name). Sorted as etcd keys are.
pub type ObjectKey = (String, String);

#[derive(Debug, Default)]
struct Collection {
    objects: BTreeMap<ObjectKey, Arc<Stored>>,
    history: VecDeque<Arc<WatchRecord>>,
    /// Watches from a resourceVersion below this are answered with 410 Expired.
    compacted_through: u64,
    sender: Option<broadcast::Sender<Arc<WatchRecord>>>,
}

/// Options of one write.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    /// Seeding: keep `.status` on create and on update, skip the namespace-exists check.
    pub seed: bool,
}

/// Which part of an existing object an update may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateScope {
    /// The main resource: `.status` is kept as it was for types with a status subresource.
    Main,
    /// The `/status` subresource: only `.status` changes.
    Status,
}

/// The result of a delete.
#[derive(Debug)]
pub enum DeleteOutcome {
    /// Removed from the store; holds the last state.
    Gone(Arc<Stored>),
    /// Finalizers keep it: `deletionTimestamp` is set.
    Pending(Arc<Stored>),
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub rv: u64,
    pub items: Vec<Arc<Stored>>,
    pub continue_token: Option<String>,
}

/// What a new watch starts from.
#[derive(Debug)]
pub struct WatchStart {
    /// Objects to send as synthetic ADDED events (watch without a resourceVersion).
    pub initial: Vec<Arc<Stored>>,
    /// History after the requested resourceVersion.
    pub replay: Vec<Arc<WatchRecord>>,
    pub receiver: broadcast::Receiver<Arc<WatchRecord>>,
    /// The store's resourceVersion when the watch started.
    pub rv: u64,
}

/// Sizes of the per-collection watch history and fan-out channel.
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    pub history: usize,
    pub channel: usize,
}

#[derive(Debug)]
pub struct Store {
    rv: u64,
    pub registry: Registry,
    collections: HashMap<ResourceId, Collection>,
    limits: StoreLimits,
    random: RandomState,
    random_counter: u64,
    /// Where history starts for collections created from now on (raised by `compact`).
    floor: u64,
}

pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn key_of(ns: Option<&str>, name: &str) -> ObjectKey {
    (ns.unwrap_or_default().to_string(), name.to_string())
}

fn meta(object: &Value) -> &Value {
    &object["metadata"]
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn rv_of(object: &Value) -> Option<&str> {
    meta(object)["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
}

fn finalizers(object: &Value) -> Vec<&str> {
    meta(object)["finalizers"]
        .as_array()
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// True when anything but metadata and status differs (the rule for bumping `generation`).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let ignored = |k: &str| matches!(k, "metadata" | "status" | "apiVersion" | "kind");
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return old != new;
    };
    old.iter()
        .filter(|(k, _)| !ignored(k))
        .any(|(k, v)| new.get(k) != Some(v))
        || new
            .iter()
            .filter(|(k, _)| !ignored(k))
            .any(|(k, _)| !old.contains_key(k))
}

impl Store {
    pub fn new(limits: StoreLimits) -> Self {
        let mut store = Store {
            rv: 0,
            registry: Registry::builtin(),
            collections: HashMap::new(),
            limits,
            random: RandomState::new(),
            random_counter: 0,
            floor: 0,
        };
        store.seed_defaults();
        store
    }

    /// A fresh store (no objects, built-in types only) whose resourceVersions continue after this
    /// one's, so clients holding old versions relist instead of waiting for a "future" version.
    pub fn emptied(&self) -> Self {
        let mut store = Store {
            rv: self.rv,
            registry: Registry::builtin(),
            collections: HashMap::new(),
            limits: self.limits,
            random: RandomState::new(),
            random_counter: 0,
            floor: 0,
        };
        store.compact();
        store.seed_defaults();
        store
    }

    /// What every new cluster has: the four system namespaces and the `kubernetes` Service.
    fn seed_defaults(&mut self) {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            self.seed_apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .expect("system namespace");
        }
        let labels = json!({"component": "apiserver", "provider": "kubernetes"});
        let defaults = [
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
                "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                         "sessionAffinity": "None"},
                "status": {"loadBalancer": {}},
            }),
            json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}],
            }),
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
            }),
        ];
        for object in defaults {
            self.seed_apply(object).expect("default object");
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn object_count(&self) -> usize {
        self.collections.values().map(|c| c.objects.len()).sum()
    }

    fn random_u64(&mut self) -> u64 {
        self.random_counter += 1;
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.random_counter);
        hasher.finish()
    }

    fn new_uid(&mut self) -> String {
        let a = self.random_u64();
        let b = self.random_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    fn generated_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut n = self.random_u64();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    fn collection(&mut self, id: &ResourceId) -> &mut Collection {
        let floor = self.floor;
        self.collections
            .entry(id.clone())
            .or_insert_with(|| Collection {
                compacted_through: floor,
                ..Collection::default()
            })
    }

    pub fn get(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Arc<Stored>, ApiError> {
        self.collections
            .get(&rt.id())
            .and_then(|c| c.objects.get(&key_of(ns, name)))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// A page of matching objects, sorted by (namespace, name). `limit` counts matches.
    pub fn list(
        &self,
        rt: &ResourceType,
        filter: &ObjectFilter,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let (list_rv, start) = match continue_token.filter(|t| !t.is_empty()) {
            None => (self.rv, None),
            Some(token) => {
                let mut parts = token.splitn(3, ':');
                let parsed = (parts.next(), parts.next(), parts.next());
                let (Some(rv), Some(ns), Some(name)) = parsed else {
                    return Err(ApiError::bad_request(format!(
                        "invalid continue token {token:?}"
                    )));
                };
                let rv: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid continue token {token:?}"))
                })?;
                let compacted = self
                    .collections
                    .get(&rt.id())
                    .map_or(self.floor, |c| c.compacted_through);
                if rv < compacted {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some((ns.to_string(), name.to_string())))
            }
        };
        let mut page = ListPage {
            rv: list_rv,
            items: Vec::new(),
            continue_token: None,
        };
        let Some(collection) = self.collections.get(&rt.id()) else {
            return Ok(page);
        };
        let lower = match (&start, &filter.namespace) {
            (Some(after), _) => Bound::Excluded(after.clone()),
            (None, Some(ns)) => Bound::Included((ns.clone(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        for (key, object) in collection.objects.range((lower, Bound::Unbounded)) {
            if let Some(ns) = &filter.namespace
                && &key.0 != ns
            {
                break;
            }
            if !filter.matches(object) {
                continue;
            }
            if limit.is_some_and(|l| l > 0 && page.items.len() == l) {
                if let Some(last) = page.items.last() {
                    let (ns, name) = (&last.namespace, &last.name);
                    page.continue_token = Some(format!("{list_rv}:{ns}:{name}"));
                }
                break;
            }
            page.items.push(object.clone());
        }
        Ok(page)
    }

    /// Starts a watch: from `from` (replaying history) or, without one, from the current state.
    pub fn watch(
        &mut self,
        rt: &ResourceType,
        from: Option<u64>,
        filter: &ObjectFilter,
    ) -> Result<WatchStart, ApiError> {
        let current = self.rv;
        let channel = self.limits.channel;
        let collection = self.collection(&rt.id());
        let mut start = WatchStart {
            initial: Vec::new(),
            replay: Vec::new(),
            receiver: collection
                .sender
                .get_or_insert_with(|| broadcast::channel(channel).0)
                .subscribe(),
            rv: current,
        };
        match from {
            None => {
                start.initial = collection
                    .objects
                    .values()
                    .filter(|o| filter.matches(o))
                    .cloned()
                    .collect();
            }
            Some(rv) if rv < collection.compacted_through => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    collection.compacted_through
                )));
            }
            Some(rv) if rv > current => {
                let mut err = ApiError::new(
                    504,
                    "Timeout",
                    format!("Too large resource version: {rv}, current: {current}"),
                );
                err.details = json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1});
                return Err(err);
            }
            Some(rv) => {
                let first = collection.history.partition_point(|r| r.rv <= rv);
                start.replay = collection.history.range(first..).cloned().collect();
            }
        }
        Ok(start)
    }

    /// Forgets all watch history: watches from any version before now get 410 Expired.
    pub fn compact(&mut self) {
        let rv = self.rv;
        self.floor = rv;
        for collection in self.collections.values_mut() {
            collection.history.clear();
            collection.compacted_through = rv;
        }
    }

    /// Records a change: bumps the resourceVersion, stores or removes the object, appends to the
    /// history and fans out to open watches.
    fn commit(
        &mut self,
        id: &ResourceId,
        key: ObjectKey,
        object: &mut Value,
        event: EventType,
    ) -> Arc<Stored> {
        self.rv += 1;
        let rv = self.rv;
        meta_mut(object).insert("resourceVersion".into(), json!(rv.to_string()));
        let object = Arc::new(Stored::new(object));
        let limit = self.limits.history;
        let collection = self.collection(id);
        let previous = if event == EventType::Deleted {
            collection.objects.remove(&key)
        } else {
            collection.objects.insert(key, object.clone())
        };
        let record = Arc::new(WatchRecord {
            rv,
            event,
            object: object.clone(),
            previous,
        });
        if collection.history.len() >= limit
            && let Some(evicted) = collection.history.pop_front()
        {
            collection.compacted_through = evicted.rv;
        }
        collection.history.push_back(record.clone());
        if let Some(sender) = &collection.sender
            && sender.receiver_count() > 0
        {
            let _ = sender.send(record);
        }
        object
    }

    /// Checks and normalises an incoming object for `rt`: type fields, namespace, name and
    /// labels, Secret `stringData`, CRD pruning and defaults.
    fn admit(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        body: &mut Value,
    ) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let api_version = rt.api_version(version);
        for (field, expected) in [
            ("apiVersion", api_version.as_str()),
            ("kind", rt.kind.as_str()),
        ] {
            match body.get(field).and_then(Value::as_str) {
                Some(actual) if !actual.is_empty() && actual != expected => {
                    return Err(ApiError::bad_request(format!(
                        "the API version in the data ({}) does not match the expected API version ({api_version}), or kind {} is not {}",
                        body["apiVersion"].as_str().unwrap_or_default(),
                        body["kind"].as_str().unwrap_or_default(),
                        rt.kind
                    )));
                }
                _ => {}
            }
        }
        body["apiVersion"] = json!(api_version);
        body["kind"] = json!(rt.kind);
        let metadata = meta_mut(body);
        if rt.namespaced {
            let ns = ns.ok_or_else(|| {
                ApiError::bad_request("namespace is required for a namespaced resource")
            })?;
            match metadata.get("namespace").and_then(Value::as_str) {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    metadata.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            metadata.remove("namespace");
        }
        metadata.remove("selfLink");
        metadata.remove("managedFields");
        let name = metadata
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(why) = check_labels(metadata.get("labels")) {
            return Err(ApiError::invalid(rt, &name, &why));
        }
        if rt.group.is_empty() && rt.kind == "Secret" {
            move_string_data(body);
        }
        if rt.custom
            && let Some(schema) = rt.schemas.get(version)
        {
            registry::prune_and_default(body, schema, true);
        }
        Ok(())
    }

    /// `POST`: a new object. Fails with 409 AlreadyExists when the name is taken.
    pub fn create(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        mut body: Value,
        opts: WriteOptions,
    ) -> Result<Arc<Stored>, ApiError> {
        self.admit(rt, version, ns, &mut body)?;
        let metadata = meta_mut(&mut body);
        let mut name = metadata
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            let Some(prefix) = metadata
                .get("generateName")
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            };
            name = format!("{prefix}{}", self.generated_suffix());
        }
        if let Some(why) = check_name(rt, &name) {
            return Err(ApiError::invalid(rt, &name, &why));
        }
        if rt.namespaced && !opts.seed {
            let ns_name = ns.unwrap_or_default();
            let ns_type = self.namespace_type();
            if self.get(&ns_type, None, ns_name).is_err() {
                return Err(ApiError::not_found(&ns_type, ns_name));
            }
        }
        let key = key_of(if rt.namespaced { ns } else { None }, &name);
        if self
            .collections
            .get(&rt.id())
            .is_some_and(|c| c.objects.contains_key(&key))
        {
            return Err(ApiError::already_exists(rt, &name));
        }
        let uid = self.new_uid();
        let metadata = meta_mut(&mut body);
        metadata.insert("name".into(), json!(name));
        metadata.insert("uid".into(), json!(uid));
        metadata.insert("creationTimestamp".into(), json!(now_rfc3339()));
        metadata.insert("generation".into(), json!(1));
        metadata.remove("deletionTimestamp");
        metadata.remove("deletionGracePeriodSeconds");
        if rt.status_subresource && !opts.seed {
            body.as_object_mut().expect("object").remove("status");
        }
        self.server_owned_fields(rt, &mut body)?;
        if opts.dry_run {
            return Ok(Arc::new(Stored::new(&body)));
        }
        self.after_write(rt, &body);
        Ok(self.commit(&rt.id(), key, &mut body, EventType::Added))
    }

    /// `PUT` of the main resource or of `/status`.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        name: &str,
        body: Value,
        scope: UpdateScope,
        opts: WriteOptions,
    ) -> Result<Arc<Stored>, ApiError> {
        let old = self.get(rt, ns, name)?;
        self.update_existing(rt, version, ns, name, &old, body, scope, opts)
    }

    #[allow(clippy::too_many_arguments)]
    fn update_existing(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        name: &str,
        old: &Arc<Stored>,
        mut body: Value,
        scope: UpdateScope,
        opts: WriteOptions,
    ) -> Result<Arc<Stored>, ApiError> {
        let stored = old;
        let old = &stored.value();
        self.admit(rt, version, ns, &mut body)?;
        match meta(&body)["name"].as_str() {
            Some(given) if given != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        if let (Some(wanted), Some(current)) = (rv_of(&body), rv_of(old))
            && wanted != current
        {
            return Err(ApiError::conflict(
                rt,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let mut new = match scope {
            UpdateScope::Status => {
                let mut new = old.clone();
                match body.get("status") {
                    Some(status) if !status.is_null() => new["status"] = status.clone(),
                    _ => {
                        new.as_object_mut().expect("object").remove("status");
                    }
                }
                new
            }
            UpdateScope::Main => {
                if rt.status_subresource && !opts.seed {
                    match old.get("status") {
                        Some(status) => body["status"] = status.clone(),
                        None => {
                            body.as_object_mut().expect("object").remove("status");
                        }
                    }
                }
                body
            }
        };
        {
            let old_meta = meta(old);
            let old_generation = old_meta["generation"].as_i64().unwrap_or(1);
            let generation = old_generation + i64::from(spec_changed(old, &new));
            let metadata = meta_mut(&mut new);
            metadata.insert("name".into(), json!(name));
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match old_meta.get(field) {
                    Some(v) => metadata.insert(field.into(), v.clone()),
                    None => metadata.remove(field),
                };
            }
            metadata.insert("generation".into(), json!(generation));
            metadata.insert(
                "resourceVersion".into(),
                old_meta["resourceVersion"].clone(),
            );
        }
        if meta(old).get("deletionTimestamp").is_some() {
            let before = finalizers(old);
            if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    &format!(
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]"
                    ),
                ));
            }
        }
        self.server_owned_fields(rt, &mut new)?;
        if new == *old {
            // A no-op write: real servers keep the resourceVersion and send no event.
            return Ok(stored.clone());
        }
        if opts.dry_run {
            return Ok(Arc::new(Stored::new(&new)));
        }
        let key = key_of(if rt.namespaced { ns } else { None }, name);
        if meta(&new).get("deletionTimestamp").is_some() && finalizers(&new).is_empty() {
            let gone = self.commit(&rt.id(), key, &mut new, EventType::Deleted);
            self.after_delete(rt, &new);
            return Ok(gone);
        }
        self.after_write(rt, &new);
        Ok(self.commit(&rt.id(), key, &mut new, EventType::Modified))
    }

    /// `PATCH`: applies `patch` to the current object and writes the result. Server-side apply
    /// (`create_missing`) creates the object when it does not exist; returns whether it did.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        name: &str,
        patch: impl FnOnce(&mut Value) -> Result<(), ApiError>,
        create_missing: bool,
        scope: UpdateScope,
        opts: WriteOptions,
    ) -> Result<(Arc<Stored>, bool), ApiError> {
        let old = match self.get(rt, ns, name) {
            Ok(old) => old,
            Err(_) if create_missing && scope == UpdateScope::Main => {
                let mut body = json!({});
                patch(&mut body)?;
                if let Some(given) = meta(&body)["name"].as_str()
                    && given != name
                {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({given}) does not match the name on the URL ({name})"
                    )));
                }
                meta_mut(&mut body).insert("name".into(), json!(name));
                if rv_of(&body).is_some() {
                    return Err(ApiError::conflict(
                        rt,
                        name,
                        "resourceVersion can not be set for create requests",
                    ));
                }
                return self.create(rt, version, ns, body, opts).map(|o| (o, true));
            }
            Err(err) => return Err(err),
        };
        let mut body = old.value();
        let current_rv = meta(&body)["resourceVersion"].clone();
        // Let a patch that sets a resourceVersion act as a precondition: compare after patching.
        patch(&mut body)?;
        if rv_of(&body).is_none() {
            meta_mut(&mut body).insert("resourceVersion".into(), current_rv);
        }
        self.update_existing(rt, version, ns, name, &old, body, scope, opts)
            .map(|o| (o, false))
    }

    /// `DELETE`: removes the object, or with finalizers marks it with `deletionTimestamp`.
    pub fn delete(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        precondition_uid: Option<&str>,
        precondition_rv: Option<&str>,
        opts: WriteOptions,
    ) -> Result<DeleteOutcome, ApiError> {
        let stored = self.get(rt, ns, name)?;
        let old = stored.value();
        if let Some(uid) = precondition_uid
            && meta(&old)["uid"].as_str() != Some(uid)
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta(&old)["uid"].as_str().unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = precondition_rv
            && rv_of(&old) != Some(rv)
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    rv_of(&old).unwrap_or_default()
                ),
            ));
        }
        let key = key_of(if rt.namespaced { ns } else { None }, name);
        if !finalizers(&old).is_empty() {
            if meta(&old).get("deletionTimestamp").is_some() {
                return Ok(DeleteOutcome::Pending(stored));
            }
            let mut marked = old.clone();
            let generation = meta(&old)["generation"].as_i64().unwrap_or(1) + 1;
            let metadata = meta_mut(&mut marked);
            metadata.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
            metadata.insert("generation".into(), json!(generation));
            if opts.dry_run {
                return Ok(DeleteOutcome::Pending(Arc::new(Stored::new(&marked))));
            }
            return Ok(DeleteOutcome::Pending(self.commit(
                &rt.id(),
                key,
                &mut marked,
                EventType::Modified,
            )));
        }
        if opts.dry_run {
            return Ok(DeleteOutcome::Gone(stored));
        }
        let mut old = old;
        let gone = self.commit(&rt.id(), key, &mut old, EventType::Deleted);
        self.after_delete(rt, &old);
        Ok(DeleteOutcome::Gone(gone))
    }

    fn namespace_type(&self) -> Arc<ResourceType> {
        self.registry
            .by_path("", "v1", "namespaces")
            .expect("namespaces are built in")
            .clone()
    }

    /// Fields the server owns: Namespace phase, CRD conditions.
    fn server_owned_fields(&self, rt: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
        match (rt.group.as_str(), rt.kind.as_str()) {
            ("", "Namespace") => {
                let phase = if meta(object).get("deletionTimestamp").is_some() {
                    "Terminating"
                } else {
                    "Active"
                };
                object["status"]["phase"] = json!(phase);
            }
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                let declared = registry::type_from_crd(object).map_err(|why| {
                    ApiError::invalid(rt, meta(object)["name"].as_str().unwrap_or_default(), &why)
                })?;
                let established = object["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Established"))
                    .and_then(|c| c["lastTransitionTime"].as_str())
                    .map(str::to_string)
                    .unwrap_or_else(now_rfc3339);
                let storage = object["spec"]["versions"]
                    .as_array()
                    .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
                    .and_then(|v| v["name"].as_str())
                    .unwrap_or(&declared.versions[0])
                    .to_string();
                let mut names = object["spec"]["names"].clone();
                names["singular"] = json!(declared.singular);
                names["listKind"] = json!(declared.list_kind);
                object["status"] = json!({
                    "acceptedNames": names,
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                         "message": "no conflicts found", "lastTransitionTime": established},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                         "message": "the initial names have been accepted", "lastTransitionTime": established},
                    ],
                    "storedVersions": [storage],
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Side effects of a stored object: a CRD registers its type.
    fn after_write(&mut self, rt: &ResourceType, object: &Value) {
        if rt.group == "apiextensions.k8s.io"
            && rt.kind == "CustomResourceDefinition"
            && let Ok(declared) = registry::type_from_crd(object)
        {
            self.registry.insert(declared);
        }
    }

    /// Side effects of a removed object: a Namespace takes its contents along, a CRD its
    /// resources and type.
    fn after_delete(&mut self, rt: &ResourceType, object: &Value) {
        let name = meta(object)["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if rt.group.is_empty() && rt.kind == "Namespace" {
            let ids: Vec<ResourceId> = self
                .registry
                .types()
                .filter(|t| t.namespaced)
                .map(|t| t.id())
                .collect();
            for id in ids {
                let keys: Vec<ObjectKey> = self.collections.get(&id).map_or_else(Vec::new, |c| {
                    c.objects
                        .range((name.clone(), String::new())..)
                        .take_while(|(k, _)| k.0 == name)
                        .map(|(k, _)| k.clone())
                        .collect()
                });
                for key in keys {
                    let mut object = self.collections[&id].objects[&key].value();
                    self.commit(&id, key, &mut object, EventType::Deleted);
                }
            }
        }
        if rt.group == "apiextensions.k8s.io"
            && rt.kind == "CustomResourceDefinition"
            && let Ok(declared) = registry::type_from_crd(object)
        {
            let id = declared.id();
            let keys: Vec<ObjectKey> = self
                .collections
                .get(&id)
                .map_or_else(Vec::new, |c| c.objects.keys().cloned().collect());
            for key in keys {
                let mut object = self.collections[&id].objects[&key].value();
                self.commit(&id, key, &mut object, EventType::Deleted);
            }
            // Dropping the collection closes its channel: open watches of the type end.
            self.collections.remove(&id);
            self.registry.remove(&id);
        }
    }

    /// Creates or replaces an object as given, status included, bypassing admission checks that
    /// need a request (namespace existence: a missing namespace is created).
    pub fn seed_apply(&mut self, mut object: Value) -> Result<Arc<Stored>, ApiError> {
        let api_version = object["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let rt = self
            .registry
            .by_kind(&api_version, &kind)
            .cloned()
            .ok_or_else(|| {
                ApiError::bad_request(format!("no resource type for {api_version} {kind}"))
            })?;
        let (_, version) = registry::split_api_version(&api_version);
        let version = version.to_string();
        let name = meta(&object)["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ns = if rt.namespaced {
            let ns = meta(&object)["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_string();
            let ns_type = self.namespace_type();
            if self.get(&ns_type, None, &ns).is_err() {
                self.seed_apply(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )?;
            }
            Some(ns)
        } else {
            None
        };
        let opts = WriteOptions {
            dry_run: false,
            seed: true,
        };
        match self.get(&rt, ns.as_deref(), &name) {
            Ok(old) => {
                meta_mut(&mut object).remove("resourceVersion");
                self.update_existing(
                    &rt,
                    &version,
                    ns.as_deref(),
                    &name,
                    &old,
                    object,
                    UpdateScope::Main,
                    opts,
                )
            }
            Err(_) => self.create(&rt, &version, ns.as_deref(), object, opts),
        }
    }
}

/// DNS-1123 subdomain for most names; DNS-1123 label for Namespaces; DNS-1035 label for Services.
fn check_name(rt: &ResourceType, name: &str) -> Option<String> {
    let label_chars = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    let ok = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => label_chars(name),
        ("", "Service") => label_chars(name) && name.as_bytes()[0].is_ascii_lowercase(),
        _ => name.len() <= 253 && name.split('.').all(label_chars),
    };
    (!ok).then(|| format!("metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.'"))
}

fn check_labels(labels: Option<&Value>) -> Option<String> {
    let valid_part = |s: &str| {
        s.len() <= 63
            && (s.is_empty()
                || (s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                    && s.as_bytes()[0].is_ascii_alphanumeric()
                    && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()))
    };
    let labels = labels?.as_object()?;
    for (key, value) in labels {
        let name = key.rsplit_once('/').map_or(key.as_str(), |(_, n)| n);
        if name.is_empty() || !valid_part(name) {
            return Some(format!(
                "metadata.labels: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.'"
            ));
        }
        match value.as_str() {
            Some(v) if valid_part(v) => {}
            _ => {
                return Some(format!(
                    "metadata.labels: Invalid value: {value}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', at most 63 characters"
                ));
            }
        }
    }
    None
}

/// Secrets: `stringData` is write-only and merged into base64 `data`, as the API server does.
fn move_string_data(secret: &mut Value) {
    let Some(string_data) = secret.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    let Some(entries) = string_data.as_object() else {
        return;
    };
    if !secret["data"].is_object() {
        secret["data"] = json!({});
    }
    for (key, value) in entries {
        let text = value.as_str().unwrap_or_default();
        secret["data"][key] = json!(base64(text.as_bytes()));
    }
}

pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"token-123"), "dG9rZW4tMTIz");
    }

    #[test]
    fn generation_ignores_metadata_and_status() {
        let a = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}, "status": {"y": 1}});
        let b = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"x": 1}, "status": {"y": 2}});
        let c = json!({"metadata": {}, "spec": {"x": 2}});
        assert!(!spec_changed(&a, &b));
        assert!(spec_changed(&a, &c));
    }
}
