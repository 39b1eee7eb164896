//! Opening the store: the connection pools, SQLite's one-process rule,
//! migrations under a lock, and the health ping.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;

use crate::audit::AuditLog;
use crate::cache::{DeployCache, RegistryCache};
use crate::migration::Migrator;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported database url scheme {0:?} (expected sqlite: or postgres:)")]
    UnsupportedScheme(String),
    #[error("cannot connect to the {backend} database: {reason}")]
    Connect { backend: &'static str, reason: String },
    #[error("cannot migrate the database schema: {0}")]
    Migrate(String),
    #[error(
        "another process already serves the SQLite database {0}: SQLite serves one server process; \
         run several replicas on PostgreSQL"
    )]
    Locked(PathBuf),
}

/// SQLite's `synchronous` setting (WAL mode): when a commit is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteSync {
    /// A commit is in the WAL file before it is acknowledged: it survives
    /// the process being killed (SIGKILL, OOM), but a power loss or an OS
    /// crash can roll back the commits since the last checkpoint (the WAL
    /// is synced at checkpoints only).
    #[default]
    Normal,
    /// Each commit is also fsynced: it survives a power loss too, at the
    /// cost of one fsync per commit (shared by a batch of audit events).
    Full,
}

/// How the store opens its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreOptions {
    /// Only for SQLite (PostgreSQL: the server's `synchronous_commit`).
    pub sqlite_sync: SqliteSync,
}

/// The sea-orm store.
#[derive(Debug, Clone)]
pub struct SeaStore {
    /// Writes, and reads inside write transactions. On SQLite it is one
    /// connection, so concurrent writers queue here instead of failing on a
    /// busy database.
    pub(crate) writer: DatabaseConnection,
    /// Reads outside transactions.
    pub(crate) reader: DatabaseConnection,
    /// On SQLite, the lock that keeps a second process off the file.
    _lock: Option<Arc<File>>,
    /// Registries between writes.
    pub(crate) cache: Arc<RegistryCache>,
    /// Usages and pull Secret rows between writes (SQLite only).
    pub(crate) deploy_cache: Arc<DeployCache>,
    /// The group commit of hand-out audit events.
    pub(crate) audit: AuditLog,
}

/// The SQLite URL of the embedded default database in `data_dir`.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("registry.db").display())
}

/// A PostgreSQL advisory lock key: migrations run under it, so replicas
/// started together on an empty database migrate one after the other.
const MIGRATION_LOCK: i64 = 0x7265_6769_7374_7279; // "registry"

impl SeaStore {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies pending
    /// migrations. Database URLs may hold a password: it is never logged.
    pub async fn connect(url: &str) -> Result<Self, OpenError> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// [`Self::connect`] with `options`.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Self, OpenError> {
        match url.split(':').next().unwrap_or_default() {
            "sqlite" => Self::connect_sqlite(url, options.sqlite_sync).await,
            "postgres" | "postgresql" => Self::connect_postgres(url).await,
            other => Err(OpenError::UnsupportedScheme(other.to_owned())),
        }
    }

    async fn connect_sqlite(url: &str, sync: SqliteSync) -> Result<Self, OpenError> {
        let failed = |e: &dyn std::fmt::Display| OpenError::Connect {
            backend: "sqlite",
            reason: redact(&e.to_string(), url),
        };
        let file = SqliteConnectOptions::from_str(url)
            .map_err(|e| failed(&e))?
            .get_filename()
            .to_path_buf();
        let lock = lock_file(&file)?;
        let options = |max: u32| {
            let mut options = ConnectOptions::new(url.to_owned());
            options
                .sqlx_logging(false)
                .connect_timeout(Duration::from_secs(10))
                .acquire_timeout(Duration::from_secs(10))
                .max_connections(max)
                .min_connections(1)
                // No ping before each use of a pooled connection: that is
                // a second hand-off to the connection's thread per query,
                // and the file cannot go away under an open connection.
                .test_before_acquire(false)
                // WAL: readers never wait for the writer; see SqliteSync
                // for what an acknowledged commit (an audit event) survives.
                .map_sqlx_sqlite_opts(move |o| {
                    o.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(match sync {
                            SqliteSync::Normal => SqliteSynchronous::Normal,
                            SqliteSync::Full => SqliteSynchronous::Full,
                        })
                        .busy_timeout(Duration::from_secs(5))
                        .foreign_keys(true)
                });
            options
        };
        let writer = Database::connect(options(1)).await.map_err(|e| failed(&e))?;
        Migrator::up(&writer, None)
            .await
            .map_err(|e| OpenError::Migrate(e.to_string()))?;
        // This process holds the file's lock: leases left in it belong to a
        // process that died, and their work is this one's now.
        crate::pull_secrets::release_leases(&writer, None)
            .await
            .map_err(|e| failed(&crate::failure::describe(e)))?;
        let reader = Database::connect(options(4)).await.map_err(|e| failed(&e))?;
        Ok(Self {
            audit: AuditLog::start(writer.clone()),
            // This process holds the lock: it is the file's only writer.
            cache: Arc::new(RegistryCache::new(lock.is_some())),
            deploy_cache: Arc::new(DeployCache::new(lock.is_some())),
            writer,
            reader,
            _lock: lock.map(Arc::new),
        })
    }

    async fn connect_postgres(url: &str) -> Result<Self, OpenError> {
        let failed = |e: DbErr| OpenError::Connect {
            backend: "postgres",
            reason: redact(&e.to_string(), url),
        };
        let options = |max: u32| {
            let mut options = ConnectOptions::new(url.to_owned());
            options
                .sqlx_logging(false)
                .connect_timeout(Duration::from_secs(10))
                .acquire_timeout(Duration::from_secs(10))
                .max_connections(max)
                .min_connections(1)
                // No ping before each use of a pooled connection: that is a
                // second round trip to the server per query. A connection
                // the server dropped fails its next query, which answers
                // UNAVAILABLE (a retry gets a fresh connection), and
                // connections are recycled after max_lifetime anyway.
                .test_before_acquire(false)
                .max_lifetime(Duration::from_secs(30 * 60));
            options
        };
        // One session holds the advisory lock for the whole migration.
        let migrator = Database::connect(options(1)).await.map_err(failed)?;
        let lock = format!("SELECT pg_advisory_lock({MIGRATION_LOCK})");
        migrator.execute_unprepared(&lock).await.map_err(failed)?;
        let migrated = Migrator::up(&migrator, None).await;
        let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})");
        let _ = migrator.execute_unprepared(&unlock).await;
        let _ = migrator.close().await;
        migrated.map_err(|e| OpenError::Migrate(e.to_string()))?;
        let pool = Database::connect(options(16)).await.map_err(failed)?;
        Ok(Self {
            audit: AuditLog::start(pool.clone()),
            cache: Arc::new(RegistryCache::new(false)),
            deploy_cache: Arc::new(DeployCache::new(false)),
            writer: pool.clone(),
            reader: pool,
            _lock: None,
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        self.reader.ping().await.is_ok()
    }

    /// The underlying connection (for tests and tools).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.writer
    }

    pub fn backend(&self) -> DbBackend {
        self.writer.get_database_backend()
    }
}

/// Takes the lock file beside a SQLite database, held while the store lives.
fn lock_file(database: &Path) -> Result<Option<File>, OpenError> {
    if database.as_os_str().is_empty() || database == Path::new(":memory:") {
        return Ok(None);
    }
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| OpenError::Connect {
            backend: "sqlite",
            reason: format!("cannot open the lock file {}: {e}", path.display()),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Locked(database.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(OpenError::Connect {
            backend: "sqlite",
            reason: format!("cannot lock {}: {e}", path.display()),
        }),
    }
}

/// Removes what a URL's credentials could leak into a driver message: the
/// password of its user information (raw and percent-decoded) and any
/// `password=` query parameter.
pub(crate) fn redact(message: &str, url: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    // The password as written, up to the last '@' of the authority (a
    // password may itself hold an unescaped '@').
    if let Some((_, rest)) = url.split_once("://") {
        let before_query = rest.split('?').next().unwrap_or_default();
        if let Some((userinfo, _)) = before_query.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            secrets.push(password.to_owned());
            if let Ok(decoded) = percent_decode(password) {
                secrets.push(decoded);
            }
        }
    }
    if let Ok(parsed) = url::Url::parse(url) {
        if let Some(password) = parsed.password() {
            secrets.push(password.to_owned());
            if let Ok(decoded) = percent_decode(password) {
                secrets.push(decoded);
            }
        }
        secrets.extend(
            parsed
                .query_pairs()
                .filter(|(key, _)| key.eq_ignore_ascii_case("password"))
                .map(|(_, value)| value.into_owned()),
        );
    }
    secrets.retain(|s| !s.is_empty());
    // Longest first, so a secret containing another is removed whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.iter().fold(message.to_owned(), |message, secret| {
        message.replace(secret.as_str(), "***")
    })
}

fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_driver_messages() {
        let url = "postgres://svc:hunter2secret@db:5432/registry";
        assert_eq!(
            redact("auth failed for svc:hunter2secret", url),
            "auth failed for svc:***"
        );
        assert_eq!(redact("boom", "sqlite://x.db"), "boom");
        let at = "postgres://svc:p%40ss@word@db/registry";
        let message = redact("bad password p@ss@word or p%40ss@word", at);
        assert!(!message.contains("ss@word"), "{message}");
        let query = "postgres://svc@db/registry?password=s3cr3t&sslmode=disable";
        assert_eq!(redact("password s3cr3t refused", query), "password *** refused");
    }
}
