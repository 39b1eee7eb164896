//! The audit trail's group commit. Hand-outs that write nothing else (a
//! docker login to a deployer, a refusal, a connection test) each need their
//! event on disk before they answer; one writer task takes the events of
//! every caller from a bounded queue and inserts whatever has gathered
//! while the previous batch was committing, in one statement. Each caller
//! awaits its own batch's commit, so the hand-out stays fail-closed while
//! the commit (and on SQLite its fsync) is shared.
//!
//! The batch travels as one JSON array bound to one parameter, so the
//! statement's text never changes with the batch size: the driver prepares
//! it once and reuses it (a multi-row `VALUES` list would be a new statement
//! to parse and plan for every size).

use registry_core::audit::AuditEvent;
use registry_core::ports::store::StoreError;
use sea_orm::{ConnectionTrait as _, DatabaseConnection, DbBackend, Statement};
use tokio::sync::{mpsc, oneshot};

/// Events waiting for the writer; beyond it callers are told to back off.
const QUEUE: usize = 8192;
/// The most events one statement inserts.
const BATCH: usize = 512;

type Committed = Result<(), StoreError>;

/// An event as the JSON array the statements below take apart:
/// `[at, organization, actor, action, registry_id, outcome, detail,
/// request_id, peer]`.
type Row = (
    i64,
    String,
    String,
    &'static str,
    Option<String>,
    &'static str,
    String,
    String,
    String,
);

const INSERT_SQLITE: &str = "INSERT INTO audit_events \
     (at, organization, actor, action, registry_id, outcome, detail, request_id, peer) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, \
     value ->> 7, value ->> 8 \
     FROM json_each(?)";
const INSERT_POSTGRES: &str = "INSERT INTO audit_events \
     (at, organization, actor, action, registry_id, outcome, detail, request_id, peer) \
     SELECT (e ->> 0)::bigint, e ->> 1, e ->> 2, e ->> 3, e ->> 4, e ->> 5, e ->> 6, e ->> 7, e ->> 8 \
     FROM jsonb_array_elements($1::jsonb) AS e";

struct Entry {
    row: Row,
    done: oneshot::Sender<Committed>,
}

/// The sender side of the audit writer; the writer stops when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub(crate) struct AuditLog {
    queue: mpsc::Sender<Entry>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer on `db` (on SQLite, the single writer connection).
    pub(crate) fn start(db: DatabaseConnection) -> Self {
        let (queue, inbox) = mpsc::channel(QUEUE);
        tokio::spawn(write(db, inbox));
        Self { queue }
    }

    /// Records `event` and returns once it is committed. A full queue is
    /// [`StoreError::Overloaded`]; a failed commit fails every event of its
    /// batch.
    pub(crate) async fn record(&self, event: &AuditEvent) -> Committed {
        let (done, committed) = oneshot::channel();
        let entry = Entry {
            row: (
                event.at.0,
                event.organization.clone(),
                event.actor.clone(),
                event.action.as_str(),
                event.registry_id.as_ref().map(ToString::to_string),
                event.outcome.as_str(),
                event.detail.clone(),
                event.request_id.clone(),
                event.peer.clone(),
            ),
            done,
        };
        self.queue.try_send(entry).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                StoreError::Overloaded(format!("{QUEUE} audit events are waiting to be written"))
            }
            mpsc::error::TrySendError::Closed(_) => stopped(),
        })?;
        committed.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the audit writer has stopped".into())
}

async fn write(db: DatabaseConnection, mut inbox: mpsc::Receiver<Entry>) {
    let mut batch = Vec::with_capacity(BATCH);
    while inbox.recv_many(&mut batch, BATCH).await > 0 {
        // Let the handlers that are ready run once more, so their events
        // join this batch: on a loaded core that turns many small commits
        // (each a hand-off to the database and a WAL append of the same
        // pages) into fewer larger ones, and costs an idle server one
        // scheduler turn.
        tokio::task::yield_now().await;
        while batch.len() < BATCH {
            match inbox.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let committed = insert(&db, &batch).await;
        match &committed {
            Ok(()) => tracing::debug!(events = batch.len(), elapsed = ?started.elapsed(), "audit events committed"),
            Err(error) => tracing::error!(%error, events = batch.len(), "writing audit events failed"),
        }
        for entry in batch.drain(..) {
            // A caller that went away still has its event recorded.
            let _ = entry.done.send(committed.clone());
        }
    }
}

async fn insert(db: &DatabaseConnection, batch: &[Entry]) -> Committed {
    let rows: Vec<&Row> = batch.iter().map(|entry| &entry.row).collect();
    let json = serde_json::to_string(&rows).map_err(|e| StoreError::Corrupt(format!("audit batch: {e}")))?;
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => INSERT_POSTGRES,
        _ => INSERT_SQLITE,
    };
    let inserted = db
        .execute(Statement::from_sql_and_values(backend, sql, [json.into()]))
        .await
        .map_err(|error| StoreError::from(crate::failure::Failure::from(error)))?;
    if inserted.rows_affected() != batch.len() as u64 {
        return Err(StoreError::Unavailable(format!(
            "{} of {} audit events were written",
            inserted.rows_affected(),
            batch.len()
        )));
    }
    Ok(())
}
