//! An in-memory Kubernetes API server, for testing everything that talks to Kubernetes
//! without one.
//!
//! It speaks the API server's HTTP protocol (as an axum router), so the code under test uses
//! kube's real `Client`, its real request building and its real watchers: in process through
//! [`FakeKube::client`], or over loopback TCP through [`FakeKube::serve`] for programs that
//! read a kubeconfig. It keeps objects as JSON, gives them uids, resource versions and
//! generations, serves the `/status` subresource separately from the main resource, applies
//! server-side-apply patches with per-manager field ownership (fields a manager stops sending
//! are removed), JSON merge patches and JSON patches, honours `metadata.resourceVersion`
//! preconditions (409 on a stale write), finalizers and deletion timestamps, deletes owned
//! objects with their owner (the garbage collector), filters by label selector, and streams
//! watch events from any resource version it still remembers.
//!
//! Every request is recorded ([`FakeKube::requests`]) with the RBAC verb and resource it
//! needs (a server-side apply that creates its object counts as `patch` and `create`, as
//! the real API server authorizes it), so tests can pin the exact calls and check the RBAC
//! rules against what the code really does. What it does not model: admission (validation, defaulting), list-map merges
//! in server-side apply (lists are atomic here), apply conflicts without `force`, field
//! selectors, pagination, and the kubelet — tests play the kubelet through
//! [`FakeKube::update`].

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query parameters, decoded.
    pub query: BTreeMap<String, String>,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The RBAC verb it needs (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`).
    pub verb: String,
    /// API group (`""` for the core group).
    pub group: String,
    /// Resource, with the subresource after a slash (`clusters/status`).
    pub resource: String,
    /// Namespace, if namespaced.
    pub namespace: Option<String>,
    /// Object name, if one object.
    pub name: Option<String>,
    /// The request body, parsed (`Null` when none).
    pub body: Value,
    /// Who sent it (see [`FakeKube::client_as`]).
    pub actor: Option<String>,
}

/// Where a resource lives: `api/v1` or `apis/<group>/<version>`, and its plural.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Kind {
    prefix: String,
    plural: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: Kind,
    namespace: Option<String>,
    name: String,
}

#[derive(Debug, Clone)]
struct WatchEvent {
    key: Key,
    rv: u64,
    type_: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<Key, Value>,
    /// Leaf paths each field manager owns, by object.
    owners: BTreeMap<Key, BTreeMap<String, BTreeSet<Vec<String>>>>,
    rv: u64,
    uid: u64,
    history: Vec<WatchEvent>,
    requests: Vec<Recorded>,
    /// Requests to fail: (verb, resource) → how many more times.
    faults: BTreeMap<(String, String), u32>,
}

/// What a pod's proxied HTTP endpoint answers: `(pod, port, path) -> body`.
pub type ProxyHandler = Arc<dyn Fn(&str, u16, &str) -> Option<String> + Send + Sync>;

/// The fake API server. Clones share it.
#[derive(Clone)]
pub struct FakeKube {
    store: Arc<Mutex<Store>>,
    events: broadcast::Sender<WatchEvent>,
    proxy: Arc<Mutex<Option<ProxyHandler>>>,
}

impl Default for FakeKube {
    fn default() -> Self {
        Self::new()
    }
}

/// The `(prefix, plural)` of a typed resource.
fn kind_of<K: Resource<DynamicType = ()>>() -> Kind {
    let group = K::group(&());
    let version = K::version(&());
    let prefix = if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    };
    Kind {
        prefix,
        plural: K::plural(&()).into_owned(),
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

/// Leaf paths of a JSON value (objects are walked; arrays and scalars are leaves).
fn leaves(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parents {
        match cur.get_mut(p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn deep_merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (into, from) => *into = from.clone(),
    }
}

/// Drops empty objects left behind by removals (`metadata.labels: {}` stays: it is metadata).
fn prune_empty(v: &mut Value) {
    if let Value::Object(m) = v {
        for child in m.values_mut() {
            prune_empty(child);
        }
        m.retain(|k, child| {
            !(child.as_object().is_some_and(|c| c.is_empty()) && k != "metadata" && k != "spec")
        });
    }
}

#[derive(Clone)]
struct Selector(Vec<(String, Option<String>, bool)>);

impl Selector {
    fn parse(s: &str) -> Selector {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some((k, v)) = part.split_once("!=") {
                out.push((k.trim().into(), Some(v.trim().into()), false));
            } else if let Some((k, v)) = part.split_once('=') {
                let v = v.trim_start_matches('=');
                out.push((k.trim().into(), Some(v.trim().into()), true));
            } else if let Some(k) = part.strip_prefix('!') {
                out.push((k.trim().into(), None, false));
            } else {
                out.push((part.into(), None, true));
            }
        }
        Selector(out)
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        self.0.iter().all(|(k, v, positive)| {
            let have = labels.and_then(|l| l.get(k)).and_then(Value::as_str);
            let hit = match v {
                Some(v) => have == Some(v.as_str()),
                None => have.is_some(),
            };
            hit == *positive
        })
    }
}

/// Parsed path: the kind, namespace, name and subresource.
struct Target {
    kind: Kind,
    group: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, group, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (format!("api/{v}"), String::new(), rest),
        ["apis", g, v, rest @ ..] => (format!("apis/{g}/{v}"), (*g).to_owned(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        other => (None, other),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some((*n).to_owned()), None),
        [p, n, s] => (*p, Some((*n).to_owned()), Some((*s).to_owned())),
        _ => return None,
    };
    Some(Target {
        kind: Kind {
            prefix,
            plural: plural.to_owned(),
        },
        group,
        namespace,
        name,
        sub,
    })
}

impl FakeKube {
    /// An empty server.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        FakeKube {
            store: Arc::new(Mutex::new(Store::default())),
            events,
            proxy: Arc::new(Mutex::new(None)),
        }
    }

    /// Serves `GET .../pods/<pod>:<port>/proxy/<path>` (the API server's pod proxy) with
    /// `handler`; without one, or when it answers `None`, the proxy answers 503.
    pub fn set_proxy(&self, handler: ProxyHandler) {
        *self.proxy.lock().expect("proxy lock") = Some(handler);
    }

    /// A kube client talking to this server in process (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.router(), "default")
    }

    /// A client whose requests are recorded as sent by `actor` (to tell the operator's
    /// requests from the instance managers' in one test).
    pub fn client_as(&self, actor: &'static str) -> kube::Client {
        let router = self.router().layer(axum::middleware::map_request(
            move |mut req: Request| async move {
                req.headers_mut()
                    .insert("x-fake-actor", axum::http::HeaderValue::from_static(actor));
                req
            },
        ));
        kube::Client::new(router, "default")
    }

    /// The server as an axum router.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .fallback(handle)
            .with_state(self.clone())
    }

    /// Serves the API on `127.0.0.1` (a free port); returns the port. The server stops
    /// with the runtime.
    pub async fn serve(&self) -> std::io::Result<u16> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let router = self.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(port)
    }

    /// A kubeconfig (YAML) pointing at a server started with [`FakeKube::serve`].
    pub fn kubeconfig(port: u16, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\nusers:\n- name: fake\n  user:\n    token: fake\n"
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().expect("fake API store lock")
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Makes the next `times` requests with this verb on this resource (`pods`,
    /// `clusters/status`) fail with 500.
    pub fn fail(&self, verb: &str, resource: &str, times: u32) {
        self.lock()
            .faults
            .insert((verb.to_owned(), resource.to_owned()), times);
    }

    /// One object, typed.
    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<K> {
        let key = Key {
            kind: kind_of::<K>(),
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        };
        let v = self.lock().objects.get(&key).cloned()?;
        serde_json::from_value(v).ok()
    }

    /// Every object of a kind in a namespace, typed, by name.
    pub fn list<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        namespace: &str,
    ) -> Vec<K> {
        let kind = kind_of::<K>();
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| k.kind == kind && k.namespace.as_deref() == Some(namespace))
            .filter_map(|(_, v)| serde_json::from_value(v.clone()).ok())
            .collect()
    }

    /// Names of the objects of a kind in a namespace.
    pub fn names<K: Resource<DynamicType = ()>>(&self, namespace: &str) -> Vec<String> {
        let kind = kind_of::<K>();
        self.lock()
            .objects
            .keys()
            .filter(|k| k.kind == kind && k.namespace.as_deref() == Some(namespace))
            .map(|k| k.name.clone())
            .collect()
    }

    /// Creates or replaces an object directly (as `kubectl apply` or the kubelet would),
    /// status included.
    pub fn put<K: Resource<DynamicType = ()> + serde::Serialize>(&self, object: &K) {
        let mut v = serde_json::to_value(object).expect("objects serialize");
        if let Some(m) = v.as_object_mut() {
            m.insert("apiVersion".into(), K::api_version(&()).into_owned().into());
            m.insert("kind".into(), K::kind(&()).into_owned().into());
        }
        let namespace = object.meta().namespace.clone();
        let name = object.meta().name.clone().unwrap_or_default();
        let key = Key {
            kind: kind_of::<K>(),
            namespace,
            name,
        };
        let mut s = self.lock();
        let old = s.objects.get(&key).cloned();
        self.store_object(&mut s, &key, old.as_ref(), v);
    }

    /// Changes an object in place (the kubelet setting a pod's status, a user editing):
    /// returns whether it existed.
    pub fn update<K: Resource<DynamicType = ()>>(
        &self,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> bool {
        let key = Key {
            kind: kind_of::<K>(),
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        };
        let mut s = self.lock();
        let Some(old) = s.objects.get(&key).cloned() else {
            return false;
        };
        let mut v = old.clone();
        f(&mut v);
        self.store_object(&mut s, &key, Some(&old), v);
        true
    }

    /// Deletes an object as a user would (finalizers respected, owned objects collected).
    pub fn delete<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) -> bool {
        let key = Key {
            kind: kind_of::<K>(),
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        };
        let mut s = self.lock();
        self.delete_key(&mut s, &key)
    }

    fn next_rv(s: &mut Store) -> u64 {
        s.rv += 1;
        s.rv
    }

    /// Stores `v` at `key` (create when `old` is none): uid, resourceVersion, generation,
    /// creationTimestamp; a watch event. Returns the stored object.
    fn store_object(&self, s: &mut Store, key: &Key, old: Option<&Value>, mut v: Value) -> Value {
        let rv = Self::next_rv(s);
        let uid = match old.and_then(|o| o.pointer("/metadata/uid")).cloned() {
            Some(u) => u,
            None => {
                s.uid += 1;
                Value::String(format!("00000000-0000-0000-0000-{:012}", s.uid))
            }
        };
        let generation = match old {
            None => 1,
            Some(o) => {
                let g = o
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                if o.get("spec") != v.get("spec") {
                    g + 1
                } else {
                    g
                }
            }
        };
        let created = old
            .and_then(|o| o.pointer("/metadata/creationTimestamp"))
            .cloned()
            .unwrap_or_else(|| Value::String(format!("2026-01-01T00:00:{:02}Z", rv % 60)));
        prune_empty(&mut v);
        let meta = v
            .as_object_mut()
            .expect("objects are JSON objects")
            .entry("metadata")
            .or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.insert("name".into(), key.name.clone().into());
            if let Some(ns) = &key.namespace {
                m.insert("namespace".into(), ns.clone().into());
            }
            m.insert("uid".into(), uid);
            m.insert("resourceVersion".into(), rv.to_string().into());
            m.insert("generation".into(), generation.into());
            m.insert("creationTimestamp".into(), created);
        }
        // A write that changes nothing is a no-op, as on a real API server: same
        // resourceVersion, no watch event (else every status write would wake watchers).
        if let Some(o) = old {
            let mut same = v.clone();
            if let Some(m) = same.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert(
                    "resourceVersion".into(),
                    o.pointer("/metadata/resourceVersion")
                        .cloned()
                        .unwrap_or(Value::Null),
                );
            }
            if &same == o {
                s.rv -= 1;
                return o.clone();
            }
        }
        // A deletion that waited for finalizers completes when the last one is gone.
        let deleting = v.pointer("/metadata/deletionTimestamp").is_some();
        let finalizers = v
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if deleting && !finalizers {
            s.objects.insert(key.clone(), v.clone());
            self.delete_key(s, key);
            return v;
        }
        s.objects.insert(key.clone(), v.clone());
        self.emit(
            s,
            key,
            rv,
            if old.is_some() { "MODIFIED" } else { "ADDED" },
            v.clone(),
        );
        v
    }

    fn emit(&self, s: &mut Store, key: &Key, rv: u64, type_: &'static str, object: Value) {
        let e = WatchEvent {
            key: key.clone(),
            rv,
            type_,
            object,
        };
        s.history.push(e.clone());
        let _ = self.events.send(e);
    }

    /// Deletes (or marks for deletion, with finalizers) and collects owned objects.
    fn delete_key(&self, s: &mut Store, key: &Key) -> bool {
        let Some(mut v) = s.objects.get(key).cloned() else {
            return false;
        };
        let finalizers = v
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if finalizers {
            if v.pointer("/metadata/deletionTimestamp").is_none() {
                let rv = Self::next_rv(s);
                if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.insert("deletionTimestamp".into(), "2026-01-01T00:00:00Z".into());
                    m.insert("resourceVersion".into(), rv.to_string().into());
                }
                s.objects.insert(key.clone(), v.clone());
                self.emit(s, key, rv, "MODIFIED", v);
            }
            return true;
        }
        s.objects.remove(key);
        s.owners.remove(key);
        let rv = Self::next_rv(s);
        self.emit(s, key, rv, "DELETED", v.clone());
        // The garbage collector: whatever this object owned goes with it.
        if let Some(uid) = v.pointer("/metadata/uid").and_then(Value::as_str) {
            let owned: Vec<Key> = s
                .objects
                .iter()
                .filter(|(_, o)| {
                    o.pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|refs| {
                            refs.iter()
                                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                        })
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in owned {
                self.delete_key(s, &k);
            }
        }
        true
    }

    fn record(&self, req: Recorded) -> Option<Response> {
        let mut s = self.lock();
        let fault = (req.verb.clone(), req.resource.clone());
        s.requests.push(req);
        if let Some(n) = s.faults.get_mut(&fault)
            && *n > 0
        {
            *n -= 1;
            return Some(status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("injected failure of {} {}", fault.0, fault.1),
            ));
        }
        None
    }
}

fn list_body(kind: &Kind, rv: u64, items: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": format!("{}List", kind.plural),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

async fn handle(State(fake): State<FakeKube>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .filter(|(k, _)| !k.is_empty())
            .collect();
    let actor = req
        .headers()
        .get("x-fake-actor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes: Bytes = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
    };
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("body is not JSON: {e}"),
                );
            }
        }
    };
    if let Some(resp) = proxy(&fake, &method, &path, &content_type) {
        return resp;
    }
    let Some(t) = parse_path(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no route {path}"),
        );
    };
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&method, &t.name) {
        (&Method::GET, None) if watch => "watch",
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, None) => "deletecollection",
        (&Method::DELETE, Some(_)) => "delete",
        _ => "unknown",
    };
    let resource = match &t.sub {
        Some(sub) => format!("{}/{sub}", t.kind.plural),
        None => t.kind.plural.clone(),
    };
    let recorded = Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        verb: verb.to_owned(),
        group: t.group.clone(),
        resource: resource.clone(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        body: body.clone(),
        actor,
    };
    // Server-side apply of an object that does not exist yet is also a create: the API
    // server authorizes both verbs, so RBAC needs `create` beside `patch`.
    let creates = verb == "patch"
        && t.sub.is_none()
        && content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/apply-patch"))
        && !fake.lock().objects.contains_key(&key_of(&t));
    let also_create = creates.then(|| Recorded {
        verb: "create".into(),
        ..recorded.clone()
    });
    for r in std::iter::once(recorded).chain(also_create) {
        if let Some(fail) = fake.record(r) {
            return fail;
        }
    }
    let selector = Selector::parse(query.get("labelSelector").map_or("", String::as_str));
    match verb {
        "list" => {
            let s = fake.lock();
            let items = s
                .objects
                .iter()
                .filter(|(k, v)| {
                    k.kind == t.kind
                        && (t.namespace.is_none() || k.namespace == t.namespace)
                        && selector.matches(v)
                })
                .map(|(_, v)| v.clone())
                .collect();
            axum::Json(list_body(&t.kind, s.rv, items)).into_response()
        }
        "watch" => watch_response(&fake, &t, selector, &query),
        "get" => {
            let key = key_of(&t);
            match fake.lock().objects.get(&key) {
                Some(v) => axum::Json(v.clone()).into_response(),
                None => not_found(&t),
            }
        }
        "create" => {
            let mut body = body;
            let name = body
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let name = match name {
                Some(n) => n,
                None => {
                    let base = body
                        .pointer("/metadata/generateName")
                        .and_then(Value::as_str)
                        .unwrap_or("object-")
                        .to_owned();
                    let n = format!("{base}{}", fake.lock().rv + 1);
                    if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.insert("name".into(), n.clone().into());
                    }
                    n
                }
            };
            let key = Key {
                kind: t.kind.clone(),
                namespace: t.namespace.clone(),
                name,
            };
            let mut s = fake.lock();
            if s.objects.contains_key(&key) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{} \"{}\" already exists", t.kind.plural, key.name),
                );
            }
            let stored = fake.store_object(&mut s, &key, None, body);
            (StatusCode::CREATED, axum::Json(stored)).into_response()
        }
        "update" | "patch" => write(&fake, &t, verb, content_type.as_deref(), &query, body),
        "delete" => {
            let key = key_of(&t);
            let mut s = fake.lock();
            let Some(v) = s.objects.get(&key).cloned() else {
                return not_found(&t);
            };
            fake.delete_key(&mut s, &key);
            axum::Json(v).into_response()
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} {path}"),
        ),
    }
}

/// `GET /api/v1/namespaces/<ns>/pods/[https:]<pod>:<port>/proxy/<path>`, recorded as a `get` of
/// `pods/proxy`.
fn proxy(
    fake: &FakeKube,
    method: &Method,
    path: &str,
    content_type: &Option<String>,
) -> Option<Response> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (ns, rest) = rest.split_once("/pods/")?;
    let (target, sub) = rest.split_once("/proxy")?;
    // `https:<pod>:<port>` asks the API server to reach the pod over TLS.
    let target = target.strip_prefix("https:").unwrap_or(target);
    let (pod, port) = target.split_once(':')?;
    let port: u16 = port.parse().ok()?;
    let _ = fake.record(Recorded {
        method: method.to_string(),
        path: path.to_owned(),
        query: BTreeMap::new(),
        content_type: content_type.clone(),
        verb: "get".into(),
        group: String::new(),
        resource: "pods/proxy".into(),
        namespace: Some(ns.to_owned()),
        name: Some(pod.to_owned()),
        body: Value::Null,
        actor: None,
    });
    let handler = fake.proxy.lock().expect("proxy lock").clone();
    Some(match handler.and_then(|h| h(pod, port, sub)) {
        Some(body) => (StatusCode::OK, body).into_response(),
        None => status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("no endpoint for pod {pod}:{port}"),
        ),
    })
}

fn key_of(t: &Target) -> Key {
    Key {
        kind: t.kind.clone(),
        namespace: t.namespace.clone(),
        name: t.name.clone().unwrap_or_default(),
    }
}

fn not_found(t: &Target) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "{} \"{}\" not found",
            t.kind.plural,
            t.name.clone().unwrap_or_default()
        ),
    )
}

/// PUT and PATCH, on the main resource or `/status`.
fn write(
    fake: &FakeKube,
    t: &Target,
    verb: &str,
    content_type: Option<&str>,
    query: &BTreeMap<String, String>,
    body: Value,
) -> Response {
    let key = key_of(t);
    let on_status = t.sub.as_deref() == Some("status");
    if t.sub.is_some() && !on_status {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("subresource {:?} is not served", t.sub),
        );
    }
    let mut s = fake.lock();
    let old = s.objects.get(&key).cloned();
    let apply = content_type.is_some_and(|c| c.starts_with("application/apply-patch"));
    if old.is_none() && !apply {
        return not_found(t);
    }
    // An optimistic lock: a write naming a resourceVersion must name the current one.
    if let (Some(want), Some(old)) = (
        body.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str),
        old.as_ref(),
    ) && old
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        != Some(want)
    {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                t.kind.plural, key.name
            ),
        );
    }
    let manager = query
        .get("fieldManager")
        .cloned()
        .unwrap_or_else(|| "unknown".into());
    let base = old.clone().unwrap_or_else(|| json!({}));
    // Only `.status` changes through /status; never through the main resource.
    let restrict = |v: &Value| -> Value {
        let mut out = Map::new();
        if on_status {
            if let Some(st) = v.get("status") {
                out.insert("status".into(), st.clone());
            }
        } else if let Some(m) = v.as_object() {
            for (k, x) in m {
                if k != "status" {
                    out.insert(k.clone(), x.clone());
                }
            }
        }
        Value::Object(out)
    };
    let mut new = base.clone();
    match (verb, content_type.unwrap_or("")) {
        ("update", _) => {
            let mut replaced = restrict(&body);
            if on_status {
                new["status"] = replaced.get("status").cloned().unwrap_or(Value::Null);
            } else {
                if let Some(st) = base.get("status") {
                    replaced["status"] = st.clone();
                }
                new = replaced;
            }
        }
        ("patch", c) if c.starts_with("application/apply-patch") => {
            let sent = restrict(&body);
            let mut sent_leaves = BTreeSet::new();
            leaves(&sent, &mut Vec::new(), &mut sent_leaves);
            sent_leaves.retain(|p| !is_identity(p));
            let owners = s.owners.entry(key.clone()).or_default();
            let previous = owners.remove(&manager).unwrap_or_default();
            let in_scope =
                |p: &Vec<String>| (p.first().map(String::as_str) == Some("status")) == on_status;
            let mut kept: BTreeSet<Vec<String>> = BTreeSet::new();
            for p in &previous {
                if !in_scope(p) {
                    kept.insert(p.clone());
                    continue;
                }
                let owned_elsewhere = owners.values().any(|o| o.contains(p));
                if !sent_leaves.contains(p) && !owned_elsewhere {
                    remove_path(&mut new, p);
                }
            }
            for o in owners.values_mut() {
                o.retain(|p| !sent_leaves.contains(p));
            }
            kept.extend(sent_leaves);
            owners.insert(manager, kept);
            deep_merge(&mut new, &sent);
        }
        ("patch", c) if c.starts_with("application/json-patch") => {
            let patch: json_patch::Patch = match serde_json::from_value(body.clone()) {
                Ok(p) => p,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
            };
            if let Err(e) = json_patch::patch(&mut new, &patch) {
                return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string());
            }
            if on_status {
                let st = new.get("status").cloned();
                new = base.clone();
                if let Some(st) = st {
                    new["status"] = st;
                }
            } else if let Some(st) = base.get("status") {
                new["status"] = st.clone();
            }
        }
        ("patch", _) => {
            // Merge patch (strategic merge is treated the same: lists replace).
            let sent = restrict(&body);
            json_patch::merge(&mut new, &sent);
            let mut touched = BTreeSet::new();
            leaves(&sent, &mut Vec::new(), &mut touched);
            let owners = s.owners.entry(key.clone()).or_default();
            for o in owners.values_mut() {
                o.retain(|p| !touched.iter().any(|t| p.starts_with(t)));
            }
        }
        _ => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "unknown write".into(),
            );
        }
    }
    if let Some(m) = new.as_object_mut() {
        for k in ["apiVersion", "kind"] {
            if let Some(v) = body.get(k) {
                m.entry(k).or_insert(v.clone());
            }
        }
    }
    let stored = fake.store_object(&mut s, &key, old.as_ref(), new);
    axum::Json(stored).into_response()
}

fn is_identity(p: &[String]) -> bool {
    matches!(
        p.iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
        ["apiVersion"]
            | ["kind"]
            | ["metadata", "name"]
            | ["metadata", "namespace"]
            | ["metadata", "resourceVersion"]
    )
}

fn watch_response(
    fake: &FakeKube,
    t: &Target,
    selector: Selector,
    query: &BTreeMap<String, String>,
) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let kind = t.kind.clone();
    let namespace = t.namespace.clone();
    let wanted = move |e: &WatchEvent| {
        e.key.kind == kind
            && (namespace.is_none() || e.key.namespace == namespace)
            && selector.matches(&e.object)
    };
    let (backlog, rx) = {
        let s = fake.lock();
        let rx = fake.events.subscribe();
        let backlog: Vec<WatchEvent> = s
            .history
            .iter()
            .filter(|e| e.rv > from && wanted(e))
            .cloned()
            .collect();
        (backlog, rx)
    };
    let line = |e: &WatchEvent| -> Result<Bytes, std::convert::Infallible> {
        let mut text = json!({"type": e.type_, "object": e.object}).to_string();
        text.push('\n');
        Ok(Bytes::from(text))
    };
    let last = backlog.last().map_or(from, |e| e.rv);
    let head = futures::stream::iter(backlog.iter().map(line).collect::<Vec<_>>());
    let tail = futures::stream::unfold((rx, last), move |(mut rx, last)| {
        let wanted = wanted.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(e) if e.rv > last && wanted(&e) => {
                        let rv = e.rv;
                        return Some((line(&e), (rx, rv)));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    use futures::StreamExt;
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(head.chain(tail)))
        .unwrap_or_else(|e| {
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

    fn cm(name: &str, data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
    }

    #[tokio::test]
    async fn server_side_apply_removes_what_a_manager_stops_sending() {
        let fake = FakeKube::new();
        let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
        let ssa = |m: &str| PatchParams::apply(m).force();
        api.patch(
            "c",
            &ssa("a"),
            &Patch::Apply(cm("c", json!({"x": "1", "y": "2"}))),
        )
        .await
        .expect("create by apply");
        api.patch("c", &ssa("b"), &Patch::Apply(cm("c", json!({"z": "3"}))))
            .await
            .expect("second manager");
        let c = api
            .patch("c", &ssa("a"), &Patch::Apply(cm("c", json!({"x": "1"}))))
            .await
            .expect("apply without y");
        let data = c.data.expect("data");
        assert_eq!(data.get("y"), None, "a's field it stopped sending is gone");
        assert_eq!(
            data.get("z").map(String::as_str),
            Some("3"),
            "b's field stays"
        );
        // A no-op apply keeps the resourceVersion.
        let again = api
            .patch("c", &ssa("a"), &Patch::Apply(cm("c", json!({"x": "1"}))))
            .await
            .expect("same again");
        assert_eq!(again.metadata.resource_version, c.metadata.resource_version);
    }

    #[tokio::test]
    async fn a_stale_resource_version_is_refused() {
        let fake = FakeKube::new();
        let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
        let created = api
            .create(
                &PostParams::default(),
                &serde_json::from_value(cm("c", json!({"x": "1"}))).expect("cm"),
            )
            .await
            .expect("create");
        let mut stale = created.clone();
        api.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"x": "2"}})),
        )
        .await
        .expect("merge");
        stale.data = Some([("x".to_owned(), "3".to_owned())].into());
        match api.replace("c", &PostParams::default(), &stale).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 409),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(
            fake.requests()
                .iter()
                .any(|r| r.verb == "update" && r.resource == "configmaps")
        );
    }

    #[tokio::test]
    async fn owned_objects_go_with_their_owner_and_watches_see_it() {
        let fake = FakeKube::new();
        let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
        let owner = api
            .create(
                &PostParams::default(),
                &serde_json::from_value(cm("owner", json!({}))).expect("cm"),
            )
            .await
            .expect("owner");
        let uid = owner.metadata.uid.clone().expect("uid");
        let mut child = cm("child", json!({}));
        child["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(child).expect("cm"),
        )
        .await
        .expect("child");
        let mut events = kube::runtime::watcher(api.clone(), Default::default()).boxed();
        let mut next = async || {
            tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
                .await
                .expect("an event in time")
                .expect("stream open")
                .expect("no error")
        };
        // The watcher lists first; once that is done it is watching.
        while !matches!(next().await, kube::runtime::watcher::Event::InitDone) {}
        api.delete("owner", &DeleteParams::default())
            .await
            .expect("delete");
        assert!(fake.get::<ConfigMap>("ns", "child").is_none(), "collected");
        let mut deleted = Vec::new();
        while deleted.len() < 2 {
            if let kube::runtime::watcher::Event::Delete(o) = next().await {
                deleted.push(o.metadata.name.unwrap_or_default());
            }
        }
        deleted.sort();
        assert_eq!(deleted, vec!["child", "owner"]);
    }

    #[tokio::test]
    async fn finalizers_hold_deletion_and_status_is_its_own_subresource() {
        let fake = FakeKube::new();
        let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
        let mut c = cm("c", json!({"x": "1"}));
        c["metadata"]["finalizers"] = json!(["example.com/hold"]);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(c).expect("cm"),
        )
        .await
        .expect("create");
        api.delete("c", &DeleteParams::default())
            .await
            .expect("delete");
        let held: ConfigMap = fake.get("ns", "c").expect("still there");
        assert!(held.metadata.deletion_timestamp.is_some());
        api.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release");
        assert!(
            fake.get::<ConfigMap>("ns", "c").is_none(),
            "gone once released"
        );
        // A status write through the main resource is ignored.
        fake.put(&ConfigMap {
            metadata: kube::core::ObjectMeta {
                name: Some("d".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        let before = fake
            .lock()
            .objects
            .values()
            .find(|v| v["metadata"]["name"] == "d")
            .cloned();
        let main = api
            .patch(
                "d",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"x": 1}})),
            )
            .await;
        assert!(main.is_ok());
        let after = fake
            .lock()
            .objects
            .values()
            .find(|v| v["metadata"]["name"] == "d")
            .cloned();
        assert_eq!(before, after, "nothing changed");
    }
}
