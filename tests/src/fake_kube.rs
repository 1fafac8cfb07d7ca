//! A fake Kubernetes API server on loopback with the few endpoints nodectl uses: get a Node, patch it and its status, create Events, list Pods by label; and faults (500, no answer) on demand.
//!
//! No API server can run where the tests run. This one behaves as the Kubernetes API documents
//! for these calls: bearer-token authentication (401 otherwise); `application/merge-patch+json`
//! (RFC 7386: lists are replaced) and `application/strategic-merge-patch+json` (lists with a
//! merge key, here `status.conditions` and `status.addresses` by `type`, merge item by item;
//! others, such as `spec.taints`, are replaced); a `metadata.resourceVersion` in a patch is a
//! precondition (409 Conflict when stale); every write bumps the resourceVersion; creating an
//! object whose name is taken is 409 AlreadyExists; a list takes a `labelSelector` (equality,
//! inequality, existence and set requirements, comma-separated; a malformed one is 400) and
//! pages by `limit` and `continue`; errors are `Status` objects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A Node as the kubelet leaves it: Ready, with an internal address.
pub fn kubelet_node(name: &str) -> Value {
    json!({
        "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name } },
        "spec": {},
        "status": {
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": "2026-12-03T10:00:00Z",
                "lastTransitionTime": "2026-12-01T08:00:00Z"
            }],
            "addresses": [{ "type": "InternalIP", "address": "10.0.0.7" }]
        }
    })
}

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Every request gets 500 InternalError.
    Fail500,
    /// No request is ever answered.
    Hang,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub at: Instant,
    /// The status answered; `None` while it hangs.
    pub status: Option<u16>,
}

#[derive(Debug)]
struct Cluster {
    token: String,
    mode: Mode,
    resource_version: u64,
    nodes: BTreeMap<String, Value>,
    /// By (namespace, name).
    events: BTreeMap<(String, String), Value>,
    /// By (namespace, name).
    pods: BTreeMap<(String, String), Value>,
    calls: Vec<Call>,
    /// Each node as it was after each write to it, in order.
    node_history: Vec<Value>,
}

type Shared = Arc<Mutex<Cluster>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Cluster> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake API server; stops when dropped.
pub struct FakeKube {
    pub addr: SocketAddr,
    shared: Shared,
    stop: CancellationToken,
}

impl FakeKube {
    /// Serves `nodes` (Node objects with at least `metadata.name`) on `127.0.0.1:0`.
    pub async fn start(nodes: Vec<Value>) -> anyhow::Result<FakeKube> {
        let mut cluster = Cluster {
            token: "nodectl-test-token".to_owned(),
            mode: Mode::Normal,
            resource_version: 100,
            nodes: BTreeMap::new(),
            events: BTreeMap::new(),
            pods: BTreeMap::new(),
            calls: Vec::new(),
            node_history: Vec::new(),
        };
        for mut node in nodes {
            let name = node["metadata"]["name"]
                .as_str()
                .context("a node without metadata.name")?
                .to_owned();
            cluster.resource_version += 1;
            node["metadata"]["resourceVersion"] = json!(cluster.resource_version.to_string());
            node["metadata"]["uid"] = json!(format!("uid-{name}"));
            node["kind"] = json!("Node");
            node["apiVersion"] = json!("v1");
            cluster.nodes.insert(name, node);
        }
        let shared = Arc::new(Mutex::new(cluster));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake API server")?;
        let addr = listener.local_addr()?;
        let router = Router::new()
            .route("/api/v1/nodes/{name}", get(get_node).patch(patch_node))
            .route(
                "/api/v1/nodes/{name}/status",
                get(get_node).patch(patch_node_status),
            )
            .route("/api/v1/namespaces/{namespace}/events", post(create_event))
            .route("/api/v1/namespaces/{namespace}/pods", get(list_pods))
            .with_state(Arc::clone(&shared));
        let stop = crate::serve_until_cancelled(listener, router);
        Ok(FakeKube { addr, shared, stop })
    }

    /// Writes a kubeconfig naming this server and its token into `dir`.
    pub fn write_kubeconfig(&self, dir: &FsPath) -> anyhow::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let token = lock(&self.shared).token.clone();
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: agent\ncurrent-context: fake\nusers:\n- name: agent\n  user:\n    token: {token}\n",
                self.addr
            ),
        )?;
        Ok(path)
    }

    /// Adds a Pod (with at least `metadata.name`) in `namespace`, as the DaemonSet controller
    /// and the kubelet leave it.
    pub fn add_pod(&self, namespace: &str, mut pod: Value) -> anyhow::Result<()> {
        let name = pod["metadata"]["name"]
            .as_str()
            .context("a pod without metadata.name")?
            .to_owned();
        let mut cluster = lock(&self.shared);
        cluster.resource_version += 1;
        pod["metadata"]["namespace"] = json!(namespace);
        pod["metadata"]["resourceVersion"] = json!(cluster.resource_version.to_string());
        pod["metadata"]["uid"] = json!(format!("uid-{namespace}-{name}"));
        pod["kind"] = json!("Pod");
        pod["apiVersion"] = json!("v1");
        cluster.pods.insert((namespace.to_owned(), name), pod);
        Ok(())
    }

    pub fn set_mode(&self, mode: Mode) {
        lock(&self.shared).mode = mode;
    }

    pub fn node(&self, name: &str) -> Option<Value> {
        lock(&self.shared).nodes.get(name).cloned()
    }

    /// The node's condition of `kind`, if set.
    pub fn condition(&self, node: &str, kind: &str) -> Option<Value> {
        self.node(node)?["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == kind)
            .cloned()
    }

    /// The node's condition of `kind` after each write to the node, where it changed.
    pub fn condition_history(&self, node: &str, kind: &str) -> Vec<Value> {
        let mut history: Vec<Value> = Vec::new();
        for written in &lock(&self.shared).node_history {
            if written["metadata"]["name"] != node {
                continue;
            }
            let condition = written["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == kind))
                .map(|c| json!({ "status": c["status"], "reason": c["reason"] }));
            if let Some(condition) = condition
                && history.last() != Some(&condition)
            {
                history.push(condition);
            }
        }
        history
    }

    /// Whether the node carried a taint with `key` after each write to it, where it changed.
    pub fn taint_history(&self, node: &str, key: &str) -> Vec<bool> {
        let mut history: Vec<bool> = Vec::new();
        for written in &lock(&self.shared).node_history {
            if written["metadata"]["name"] != node {
                continue;
            }
            let tainted = written["spec"]["taints"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["key"] == key));
            if history.last() != Some(&tainted) {
                history.push(tainted);
            }
        }
        history
    }

    pub fn taints(&self, node: &str) -> Vec<Value> {
        self.node(node)
            .and_then(|n| n["spec"]["taints"].as_array().cloned())
            .unwrap_or_default()
    }

    pub fn events(&self) -> Vec<Value> {
        lock(&self.shared).events.values().cloned().collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared).calls.clone()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A `Status` object, as the API server answers errors.
fn status(code: StatusCode, reason: &str, message: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        })
        .to_string(),
    )
        .into_response()
}

fn object(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// Records the call, checks the token and the fault mode; `Err` is the answer to give at once
/// (after waiting forever in `Hang`).
async fn admit(
    shared: &Shared,
    method: Method,
    path: String,
    headers: &HeaderMap,
) -> Result<usize, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (index, mode, authorized) = {
        let mut cluster = lock(shared);
        cluster.calls.push(Call {
            method: method.to_string(),
            path,
            content_type,
            at: Instant::now(),
            status: None,
        });
        let expected = format!("Bearer {}", cluster.token);
        let authorized = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            == Some(expected.as_str());
        (cluster.calls.len() - 1, cluster.mode, authorized)
    };
    match mode {
        Mode::Hang => std::future::pending().await,
        Mode::Fail500 => Err(finish(
            shared,
            index,
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal error occurred: etcdserver: request timed out".to_owned(),
            ),
        )),
        Mode::Normal if !authorized => Err(finish(
            shared,
            index,
            status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized".to_owned(),
            ),
        )),
        Mode::Normal => Ok(index),
    }
}

fn finish(shared: &Shared, index: usize, response: Response) -> Response {
    if let Some(call) = lock(shared).calls.get_mut(index) {
        call.status = Some(response.status().as_u16());
    }
    response
}

async fn get_node(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let index = match admit(
        &shared,
        Method::GET,
        format!("/api/v1/nodes/{name}"),
        &headers,
    )
    .await
    {
        Ok(index) => index,
        Err(answer) => return answer,
    };
    let answer = match lock(&shared).nodes.get(&name) {
        Some(node) => object(StatusCode::OK, node),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("nodes \"{name}\" not found"),
        ),
    };
    finish(&shared, index, answer)
}

async fn patch_node(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    patch(shared, name, headers, body, false).await
}

async fn patch_node_status(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    patch(shared, name, headers, body, true).await
}

async fn patch(
    shared: Shared,
    name: String,
    headers: HeaderMap,
    body: Bytes,
    status_subresource: bool,
) -> Response {
    let path = if status_subresource {
        format!("/api/v1/nodes/{name}/status")
    } else {
        format!("/api/v1/nodes/{name}")
    };
    let index = match admit(&shared, Method::PATCH, path, &headers).await {
        Ok(index) => index,
        Err(answer) => return answer,
    };
    let answer = apply_patch(&shared, &name, &headers, &body, status_subresource);
    finish(&shared, index, answer)
}

fn apply_patch(
    shared: &Shared,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
    status_subresource: bool,
) -> Response {
    let strategic = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some("application/merge-patch+json") => false,
        Some("application/strategic-merge-patch+json") => true,
        other => {
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
                ),
            );
        }
    };
    let patch: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the patch is not a JSON object".to_owned(),
            );
        }
    };
    let mut cluster = lock(shared);
    let next_version = cluster.resource_version + 1;
    let Some(node) = cluster.nodes.get_mut(name) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("nodes \"{name}\" not found"),
        );
    };
    if let Some(wanted) = patch["metadata"]["resourceVersion"].as_str()
        && Some(wanted) != node["metadata"]["resourceVersion"].as_str()
    {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on nodes \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    let mut merged = node.clone();
    merge(&mut merged, &patch, strategic, "");
    // The status subresource changes status alone; the main resource ignores status.
    let mut updated = node.clone();
    if status_subresource {
        updated["status"] = merged["status"].take();
    } else {
        let status = updated["status"].take();
        updated = merged;
        updated["status"] = status;
    }
    updated["metadata"]["resourceVersion"] = json!(next_version.to_string());
    *node = updated.clone();
    cluster.resource_version = next_version;
    cluster.node_history.push(updated.clone());
    object(StatusCode::OK, &updated)
}

/// RFC 7386 merge of `patch` into `target`; strategic: the lists with a merge key merge by it.
fn merge(target: &mut Value, patch: &Value, strategic: bool, path: &str) {
    let Value::Object(patch_fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in patch_fields {
        let field_path = format!("{path}.{key}");
        let Some(fields) = target.as_object_mut() else {
            return;
        };
        if value.is_null() {
            fields.remove(key);
            continue;
        }
        let merge_key = match field_path.as_str() {
            ".status.conditions" | ".status.addresses" if strategic => Some("type"),
            _ => None,
        };
        match (merge_key, value) {
            (Some(merge_key), Value::Array(items)) => {
                let existing = fields.entry(key.clone()).or_insert_with(|| json!([]));
                if !existing.is_array() {
                    *existing = json!([]);
                }
                if let Value::Array(list) = existing {
                    for item in items {
                        match list.iter_mut().find(|e| e[merge_key] == item[merge_key]) {
                            Some(present) => merge(present, item, strategic, &field_path),
                            None => list.push(item.clone()),
                        }
                    }
                }
            }
            (_, Value::Object(_)) => {
                let entry = fields.entry(key.clone()).or_insert(Value::Null);
                merge(entry, value, strategic, &field_path);
            }
            _ => {
                fields.insert(key.clone(), value.clone());
            }
        }
    }
}

async fn create_event(
    State(shared): State<Shared>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let index = match admit(
        &shared,
        Method::POST,
        format!("/api/v1/namespaces/{namespace}/events"),
        &headers,
    )
    .await
    {
        Ok(index) => index,
        Err(answer) => return answer,
    };
    let answer = store_event(&shared, &namespace, &body);
    finish(&shared, index, answer)
}

fn store_event(shared: &Shared, namespace: &str, body: &[u8]) -> Response {
    let mut event: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the body is not a JSON object".to_owned(),
            );
        }
    };
    if let Some(ns) = event["metadata"]["namespace"].as_str()
        && ns != namespace
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request"
                .to_owned(),
        );
    }
    if !event["involvedObject"].is_object() {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "Event \"\" is invalid: involvedObject: Required value".to_owned(),
        );
    }
    let mut cluster = lock(shared);
    cluster.resource_version += 1;
    let version = cluster.resource_version;
    let name = match (
        event["metadata"]["name"].as_str(),
        event["metadata"]["generateName"].as_str(),
    ) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, Some(prefix)) => format!("{prefix}{version:05x}"),
        _ => {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "Event \"\" is invalid: metadata.name: Required value: name or generateName is required".to_owned(),
            );
        }
    };
    let key = (namespace.to_owned(), name.clone());
    if cluster.events.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("events \"{name}\" already exists"),
        );
    }
    event["metadata"]["name"] = json!(name);
    event["metadata"]["namespace"] = json!(namespace);
    event["metadata"]["resourceVersion"] = json!(version.to_string());
    event["kind"] = json!("Event");
    event["apiVersion"] = json!("v1");
    cluster.events.insert(key, event.clone());
    object(StatusCode::CREATED, &event)
}

/// The query of a list request.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    label_selector: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

async fn list_pods(
    State(shared): State<Shared>,
    Path(namespace): Path<String>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let path = format!(
        "/api/v1/namespaces/{namespace}/pods?labelSelector={}",
        query.label_selector.as_deref().unwrap_or_default()
    );
    let index = match admit(&shared, Method::GET, path, &headers).await {
        Ok(index) => index,
        Err(answer) => return answer,
    };
    let answer = pod_list(&shared, &namespace, &query);
    finish(&shared, index, answer)
}

fn pod_list(shared: &Shared, namespace: &str, query: &ListQuery) -> Response {
    let selector = match LabelSelector::parse(query.label_selector.as_deref().unwrap_or_default()) {
        Ok(selector) => selector,
        Err(reason) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("unable to parse requirement: {reason}"),
            );
        }
    };
    let start: usize = match query.continue_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => match token.parse() {
            Ok(start) => start,
            Err(_) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "continue key is not valid".to_owned(),
                );
            }
        },
    };
    let cluster = lock(shared);
    let matching: Vec<&Value> = cluster
        .pods
        .iter()
        .filter(|((ns, _), pod)| ns == namespace && selector.matches(&pod["metadata"]["labels"]))
        .map(|(_, pod)| pod)
        .collect();
    let limit = query.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let page: Vec<&Value> = matching.iter().skip(start).take(limit).copied().collect();
    let end = start.saturating_add(page.len());
    let mut metadata = json!({ "resourceVersion": cluster.resource_version.to_string() });
    if end < matching.len() {
        metadata["continue"] = json!(end.to_string());
        metadata["remainingItemCount"] = json!(matching.len() - end);
    }
    object(
        StatusCode::OK,
        &json!({ "kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": page }),
    )
}

/// A label selector as the API server reads one: `k=v`, `k==v`, `k!=v`, `k`, `!k`,
/// `k in (a,b)`, `k notin (a,b)`, joined by commas, all of which must hold.
#[derive(Debug)]
struct LabelSelector(Vec<Requirement>);

#[derive(Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl LabelSelector {
    fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_requirements(text) {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(format!("empty requirement in {text:?}"));
            }
            requirements.push(Requirement::parse(part)?);
        }
        Ok(LabelSelector(requirements))
    }

    fn matches(&self, labels: &Value) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

/// Splits at the commas outside parentheses.
fn split_requirements(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn valid_key(key: &str) -> Result<String, String> {
    let ok = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(key.to_owned())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

fn valid_value(value: &str) -> Result<String, String> {
    let value = value.trim();
    let ok = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

impl Requirement {
    fn parse(part: &str) -> Result<Self, String> {
        if let Some(key) = part.strip_prefix('!') {
            return Ok(Requirement::Absent(valid_key(key.trim())?));
        }
        if let Some((key, value)) = part.split_once("!=") {
            return Ok(Requirement::NotEquals(
                valid_key(key.trim())?,
                valid_value(value)?,
            ));
        }
        if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
            return Ok(Requirement::Equals(
                valid_key(key.trim())?,
                valid_value(value)?,
            ));
        }
        let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
        if let [key, rest] = words.as_slice() {
            let rest = rest.trim();
            let (negated, set) = if let Some(set) = rest.strip_prefix("notin") {
                (true, set)
            } else if let Some(set) = rest.strip_prefix("in") {
                (false, set)
            } else {
                return Err(format!("expected in or notin after {key:?} in {part:?}"));
            };
            let inner = set
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("expected a (value, ...) set in {part:?}"))?;
            let values = inner
                .split(',')
                .map(valid_value)
                .collect::<Result<Vec<_>, _>>()?;
            let key = valid_key(key)?;
            return Ok(if negated {
                Requirement::NotIn(key, values)
            } else {
                Requirement::In(key, values)
            });
        }
        Ok(Requirement::Exists(valid_key(part)?))
    }

    fn matches(&self, labels: &Value) -> bool {
        let label = |key: &str| labels[key].as_str().map(str::to_owned);
        match self {
            Requirement::Equals(k, v) => label(k).as_deref() == Some(v),
            Requirement::NotEquals(k, v) => label(k).as_deref() != Some(v),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::Absent(k) => label(k).is_none(),
            Requirement::In(k, set) => label(k).is_some_and(|v| set.contains(&v)),
            Requirement::NotIn(k, set) => label(k).is_none_or(|v| !set.contains(&v)),
        }
    }
}

/// A node to drill on: a copy of the healthy fixture tree at `root/` with a one-record
/// `/dev/kmsg`, a fake API server holding its Node (`Ready`), and where the agent's Unix socket
/// goes.
pub struct DrillNode {
    pub dir: tempfile::TempDir,
    pub tree: PathBuf,
    pub kube: FakeKube,
    pub kubeconfig: PathBuf,
    pub socket: PathBuf,
}

impl DrillNode {
    pub async fn start(node: &str) -> anyhow::Result<DrillNode> {
        use std::io::Write as _;
        let dir = crate::harness::node_fixture_copy("strix-halo-healthy")?;
        let tree = dir.path().join("root");
        std::fs::create_dir_all(tree.join("dev"))?;
        writeln!(
            std::fs::File::create(tree.join("dev/kmsg"))?,
            "6,1,1000000,-;Linux version 6.18.4-talos (root@buildkitsandbox)"
        )?;
        let kube = FakeKube::start(vec![json!({
            "metadata": { "name": node },
            "status": { "conditions": [{ "type": "Ready", "status": "True" }] }
        })])
        .await?;
        let kubeconfig = kube.write_kubeconfig(dir.path())?;
        let socket = dir.path().join("agent.sock");
        Ok(DrillNode {
            dir,
            tree,
            kube,
            kubeconfig,
            socket,
        })
    }

    /// An agent on the tree, serving the Unix socket and keeping `node`'s conditions, with
    /// `extra` flags.
    pub async fn agent(&self, node: &str, extra: &[&str]) -> anyhow::Result<crate::harness::Agent> {
        let tree = self.tree.clone();
        let args: Vec<String> = [
            "--unix",
            self.socket.to_str().context("path")?,
            "--kube-node-conditions",
            "--node-name",
            node,
            "--kubeconfig",
            self.kubeconfig.to_str().context("path")?,
        ]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::harness::Agent::start(&tree, &args)
        })
        .await?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_read_as_the_api_server_reads_them() {
        let labels = json!({ "app.kubernetes.io/name": "nodectl-agent", "tier": "gpu" });
        let holds = |s: &str| LabelSelector::parse(s).unwrap().matches(&labels);
        assert!(holds("app.kubernetes.io/name=nodectl-agent"));
        assert!(holds("app.kubernetes.io/name==nodectl-agent,tier"));
        assert!(holds("tier in (cpu, gpu),!missing"));
        assert!(holds(""));
        assert!(!holds("tier notin (gpu)"));
        assert!(!holds("app.kubernetes.io/name!=nodectl-agent"));
        assert!(!holds("app.kubernetes.io/name=other"));
        assert!(LabelSelector::parse("tier in gpu").is_err());
        assert!(LabelSelector::parse("a=b,,c").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
    }
}
