//! Holds: selected requests parked after admission until the test lets them
//! go, so a test can order concurrent requests deterministically (no
//! sleeps), or model an API server that never answers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

use super::observe::{Verb, lock};

/// Which requests a [`Hold`] parks: every field that is set must match; the
/// default matches every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMatch {
    /// The verb.
    pub verb: Option<Verb>,
    /// The resource (`"secrets"`).
    pub resource: Option<String>,
    /// The namespace of the path (`/api/v1/namespaces/{namespace}/...`): a
    /// cluster-wide request, or one for a Namespace object, has none and
    /// does not match.
    pub namespace: Option<String>,
    /// The object's name: the path's, or for a create the body's
    /// `metadata.name`.
    pub name: Option<String>,
}

impl RequestMatch {
    /// Matches every request; narrow it with the other methods.
    pub fn any() -> Self {
        Self::default()
    }

    /// Only requests with this verb.
    #[must_use]
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }

    /// Only requests on this resource (`"secrets"`).
    #[must_use]
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_owned());
        self
    }

    /// Only requests in this namespace.
    #[must_use]
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// Only requests for the object with this name.
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    fn matches(&self, request: &Request<'_>) -> bool {
        let same = |wanted: &Option<String>, actual: Option<&str>| {
            wanted.as_deref().is_none_or(|wanted| Some(wanted) == actual)
        };
        self.verb.is_none_or(|verb| verb == request.verb)
            && same(&self.resource, Some(request.resource))
            && same(&self.namespace, request.namespace)
            && same(&self.name, request.name)
    }
}

/// A request as holds select it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) verb: Verb,
    pub(crate) resource: &'a str,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
}

#[derive(Debug)]
struct Parking {
    /// Cleared by the first release: later requests pass.
    installed: bool,
    /// One sender per parked request, oldest first.
    parked: VecDeque<oneshot::Sender<()>>,
}

#[derive(Debug)]
struct State {
    selection: RequestMatch,
    parking: Mutex<Parking>,
    /// How many requests were ever parked here, for [`Hold::arrived`].
    arrivals: watch::Sender<usize>,
}

impl State {
    fn is_installed(&self) -> bool {
        lock(&self.parking).installed
    }
}

/// The installed holds.
#[derive(Debug, Default)]
pub(crate) struct Holds(Mutex<Vec<Arc<State>>>);

impl Holds {
    pub(crate) fn install(&self, selection: RequestMatch) -> Hold {
        let state = Arc::new(State {
            selection,
            parking: Mutex::new(Parking {
                installed: true,
                parked: VecDeque::new(),
            }),
            arrivals: watch::Sender::new(0),
        });
        let mut holds = lock(&self.0);
        holds.retain(|hold| hold.is_installed());
        holds.push(Arc::clone(&state));
        Hold { state }
    }

    /// Parks a request with every installed hold that selects it.
    pub(crate) fn park(&self, request: &Request<'_>) -> Tickets {
        let mut holds = lock(&self.0);
        holds.retain(|hold| hold.is_installed());
        let mut tickets = Vec::new();
        for hold in holds.iter().filter(|hold| hold.selection.matches(request)) {
            let mut parking = lock(&hold.parking);
            // A release since the retain above uninstalled it.
            if !parking.installed {
                continue;
            }
            let (release, ticket) = oneshot::channel();
            parking.parked.push_back(release);
            hold.arrivals.send_modify(|arrivals| *arrivals += 1);
            tickets.push(ticket);
        }
        Tickets(tickets)
    }
}

fn release(state: &State) {
    let mut parking = lock(&state.parking);
    parking.installed = false;
    for parked in parking.parked.drain(..) {
        // The request may be gone already (its handler dropped).
        parked.send(()).ok();
    }
}

/// What a parked request waits for: one release per hold that parked it.
#[derive(Debug)]
pub(crate) struct Tickets(Vec<oneshot::Receiver<()>>);

impl Tickets {
    /// Whether no hold parked the request.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Resolves once every hold that parked the request let it go.
    pub(crate) async fn released(self) {
        for ticket in self.0 {
            // A dropped sender is a release too (the hold went away).
            ticket.await.ok();
        }
    }
}

/// A hold installed by [`super::KubeSim::hold`]: the matching requests that
/// arrive while it is installed are parked after admission (after injected
/// 429s and 403s, before latency and storage) until it lets them go; they
/// count as in flight meanwhile. A hold never released models an API server
/// that hangs for that selection: the requests never answer, so the client's
/// own timeout must fire. Dropping the hold releases it — the parked
/// requests then proceed, as a real server would eventually process a
/// request whose client gave up.
#[derive(Debug)]
pub struct Hold {
    state: Arc<State>,
}

impl Hold {
    /// Resolves once at least `n` matching requests arrived (parked now, or
    /// parked and released since). It waits forever when fewer arrive, so a
    /// test wraps it in a timeout.
    pub async fn arrived(&self, n: usize) {
        let mut arrivals = self.state.arrivals.subscribe();
        // The sender lives in `self.state`, so the channel cannot close.
        arrivals.wait_for(|arrivals| *arrivals >= n).await.ok();
    }

    /// How many matching requests arrived so far.
    pub fn arrivals(&self) -> usize {
        *self.state.arrivals.borrow()
    }

    /// How many requests are parked now (not counting those whose handler
    /// the server dropped).
    pub fn parked(&self) -> usize {
        lock(&self.state.parking)
            .parked
            .iter()
            .filter(|parked| !parked.is_closed())
            .count()
    }

    /// Lets every parked request proceed and uninstalls the hold: later
    /// requests pass.
    pub fn release(&self) {
        release(&self.state);
    }

    /// Lets the oldest parked request proceed; the hold stays installed.
    /// `false` when none was parked.
    pub fn release_one(&self) -> bool {
        let mut parking = lock(&self.state.parking);
        while let Some(parked) = parking.parked.pop_front() {
            if parked.send(()).is_ok() {
                return true;
            }
        }
        false
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(namespace: &str) -> Request<'_> {
        Request {
            verb: Verb::Patch,
            resource: "secrets",
            namespace: Some(namespace),
            name: Some("s"),
        }
    }

    #[test]
    fn selections_match_every_set_field() {
        let request = patch("ns");
        assert!(RequestMatch::any().matches(&request));
        assert!(
            RequestMatch::any()
                .verb(Verb::Patch)
                .resource("secrets")
                .namespace("ns")
                .name("s")
                .matches(&request)
        );
        assert!(!RequestMatch::any().verb(Verb::Get).matches(&request));
        assert!(!RequestMatch::any().namespace("other").matches(&request));
        let cluster_wide = Request {
            namespace: None,
            ..request
        };
        assert!(!RequestMatch::any().namespace("ns").matches(&cluster_wide));
    }

    #[tokio::test]
    async fn parked_requests_wait_for_the_release() {
        let holds = Holds::default();
        let hold = holds.install(RequestMatch::any().namespace("ns"));
        let first = holds.park(&patch("ns"));
        let second = holds.park(&patch("ns"));
        assert_eq!(holds.park(&patch("other")).0.len(), 0);
        hold.arrived(2).await;
        assert_eq!((hold.parked(), hold.arrivals()), (2, 2));

        assert!(hold.release_one());
        first.released().await;
        assert_eq!(hold.parked(), 1);
        hold.release();
        second.released().await;
        assert_eq!(holds.park(&patch("ns")).0.len(), 0, "a released hold is uninstalled");
        assert!(!hold.release_one());
    }
}
