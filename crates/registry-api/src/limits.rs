//! Load limits in front of the use cases: a request rate per principal, and
//! a limit on requests in flight in the whole server. A request beyond
//! either is refused at once with RESOURCE_EXHAUSTED and a
//! `google.rpc.RetryInfo` saying when to try again — never queued.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, Ready, ready};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use registry_core::Principal;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// How often (in checks) principals idle long enough to be full again are
/// forgotten, so the limiter's memory follows the active principals.
const PRUNE_EVERY: u64 = 1 << 16;

/// What a client is told to wait when the whole server is saturated.
const BUSY_RETRY: Duration = Duration::from_millis(100);

/// RESOURCE_EXHAUSTED with a RetryInfo of `retry`.
fn exhausted(message: String, retry: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry)),
    )
}

/// Requests per second per principal (organization and subject), with a
/// burst: GCRA from `governor`, one cell per principal.
#[derive(Debug)]
pub struct PrincipalRate {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
}

impl PrincipalRate {
    /// `per_second` requests per second, `burst` at once; 0 per second is no
    /// limit.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            DefaultKeyedRateLimiter::dashmap(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request of `principal`; RESOURCE_EXHAUSTED beyond its
    /// rate.
    pub fn check(&self, principal: &Principal) -> Result<(), Status> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            limiter.retain_recent();
        }
        let key = format!("{}/{}", principal.organization, principal.subject);
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            tracing::debug!(principal = key, ?wait, "request rate exceeded");
            exhausted(
                format!(
                    "{} of {} sends requests faster than this server allows per principal \
                     (limits.principal_requests_per_second); retry in {} ms",
                    principal.subject,
                    principal.organization,
                    wait.as_millis().max(1)
                ),
                wait,
            )
        })
    }
}

/// A tower layer limiting the requests in flight in the whole server to
/// `max`; one beyond is refused at once. Health checks are never counted
/// nor refused, so an orchestrator's probes do not kill a busy replica.
#[derive(Debug, Clone)]
pub struct GlobalConcurrencyLayer {
    permits: Option<Arc<Semaphore>>,
    max: usize,
}

impl GlobalConcurrencyLayer {
    /// At most `max` requests in flight; 0 is no limit.
    pub fn new(max: usize) -> Self {
        Self {
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            max,
        }
    }
}

impl<S> tower::Layer<S> for GlobalConcurrencyLayer {
    type Service = GlobalConcurrency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GlobalConcurrency {
            inner,
            permits: self.permits.clone(),
            max: self.max,
        }
    }
}

/// The service of [`GlobalConcurrencyLayer`].
#[derive(Debug, Clone)]
pub struct GlobalConcurrency<S> {
    inner: S,
    permits: Option<Arc<Semaphore>>,
    max: usize,
}

impl<S, B> tower::Service<http::Request<B>> for GlobalConcurrency<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Held<S::Future>, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let counted = !request.uri().path().starts_with("/grpc.health.v1.Health/");
        let permit = match (&self.permits, counted) {
            (Some(permits), true) => match Arc::clone(permits).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let status = exhausted(
                        format!(
                            "the server has {} requests in flight, its limit (limits.max_concurrent_requests); \
                             retry in {} ms",
                            self.max,
                            BUSY_RETRY.as_millis()
                        ),
                        BUSY_RETRY,
                    );
                    return Either::Right(ready(Ok(status.into_http())));
                }
            },
            _ => None,
        };
        Either::Left(Held {
            future: self.inner.call(request),
            _permit: permit,
        })
    }
}

pin_project_lite::pin_project! {
    /// The inner call, holding its permit until it completes.
    pub struct Held<F> {
        #[pin]
        future: F,
        _permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F: Future> Future for Held<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().future.poll(cx)
    }
}
