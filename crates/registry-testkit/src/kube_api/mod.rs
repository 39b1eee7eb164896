//! A simulated Kubernetes API server, stateful, with the real REST semantics
//! of the parts the registry service uses, and a kube-rs [`kube::Client`]
//! pointed at it.
//!
//! No real API server can run on the test machines (DESIGN.md §9), so
//! [`KubeSim`] serves the core/v1 paths kube-rs `Api<T>` uses, on a loopback
//! port over plain HTTP:
//!
//! | resource | paths | verbs |
//! |---|---|---|
//! | namespaces | `/api/v1/namespaces[/{name}]` | get, list, watch; writes are `403 Forbidden` (least-privilege RBAC) |
//! | secrets, serviceaccounts | `/api/v1/namespaces/{ns}/{resource}[/{name}]` | get, list, watch, create, update, patch, delete, deletecollection |
//! | secrets, serviceaccounts | `/api/v1/{resource}` | list and watch across namespaces |
//! | — | `/version` | the server version |
//!
//! # What is modelled
//!
//! - **Storage**: every object gets `metadata.uid`, `creationTimestamp` and a
//!   `resourceVersion` from one global counter bumped by every change —
//!   deletes included, and each object a deletecollection or a namespace
//!   deletion removes gets its own; a write that changes nothing (same
//!   object, same owners) is not stored and keeps its `resourceVersion`, as
//!   on a real server. Every change, the test's own ([`KubeSim::seed_secret`],
//!   [`KubeSim::create_namespace`], [`KubeSim::delete_namespace`]) included,
//!   is an event in a bounded history (the last 10 000, see
//!   [`KubeSim::set_history_limit`]); [`KubeSim::compact`] drops it all, as a
//!   compaction of the storage would.
//! - **Decoding**: bodies are decoded into the k8s-openapi types and back, so
//!   type errors and bad base64 are `400 BadRequest` and unknown fields are
//!   dropped; `null`, empty maps and empty lists are omitted (Go's
//!   `omitempty`); a Secret's `stringData` is folded into `data`; a Secret's
//!   `type` defaults to `Opaque`. List items carry no `kind`/`apiVersion`.
//! - **Create** (`POST`): `404` when the namespace does not exist, `422`
//!   when invalid, `409 AlreadyExists` when present; `generateName` works;
//!   `500` when the body carries a `resourceVersion` (as etcd storage does).
//! - **Replace** (`PUT`): `404` when missing; `409 Conflict` when
//!   `metadata.resourceVersion` is set and stale (empty means unconditional)
//!   or `metadata.uid` differs; `uid` and `creationTimestamp` are kept.
//! - **Patch**: `application/merge-patch+json` (RFC 7386),
//!   `application/strategic-merge-patch+json` (map lists merged by key, set
//!   lists as sets, every other list replaced; `$patch`,
//!   `$deleteFromPrimitiveList`, `$retainKeys` directives),
//!   `application/json-patch+json` (RFC 6902, `test` included) and
//!   `application/apply-patch+yaml` (server-side apply, below). A
//!   `resourceVersion` in the patched object is a precondition (`409`).
//!   `force` on a non-apply patch is `422`.
//! - **Server-side apply**: `fieldManager` is required (`422`); creates the
//!   object (`201`) or merges into it; `metadata.managedFields` records the
//!   owners. A field owned by another manager with a different value is a
//!   `409 Conflict` (reason `Conflict`, one `FieldManagerConflict` cause per
//!   field) unless `force=true`, which takes the field over; fields the
//!   manager applied before and no longer applies are removed unless someone
//!   else owns them. Other writes take ownership of what they change (an
//!   `Update` entry, manager from `fieldManager` or the `User-Agent`).
//!   Which lists are map, set or atomic follows the API:
//!   `ServiceAccount.secrets` merges by `name`, `metadata.ownerReferences`
//!   by `uid`, `metadata.finalizers` is a set, and
//!   **`ServiceAccount.imagePullSecrets` is atomic** — a strategic merge
//!   patch or an apply replaces the whole list, as on a real cluster (to add
//!   one entry, read the account and write the whole list back with its
//!   `resourceVersion`).
//! - **Delete**: `404` when missing; `preconditions` (`uid`,
//!   `resourceVersion`) are honoured (`409`); answers a `Success` Status.
//! - **List**: `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`,
//!   `k in (a,b)`, `k notin (a,b)`, comma-joined), `fieldSelector`
//!   (`metadata.name`, `metadata.namespace`, and `type` for Secrets),
//!   `limit` and `continue` paging with `remainingItemCount`. The list's
//!   `metadata.resourceVersion` is the revision it shows; continued pages
//!   serve the snapshot of the first page (rolled back through the history)
//!   under its version, so a watch from it misses and repeats nothing; a
//!   snapshot older than the history is `410 Expired`.
//! - **Watch** (`watch=true`): a streamed `200` of newline-delimited
//!   `WatchEvent`s (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`),
//!   objects rendered like a `GET`. `resourceVersion` absent or `0`:
//!   synthetic `ADDED` events for the current objects, then the changes; a
//!   version: every later change, from the history; one older than the
//!   history: a single `ERROR` event with a `410 Expired` Status, then the
//!   end (kube-runtime's watcher re-lists); one newer than any handed out:
//!   `504` with cause `ResourceVersionTooLarge`. `sendInitialEvents=true`
//!   (with `resourceVersionMatch=NotOlderThan` and bookmarks, else `422`)
//!   ends the synthetic events with a bookmark annotated
//!   `k8s.io/initial-events-end`. Label and field selectors filter with the
//!   watch cache's semantics: a modification that moves an object out of the
//!   selection is a `DELETED` of its previous state under the new version,
//!   one that moves it in an `ADDED`. `allowWatchBookmarks=true`: a
//!   `BOOKMARK` (kind, apiVersion, `metadata.resourceVersion` only) every
//!   [`KubeSim::set_bookmark_interval`] and when the stream ends;
//!   `timeoutSeconds=N` ends the stream after N seconds.
//! - **Validation** (`422 Invalid`, with causes): names are DNS-1123
//!   subdomains (labels for namespaces); label keys and values and
//!   annotation keys are checked; Secret data keys are config keys, data is at
//!   most 1 MiB; `kubernetes.io/dockerconfigjson` needs `.dockerconfigjson`
//!   holding base64 of a JSON object (likewise `dockercfg`, `tls`,
//!   `ssh-auth`, `basic-auth`, `service-account-token` need their keys); a
//!   Secret's `type` is immutable and an `immutable` Secret's data too.
//! - **Errors** are `Status` objects (`kind: Status`, `status: Failure`,
//!   `message`, `reason`, `code`, `details`), so kube-rs answers
//!   `kube::Error::Api(status)` with `status.code` and `status.reason`.
//! - **Namespaces** come from the test ([`KubeSim::create_namespace`]), each
//!   with its `default` ServiceAccount; a `default` namespace exists from the
//!   start, as on any cluster.
//!
//! # Faults and observations
//!
//! The test can add latency to writes (and reads, watches included) —
//! requests still run concurrently —, answer `429 TooManyRequests` with
//! `Retry-After` (and `details.retryAfterSeconds`) to the next N requests or
//! to every k-th, forbid namespaces (`403` for any request in them), and make
//! the server unreachable (new connections are closed at once, kept-alive
//! ones break on their next request, open watch streams break at once;
//! [`KubeSim::shutdown`] ends the watch streams).
//! Injected 429s and 403s come before the latency, like API Priority and
//! Fairness and RBAC in front of the storage; watches pass them at their
//! start like any request.
//!
//! [`KubeSim::hold`] parks the requests a [`RequestMatch`] selects, after
//! the 429s and 403s and before the latency and the storage, until the
//! [`Hold`] releases them: a test orders concurrent requests without
//! sleeping (wait for [`Hold::arrived`], look, release), or never releases
//! them to model a hung server for that selection.
//!
//! It can read counters per verb and resource (a watch counts once, as
//! `Verb::Watch`, and is no write), the requests in flight (parked ones
//! included), the peak number of write requests in flight, the open watches,
//! a log of every write with its arrival time, status, `User-Agent` and the
//! object stored, and any stored object.
//!
//! # Simplifications
//!
//! - No subresources, no other kinds or API groups, no authentication
//!   (every caller is `system:anonymous`, and cluster-wide lists and watches
//!   are allowed even when a namespace is forbidden).
//! - Apply configurations must be JSON (the YAML subset kube-rs sends);
//!   `fieldValidation` is ignored (unknown fields are dropped, as with
//!   `Ignore`); `resourceVersion` on gets and first list pages is ignored
//!   (always the latest).
//! - Watches: JSON only (no protobuf, no metadata-only `as=` media types),
//!   collections only (no `?watch=true` on one object's path: use a
//!   `metadata.name` field selector, as kube-rs does); no `timeoutSeconds`
//!   means no timeout (a real server picks 30 to 60 minutes); a too new
//!   `resourceVersion` is answered at once (a real server waits up to 3 s for
//!   its cache first); slow watchers are never cut off, and compaction does
//!   not affect open watches; periodic bookmarks come whether or not the
//!   version moved.
//! - Field ownership is tracked per leaf field, without API versions; an
//!   apply conflicts with every other owner entry, including the same
//!   manager's `Update` entry. Client-sent `managedFields` are ignored.
//! - Deletion is immediate: no finalizers, grace periods or `Terminating`
//!   namespaces.
//! - [`KubeSim::client`] turns kube-rs's default retry of 429/503/504 off, so
//!   every injected 429 reaches the caller; code under test that builds its
//!   own client from [`KubeSim::config`] may turn it back on.

mod fields;
mod history;
mod hold;
mod observe;
mod patch;
mod resource;
mod select;
mod server;
mod status;
mod store;
mod timer;
mod validation;
mod watch;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use hold::{Hold, RequestMatch};
pub use observe::{Stats, Verb, WriteRecord};

use observe::lock;
use resource::Kind;
use server::Shared;
use store::WriteOptions;

/// The field manager that [`KubeSim::seed_secret`] and
/// [`KubeSim::seed_service_account`] write as, like `kubectl create`.
pub const SEED_MANAGER: &str = "kubectl-create";

/// A running simulated Kubernetes API server and the test's handle on it.
/// Dropping it stops the server.
pub struct KubeSim {
    url: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KubeSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSim")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A kubeconfig file's text for an API server at `url` (plain http, no
/// auth).
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {url}\n\
         users:\n- name: sim\n  user: {{}}\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\n\
         current-context: sim\n"
    )
}

fn kind_of(resource: &str) -> Kind {
    Kind::from_plural(resource).unwrap_or_else(|| panic!("the simulator serves no resource {resource:?}"))
}

fn typed<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("the simulator stores only objects its types decode")
}

impl KubeSim {
    /// Starts a server on a free loopback port, with the `default` namespace.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("cannot bind a loopback port for the simulated Kubernetes API server");
        let address = listener.local_addr().expect("a bound listener has an address");
        let shared = Arc::new(Shared::default());
        lock(&shared.store)
            .create_namespace("default")
            .expect("\"default\" is a valid namespace name");
        let (shutdown, signal) = oneshot::channel();
        let task = tokio::spawn(server::serve(listener, Arc::clone(&shared), signal));
        Self {
            url: format!("http://{address}"),
            shared,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig file's text for this server (plain http, no auth), for
    /// clients in other processes.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url)
    }

    /// A kube-rs configuration for this server: no TLS, no credentials,
    /// default namespace `default`, kube-rs's automatic retries off.
    pub fn config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url.parse().expect("the simulator's URL is a valid URI"));
        config.default_namespace = "default".to_owned();
        config.default_retry = false;
        config
    }

    /// A kube-rs client for this server (see [`KubeSim::config`]). Call it
    /// inside a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("a client for a plain-HTTP loopback URL")
    }

    /// Creates a namespace with its `default` ServiceAccount, as the platform
    /// would; `false` when it already existed. Panics on an invalid name.
    pub fn create_namespace(&self, name: &str) -> bool {
        lock(&self.shared.store)
            .create_namespace(name)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Deletes a namespace and everything in it; `false` when it did not exist.
    pub fn delete_namespace(&self, name: &str) -> bool {
        lock(&self.shared.store).delete_namespace(name)
    }

    /// The names of all namespaces.
    pub fn namespaces(&self) -> Vec<String> {
        let store = lock(&self.shared.store);
        let namespaces = store.all(Kind::Namespace, "");
        namespaces
            .iter()
            .filter_map(|ns| ns.pointer("/metadata/name")?.as_str().map(str::to_owned))
            .collect()
    }

    /// Answers `403 Forbidden` to every request in this namespace (and for
    /// the Namespace object itself) from now on.
    pub fn forbid_namespace(&self, name: &str) {
        self.shared.faults.set_forbidden(name, true);
    }

    /// Lifts [`KubeSim::forbid_namespace`].
    pub fn allow_namespace(&self, name: &str) {
        self.shared.faults.set_forbidden(name, false);
    }

    /// Delays every write request by this much (zero: none).
    pub fn set_write_latency(&self, latency: Duration) {
        self.shared.faults.set_write_latency(latency);
    }

    /// Delays every read request by this much (zero: none).
    pub fn set_read_latency(&self, latency: Duration) {
        self.shared.faults.set_read_latency(latency);
    }

    /// Answers the next `count` API requests (reads and writes) with
    /// `429 TooManyRequests` and `Retry-After: retry_after_secs`.
    pub fn inject_429(&self, count: u64, retry_after_secs: u32) {
        self.shared.faults.throttle_next(count, retry_after_secs, false);
    }

    /// [`Self::inject_429`] for the next `count` writes only: reads and the
    /// watches of a client's caches pass, so which request gets it does not
    /// depend on when a watch reconnects.
    pub fn inject_429_on_writes(&self, count: u64, retry_after_secs: u32) {
        self.shared.faults.throttle_next(count, retry_after_secs, true);
    }

    /// Answers every `k`-th API request from now on (the k-th, the 2k-th, ...)
    /// with `429 TooManyRequests` and `Retry-After: retry_after_secs`;
    /// `k = 0` stops it. Requests throttled by [`KubeSim::inject_429`] are
    /// not counted.
    pub fn inject_429_every(&self, k: u64, retry_after_secs: u32) {
        self.shared.faults.throttle_every(k, retry_after_secs);
    }

    /// Stops all injected 429s.
    pub fn clear_429(&self) {
        self.shared.faults.clear_throttle();
    }

    /// While `true`, new connections are closed at once and open ones break
    /// on their next request, as if the server were down.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.shared.faults.set_unreachable(unreachable);
    }

    /// A stored Secret.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.object("secrets", namespace, name).map(typed)
    }

    /// All Secrets of a namespace, by name.
    pub fn secrets(&self, namespace: &str) -> Vec<Secret> {
        lock(&self.shared.store)
            .all(Kind::Secret, namespace)
            .into_iter()
            .map(typed)
            .collect()
    }

    /// A stored ServiceAccount.
    pub fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccount> {
        self.object("serviceaccounts", namespace, name).map(typed)
    }

    /// A namespace.
    pub fn namespace(&self, name: &str) -> Option<Namespace> {
        self.object("namespaces", "", name).map(typed)
    }

    /// A stored object as JSON, exactly as a `GET` would answer it;
    /// `resource` is `secrets`, `serviceaccounts` or `namespaces` (then the
    /// namespace is ignored). Panics on another resource.
    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = kind_of(resource);
        let namespace = if kind.is_namespaced() { namespace } else { "" };
        lock(&self.shared.store).find(kind, namespace, name)
    }

    /// Creates a Secret directly (no request counted, no fault applied), as
    /// `kubectl create` would: same validation, owned by [`SEED_MANAGER`].
    /// Panics when the API would refuse it.
    pub fn seed_secret(&self, namespace: &str, secret: &Secret) -> Secret {
        typed(self.seed("secrets", namespace, secret))
    }

    /// Creates a ServiceAccount directly, like [`KubeSim::seed_secret`].
    pub fn seed_service_account(&self, namespace: &str, account: &ServiceAccount) -> ServiceAccount {
        typed(self.seed("serviceaccounts", namespace, account))
    }

    fn seed(&self, resource: &str, namespace: &str, object: &impl serde::Serialize) -> Value {
        let body = serde_json::to_value(object).expect("k8s-openapi objects serialize");
        let options = WriteOptions {
            field_manager: Some(SEED_MANAGER.to_owned()),
            ..WriteOptions::default()
        };
        lock(&self.shared.store)
            .create(kind_of(resource), namespace, body, &options)
            .unwrap_or_else(|error| panic!("seeding {resource} in {namespace:?} failed: {error}"))
    }

    /// The latest `resourceVersion` handed out.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).revision()
    }

    /// Drops the whole event history up to now, as a compaction of the
    /// storage would: a watch (or a continued list) from an older
    /// `resourceVersion` is then `410 Expired`, and kube-runtime's watcher
    /// re-lists. Open watches are not affected.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// Keeps only the last `limit` events of the history (10 000 by
    /// default); older ones are dropped as by [`KubeSim::compact`].
    pub fn set_history_limit(&self, limit: usize) {
        lock(&self.shared.store).set_history_limit(limit);
    }

    /// How often open watches that allow bookmarks get one (1 s by default;
    /// zero: only the one that ends a stream). Applies to watches opened
    /// from now on.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared.watches.set_bookmark_interval(interval);
    }

    /// Parks the requests `selection` matches, from now on, until the
    /// returned [`Hold`] releases them (see there).
    pub fn hold(&self, selection: RequestMatch) -> Hold {
        self.shared.holds.install(selection)
    }

    /// Request counters and write concurrency.
    pub fn stats(&self) -> Stats {
        self.shared.recorder.stats()
    }

    /// Every write request so far, in completion order.
    pub fn write_log(&self) -> Vec<WriteRecord> {
        self.shared.recorder.write_log()
    }

    /// Zeroes the counters and the write log (the peak restarts from the
    /// writes in flight now).
    pub fn reset_stats(&self) {
        self.shared.recorder.reset();
    }

    /// Stops the server: no new connections, open connections break, open
    /// watches end and parked requests are answered `503`.
    pub async fn shutdown(mut self) {
        self.shared.close();
        self.shared.faults.set_unreachable(true);
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            task.await.ok();
        }
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.shared.close();
        self.shared.faults.set_unreachable(true);
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
