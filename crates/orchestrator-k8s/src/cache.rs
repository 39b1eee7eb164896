//! The watched view of a cluster: which namespaces exist and which of our
//! Secrets are where, at which version — without their data. Kept by two
//! kube-runtime watchers (list, then watch; a re-list after a `410 Gone`),
//! it answers the deploy path's namespace checks without a request, and its
//! changes drive drift repair.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use registry_core::ports::orchestrators::{ClusterChange, Observation, ObservedSecret};
use tokio::sync::{Notify, mpsc};

use crate::manifest::{MANAGED_SELECTOR, observed};

/// Changes queued for drift repair before the queue is replaced by one
/// resync (the consumer then compares everything anyway).
const QUEUE: usize = 4096;

type SecretKey = (String, String);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The cache and its change feed.
#[derive(Debug)]
pub(crate) struct ClusterCache {
    /// Existing (not terminating) namespaces; `None` until listed.
    namespaces: Mutex<Option<HashSet<String>>>,
    /// Our Secrets by (namespace, name); `None` until listed.
    secrets: Mutex<Option<HashMap<SecretKey, ObservedSecret>>>,
    sender: mpsc::Sender<ClusterChange>,
    receiver: tokio::sync::Mutex<mpsc::Receiver<ClusterChange>>,
    /// A change was dropped: the next one handed out is a resync.
    overflowed: AtomicBool,
    ready: Notify,
}

impl Default for ClusterCache {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Self {
            namespaces: Mutex::default(),
            secrets: Mutex::default(),
            sender,
            receiver: tokio::sync::Mutex::new(receiver),
            overflowed: AtomicBool::new(false),
            ready: Notify::new(),
        }
    }
}

impl ClusterCache {
    /// Whether a namespace exists; `None` until the namespaces are listed.
    pub(crate) fn namespace_exists(&self, namespace: &str) -> Option<bool> {
        lock(&self.namespaces).as_ref().map(|set| set.contains(namespace))
    }

    pub(crate) fn observe(&self, namespace: &str, name: &str) -> Observation {
        match lock(&self.secrets).as_ref() {
            None => Observation::Unknown,
            Some(secrets) => match secrets.get(&(namespace.to_owned(), name.to_owned())) {
                Some(secret) => Observation::Present(secret.clone()),
                None => Observation::Absent,
            },
        }
    }

    pub(crate) fn snapshot(&self) -> Option<Vec<ObservedSecret>> {
        lock(&self.secrets).as_ref().map(|s| s.values().cloned().collect())
    }

    /// Whether both watchers have listed once.
    pub(crate) fn is_ready(&self) -> bool {
        lock(&self.namespaces).is_some() && lock(&self.secrets).is_some()
    }

    /// Resolves once both watchers have listed.
    pub(crate) async fn ready(&self) {
        loop {
            let notified = self.ready.notified();
            if self.is_ready() {
                return;
            }
            notified.await;
        }
    }

    pub(crate) async fn next_change(&self) -> ClusterChange {
        let mut receiver = self.receiver.lock().await;
        if self.overflowed.swap(false, Ordering::SeqCst) {
            while receiver.try_recv().is_ok() {}
            return ClusterChange::Resynced;
        }
        match receiver.recv().await {
            Some(change) => change,
            // The sender lives as long as the cache.
            None => std::future::pending().await,
        }
    }

    fn emit(&self, change: ClusterChange) {
        if self.sender.try_send(change).is_err() {
            self.overflowed.store(true, Ordering::SeqCst);
            // Wake a waiting consumer so it picks up the resync.
            let _ = self.sender.try_send(ClusterChange::Resynced);
        }
    }

    /// Keeps the Secrets up to date until the stream ends (never).
    pub(crate) async fn watch_secrets(&self, client: Client) {
        let api: Api<Secret> = Api::all(client);
        let config = watcher::Config::default().labels(MANAGED_SELECTOR);
        let mut listing: HashMap<SecretKey, ObservedSecret> = HashMap::new();
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(secret)) => {
                    if let Some(seen) = observed(&secret) {
                        listing.insert((seen.namespace.clone(), seen.name.clone()), seen);
                    }
                }
                Ok(Event::InitDone) => {
                    *lock(&self.secrets) = Some(std::mem::take(&mut listing));
                    self.ready.notify_waiters();
                    self.emit(ClusterChange::Resynced);
                }
                Ok(Event::Apply(secret)) => self.secret_changed(&secret, true),
                Ok(Event::Delete(secret)) => self.secret_changed(&secret, false),
                Err(error) => tracing::debug!(%error, "watch of pull secrets interrupted; resuming"),
            }
        }
    }

    fn secret_changed(&self, secret: &Secret, present: bool) {
        let Some(seen) = observed(secret) else { return };
        let key = (seen.namespace.clone(), seen.name.clone());
        let change = ClusterChange::Secret {
            namespace: seen.namespace.clone(),
            name: seen.name.clone(),
        };
        if let Some(secrets) = lock(&self.secrets).as_mut() {
            if present {
                secrets.insert(key, seen);
            } else {
                secrets.remove(&key);
            }
        }
        self.emit(change);
    }

    /// Keeps the namespaces up to date until the stream ends (never).
    pub(crate) async fn watch_namespaces(&self, client: Client) {
        let api: Api<Namespace> = Api::all(client);
        let mut listing: HashSet<String> = HashSet::new();
        let mut events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(namespace)) => {
                    if let Some(name) = live_name(&namespace) {
                        listing.insert(name);
                    }
                }
                Ok(Event::InitDone) => {
                    let listed = std::mem::take(&mut listing);
                    let previous = lock(&self.namespaces).replace(listed.clone());
                    self.ready.notify_waiters();
                    if let Some(previous) = previous {
                        for added in listed.difference(&previous) {
                            self.emit(ClusterChange::NamespaceAdded(added.clone()));
                        }
                        for deleted in previous.difference(&listed) {
                            self.emit(ClusterChange::NamespaceDeleted(deleted.clone()));
                        }
                    }
                }
                Ok(Event::Apply(namespace)) => match live_name(&namespace) {
                    Some(name) => self.namespace_changed(name, true),
                    // Terminating: as good as gone.
                    None => {
                        if let Some(name) = namespace.metadata.name {
                            self.namespace_changed(name, false);
                        }
                    }
                },
                Ok(Event::Delete(namespace)) => {
                    if let Some(name) = namespace.metadata.name {
                        self.namespace_changed(name, false);
                    }
                }
                Err(error) => tracing::debug!(%error, "watch of namespaces interrupted; resuming"),
            }
        }
    }

    fn namespace_changed(&self, name: String, present: bool) {
        let changed = match lock(&self.namespaces).as_mut() {
            Some(set) if present => set.insert(name.clone()),
            Some(set) => set.remove(&name),
            None => false,
        };
        if changed {
            self.emit(if present {
                ClusterChange::NamespaceAdded(name)
            } else {
                ClusterChange::NamespaceDeleted(name)
            });
        }
    }
}

/// The name of a namespace that is not being deleted.
fn live_name(namespace: &Namespace) -> Option<String> {
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Terminating");
    (!terminating).then(|| namespace.metadata.name.clone()).flatten()
}
