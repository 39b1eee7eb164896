//! What the test can see (request counters, write concurrency, a write log)
//! and what it can break (latency, throttling, forbidden namespaces,
//! unreachability).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

/// Locks a mutex; a panic elsewhere while it was held does not matter here.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A Kubernetes API verb, as RBAC and audit logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// `GET` of one object.
    Get,
    /// `GET` of a collection.
    List,
    /// `GET` of a collection with `watch=true`: a stream of changes.
    Watch,
    /// `POST`.
    Create,
    /// `PUT`.
    Update,
    /// `PATCH`, any patch type.
    Patch,
    /// `DELETE` of one object.
    Delete,
    /// `DELETE` of a collection.
    DeleteCollection,
}

impl Verb {
    /// Whether the verb writes.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Update | Self::Patch | Self::Delete | Self::DeleteCollection
        )
    }

    /// The verb's name (`get`, `deletecollection`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Watch => "watch",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::DeleteCollection => "deletecollection",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters since the start (or the last [`super::KubeSim::reset_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests per (verb, resource), e.g. `(Verb::Patch, "secrets")`,
    /// counted as they arrive, whatever their outcome.
    pub requests: BTreeMap<(Verb, String), u64>,
    /// Requests answered `429 TooManyRequests` by injection.
    pub throttled: u64,
    /// Requests answered `403 Forbidden` (forbidden namespaces, namespace writes).
    pub forbidden: u64,
    /// Write requests being handled right now (parked ones included).
    pub in_flight_writes: usize,
    /// The most write requests ever handled at the same time.
    pub peak_in_flight_writes: usize,
    /// Requests being handled right now, parked ones included (a watch
    /// until its stream starts).
    pub in_flight: usize,
    /// Watch streams open right now.
    pub open_watches: usize,
}

impl Stats {
    /// Requests with this verb on this resource (`"secrets"`).
    pub fn count(&self, verb: Verb, resource: &str) -> u64 {
        self.requests.get(&(verb, resource.to_owned())).copied().unwrap_or(0)
    }

    /// All requests on this resource.
    pub fn count_resource(&self, resource: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((_, r), _)| r == resource)
            .map(|(_, n)| n)
            .sum()
    }

    /// All write requests.
    pub fn writes(&self) -> u64 {
        self.requests
            .iter()
            .filter(|((verb, _), _)| verb.is_write())
            .map(|(_, n)| n)
            .sum()
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }
}

/// One write request, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    /// When the request arrived (before any injected latency).
    pub arrived: Instant,
    /// When the response was ready.
    pub finished: Instant,
    /// The verb.
    pub verb: Verb,
    /// The resource (`secrets`).
    pub resource: String,
    /// The namespace, for namespaced resources.
    pub namespace: Option<String>,
    /// The object's name, when the request names one.
    pub name: Option<String>,
    /// The HTTP status code answered.
    pub code: u16,
    /// The request's `User-Agent` header: which client wrote.
    pub user_agent: Option<String>,
    /// The object as stored by a successful create, update or patch (what
    /// the response carried); `None` for deletes, dry runs and failures.
    pub object: Option<Value>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: BTreeMap<(Verb, String), u64>,
    throttled: u64,
    forbidden: u64,
}

/// Collects the statistics.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    counters: Mutex<Counters>,
    in_flight_writes: AtomicUsize,
    peak_in_flight_writes: AtomicUsize,
    in_flight: AtomicUsize,
    open_watches: AtomicUsize,
    writes: Mutex<Vec<WriteRecord>>,
}

/// Marks a request in flight until its response is ready (for a watch:
/// until its stream starts).
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    recorder: &'a Recorder,
    verb: Verb,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let recorder = self.recorder;
        recorder.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.verb.is_write() {
            recorder.in_flight_writes.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Marks a watch stream open until dropped; owned, as the stream outlives
/// the request handler.
#[derive(Debug)]
pub(crate) struct OpenWatch(Arc<super::server::Shared>);

impl OpenWatch {
    pub(crate) fn new(shared: Arc<super::server::Shared>) -> Self {
        shared.recorder.open_watches.fetch_add(1, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.recorder.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Recorder {
    pub(crate) fn count(&self, verb: Verb, resource: &str) {
        *lock(&self.counters)
            .requests
            .entry((verb, resource.to_owned()))
            .or_default() += 1;
    }

    pub(crate) fn throttled(&self) {
        lock(&self.counters).throttled += 1;
    }

    pub(crate) fn forbidden(&self) {
        lock(&self.counters).forbidden += 1;
    }

    /// Marks a request in flight.
    pub(crate) fn begin(&self, verb: Verb) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if verb.is_write() {
            let now = self.in_flight_writes.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak_in_flight_writes.fetch_max(now, Ordering::SeqCst);
        }
        InFlight { recorder: self, verb }
    }

    pub(crate) fn log_write(&self, record: WriteRecord) {
        lock(&self.writes).push(record);
    }

    pub(crate) fn stats(&self) -> Stats {
        let counters = lock(&self.counters);
        Stats {
            requests: counters.requests.clone(),
            throttled: counters.throttled,
            forbidden: counters.forbidden,
            in_flight_writes: self.in_flight_writes.load(Ordering::SeqCst),
            peak_in_flight_writes: self.peak_in_flight_writes.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            open_watches: self.open_watches.load(Ordering::SeqCst),
        }
    }

    pub(crate) fn write_log(&self) -> Vec<WriteRecord> {
        lock(&self.writes).clone()
    }

    pub(crate) fn reset(&self) {
        *lock(&self.counters) = Counters::default();
        lock(&self.writes).clear();
        self.peak_in_flight_writes
            .store(self.in_flight_writes.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Throttle {
    /// The next `remaining` requests are throttled...
    remaining: u64,
    remaining_retry_after: u32,
    /// Only writes count against `remaining` (watches and reads pass).
    remaining_writes_only: bool,
    /// ...and, after them, every `every`-th request.
    every: u64,
    every_retry_after: u32,
    seen: u64,
}

/// The faults the test injects.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    write_latency: Mutex<Duration>,
    read_latency: Mutex<Duration>,
    throttle: Mutex<Throttle>,
    forbidden_namespaces: Mutex<BTreeSet<String>>,
    unreachable: Arc<AtomicBool>,
    /// The same flag, for the open watch streams to wait on.
    unreachable_signal: watch::Sender<bool>,
}

impl Faults {
    pub(crate) fn set_write_latency(&self, latency: Duration) {
        *lock(&self.write_latency) = latency;
    }

    pub(crate) fn set_read_latency(&self, latency: Duration) {
        *lock(&self.read_latency) = latency;
    }

    pub(crate) fn latency(&self, write: bool) -> Duration {
        *lock(if write { &self.write_latency } else { &self.read_latency })
    }

    pub(crate) fn throttle_next(&self, count: u64, retry_after_secs: u32, writes_only: bool) {
        let mut throttle = lock(&self.throttle);
        throttle.remaining = count;
        throttle.remaining_retry_after = retry_after_secs;
        throttle.remaining_writes_only = writes_only;
    }

    pub(crate) fn throttle_every(&self, every: u64, retry_after_secs: u32) {
        let mut throttle = lock(&self.throttle);
        throttle.every = every;
        throttle.every_retry_after = retry_after_secs;
        throttle.seen = 0;
    }

    pub(crate) fn clear_throttle(&self) {
        *lock(&self.throttle) = Throttle::default();
    }

    /// Whether this request (a write or not) is throttled, and with which
    /// `Retry-After`.
    pub(crate) fn throttle(&self, write: bool) -> Option<u32> {
        let mut throttle = lock(&self.throttle);
        if throttle.remaining > 0 && (write || !throttle.remaining_writes_only) {
            throttle.remaining -= 1;
            return Some(throttle.remaining_retry_after);
        }
        if throttle.every > 0 {
            throttle.seen += 1;
            if throttle.seen.is_multiple_of(throttle.every) {
                return Some(throttle.every_retry_after);
            }
        }
        None
    }

    pub(crate) fn set_forbidden(&self, namespace: &str, forbidden: bool) {
        let mut namespaces = lock(&self.forbidden_namespaces);
        if forbidden {
            namespaces.insert(namespace.to_owned());
        } else {
            namespaces.remove(namespace);
        }
    }

    pub(crate) fn is_forbidden(&self, namespace: &str) -> bool {
        lock(&self.forbidden_namespaces).contains(namespace)
    }

    pub(crate) fn unreachable_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.unreachable)
    }

    pub(crate) fn set_unreachable(&self, unreachable: bool) {
        self.unreachable.store(unreachable, Ordering::SeqCst);
        self.unreachable_signal.send_replace(unreachable);
    }

    /// Changes to unreachability, for streams that must break at once.
    pub(crate) fn unreachable_signal(&self) -> watch::Receiver<bool> {
        self.unreachable_signal.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_next_n_then_every_kth() {
        let faults = Faults::default();
        faults.throttle_next(2, 3, false);
        faults.throttle_every(3, 1);
        let answers: Vec<Option<u32>> = (0..8).map(|_| faults.throttle(false)).collect();
        assert_eq!(answers, [Some(3), Some(3), None, None, Some(1), None, None, Some(1)]);
        faults.clear_throttle();
        assert_eq!(faults.throttle(false), None);
        faults.throttle_next(1, 9, true);
        assert_eq!((faults.throttle(false), faults.throttle(true)), (None, Some(9)));
    }

    #[test]
    fn in_flight_writes_track_the_peak() {
        let recorder = Recorder::default();
        let first = recorder.begin(Verb::Patch);
        let second = recorder.begin(Verb::Create);
        let read = recorder.begin(Verb::Get);
        drop(first);
        drop(second);
        let _third = recorder.begin(Verb::Delete);
        let stats = recorder.stats();
        assert_eq!((stats.in_flight_writes, stats.peak_in_flight_writes), (1, 2));
        assert_eq!(stats.in_flight, 2);
        drop(read);
        assert_eq!(recorder.stats().in_flight, 1);
    }
}
