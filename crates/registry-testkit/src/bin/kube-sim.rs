//! The simulated Kubernetes API server as a process of its own, for tests
//! outside Rust (the SDKs' flows in `scripts/test`): serves on a loopback
//! port, writes a kubeconfig for it to the path given as the only argument,
//! prints its URL on stdout, and runs until SIGTERM or SIGINT.

use registry_testkit::kube_api::KubeSim;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let Some(kubeconfig) = std::env::args_os().nth(1) else {
        eprintln!("usage: kube-sim KUBECONFIG_PATH");
        std::process::exit(2);
    };
    let sim = KubeSim::start().await;
    std::fs::write(&kubeconfig, sim.kubeconfig())?;
    #[allow(clippy::print_stdout)] // the URL is the process's answer
    {
        println!("{}", sim.url());
    }
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(sim);
    Ok(())
}
