//! Every request has an id: the caller's `x-request-id` metadata when it
//! sends a usable one, else one the server makes up. The id is answered in
//! the response's `x-request-id`, recorded in the request's `grpc` span and
//! carried into every audit event of the request, so a caller's log line,
//! the server's log and the audit trail meet on one value.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::HeaderValue;
use ring::rand::{SecureRandom as _, SystemRandom};

/// The metadata key of the request id, in requests and responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest caller-chosen id kept; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The id of the request, in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Whether a caller's id is kept: 1 to [`MAX_REQUEST_ID_LEN`] characters of
/// letters, digits and `-_.:/`, so it can go into logs and the audit trail
/// as it is.
pub fn is_usable(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
}

/// Makes up ids unique across restarts without a system call per request:
/// a random prefix drawn at start, then a counter.
#[derive(Debug)]
struct IdSource {
    prefix: String,
    next: AtomicU64,
}

impl IdSource {
    fn new() -> Self {
        let mut bytes = [0_u8; 6];
        // Without randomness the prefix is zero: ids stay unique within the
        // process, which is what correlation needs.
        let _ = SystemRandom::new().fill(&mut bytes);
        let prefix = bytes.iter().fold(String::with_capacity(12), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        });
        Self {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.prefix)
    }
}

/// The tower layer that gives every request its [`RequestId`].
#[derive(Debug, Clone)]
pub struct RequestIdLayer {
    source: Arc<IdSource>,
}

impl RequestIdLayer {
    pub fn new() -> Self {
        Self {
            source: Arc::new(IdSource::new()),
        }
    }
}

impl Default for RequestIdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithRequestId {
            inner,
            source: Arc::clone(&self.source),
        }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct WithRequestId<S> {
    inner: S,
    source: Arc<IdSource>,
}

impl<S, B, R> tower::Service<http::Request<B>> for WithRequestId<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Answered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| is_usable(id))
            .map_or_else(|| self.source.next(), str::to_owned);
        // Usable ids and made-up ones are visible ASCII: always a valid value.
        let header = HeaderValue::from_str(&id).ok();
        request.extensions_mut().insert(RequestId(id));
        Answered {
            future: self.inner.call(request),
            header,
            recorded: false,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner call; its response gets the `x-request-id` header.
    pub struct Answered<F> {
        #[pin]
        future: F,
        header: Option<HeaderValue>,
        recorded: bool,
    }
}

impl<F, R, E> Future for Answered<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if !*this.recorded {
            // Polled inside the request's `grpc` span (tonic enters it
            // around the future, not around `call`).
            *this.recorded = true;
            if let Some(header) = this.header.as_ref().and_then(|h| h.to_str().ok()) {
                tracing::Span::current().record("request_id", header);
            }
        }
        let mut response = std::task::ready!(this.future.poll(cx));
        if let (Ok(response), Some(header)) = (&mut response, this.header.take()) {
            response.headers_mut().insert(REQUEST_ID_HEADER, header);
        }
        Poll::Ready(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_ids() {
        for id in ["a", "req-1", "0af7651916cd43dd8448eb211c80319c", "svc/deploy:42_x.y"] {
            assert!(is_usable(id), "{id}");
        }
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for id in ["", "a b", "a\nb", "é", "a\"b", long.as_str()] {
            assert!(!is_usable(id), "{id:?}");
        }
        assert!(is_usable(&long[1..]));
    }

    #[test]
    fn made_up_ids_are_unique_and_usable() {
        let source = IdSource::new();
        let (a, b) = (source.next(), source.next());
        assert_ne!(a, b);
        assert!(is_usable(&a) && is_usable(&b), "{a} {b}");
        assert_ne!(IdSource::new().prefix, source.prefix);
    }
}
