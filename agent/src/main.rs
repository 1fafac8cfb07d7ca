//! `nodectl-agent`: the node agent binary (privileged DaemonSet, or by hand on a tree).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use nodectl_agent::{HostRoot, server, shutdown};
use tokio_util::sync::CancellationToken;

/// Serves a node's amdgpu, KFD, host and kernel-log state over gRPC (read-only).
#[derive(Debug, Parser)]
#[command(name = "nodectl-agent", version)]
#[deny(missing_docs)]
struct Args {
    /// Directory that stands for the host's `/` (`/host` in the DaemonSet, a fixture tree in tests).
    #[arg(long, default_value = "/", value_name = "DIR")]
    host_root: PathBuf,
    /// TCP address for gRPC, e.g. `0.0.0.0:50151`; port 0 picks a free one (printed on stdout).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Unix socket path for gRPC.
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?)
        .with_writer(std::io::stderr)
        .init();

    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone()).context("installing signal handlers")?;
    let config = server::ServerConfig {
        root: HostRoot::new(args.host_root),
        listen: args.listen,
        unix: args.unix,
    };
    server::serve(config, token).await?;
    tracing::info!("stopped");
    Ok(())
}
