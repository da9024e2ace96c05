//! `cnpg-operator`: the cnpg-rs operator on Kubernetes.

use clap::Parser;
use cnpg_operator::kube::controller::{self, ControllerConfig, Metrics};
use cnpg_operator::kube::platform::{HttpInstanceClient, KubePlatform};
use cnpg_operator::kube::specs::OperatorSettings;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Runs the CloudNativePG-compatible operator: reconciles every `postgresql.cnpg.io/v1`
/// Cluster it can see. Several replicas may run; a Lease picks the one that acts.
#[derive(Debug, Parser)]
#[command(name = "cnpg-operator", version)]
struct Args {
    /// Watch only this namespace (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// The operator image (its init container gives every instance pod `cnpg-instance`).
    #[arg(
        long,
        env = "OPERATOR_IMAGE",
        default_value = "ghcr.io/cnpg-rs/cnpg-operator:0.1.0"
    )]
    operator_image: String,
    /// This replica's name in the leader Lease.
    #[arg(long, env = "POD_NAME", default_value = "cnpg-operator")]
    identity: String,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "cnpg-system")]
    lease_namespace: String,
    /// Seconds the leader Lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Where to serve /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8081")]
    health_addr: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: no Kubernetes API (in-cluster config or kubeconfig): {e}");
                return ExitCode::FAILURE;
            }
        };
        let platform = KubePlatform::new(
            client.clone(),
            Arc::new(HttpInstanceClient::default()),
            OperatorSettings {
                operator_image: args.operator_image.clone(),
            },
            Some(args.identity.clone()),
        );
        let config = ControllerConfig {
            identity: args.identity,
            watch_namespace: args.watch_namespace,
            lease_namespace: args.lease_namespace,
            lease_duration: Duration::from_secs(args.lease_duration.max(2)),
            health_addr: Some(args.health_addr),
        };
        let shutdown = async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        match controller::run(client, platform, config, Metrics::default(), shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
