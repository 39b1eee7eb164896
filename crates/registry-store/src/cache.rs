//! Registries kept in memory between writes, so the credential hand-out
//! reads no row.
//!
//! On SQLite this process is the only writer (the lock file sees to it), so
//! a registry it cached is current until this process writes it: every
//! registry write drops its entry after the commit. On PostgreSQL other
//! replicas write too: an entry is served only after one indexed read
//! confirms its etag, which every write changes.
//!
//! A read racing a write must not cache what the write just replaced: each
//! write bumps a generation after its commit, and a read caches its row only
//! if no write completed since the read began.
//!
//! [`DeployCache`] does the same for the usages and pull Secret rows a
//! repeat deploy reads, on SQLite only, and coarsely: any write of deploy
//! state drops all of it (writes are rare next to repeat deploys; during a
//! rotation's fan-out the cache simply stays cold).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use registry_core::registry::{RegistryId, StoredRegistry};
use registry_core::usage::{PullSecretState, SecretKey, Usage};

/// Beyond this many registries the cache starts over (a process serves a
/// bounded working set; a flood of ids must not grow it without bound).
const CAPACITY: usize = 10_000;

#[derive(Debug)]
pub(crate) struct RegistryCache {
    /// Whether this process is the database's only writer.
    exclusive: bool,
    generation: AtomicU64,
    entries: Mutex<HashMap<RegistryId, StoredRegistry>>,
}

/// Where a read stands against the cache.
#[derive(Debug)]
pub(crate) enum Cached {
    /// Current: serve it.
    Current(StoredRegistry),
    /// Serve it if the stored etag is still this one.
    Unconfirmed(StoredRegistry),
    Missing,
}

impl RegistryCache {
    pub(crate) fn new(exclusive: bool) -> Self {
        Self {
            exclusive,
            generation: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<RegistryId, StoredRegistry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation a read starts at; pass it to [`Self::fill`].
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn lookup(&self, id: &RegistryId) -> Cached {
        match self.entries().get(id) {
            Some(stored) if self.exclusive => Cached::Current(stored.clone()),
            Some(stored) => Cached::Unconfirmed(stored.clone()),
            None => Cached::Missing,
        }
    }

    /// Caches what a read that began at `generation` found, unless a write
    /// completed in between.
    pub(crate) fn fill(&self, generation: u64, stored: &StoredRegistry) {
        let mut entries = self.entries();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(stored.registry.id.clone(), stored.clone());
    }

    /// Held across a write of registry `id`: when it drops — after the
    /// commit, on an error, or when the caller's future is cancelled midway
    /// — the entry goes and reads racing the write cache nothing.
    pub(crate) fn writing(&self, id: &RegistryId) -> Writing<'_> {
        Writing {
            cache: self,
            id: id.clone(),
        }
    }
}

/// See [`RegistryCache::writing`].
#[derive(Debug)]
pub(crate) struct Writing<'a> {
    cache: &'a RegistryCache,
    id: RegistryId,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut entries = self.cache.entries();
        self.cache.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(&self.id);
    }
}

/// Usages and pull Secret rows between writes of deploy state (SQLite).
#[derive(Debug)]
pub(crate) struct DeployCache {
    enabled: bool,
    generation: AtomicU64,
    rows: Mutex<DeployRows>,
}

#[derive(Debug, Default)]
struct DeployRows {
    usages: HashMap<(String, String), Usage>,
    secrets: HashMap<SecretKey, PullSecretState>,
}

impl DeployRows {
    fn make_room(&mut self) {
        if self.usages.len() + self.secrets.len() >= CAPACITY {
            self.usages.clear();
            self.secrets.clear();
        }
    }
}

impl DeployCache {
    /// `enabled`: this process is the database's only writer.
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            generation: AtomicU64::new(0),
            rows: Mutex::new(DeployRows::default()),
        }
    }

    fn rows(&self) -> MutexGuard<'_, DeployRows> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn usage(&self, organization: &str, container_id: &str) -> Option<Usage> {
        if !self.enabled {
            return None;
        }
        let key = (organization.to_owned(), container_id.to_owned());
        self.rows().usages.get(&key).cloned()
    }

    pub(crate) fn fill_usage(&self, generation: u64, usage: &Usage) {
        let mut rows = self.rows();
        if self.enabled && self.generation() == generation {
            rows.make_room();
            let key = (usage.organization.clone(), usage.container_id.clone());
            rows.usages.insert(key, usage.clone());
        }
    }

    pub(crate) fn secret(&self, key: &SecretKey) -> Option<PullSecretState> {
        if !self.enabled {
            return None;
        }
        self.rows().secrets.get(key).cloned()
    }

    pub(crate) fn fill_secret(&self, generation: u64, row: &PullSecretState) {
        let mut rows = self.rows();
        if self.enabled && self.generation() == generation {
            rows.make_room();
            rows.secrets.insert(row.key(), row.clone());
        }
    }

    /// Held across any write of usages or pull Secrets; see
    /// [`RegistryCache::writing`].
    pub(crate) fn writing(&self) -> DeployWriting<'_> {
        DeployWriting { cache: self }
    }
}

/// See [`DeployCache::writing`].
#[derive(Debug)]
pub(crate) struct DeployWriting<'a> {
    cache: &'a DeployCache,
}

impl Drop for DeployWriting<'_> {
    fn drop(&mut self) {
        let mut rows = self.cache.rows();
        self.cache.generation.fetch_add(1, Ordering::AcqRel);
        rows.usages.clear();
        rows.secrets.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(id: &RegistryId, etag: &str) -> StoredRegistry {
        StoredRegistry {
            registry: registry_core::registry::Registry {
                id: id.clone(),
                organization: "acme".into(),
                name: "ghcr".into(),
                kind: registry_core::kind::RegistryKind::Ghcr,
                server: "ghcr.io".into(),
                hints: Vec::new(),
                created_by: "alice".into(),
                created_at: registry_core::registry::Timestamp(0),
                updated_at: registry_core::registry::Timestamp(0),
                etag: etag.into(),
                credential_revision: 1,
            },
            key_id: "k1".into(),
            sealed_credentials: Vec::new(),
        }
    }

    #[test]
    fn a_read_racing_a_write_caches_nothing() {
        let cache = RegistryCache::new(true);
        let id = RegistryId::generate();
        let old = registry(&id, "1");
        let started = cache.generation();
        drop(cache.writing(&old.registry.id));
        cache.fill(started, &old);
        assert!(matches!(cache.lookup(&old.registry.id), Cached::Missing));

        let fresh = cache.generation();
        cache.fill(fresh, &registry(&id, "2"));
        assert!(matches!(cache.lookup(&old.registry.id), Cached::Current(r) if r.registry.etag == "2"));
        let write = cache.writing(&old.registry.id);
        assert!(
            matches!(cache.lookup(&old.registry.id), Cached::Current(_)),
            "until it ends"
        );
        drop(write);
        assert!(matches!(cache.lookup(&old.registry.id), Cached::Missing));
    }

    #[test]
    fn shared_databases_confirm_before_serving() {
        let cache = RegistryCache::new(false);
        let stored = registry(&RegistryId::generate(), "1");
        cache.fill(cache.generation(), &stored);
        assert!(matches!(cache.lookup(&stored.registry.id), Cached::Unconfirmed(_)));
    }
}
