//! The hot-path load generator: drives one gRPC call against a running
//! server and compares it with `grpc.health.v1.Health/Check` on the same
//! server, in one invocation.
//!
//! 1. the baseline, `Health/Check`, closed loop (connections × in-flight);
//! 2. the target call, closed loop: its throughput over the baseline's is
//!    the ratio;
//! 3. with `--rate-fraction`, the target call open loop at that fraction of
//!    its own closed-loop throughput (or at `--rate`), latency measured from
//!    each request's intended send time, so a stalled server is not hidden
//!    by requests it kept from being sent (no coordinated omission).
//!
//! Latencies go into HDR histograms (µs, 3 significant digits); errors are
//! counted by gRPC status code, RESOURCE_EXHAUSTED (load shed) among them.

#![allow(clippy::print_stdout)] // a command-line tool: the report is its output

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use registry_proto::v1 as pb;
use registry_proto::v1::deploy_credential_service_client::DeployCredentialServiceClient;
use serde::Serialize;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    /// `grpc.health.v1.Health/Check` (the baseline).
    Health,
    /// `ResolvePullCredentials` of `--registry-id`.
    Resolve,
    /// `PrepareDeployment` of `--containers` containers, over and over (a
    /// repeat deploy once each container is deployed).
    Prepare,
}

#[derive(Debug, Parser)]
#[command(about = "Load generator for the registry credential service's hot path")]
struct Args {
    /// The server's address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    #[arg(long, value_enum, default_value = "resolve")]
    call: Call,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight per connection (closed loop).
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Seconds each closed-loop phase runs.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before each phase (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Skip the Health/Check baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Then run open loop at this fraction of the closed-loop throughput.
    #[arg(long)]
    rate_fraction: Option<f64>,
    /// Or at this many requests per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds the open-loop phase runs.
    #[arg(long, default_value_t = 60.0)]
    open_duration: f64,
    /// The development-mode principal.
    #[arg(long, default_value = "acme")]
    org: String,
    #[arg(long, default_value = "loadgen")]
    user: String,
    #[arg(long, default_value = "deployer")]
    roles: String,
    /// The registry to resolve or deploy with; empty: create a GHCR
    /// registry first (needs the admin role) and use it.
    #[arg(long, default_value = "")]
    registry_id: String,
    /// For `prepare`: the target, environment, image and container count.
    #[arg(long, default_value = "k8s")]
    target: String,
    #[arg(long, default_value = "production")]
    environment: String,
    #[arg(long, default_value = "ghcr.io/myorg/api:v1")]
    image: String,
    #[arg(long, default_value_t = 100)]
    containers: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one phase measured.
#[derive(Debug, Serialize)]
struct Phase {
    call: Call,
    mode: &'static str,
    /// Requests per second asked for (open loop).
    target_rate: Option<f64>,
    seconds: f64,
    /// Successful calls measured.
    ok: u64,
    /// Successful calls including the warm-up (each one is audited).
    ok_with_warmup: u64,
    errors: BTreeMap<String, u64>,
    throughput: f64,
    latency_us: Latency,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    addr: String,
    registry_id: String,
    connections: usize,
    in_flight: usize,
    phases: Vec<Phase>,
    /// Target closed-loop throughput over the baseline's.
    ratio: Option<f64>,
}

/// One connection's clients and the principal's metadata.
#[derive(Clone)]
struct Caller {
    health: HealthClient<Channel>,
    deploy: DeployCredentialServiceClient<Channel>,
    principal: Arc<[(&'static str, MetadataValue<tonic::metadata::Ascii>); 3]>,
    args: Arc<Args>,
}

impl Caller {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        for (key, value) in self.principal.iter() {
            request.metadata_mut().insert(*key, value.clone());
        }
        request
    }

    /// One call; `Err` carries the status code's name.
    async fn call(&mut self, call: Call, n: u64) -> Result<(), String> {
        let code = |status: tonic::Status| format!("{:?}", status.code());
        match call {
            Call::Health => {
                let request = tonic::Request::new(HealthCheckRequest { service: String::new() });
                self.health.check(request).await.map(drop).map_err(code)
            }
            Call::Resolve => {
                let request = self.request(pb::ResolvePullCredentialsRequest {
                    registry_id: self.args.registry_id.clone(),
                });
                self.deploy
                    .resolve_pull_credentials(request)
                    .await
                    .map(drop)
                    .map_err(code)
            }
            Call::Prepare => {
                let containers = self.args.containers.max(1) as u64;
                let (name, tag) = self.args.image.rsplit_once(':').unwrap_or((&self.args.image, ""));
                let request = self.request(pb::PrepareDeploymentRequest {
                    container_id: format!("loadgen-{}", n % containers),
                    environment: self.args.environment.clone(),
                    target: self.args.target.clone(),
                    registry_config: Some(pb::RegistryConfig {
                        registry_id: self.args.registry_id.clone(),
                        image_name: name.to_owned(),
                        image_tag: tag.to_owned(),
                    }),
                    swarm_service: String::new(),
                });
                self.deploy.prepare_deployment(request).await.map(drop).map_err(code)
            }
        }
    }
}

/// What one worker saw.
struct Tally {
    histogram: Histogram<u64>,
    ok: u64,
    ok_with_warmup: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            ok: 0,
            ok_with_warmup: 0,
            errors: BTreeMap::new(),
        }
    }

    fn warmup(&mut self, result: &Result<(), String>) {
        if result.is_ok() {
            self.ok_with_warmup += 1;
        }
    }

    fn record(&mut self, result: Result<(), String>, latency: Duration) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.ok_with_warmup += 1;
            }
            Err(code) => *self.errors.entry(code).or_default() += 1,
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
    }

    fn merge(&mut self, other: Tally) {
        self.histogram.add(other.histogram).expect("histograms of equal bounds");
        self.ok += other.ok;
        self.ok_with_warmup += other.ok_with_warmup;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
    }

    fn phase(self, call: Call, mode: &'static str, target_rate: Option<f64>, seconds: f64) -> Phase {
        let h = &self.histogram;
        let errors: u64 = self.errors.values().sum();
        Phase {
            call,
            mode,
            target_rate,
            seconds,
            ok: self.ok,
            ok_with_warmup: self.ok_with_warmup,
            throughput: (self.ok + errors) as f64 / seconds,
            errors: self.errors,
            latency_us: Latency {
                p50: h.value_at_quantile(0.50),
                p90: h.value_at_quantile(0.90),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
            },
        }
    }
}

async fn connect(args: &Arc<Args>) -> Result<Vec<Caller>, Box<dyn std::error::Error>> {
    let principal = Arc::new([
        ("x-user", args.user.parse()?),
        ("x-org", args.org.parse()?),
        ("x-roles", args.roles.parse()?),
    ]);
    let mut callers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections.max(1) {
        // One Endpoint::connect is one HTTP/2 connection.
        let channel = Endpoint::from_shared(args.addr.clone())?
            .tcp_nodelay(true)
            .connect()
            .await?;
        callers.push(Caller {
            health: HealthClient::new(channel.clone()),
            deploy: DeployCredentialServiceClient::new(channel),
            principal: Arc::clone(&principal),
            args: Arc::clone(args),
        });
    }
    Ok(callers)
}

/// Closed loop: every worker sends its next request when the last one ends.
async fn closed(callers: &[Caller], call: Call, in_flight: usize, warmup: Duration, run: Duration) -> Phase {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + run;
    let mut workers = Vec::new();
    for (c, caller) in callers.iter().enumerate() {
        for w in 0..in_flight.max(1) {
            let mut caller = caller.clone();
            let mut n = (c * in_flight + w) as u64;
            let stride = (callers.len() * in_flight) as u64;
            workers.push(tokio::spawn(async move {
                let mut tally = Tally::new();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break tally;
                    }
                    let result = caller.call(call, n).await;
                    n += stride;
                    if sent >= measure_from {
                        tally.record(result, sent.elapsed());
                    } else {
                        tally.warmup(&result);
                    }
                }
            }));
        }
    }
    let mut total = Tally::new();
    for worker in workers {
        total.merge(worker.await.expect("a load worker panicked"));
    }
    total.phase(call, "closed", None, run.as_secs_f64())
}

/// Open loop at `rate` requests per second over all connections, each
/// request timed from when it was due.
async fn open(callers: &[Caller], call: Call, rate: f64, warmup: Duration, run: Duration) -> Phase {
    // Requests beyond this many outstanding wait (and their wait counts).
    let outstanding = Arc::new(Semaphore::new(4096));
    let (sink, mut results) = tokio::sync::mpsc::unbounded_channel::<(bool, Result<(), String>, Duration)>();
    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + warmup;
    let total = (rate * (warmup + run).as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let callers = callers.to_vec();
    let scheduler = tokio::spawn(async move {
        for n in 0..total {
            let due = start + interval.mul_f64(n as f64);
            wait_until(due).await;
            let permit = Arc::clone(&outstanding).acquire_owned().await.expect("never closed");
            let mut caller = callers[(n as usize) % callers.len()].clone();
            let sink = sink.clone();
            tokio::spawn(async move {
                let result = caller.call(call, n).await;
                let _ = sink.send((due >= measure_from, result, due.elapsed()));
                drop(permit);
            });
        }
    });
    let mut tally = Tally::new();
    scheduler.await.expect("the scheduler panicked");
    while let Some((measured, result, latency)) = results.recv().await {
        if measured {
            tally.record(result, latency);
        } else {
            tally.warmup(&result);
        }
    }
    tally.phase(call, "open", Some(rate), run.as_secs_f64())
}

/// Tokio's timer has millisecond resolution: sleep to within a
/// millisecond of `due`, then yield until it (the generator has its core to
/// itself; the responses' tasks run between the yields).
async fn wait_until(due: Instant) {
    let coarse = due.checked_sub(Duration::from_millis(1)).unwrap_or(due);
    if Instant::now() < coarse {
        tokio::time::sleep_until(coarse.into()).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

fn print(phase: &Phase) {
    let l = &phase.latency_us;
    let rate = phase.target_rate.map(|r| format!(" @{r:.0}/s")).unwrap_or_default();
    println!(
        "{:<8} {:<6}{:<9} {:>10.0} req/s  ok {:>8}  errors {:?}  p50 {:>6}µs  p90 {:>6}µs  p99 {:>6}µs  p999 {:>6}µs  max {:>7}µs",
        format!("{:?}", phase.call).to_lowercase(),
        phase.mode,
        rate,
        phase.throughput,
        phase.ok,
        phase.errors,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max
    );
}

/// Creates a GHCR registry to resolve and deploy with; returns its id.
async fn create_registry(args: &Args) -> Result<String, Box<dyn std::error::Error>> {
    use registry_proto::v1::registry_service_client::RegistryServiceClient;
    let mut client = RegistryServiceClient::connect(args.addr.clone()).await?;
    let mut request = tonic::Request::new(pb::CreateRegistryRequest {
        registry: Some(pb::Registry {
            name: format!("loadgen-{}", std::process::id()),
            r#type: pb::RegistryType::Ghcr.into(),
            credentials: Some(pb::Credentials {
                kind: Some(pb::credentials::Kind::Ghcr(pb::GhcrCredentials {
                    username: "myorg".into(),
                    token: "ghp_16C7e42F292c6912E7710c838347Ae178B4a".into(),
                })),
            }),
            ..Default::default()
        }),
        request_id: String::new(),
    });
    for (key, value) in [
        ("x-user", &args.user),
        ("x-org", &args.org),
        ("x-roles", &"admin".to_owned()),
    ] {
        request.metadata_mut().insert(key, value.parse()?);
    }
    let registry = client.create_registry(request).await?.into_inner().registry;
    Ok(registry.map(|r| r.id).unwrap_or_default())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse();
    if args.registry_id.is_empty() && args.call != Call::Health {
        args.registry_id = create_registry(&args).await?;
        println!("created registry {}", args.registry_id);
    }
    let args = Arc::new(args);
    let callers = connect(&args).await?;
    let warmup = Duration::from_secs_f64(args.warmup);
    let run = Duration::from_secs_f64(args.duration);
    let mut phases = Vec::new();
    let mut baseline = None;
    if !args.no_baseline && args.call != Call::Health {
        let phase = closed(&callers, Call::Health, args.in_flight, warmup, run).await;
        print(&phase);
        baseline = Some(phase.throughput);
        phases.push(phase);
    }
    let target = closed(&callers, args.call, args.in_flight, warmup, run).await;
    print(&target);
    let ratio = baseline.map(|b| target.throughput / b);
    if let Some(ratio) = ratio {
        println!("ratio {:?}/health: {ratio:.2}", args.call);
    }
    let rate = args.rate.or(args.rate_fraction.map(|f| f * target.throughput));
    let capacity = target.throughput;
    phases.push(target);
    if let Some(rate) = rate.filter(|r| *r > 0.0) {
        let open_run = Duration::from_secs_f64(args.open_duration);
        let phase = open(&callers, args.call, rate, warmup, open_run).await;
        print(&phase);
        phases.push(phase);
        println!("open loop at {:.0}% of closed-loop capacity", 100.0 * rate / capacity);
    }
    let report = Report {
        addr: args.addr.clone(),
        registry_id: args.registry_id.clone(),
        connections: args.connections,
        in_flight: args.in_flight,
        phases,
        ratio,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
