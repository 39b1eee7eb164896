//! The event history: every change to the store in revision order, bounded,
//! and fanned out to the open watches.
//!
//! A watch from a `resourceVersion` replays the events after it from here,
//! and a list page continued from an older snapshot rolls the current state
//! back through it. What is no longer retained is expired (`410`), as after
//! a compaction of a real API server's storage.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::resource::Kind;

/// How many events are retained unless the test sets another bound.
pub(crate) const DEFAULT_LIMIT: usize = 10_000;

/// An object's identity in the store: kind, namespace (`""` for
/// namespaces), name.
pub(crate) type Key = (Kind, String, String);

/// What a write did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Added,
    Modified,
    Deleted,
}

/// One change, under the `resourceVersion` the write handed out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) revision: u64,
    pub(crate) key: Key,
    pub(crate) change: Change,
    /// The object after the change, rendered like a `GET`; for a deletion
    /// its last state under the deletion's `resourceVersion`, which is what
    /// a `DELETED` watch event carries.
    pub(crate) object: Value,
    /// The object before the change, under its own `resourceVersion`
    /// (`None` for an addition): watches need it to tell that an object
    /// left their selector, list snapshots to roll the change back.
    pub(crate) previous: Option<Value>,
}

/// A `resourceVersion` older than the retained history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired {
    pub(crate) requested: u64,
    pub(crate) compacted: u64,
}

impl Expired {
    /// The message a real API server sends with its `410 Expired`.
    pub(crate) fn message(&self) -> String {
        format!("too old resource version: {} ({})", self.requested, self.compacted)
    }
}

/// The retained events and the watches they are sent to.
#[derive(Debug)]
pub(crate) struct History {
    events: VecDeque<Arc<Event>>,
    /// Every event with a revision above this one is retained.
    compacted: u64,
    limit: usize,
    subscribers: Vec<mpsc::UnboundedSender<Arc<Event>>>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            events: VecDeque::new(),
            compacted: 0,
            limit: DEFAULT_LIMIT,
            subscribers: Vec::new(),
        }
    }
}

impl History {
    /// Appends an event (revisions only grow), drops the oldest beyond the
    /// bound and sends it to every open watch; closed watches are forgotten.
    pub(crate) fn record(&mut self, event: Event) {
        let event = Arc::new(event);
        self.subscribers
            .retain(|subscriber| subscriber.send(Arc::clone(&event)).is_ok());
        self.events.push_back(event);
        self.trim();
    }

    fn trim(&mut self) {
        while self.events.len() > self.limit {
            if let Some(dropped) = self.events.pop_front() {
                self.compacted = dropped.revision;
            }
        }
    }

    /// Drops every event up to `revision` (the current one), so a watch or a
    /// list page from before it is expired. Open watches keep what they were
    /// sent: compaction only affects where a new request may start.
    pub(crate) fn compact(&mut self, revision: u64) {
        self.events.retain(|event| event.revision > revision);
        self.compacted = self.compacted.max(revision);
    }

    /// Changes how many events are retained, dropping the oldest if needed.
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        self.trim();
    }

    /// The events after `revision`, in order; `Expired` when some of them
    /// are no longer retained.
    pub(crate) fn since(&self, revision: u64) -> Result<Vec<Arc<Event>>, Expired> {
        if revision < self.compacted {
            return Err(Expired {
                requested: revision,
                compacted: self.compacted,
            });
        }
        let start = self.events.partition_point(|event| event.revision <= revision);
        Ok(self.events.range(start..).cloned().collect())
    }

    /// A channel that receives every event recorded from now on.
    pub(crate) fn subscribe(&mut self) -> mpsc::UnboundedReceiver<Arc<Event>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.subscribers.push(sender);
        receiver
    }

    /// Rolls `state` (the current objects for which `in_scope` holds, by
    /// key) back to how they were at `revision`, undoing the newer events
    /// newest first.
    pub(crate) fn roll_back(
        &self,
        state: &mut BTreeMap<Key, Value>,
        revision: u64,
        in_scope: impl Fn(&Key) -> bool,
    ) -> Result<(), Expired> {
        let newer = self.since(revision)?;
        for event in newer.iter().rev().filter(|event| in_scope(&event.key)) {
            match &event.previous {
                None => {
                    state.remove(&event.key);
                }
                Some(previous) => {
                    state.insert(event.key.clone(), previous.clone());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(name: &str) -> Key {
        (Kind::Secret, "ns".to_owned(), name.to_owned())
    }

    fn event(revision: u64, name: &str, change: Change, previous: Option<Value>) -> Event {
        Event {
            revision,
            key: key(name),
            change,
            object: json!({ "rv": revision }),
            previous,
        }
    }

    #[test]
    fn since_replays_later_events_and_expires_compacted_ones() {
        let mut history = History::default();
        for revision in 1..=4 {
            history.record(event(revision, "a", Change::Modified, Some(json!({}))));
        }
        let revisions = |events: Vec<Arc<Event>>| events.iter().map(|e| e.revision).collect::<Vec<_>>();
        assert_eq!(history.since(2).map(revisions), Ok(vec![3, 4]));
        assert_eq!(history.since(4).map(revisions), Ok(vec![]));
        history.compact(4);
        assert_eq!(history.since(4).map(revisions), Ok(vec![]));
        assert_eq!(
            history.since(3),
            Err(Expired {
                requested: 3,
                compacted: 4
            })
        );
    }

    #[test]
    fn the_bound_drops_the_oldest_events() {
        let mut history = History::default();
        history.set_limit(2);
        for revision in 1..=3 {
            history.record(event(revision, "a", Change::Modified, Some(json!({}))));
        }
        assert!(history.since(0).is_err());
        assert_eq!(history.since(1).map(|events| events.len()), Ok(2));
    }

    #[test]
    fn roll_back_undoes_newer_changes() {
        let mut history = History::default();
        history.record(event(1, "a", Change::Added, None));
        history.record(event(2, "b", Change::Added, None));
        history.record(event(3, "a", Change::Modified, Some(json!({ "rv": 1 }))));
        history.record(event(4, "b", Change::Deleted, Some(json!({ "rv": 2 }))));
        let mut state = BTreeMap::from([(key("a"), json!({ "rv": 3 }))]);
        history.roll_back(&mut state, 1, |_| true).expect("retained");
        assert_eq!(state, BTreeMap::from([(key("a"), json!({ "rv": 1 }))]));
    }

    #[test]
    fn subscribers_receive_later_events_until_they_close() {
        let mut history = History::default();
        let mut open = history.subscribe();
        let closed = history.subscribe();
        drop(closed);
        history.record(event(1, "a", Change::Added, None));
        assert_eq!(open.try_recv().map(|e| e.revision), Ok(1));
        assert_eq!(history.subscribers.len(), 1);
    }
}
