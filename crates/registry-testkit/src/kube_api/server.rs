//! The HTTP side: accepting connections (or refusing them when the test made
//! the server unreachable), resolving a request to verb, resource, namespace
//! and name, admission (throttling, authorisation), holds, latency and
//! dispatch.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use super::hold::{self, Holds};
use super::observe::{Faults, Recorder, Verb, WriteRecord, lock};
use super::resource::Kind;
use super::select::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{ListQuery, PatchType, Preconditions, Store, WriteOptions};
use super::watch::{WatchRequest, WatchSettings};

/// The API server's request body limit.
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Everything the server and the test handle share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) store: std::sync::Mutex<Store>,
    pub(crate) faults: Faults,
    pub(crate) recorder: Recorder,
    pub(crate) holds: Holds,
    pub(crate) watches: WatchSettings,
    /// Set when the server stops: open watches end and parked requests are
    /// answered, so the graceful shutdown does not wait for them forever.
    pub(crate) closing: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// Serves until `shutdown` fires (or the sender is dropped).
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: oneshot::Receiver<()>) {
    let listener = SimListener {
        unreachable: shared.faults.unreachable_flag(),
        listener,
    };
    let app = Router::new().fallback(handle).with_state(shared);
    let served = axum::serve(listener, app).with_graceful_shutdown(async {
        shutdown.await.ok();
    });
    if let Err(error) = served.await {
        tracing::warn!(%error, "simulated Kubernetes API server stopped");
    }
}

/// Accepts connections; while the server is unreachable, closes each at once.
struct SimListener {
    listener: TcpListener,
    unreachable: Arc<AtomicBool>,
}

impl axum::serve::Listener for SimListener {
    type Io = SimStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, address)) => {
                    if self.unreachable.load(Ordering::SeqCst) {
                        drop(stream);
                        continue;
                    }
                    let unreachable = Arc::clone(&self.unreachable);
                    return (SimStream { stream, unreachable }, address);
                }
                Err(error) => {
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection that breaks on its next read or write once the server is
/// unreachable, so kept-alive connections fail like fresh ones.
struct SimStream {
    stream: TcpStream,
    unreachable: Arc<AtomicBool>,
}

impl SimStream {
    fn check(&self) -> io::Result<()> {
        if self.unreachable.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the simulated API server is unreachable",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for SimStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(error) = this.check() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(error) = this.check() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// What a request is about, as the API server's request-info resolver sees it.
#[derive(Debug, Clone)]
struct RequestInfo {
    verb: Verb,
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
}

impl RequestInfo {
    /// The namespace the request touches, for authorisation: a namespaced
    /// object's namespace, or the Namespace object itself.
    fn scope(&self) -> Option<&str> {
        match self.kind {
            Kind::Namespace => self.name.as_deref(),
            _ => self.namespace.as_deref(),
        }
    }
}

enum Route {
    Version,
    Api(RequestInfo),
}

fn route(method: &Method, path: &str, query: &HashMap<String, String>) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (resource, namespace, name) = match segments.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api", "v1", "namespaces"] => ("namespaces", None, None),
        ["api", "v1", "namespaces", name] => ("namespaces", None, Some(*name)),
        ["api", "v1", "namespaces", namespace, resource] => (*resource, Some(*namespace), None),
        ["api", "v1", "namespaces", namespace, resource, name] => (*resource, Some(*namespace), Some(*name)),
        ["api", "v1", resource] => (*resource, None, None),
        _ => return Err(ApiError::no_route()),
    };
    let kind = Kind::from_plural(resource).ok_or_else(ApiError::no_route)?;
    let misplaced = !kind.is_namespaced() && namespace.is_some();
    if misplaced || name.is_some_and(str::is_empty) || namespace.is_some_and(str::is_empty) {
        return Err(ApiError::no_route());
    }
    let verb = match (method.as_str(), name.is_some()) {
        ("GET", true) => Verb::Get,
        ("GET", false) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => Verb::Watch,
        ("GET", false) => Verb::List,
        ("POST", false) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        (method, _) => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow {method} on this path"
            )));
        }
    };
    Ok(Route::Api(RequestInfo {
        verb,
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    }))
}

/// What a request is answered with.
enum Answer {
    Object(StatusCode, Value),
    Stream(Response),
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(query)| query)
        .unwrap_or_default();
    let info = match route(&parts.method, parts.uri.path(), &query) {
        Ok(Route::Version) => return version(),
        Ok(Route::Api(info)) => info,
        Err(error) => return error.into_response(),
    };
    shared.recorder.count(info.verb, info.kind.plural());
    let arrived = Instant::now();
    let in_flight = shared.recorder.begin(info.verb);

    let answer = respond(&shared, &info, &query, &parts.headers, body, arrived).await;
    let (response, stored) = match answer {
        Ok(Answer::Object(code, value)) => {
            let stored = matches!(info.verb, Verb::Create | Verb::Update | Verb::Patch)
                && query.get("dryRun").is_none_or(|dry_run| dry_run != "All");
            let stored = stored.then(|| value.clone());
            ((code, axum::Json(value)).into_response(), stored)
        }
        Ok(Answer::Stream(response)) => (response, None),
        Err(error) => (error.into_response(), None),
    };

    drop(in_flight);
    if info.verb.is_write() {
        shared.recorder.log_write(WriteRecord {
            arrived,
            finished: Instant::now(),
            verb: info.verb,
            resource: info.kind.plural().to_owned(),
            namespace: info.namespace.clone(),
            name: info.name.clone(),
            code: response.status().as_u16(),
            user_agent: user_agent(&parts.headers),
            object: stored,
        });
    }
    response
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|agent| agent.to_str().ok())
        .map(str::to_owned)
}

/// A request's way through the server, in the API server's order: priority
/// and fairness (429) and authorisation (403), then — past the filters —
/// holds, latency, and the handler.
async fn respond(
    shared: &Arc<Shared>,
    info: &RequestInfo,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
    arrived: Instant,
) -> Result<Answer, ApiError> {
    admit(shared, info)?;
    let body = read_body(body).await;
    park(shared, info, body.as_ref().ok()).await?;
    // The latency counts from the request's arrival, as a client measures
    // it, on a timer precise below the millisecond.
    let latency = shared.faults.latency(info.verb.is_write());
    if !latency.is_zero() {
        super::timer::sleep_until(arrived + latency).await;
    }
    let body = body?;
    if info.verb == Verb::Watch {
        let request = WatchRequest::parse(info.kind, info.namespace.as_deref(), query)?;
        return super::watch::open(shared, request).map(Answer::Stream);
    }
    dispatch(shared, info, query, headers, &body).map(|(code, value)| Answer::Object(code, value))
}

/// The filters in front of the handlers: priority and fairness (429), then
/// authorisation (403).
fn admit(shared: &Shared, info: &RequestInfo) -> Result<(), ApiError> {
    if let Some(retry_after) = shared.faults.throttle(info.verb.is_write()) {
        shared.recorder.throttled();
        return Err(ApiError::too_many_requests(retry_after));
    }
    let namespace_forbidden = info
        .scope()
        .is_some_and(|namespace| shared.faults.is_forbidden(namespace));
    // Least privilege: namespaces are the platform's; nobody here writes them.
    let namespace_write = info.kind == Kind::Namespace && info.verb.is_write();
    if namespace_forbidden || namespace_write {
        shared.recorder.forbidden();
        return Err(ApiError::forbidden(
            info.verb.as_str(),
            info.kind.plural(),
            info.namespace.as_deref(),
            info.name.as_deref(),
        ));
    }
    Ok(())
}

/// Waits while a hold parks the request; a create is selected by the name
/// in its body. Answers `503` if the server stops meanwhile.
async fn park(shared: &Shared, info: &RequestInfo, body: Option<&Bytes>) -> Result<(), ApiError> {
    let created_name = match (info.verb, body) {
        (Verb::Create, Some(body)) => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|object| object.pointer("/metadata/name")?.as_str().map(str::to_owned)),
        _ => None,
    };
    let tickets = shared.holds.park(&hold::Request {
        verb: info.verb,
        resource: info.kind.plural(),
        namespace: info.namespace.as_deref(),
        name: info.name.as_deref().or(created_name.as_deref()),
    });
    if tickets.is_empty() {
        return Ok(());
    }
    let mut closing = shared.closing.subscribe();
    tokio::select! {
        () = tickets.released() => Ok(()),
        Ok(_) = closing.wait_for(|closing| *closing) => {
            Err(ApiError::unavailable("the simulated API server is shutting down"))
        }
    }
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::too_large(MAX_BODY_BYTES))
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: {error} (the simulated API server accepts JSON bodies only)"
        ))
    })
}

fn list_query(kind: Kind, query: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
    let param = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    let limit = match query.get("limit") {
        Some(limit) => Some(
            limit
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
        ),
        None => None,
    };
    Ok(ListQuery {
        labels: LabelSelector::parse(param("labelSelector")).map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(kind, param("fieldSelector")).map_err(ApiError::bad_request)?,
        limit,
        continue_token: query.get("continue").filter(|token| !token.is_empty()).cloned(),
    })
}

fn dry_run(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "unsupported dryRun value {other:?}: supported values: \"All\""
        ))),
    }
}

fn write_options(query: &HashMap<String, String>, headers: &HeaderMap) -> Result<WriteOptions, ApiError> {
    Ok(WriteOptions {
        field_manager: query.get("fieldManager").cloned(),
        user_agent: user_agent(headers),
        dry_run: dry_run(query.get("dryRun").map(String::as_str))?,
        force: query.get("force").is_some_and(|force| force == "true"),
    })
}

/// `POST` and `PUT` bodies must be JSON.
fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if media_type.is_empty() || media_type == "application/json" {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(content_type))
    }
}

fn delete_options(query: &HashMap<String, String>, body: &Bytes) -> Result<(Preconditions, bool), ApiError> {
    let options = if body.is_empty() { Value::Null } else { json_body(body)? };
    let text = |pointer: &str| options.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    let preconditions = Preconditions {
        uid: text("/preconditions/uid"),
        resource_version: text("/preconditions/resourceVersion"),
    };
    let body_dry_run = options.pointer("/dryRun/0").and_then(Value::as_str);
    let dry_run = dry_run(query.get("dryRun").map(String::as_str).or(body_dry_run))?;
    Ok((preconditions, dry_run))
}

fn dispatch(
    shared: &Shared,
    info: &RequestInfo,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(StatusCode, Value), ApiError> {
    let kind = info.kind;
    // Namespaces are stored under the empty namespace.
    let namespace = info.namespace.as_deref().unwrap_or_default();
    let ok = |value| (StatusCode::OK, value);
    match (info.verb, info.name.as_deref()) {
        (Verb::Get, Some(name)) => lock(&shared.store).get(kind, namespace, name).map(ok),
        (Verb::List, None) => {
            let scope = if kind.is_namespaced() {
                info.namespace.as_deref()
            } else {
                Some("")
            };
            lock(&shared.store).list(kind, scope, &list_query(kind, query)?).map(ok)
        }
        (Verb::Create, None) if info.namespace.is_some() => {
            check_json_content_type(headers)?;
            let options = write_options(query, headers)?;
            let object = json_body(body)?;
            lock(&shared.store)
                .create(kind, namespace, object, &options)
                .map(|value| (StatusCode::CREATED, value))
        }
        (Verb::Update, Some(name)) => {
            check_json_content_type(headers)?;
            let options = write_options(query, headers)?;
            let object = json_body(body)?;
            lock(&shared.store)
                .replace(kind, namespace, name, object, &options)
                .map(ok)
        }
        (Verb::Patch, Some(name)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("");
            let patch_type = PatchType::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            let options = write_options(query, headers)?;
            let patch = json_body(body)?;
            let (created, value) = lock(&shared.store).patch(kind, namespace, name, patch_type, patch, &options)?;
            Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, value))
        }
        (Verb::Delete, Some(name)) => {
            let (preconditions, dry_run) = delete_options(query, body)?;
            lock(&shared.store)
                .delete(kind, namespace, name, &preconditions, dry_run)
                .map(ok)
        }
        (Verb::DeleteCollection, None) if info.namespace.is_some() => {
            let (_, dry_run) = delete_options(query, body)?;
            lock(&shared.store)
                .delete_collection(kind, namespace, &list_query(kind, query)?, dry_run)
                .map(ok)
        }
        (verb, _) => Err(ApiError::method_not_allowed(format!(
            "{verb} is not allowed on this path"
        ))),
    }
}

fn version() -> Response {
    axum::Json(json!({
        "major": "1",
        "minor": "34",
        "emulationMajor": "1",
        "emulationMinor": "34",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "33",
        "gitVersion": "v1.34.0-kubesim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
    .into_response()
}
