//! Watches: a `GET` of a collection with `watch=true` answers a streamed
//! `200` of newline-delimited `WatchEvent`s, with the semantics kube-runtime's
//! watcher relies on — where the stream starts (`resourceVersion`,
//! `sendInitialEvents`), what it selects (label and field selectors, objects
//! moving in and out of them), bookmarks, `timeoutSeconds`, and how it ends.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::history::{Change, Event, Key};
use super::observe::{OpenWatch, lock};
use super::resource::Kind;
use super::select::{FieldSelector, LabelSelector};
use super::server::Shared;
use super::status::{ApiError, Cause};

/// The annotation of the bookmark that ends the initial events of a
/// `sendInitialEvents` watch.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// How often an open watch that asked for bookmarks gets one by default:
/// often enough that tests see them, rarely enough not to matter.
const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// The test's settings for watches.
#[derive(Debug)]
pub(crate) struct WatchSettings {
    bookmark_interval: Mutex<Duration>,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            bookmark_interval: Mutex::new(DEFAULT_BOOKMARK_INTERVAL),
        }
    }
}

impl WatchSettings {
    pub(crate) fn set_bookmark_interval(&self, interval: Duration) {
        *lock(&self.bookmark_interval) = interval;
    }

    fn bookmark_interval(&self) -> Duration {
        *lock(&self.bookmark_interval)
    }
}

/// Which objects a watch follows.
#[derive(Debug, Clone)]
struct Filter {
    kind: Kind,
    /// `None`: every namespace.
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn in_scope(&self, (kind, namespace, _): &Key) -> bool {
        *kind == self.kind && self.namespace.as_deref().is_none_or(|wanted| wanted == namespace)
    }

    fn selects(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// The watch event a change is for this watch, if any: a modification
    /// that makes an object leave the selection is a `DELETED` of its
    /// previous state under the new `resourceVersion`, one that makes it
    /// enter is an `ADDED`, as the API server's watch cache sends them.
    fn translate(&self, event: &Event) -> Option<Bytes> {
        if !self.in_scope(&event.key) {
            return None;
        }
        let previously = event.previous.as_ref().is_some_and(|previous| self.selects(previous));
        match event.change {
            Change::Added => self.selects(&event.object).then(|| line("ADDED", &event.object)),
            Change::Deleted => self.selects(&event.object).then(|| line("DELETED", &event.object)),
            Change::Modified => match (previously, self.selects(&event.object)) {
                (true, true) => Some(line("MODIFIED", &event.object)),
                (false, true) => Some(line("ADDED", &event.object)),
                (true, false) => {
                    let mut last = event.previous.clone().unwrap_or_default();
                    last["metadata"]["resourceVersion"] = Value::from(event.revision.to_string());
                    Some(line("DELETED", &last))
                }
                (false, false) => None,
            },
        }
    }
}

/// Where the stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Synthetic `ADDED` events for the current state, then its changes
    /// (`resourceVersion` absent or `0`, or `sendInitialEvents`, which also
    /// checks that the given version is not in the future).
    Current { at_least: Option<u64> },
    /// Every change after this revision, from the history.
    After(u64),
}

/// A parsed watch request.
#[derive(Debug, Clone)]
pub(crate) struct WatchRequest {
    filter: Filter,
    start: Start,
    bookmarks: bool,
    /// Ends the initial events with a bookmark (`sendInitialEvents=true`).
    initial_events_end: bool,
    timeout: Option<Duration>,
}

fn forbidden_option(field: &str, detail: &str) -> ApiError {
    ApiError::invalid("ListOptions.meta.k8s.io", "", &[Cause::forbidden(field, detail)])
}

impl WatchRequest {
    /// Reads the query of a watch of `kind` in `namespace` (`None`: all).
    pub(crate) fn parse(
        kind: Kind,
        namespace: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Result<Self, ApiError> {
        let param = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
        let filter = Filter {
            kind,
            namespace: namespace.map(str::to_owned),
            labels: LabelSelector::parse(param("labelSelector")).map_err(ApiError::bad_request)?,
            fields: FieldSelector::parse(kind, param("fieldSelector")).map_err(ApiError::bad_request)?,
        };
        let version = match param("resourceVersion") {
            "" | "0" => None,
            given => Some(
                given
                    .parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version {given:?}")))?,
            ),
        };
        let bookmarks = param("allowWatchBookmarks") == "true";
        let initial_events = param("sendInitialEvents") == "true";
        let version_match = param("resourceVersionMatch");
        if initial_events {
            if version_match != "NotOlderThan" {
                return Err(forbidden_option(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if !bookmarks {
                return Err(forbidden_option(
                    "allowWatchBookmarks",
                    "sendInitialEvents requires setting allowWatchBookmarks to true",
                ));
            }
        } else if !version_match.is_empty() {
            return Err(forbidden_option(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        let timeout = match param("timeoutSeconds") {
            "" | "0" => None,
            given => Some(Duration::from_secs(given.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid timeoutSeconds {given:?}"))
            })?)),
        };
        let start = match (initial_events, version) {
            (true, at_least) | (false, at_least @ None) => Start::Current { at_least },
            (false, Some(after)) => Start::After(after),
        };
        Ok(Self {
            filter,
            start,
            bookmarks,
            initial_events_end: initial_events,
            timeout,
        })
    }
}

/// One `WatchEvent` line, rendered from a borrowed object (a `json!` of it
/// would copy the whole object first).
fn line(kind: &str, object: &Value) -> Bytes {
    #[derive(serde::Serialize)]
    struct WatchEvent<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        object: &'a Value,
    }
    // A `Value` always serializes: its map keys are strings.
    let mut text = serde_json::to_vec(&WatchEvent { kind, object }).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

fn bookmark(kind: Kind, revision: u64, initial_events_end: bool) -> Bytes {
    let mut object = json!({
        "kind": kind.name(),
        "apiVersion": "v1",
        "metadata": { "resourceVersion": revision.to_string() },
    });
    if initial_events_end {
        object["metadata"]["annotations"] = json!({ INITIAL_EVENTS_END: "true" });
    }
    line("BOOKMARK", &object)
}

fn streamed(body: Body) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Starts a watch: the initial events and the subscription to later changes
/// are taken under the store's lock, so nothing is missed or repeated.
pub(crate) fn open(shared: &Arc<Shared>, request: WatchRequest) -> Result<Response, ApiError> {
    let WatchRequest {
        filter,
        start,
        bookmarks,
        initial_events_end,
        timeout,
    } = request;
    let mut store = lock(&shared.store);
    let revision = store.revision();
    let mut pending = VecDeque::new();
    match start {
        Start::Current { at_least } => {
            if let Some(requested) = at_least.filter(|requested| *requested > revision) {
                return Err(ApiError::resource_version_too_large(requested, revision));
            }
            pending.extend(
                store
                    .all_of(filter.kind)
                    .iter()
                    .filter(|object| {
                        let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str);
                        filter
                            .namespace
                            .as_deref()
                            .is_none_or(|wanted| Some(wanted) == namespace)
                            && filter.selects(object)
                    })
                    .map(|object| line("ADDED", object)),
            );
            if initial_events_end {
                pending.push_back(bookmark(filter.kind, revision, true));
            }
        }
        Start::After(after) => {
            if after > revision {
                return Err(ApiError::resource_version_too_large(after, revision));
            }
            match store.history().since(after) {
                Ok(events) => pending.extend(events.iter().filter_map(|event| filter.translate(event))),
                Err(expired) => {
                    // What a real server streams after its storage was
                    // compacted past the requested version: one ERROR event.
                    let status = ApiError::expired(expired.message()).to_status();
                    return Ok(streamed(Body::from(line("ERROR", &status))));
                }
            }
        }
    }
    let events = store.subscribe();
    drop(store);

    let interval = shared.watches.bookmark_interval();
    let ticker = (bookmarks && !interval.is_zero()).then(|| {
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    });
    let stream = WatchStream {
        pending,
        events,
        filter,
        cursor: revision,
        bookmarks,
        ticker,
        deadline: timeout.map(|timeout| Instant::now() + timeout),
        unreachable: shared.faults.unreachable_signal(),
        closing: shared.closing.subscribe(),
        finished: false,
        _open: OpenWatch::new(Arc::clone(shared)),
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let item = stream.next().await?;
        Some((item, stream))
    });
    Ok(streamed(Body::from_stream(body)))
}

/// An open watch; dropped with the response body when the client goes.
#[derive(Debug)]
struct WatchStream {
    /// Lines to send before any change.
    pending: VecDeque<Bytes>,
    events: mpsc::UnboundedReceiver<Arc<Event>>,
    filter: Filter,
    /// Every change up to this revision was sent or filtered out: what a
    /// bookmark reports.
    cursor: u64,
    bookmarks: bool,
    ticker: Option<Interval>,
    deadline: Option<Instant>,
    unreachable: watch::Receiver<bool>,
    closing: watch::Receiver<bool>,
    finished: bool,
    _open: OpenWatch,
}

/// Why an open watch woke up.
enum Wake {
    Unreachable,
    End,
    Change(Arc<Event>),
    Bookmark,
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl WatchStream {
    /// The next chunk: a line, or an error that breaks the connection.
    async fn next(&mut self) -> Option<Result<Bytes, io::Error>> {
        if self.finished {
            return None;
        }
        if let Some(line) = self.pending.pop_front() {
            return Some(Ok(line));
        }
        loop {
            let wake = tokio::select! {
                biased;
                Ok(_) = self.unreachable.wait_for(|unreachable| *unreachable) => Wake::Unreachable,
                Ok(_) = self.closing.wait_for(|closing| *closing) => Wake::End,
                () = until(self.deadline) => Wake::End,
                event = self.events.recv() => event.map_or(Wake::End, Wake::Change),
                () = tick(&mut self.ticker) => Wake::Bookmark,
            };
            match wake {
                Wake::Unreachable => {
                    self.finished = true;
                    return Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "the simulated API server is unreachable",
                    )));
                }
                Wake::End => return self.end(),
                Wake::Change(event) => {
                    self.cursor = event.revision;
                    if let Some(line) = self.filter.translate(&event) {
                        return Some(Ok(line));
                    }
                }
                Wake::Bookmark => return Some(Ok(bookmark(self.filter.kind, self.cursor, false))),
            }
        }
    }

    /// Ends the stream, with a last bookmark when bookmarks were asked for,
    /// so the client resumes from the latest version.
    fn end(&mut self) -> Option<Result<Bytes, io::Error>> {
        self.finished = true;
        self.bookmarks
            .then(|| Ok(bookmark(self.filter.kind, self.cursor, false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(labels: &str) -> Filter {
        Filter {
            kind: Kind::Secret,
            namespace: Some("ns".to_owned()),
            labels: LabelSelector::parse(labels).expect("valid selector"),
            fields: FieldSelector::default(),
        }
    }

    fn secret(labels: Value, revision: u64) -> Value {
        json!({
            "kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": "s", "namespace": "ns", "labels": labels, "resourceVersion": revision.to_string()},
        })
    }

    fn modified(old: Value, new: Value) -> Event {
        Event {
            revision: 2,
            key: (Kind::Secret, "ns".to_owned(), "s".to_owned()),
            change: Change::Modified,
            object: new,
            previous: Some(old),
        }
    }

    fn parsed(line: Option<Bytes>) -> Option<(String, String)> {
        let value: Value = serde_json::from_slice(&line?).expect("a JSON line");
        let kind = value["type"].as_str()?.to_owned();
        let version = value.pointer("/object/metadata/resourceVersion")?.as_str()?.to_owned();
        Some((kind, version))
    }

    #[test]
    fn objects_moving_across_the_selector_are_added_or_deleted() {
        let ours = filter("app=ours");
        let (inside, outside) = (json!({"app": "ours"}), json!({"app": "theirs"}));
        let enter = modified(secret(outside.clone(), 1), secret(inside.clone(), 2));
        let leave = modified(secret(inside.clone(), 1), secret(outside.clone(), 2));
        let stay = modified(secret(inside.clone(), 1), secret(inside, 2));
        let away = modified(secret(outside.clone(), 1), secret(outside, 2));
        let pair = |kind: &str| Some((kind.to_owned(), "2".to_owned()));
        assert_eq!(parsed(ours.translate(&enter)), pair("ADDED"));
        assert_eq!(parsed(ours.translate(&leave)), pair("DELETED"));
        assert_eq!(parsed(ours.translate(&stay)), pair("MODIFIED"));
        assert_eq!(parsed(ours.translate(&away)), None);
        assert_eq!(parsed(filter("").translate(&away)), pair("MODIFIED"));
    }

    #[test]
    fn start_and_options_follow_the_query() {
        let query = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let parse = |pairs: &[(&str, &str)]| WatchRequest::parse(Kind::Secret, None, &query(pairs));
        let start = |pairs: &[(&str, &str)]| parse(pairs).map(|request| request.start);
        assert_eq!(start(&[]), Ok(Start::Current { at_least: None }));
        assert_eq!(
            start(&[("resourceVersion", "0")]),
            Ok(Start::Current { at_least: None })
        );
        assert_eq!(start(&[("resourceVersion", "7")]), Ok(Start::After(7)));
        let streaming = [
            ("resourceVersion", "7"),
            ("sendInitialEvents", "true"),
            ("resourceVersionMatch", "NotOlderThan"),
            ("allowWatchBookmarks", "true"),
        ];
        assert_eq!(start(&streaming), Ok(Start::Current { at_least: Some(7) }));
        assert!(parse(&streaming[..3]).is_err(), "sendInitialEvents needs bookmarks");
        assert!(parse(&[("resourceVersionMatch", "NotOlderThan")]).is_err());
        assert!(parse(&[("resourceVersion", "x")]).is_err());
        assert!(parse(&[("labelSelector", "bad key")]).is_err());
        let timeout = parse(&[("timeoutSeconds", "3")]).map(|request| request.timeout);
        assert_eq!(timeout, Ok(Some(Duration::from_secs(3))));
    }
}
