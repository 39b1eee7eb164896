//! The simulated Kubernetes API server as a process, for the hot-path
//! benchmark: serves on a loopback port, writes a kubeconfig for it, and on
//! SIGTERM or SIGINT writes the requests it served (by verb and resource)
//! as JSON, so the benchmark can show that a repeat deploy asks the API
//! server nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use registry_testkit::kube_api::KubeSim;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
struct Args {
    /// Where to write the kubeconfig of the simulated server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Namespaces to create.
    #[arg(long = "namespace", default_value = "env-production")]
    namespaces: Vec<String>,
    /// Where to write the request counts on exit.
    #[arg(long)]
    stats: PathBuf,
    /// Start counting only at SIGUSR1 (after the warm-up).
    #[arg(long)]
    count_from_usr1: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let sim = KubeSim::start().await;
    for namespace in &args.namespaces {
        sim.create_namespace(namespace);
    }
    std::fs::write(&args.kubeconfig, sim.kubeconfig())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => sim.reset_stats(),
        }
    }
    let requests: BTreeMap<String, u64> = sim
        .stats()
        .requests
        .into_iter()
        .map(|((verb, resource), count)| (format!("{verb:?} {resource}").to_lowercase(), count))
        .collect();
    std::fs::write(&args.stats, serde_json::to_vec_pretty(&requests)?)?;
    Ok(())
}
