//! The HTTP front of a fake cluster: routing of Kubernetes REST paths, bearer-token auth,
//! the failure controls (partition, delay, injected errors), request counters, the verbs, and
//! watch streams.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, Interval};

use super::registry::ResourceType;
use super::selector::{FieldSelector, LabelSelector, ObjectFilter, supported_fields};
use super::store::{
    ApiError, DeleteOutcome, EventType, Store, Stored, UpdateScope, WatchRecord, WriteOptions,
};

/// Counters that end open watch streams when they change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchEpochs {
    /// `compact()` calls: open watches get `ERROR 410 Expired`.
    pub compactions: u64,
    /// `close_watches()` calls: open watches end cleanly.
    pub closes: u64,
}

/// An injected failure: the next `remaining` requests whose `"METHOD path?query"` contains
/// `pattern` get `status`.
#[derive(Clone, Debug)]
pub struct Fault {
    pub remaining: usize,
    pub status: u16,
    pub pattern: String,
}

/// Everything the request handlers of one cluster share.
#[derive(Debug)]
pub struct Shared {
    pub name: String,
    pub token: Mutex<String>,
    pub port: AtomicU16,
    pub store: Mutex<Store>,
    pub partitioned: watch::Sender<bool>,
    pub delay: Mutex<Duration>,
    pub faults: Mutex<Vec<Fault>>,
    pub counts: Mutex<BTreeMap<(String, String), u64>>,
    pub epochs: watch::Sender<WatchEpochs>,
    pub bookmark_interval: Mutex<Duration>,
    pub open_watches: AtomicUsize,
    /// Per-resource list delays ([`super::slow`]).
    pub slow_lists: Mutex<Vec<super::slow::SlowList>>,
    /// Requests refused with 401 (a wrong or rotated-away token).
    pub unauthorized: AtomicUsize,
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not wedge the server).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A parsed request path.
#[derive(Debug)]
enum Route {
    Health,
    Version,
    CoreVersions,
    GroupList,
    Group(String),
    ResourceList { group: String, version: String },
    Resource(ResourcePath),
    Unknown,
}

#[derive(Debug)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Route {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["healthz" | "readyz" | "livez", ..] => return Route::Health,
            ["version"] => return Route::Version,
            ["api"] => return Route::CoreVersions,
            ["apis"] => return Route::GroupList,
            ["apis", group] => return Route::Group(group.to_string()),
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Route::Unknown,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, next, tail @ ..] if !matches!(*next, "status" | "finalize") => {
                (Some(ns.to_string()), [&[*next][..], tail].concat())
            }
            _ => (None, rest.to_vec()),
        };
        let resource = |plural: &str, name: Option<&str>, sub: Option<&str>| {
            Route::Resource(ResourcePath {
                group: group.to_string(),
                version: version.to_string(),
                namespace: namespace.clone(),
                plural: plural.to_string(),
                name: name.map(str::to_string),
                subresource: sub.map(str::to_string),
            })
        };
        match rest.as_slice() {
            [] | [""] if namespace.is_none() => Route::ResourceList {
                group: group.to_string(),
                version: version.to_string(),
            },
            [plural] => resource(plural, None, None),
            [plural, name] => resource(plural, Some(name), None),
            [plural, name, sub] => resource(plural, Some(name), Some(sub)),
            _ => Route::Unknown,
        }
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn value_response(status: StatusCode, value: &Value) -> Response {
    json_response(
        status,
        serde_json::to_vec(value).expect("JSON values serialize"),
    )
}

fn error_response(err: &ApiError) -> Response {
    let status = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = value_response(status, &err.to_status());
    if err.code == 429 {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn resource_not_found() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// Serializes an object as served at `api_version` (objects of a multi-version CRD are stored
/// once and relabelled on the way out).
fn write_object(out: &mut Vec<u8>, object: &Stored, api_version: &str) {
    if object.api_version == api_version {
        out.extend_from_slice(&object.json);
    } else {
        let mut relabelled = object.value();
        relabelled["apiVersion"] = json!(api_version);
        serde_json::to_writer(&mut *out, &relabelled).expect("JSON values serialize");
    }
}

fn object_response(status: StatusCode, object: &Stored, api_version: &str) -> Response {
    if object.api_version == api_version {
        let mut response = (status, object.json.clone()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
    }
    let mut body = Vec::with_capacity(object.json.len() + 64);
    write_object(&mut body, object, api_version);
    json_response(status, body)
}

fn query_flag(query: &HashMap<String, String>, key: &str) -> bool {
    query
        .get(key)
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "True"))
}

fn verb_of(method: &Method, path: &ResourcePath, query: &HashMap<String, String>) -> &'static str {
    match (method.as_str(), path.name.is_some()) {
        ("GET", false) if query_flag(query, "watch") => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => "unknown",
    }
}

/// The handler of every request (an axum fallback: routing is done here, by the rules of the
/// Kubernetes REST paths, not by axum's router).
pub async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let route = Route::parse(parts.uri.path());

    // A partition blackholes requests until it heals.
    let mut partition = shared.partitioned.subscribe();
    let _ = partition.wait_for(|p| !*p).await;
    let delay = *lock(&shared.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    if let Route::Resource(path) = &route {
        let verb = verb_of(&parts.method, path, &query);
        let resource = match &path.subresource {
            Some(sub) => format!("{}/{sub}", path.plural),
            None => path.plural.clone(),
        };
        *lock(&shared.counts)
            .entry((verb.to_string(), resource))
            .or_default() += 1;
        let slow = super::slow::list_delay(&shared, verb, &path.plural);
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
    }

    let target = format!(
        "{} {}",
        parts.method,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    if let Some(code) = take_fault(&shared, &target) {
        let err = ApiError::new(
            code,
            ApiError::reason_for(code),
            format!("injected failure ({code}) for {target}"),
        );
        return error_response(&err);
    }

    match route {
        Route::Health => return (StatusCode::OK, "ok").into_response(),
        Route::Version => {
            return value_response(
                StatusCode::OK,
                &json!({
                    "major": "1", "minor": "33", "gitVersion": "v1.33.0-fedns-harness",
                    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                    "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
                    "platform": "linux/amd64",
                }),
            );
        }
        _ => {}
    }

    let authorized = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| token == *lock(&shared.token));
    if !authorized {
        shared.unauthorized.fetch_add(1, Ordering::Relaxed);
        return error_response(&ApiError::new(401, "Unauthorized", "Unauthorized"));
    }

    match route {
        Route::CoreVersions => {
            let address = format!("127.0.0.1:{}", shared.port.load(Ordering::Relaxed));
            value_response(
                StatusCode::OK,
                &lock(&shared.store).registry.core_versions(&address),
            )
        }
        Route::GroupList => {
            value_response(StatusCode::OK, &lock(&shared.store).registry.group_list())
        }
        Route::Group(group) => {
            let doc = lock(&shared.store).registry.group(&group);
            if doc.is_null() {
                error_response(&resource_not_found())
            } else {
                value_response(StatusCode::OK, &doc)
            }
        }
        Route::ResourceList { group, version } => {
            let doc = lock(&shared.store).registry.resource_list(&group, &version);
            if doc.is_null() {
                error_response(&resource_not_found())
            } else {
                value_response(StatusCode::OK, &doc)
            }
        }
        Route::Resource(path) => {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            let body = match axum::body::to_bytes(body, 64 << 20).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    return error_response(&ApiError::bad_request(format!(
                        "reading the body: {e}"
                    )));
                }
            };
            let call = Call {
                shared: &shared,
                method: &parts.method,
                path: &path,
                query: &query,
                content_type: &content_type,
                body: &body,
            };
            match call.serve() {
                Ok(Served::Response(response)) => response,
                Ok(Served::Watch(stream)) => watch_response(*stream),
                Err(err) => error_response(&err),
            }
        }
        Route::Health | Route::Version | Route::Unknown => error_response(&resource_not_found()),
    }
}

fn take_fault(shared: &Shared, target: &str) -> Option<u16> {
    let mut faults = lock(&shared.faults);
    let fault = faults
        .iter_mut()
        .find(|f| f.remaining > 0 && target.contains(&f.pattern))?;
    fault.remaining -= 1;
    let status = fault.status;
    faults.retain(|f| f.remaining > 0);
    Some(status)
}

enum Served {
    Response(Response),
    Watch(Box<WatchStream>),
}

/// One resource request, resolved against the registry and served under the store lock.
struct Call<'a> {
    shared: &'a Arc<Shared>,
    method: &'a Method,
    path: &'a ResourcePath,
    query: &'a HashMap<String, String>,
    content_type: &'a str,
    body: &'a [u8],
}

impl Call<'_> {
    fn serve(&self) -> Result<Served, ApiError> {
        let mut store = lock(&self.shared.store);
        let path = self.path;
        let rt = store
            .registry
            .by_path(&path.group, &path.version, &path.plural)
            .cloned()
            .ok_or_else(resource_not_found)?;
        if path.namespace.is_some() && !rt.namespaced {
            return Err(resource_not_found());
        }
        if rt.namespaced
            && path.namespace.is_none()
            && (path.name.is_some() || *self.method == Method::POST)
        {
            return Err(resource_not_found());
        }
        let scope = match path.subresource.as_deref() {
            None => UpdateScope::Main,
            Some("status") if rt.status_subresource => UpdateScope::Status,
            Some(_) => return Err(resource_not_found()),
        };
        let api_version = rt.api_version(&path.version);
        let ns = path.namespace.as_deref();
        let opts = WriteOptions {
            dry_run: self.query.get("dryRun").is_some_and(|v| v == "All"),
            seed: false,
        };
        let ok = |status: StatusCode, object: &Stored| {
            Ok(Served::Response(object_response(
                status,
                object,
                &api_version,
            )))
        };
        match (self.method.as_str(), path.name.as_deref()) {
            ("GET", None) if query_flag(self.query, "watch") => {
                let stream = self.start_watch(&mut store, &rt, &api_version)?;
                Ok(Served::Watch(Box::new(stream)))
            }
            ("GET", None) => {
                let filter = self.filter(&rt)?;
                let limit = self.query.get("limit").and_then(|l| l.parse().ok());
                let page = store.list(
                    &rt,
                    &filter,
                    limit,
                    self.query.get("continue").map(String::as_str),
                )?;
                drop(store);
                let mut out = Vec::with_capacity(256 + page.items.len() * 1024);
                let mut list_meta = json!({"resourceVersion": page.rv.to_string()});
                if let Some(token) = &page.continue_token {
                    list_meta["continue"] = json!(token);
                }
                out.extend_from_slice(
                    format!(
                        "{{\"kind\":\"{}\",\"apiVersion\":\"{api_version}\",\"metadata\":{list_meta},\"items\":[",
                        rt.list_kind
                    )
                    .as_bytes(),
                );
                for (i, item) in page.items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_object(&mut out, item, &api_version);
                }
                out.extend_from_slice(b"]}");
                Ok(Served::Response(json_response(StatusCode::OK, out)))
            }
            ("GET", Some(name)) => ok(StatusCode::OK, &*store.get(&rt, ns, name)?),
            ("POST", None) if scope == UpdateScope::Main => {
                let body = self.parse_body()?;
                ok(
                    StatusCode::CREATED,
                    &*store.create(&rt, &path.version, ns, body, opts)?,
                )
            }
            ("PUT", Some(name)) => {
                let body = self.parse_body()?;
                ok(
                    StatusCode::OK,
                    &*store.update(&rt, &path.version, ns, name, body, scope, opts)?,
                )
            }
            ("PATCH", Some(name)) => self.patch(&mut store, &rt, name, scope, opts, &api_version),
            ("DELETE", Some(name)) if scope == UpdateScope::Main => {
                let (uid, rv) = self.delete_options()?;
                let dry_run = opts.dry_run || self.body_dry_run();
                let opts = WriteOptions { dry_run, ..opts };
                match store.delete(&rt, ns, name, uid.as_deref(), rv.as_deref(), opts)? {
                    DeleteOutcome::Pending(object) => ok(StatusCode::OK, &object),
                    DeleteOutcome::Gone(object) if rt.custom => ok(StatusCode::OK, &object),
                    DeleteOutcome::Gone(object) => Ok(Served::Response(value_response(
                        StatusCode::OK,
                        &json!({
                            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                            "details": {"name": name, "group": rt.group, "kind": rt.plural,
                                        "uid": object.value()["metadata"]["uid"]},
                        }),
                    ))),
                }
            }
            ("DELETE", None) if scope == UpdateScope::Main => {
                let filter = self.filter(&rt)?;
                let page = store.list(&rt, &filter, None, None)?;
                for object in page.items {
                    let ns = (!object.namespace.is_empty()).then_some(object.namespace.as_str());
                    store.delete(&rt, ns, &object.name, None, None, opts)?;
                }
                Ok(Served::Response(value_response(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                )))
            }
            _ => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!(
                    "the server does not allow this method on the requested resource ({})",
                    self.method
                ),
            )),
        }
    }

    fn filter(&self, rt: &ResourceType) -> Result<ObjectFilter, ApiError> {
        let labels =
            LabelSelector::parse(self.query.get("labelSelector").map_or("", String::as_str))
                .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(
            self.query.get("fieldSelector").map_or("", String::as_str),
            supported_fields(&rt.group, &rt.kind),
        )
        .map_err(ApiError::bad_request)?;
        Ok(ObjectFilter {
            namespace: self.path.namespace.clone(),
            labels,
            fields,
        })
    }

    fn parse_body(&self) -> Result<Value, ApiError> {
        parse_document(self.body)
    }

    fn body_dry_run(&self) -> bool {
        serde_json::from_slice::<Value>(self.body)
            .ok()
            .and_then(|v| v["dryRun"].as_array().cloned())
            .is_some_and(|d| d.iter().any(|x| x == "All"))
    }

    /// Preconditions of a `DeleteOptions` body; checks `propagationPolicy`.
    fn delete_options(&self) -> Result<(Option<String>, Option<String>), ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok((None, None));
        }
        let options: Value = serde_json::from_slice(self.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        match options["propagationPolicy"].as_str() {
            None | Some("Orphan" | "Background" | "Foreground") => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                )));
            }
        }
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        Ok((
            text(&options["preconditions"]["uid"]),
            text(&options["preconditions"]["resourceVersion"]),
        ))
    }

    fn patch(
        &self,
        store: &mut Store,
        rt: &Arc<ResourceType>,
        name: &str,
        scope: UpdateScope,
        opts: WriteOptions,
        api_version: &str,
    ) -> Result<Served, ApiError> {
        let ns = self.path.namespace.as_deref();
        let version = &self.path.version;
        let (object, created) = match self.content_type {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                let patch: Value = serde_json::from_slice(self.body)
                    .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
                if !patch.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                store.patch(
                    rt,
                    version,
                    ns,
                    name,
                    |doc| {
                        json_patch::merge(doc, &patch);
                        Ok(())
                    },
                    false,
                    scope,
                    opts,
                )?
            }
            "application/json-patch+json" => {
                let patch: json_patch::Patch = serde_json::from_slice(self.body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                store.patch(rt, version, ns, name, |doc| {
                    json_patch::patch(doc, &patch.0).map_err(|e| {
                        ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}"))
                    })
                }, false, scope, opts)?
            }
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                if self.query.get("fieldManager").is_none_or(|m| m.is_empty()) {
                    return Err(ApiError::bad_request(
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                }
                let applied = parse_document(self.body)?;
                if !applied.is_object() {
                    return Err(ApiError::bad_request("an apply patch must be an object"));
                }
                for field in ["apiVersion", "kind"] {
                    if applied
                        .get(field)
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        return Err(ApiError::bad_request(format!(
                            "{field} must be set in an apply patch"
                        )));
                    }
                }
                store.patch(
                    rt,
                    version,
                    ns,
                    name,
                    |doc| {
                        json_patch::merge(doc, &applied);
                        Ok(())
                    },
                    true,
                    scope,
                    opts,
                )?
            }
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                    ),
                ));
            }
        };
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(Served::Response(object_response(
            status,
            &object,
            api_version,
        )))
    }

    fn start_watch(
        &self,
        store: &mut Store,
        rt: &Arc<ResourceType>,
        api_version: &str,
    ) -> Result<WatchStream, ApiError> {
        let filter = self.filter(rt)?;
        let from =
            match self.query.get("resourceVersion").map(String::as_str) {
                None | Some("" | "0") => None,
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {rv:?}"))
                })?),
            };
        let send_initial_events = query_flag(self.query, "sendInitialEvents");
        let bookmarks = query_flag(self.query, "allowWatchBookmarks");
        let timeout = self
            .query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| *t > 0)
            .map_or(Duration::from_secs(1800), Duration::from_secs);
        let shared = self.shared.clone();
        let mut stream = WatchStream {
            epochs_start: *shared.epochs.borrow(),
            epochs: shared.epochs.subscribe(),
            partition: shared.partitioned.subscribe(),
            bookmarks: bookmarks.then(|| {
                let period = *lock(&shared.bookmark_interval);
                tokio::time::interval_at(Instant::now() + period, period)
            }),
            deadline: Instant::now() + timeout,
            api_version: api_version.to_string(),
            kind: rt.kind.clone(),
            filter,
            pending: VecDeque::new(),
            receiver: None,
            last_rv: 0,
            finished: false,
            shared: shared.clone(),
        };
        shared.open_watches.fetch_add(1, Ordering::Relaxed);
        match store.watch(rt, from, &stream.filter) {
            Ok(start) => {
                stream.last_rv = from.unwrap_or(start.rv);
                for object in &start.initial {
                    stream.push_event("ADDED", object);
                }
                if send_initial_events {
                    stream.push_bookmark(start.rv, true);
                }
                for record in &start.replay {
                    stream.push_record(record);
                }
                stream.last_rv = stream.last_rv.max(start.rv);
                stream.receiver = Some(start.receiver);
            }
            Err(err) if err.code == 410 => {
                // Real servers answer 200 and send the expiry as the stream's only event.
                let mut line = b"{\"type\":\"ERROR\",\"object\":".to_vec();
                serde_json::to_writer(&mut line, &err.to_status()).expect("JSON values serialize");
                line.extend_from_slice(b"}\n");
                stream.pending.push_back(Bytes::from(line));
                stream.finished = true;
            }
            Err(err) => return Err(err),
        }
        Ok(stream)
    }
}

/// Parses a JSON body, or YAML (apply patches are YAML; JSON is YAML too).
fn parse_document(body: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice(body) {
        Ok(value) => Ok(value),
        Err(json_err) => serde_yaml_ng::from_slice(body).map_err(|_| {
            ApiError::bad_request(format!(
                "the request body is not valid JSON or YAML: {json_err}"
            ))
        }),
    }
}

/// One open watch: the events already due (`pending`), then live events from the collection's
/// broadcast channel, filtered, with periodic bookmarks, until the timeout or a control ends it.
struct WatchStream {
    shared: Arc<Shared>,
    api_version: String,
    kind: String,
    filter: ObjectFilter,
    pending: VecDeque<Bytes>,
    receiver: Option<broadcast::Receiver<Arc<WatchRecord>>>,
    /// The highest resourceVersion this stream has passed (sent or filtered out).
    last_rv: u64,
    bookmarks: Option<Interval>,
    deadline: Instant,
    epochs: watch::Receiver<WatchEpochs>,
    epochs_start: WatchEpochs,
    partition: watch::Receiver<bool>,
    finished: bool,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.shared.open_watches.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Wake {
    Record(Result<Arc<WatchRecord>, broadcast::error::RecvError>),
    Bookmark,
    Epochs,
    Partition,
    Deadline,
}

impl WatchStream {
    fn push_event(&mut self, kind: &str, object: &Stored) {
        let mut line = Vec::with_capacity(object.json.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        write_object(&mut line, object, &self.api_version);
        line.extend_from_slice(b"}\n");
        self.pending.push_back(Bytes::from(line));
    }

    fn push_bookmark(&mut self, rv: u64, initial_events_end: bool) {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let event = json!({
            "type": "BOOKMARK",
            "object": {"kind": self.kind, "apiVersion": self.api_version, "metadata": metadata},
        });
        let mut line = serde_json::to_vec(&event).expect("JSON values serialize");
        line.push(b'\n');
        self.pending.push_back(Bytes::from(line));
    }

    /// Translates a change into what this watch's selection sees: an object that leaves the
    /// selection is DELETED, one that enters it ADDED.
    fn push_record(&mut self, record: &WatchRecord) {
        self.last_rv = self.last_rv.max(record.rv);
        let now = self.filter.matches(&record.object);
        let kind = match record.event {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => now.then_some("DELETED"),
            EventType::Modified => {
                let before = record
                    .previous
                    .as_ref()
                    .map_or(now, |p| self.filter.matches(p));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (true, false) => Some("DELETED"),
                    (false, true) => Some("ADDED"),
                    (false, false) => None,
                }
            }
        };
        if let Some(kind) = kind {
            let object = record.object.clone();
            self.push_event(kind, &object);
        }
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if *self.partition.borrow() {
                // Blackholed: deliver nothing until the partition heals (or the watch times out).
                tokio::select! {
                    _ = self.partition.wait_for(|p| !*p) => {}
                    _ = tokio::time::sleep_until(self.deadline) => return None,
                }
                continue;
            }
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            if self.finished {
                return None;
            }
            let wake = {
                let Self {
                    receiver,
                    bookmarks,
                    epochs,
                    partition,
                    deadline,
                    ..
                } = self;
                let receiver = receiver.as_mut()?;
                // Controls first: a close or compaction takes effect before any event that
                // was committed after it.
                tokio::select! {
                    biased;
                    _ = epochs.changed() => Wake::Epochs,
                    _ = partition.changed() => Wake::Partition,
                    _ = tokio::time::sleep_until(*deadline) => Wake::Deadline,
                    record = receiver.recv() => Wake::Record(record),
                    _ = async {
                        match bookmarks {
                            Some(interval) => { interval.tick().await; }
                            None => std::future::pending::<()>().await,
                        }
                    } => Wake::Bookmark,
                }
            };
            match wake {
                Wake::Record(Ok(record)) => self.push_record(&record),
                // A watcher that falls behind the channel is dropped, as real servers drop slow
                // watchers; the client resumes from the last version it saw.
                Wake::Record(Err(_)) => return None,
                Wake::Bookmark => {
                    let current = lock(&self.shared.store).resource_version();
                    // Everything this collection committed up to `current` is in the channel
                    // by now: drain it so the bookmark never overtakes an event.
                    if let Some(mut receiver) = self.receiver.take() {
                        loop {
                            match receiver.try_recv() {
                                Ok(record) => self.push_record(&record),
                                Err(broadcast::error::TryRecvError::Empty) => break,
                                Err(_) => return None,
                            }
                        }
                        self.receiver = Some(receiver);
                    }
                    let rv = current.max(self.last_rv);
                    self.push_bookmark(rv, false);
                }
                Wake::Epochs => {
                    let now = *self.epochs.borrow_and_update();
                    if now.compactions != self.epochs_start.compactions {
                        let status = ApiError::expired(format!(
                            "too old resource version: {} (compacted)",
                            self.last_rv
                        ))
                        .to_status();
                        let mut line = b"{\"type\":\"ERROR\",\"object\":".to_vec();
                        serde_json::to_writer(&mut line, &status).expect("JSON values serialize");
                        line.extend_from_slice(b"}\n");
                        self.pending.push_back(Bytes::from(line));
                        self.finished = true;
                    } else if now.closes != self.epochs_start.closes {
                        return None;
                    }
                }
                Wake::Partition => {}
                Wake::Deadline => return None,
            }
        }
    }
}

fn watch_response(stream: WatchStream) -> Response {
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), stream))
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourcePath {
        match Route::parse(path) {
            Route::Resource(p) => p,
            other => panic!("{path} parsed as {other:?}"),
        }
    }

    #[test]
    fn paths_parse_like_the_api_server_routes_them() {
        let p = resource("/api/v1/namespaces/default/services/web/status");
        assert_eq!((p.group.as_str(), p.version.as_str()), ("", "v1"));
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(
            (
                p.plural.as_str(),
                p.name.as_deref(),
                p.subresource.as_deref()
            ),
            ("services", Some("web"), Some("status"))
        );
        let p = resource("/api/v1/namespaces/default");
        assert_eq!(
            (p.plural.as_str(), p.name.as_deref(), p.namespace.as_deref()),
            ("namespaces", Some("default"), None)
        );
        let p = resource("/api/v1/namespaces/default/status");
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let p = resource("/apis/discovery.k8s.io/v1/endpointslices");
        assert_eq!(
            (p.group.as_str(), p.namespace.as_deref()),
            ("discovery.k8s.io", None)
        );
        assert!(matches!(
            Route::parse("/apis/apps/v1"),
            Route::ResourceList { .. }
        ));
        assert!(matches!(Route::parse("/apis/apps"), Route::Group(_)));
        assert!(matches!(Route::parse("/readyz"), Route::Health));
    }
}
