//! `nodectl-agent`: the node agent binary (privileged DaemonSet, or by hand on a tree).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use nodectl_agent::{HostRoot, kmsg, limits, server, shutdown, snapshot};
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
    /// TCP address for Prometheus metrics (`GET /metrics`); port 0 picks a free one.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Directory where the kernel log position `(boot_id, last counted seq)` is kept, so a
    /// restarted agent counts no record twice.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Serve every kernel log record to clients that ask for unclassified ones, not only the
    /// classified amdgpu/KFD events (the log may hold what `dmesg_restrict` keeps from users).
    #[arg(long)]
    full_kernel_log: bool,
    /// Kernel message rules (TOML, the format of the embedded rules) instead of the embedded ones.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
    /// How log lines are written to standard error: text, or one JSON object per line for a
    /// log shipper.
    #[arg(long, value_enum, default_value_t = nodectl_agent::logging::LogFormat::Text)]
    log_format: nodectl_agent::logging::LogFormat,
}

// One runtime thread: an agent answers a handful of clients, and everything that can block (file
// reads, which stall while a GPU's SMU hangs; the kernel log) already runs on threads of its own.
// A worker per core would add stacks and malloc arenas and nothing else.
fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run_to_end(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Once, in words: the flag or path and what is wrong with it, then its causes.
            eprintln!("nodectl-agent: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run_to_end(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run(args));
    // A host read stalled by a hung SMU never returns: exit without waiting for it forever.
    runtime.shutdown_timeout(limits::SHUTDOWN_GRACE);
    result
}

async fn run(args: Args) -> anyhow::Result<()> {
    nodectl_agent::logging::init(
        tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?,
        args.log_format,
    );

    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone()).context("installing signal handlers")?;
    let root = HostRoot::checked(&args.host_root)
        .with_context(|| format!("--host-root {}", args.host_root.display()))?;
    let classifier = kmsg::Classifier::load(args.rules.as_deref())?;
    if let Some(dir) = &args.state_dir {
        if dir.exists() && !dir.is_dir() {
            anyhow::bail!(
                "--state-dir {}: not a directory (it names a file; give a directory the agent may create or write)",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--state-dir {}: cannot create it", dir.display()))?;
    }
    let classifier = std::sync::Arc::new(classifier);
    let mut kmsg_config = kmsg::pipeline::KernelLogConfig::new(std::sync::Arc::clone(&classifier));
    kmsg_config.state_dir = args.state_dir.clone();
    let metrics = kmsg::metrics::KmsgMetrics::default();
    let kernel_log =
        kmsg::pipeline::KernelLog::start(&root, kmsg_config, metrics.clone(), token.clone());

    let snapshotter = std::sync::Arc::new(snapshot::Snapshotter::new(root));

    // Bound before serve() so its `listening` line comes before `ready`.
    let mut metrics_task = None;
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --metrics-listen {addr}"))?;
        println!("listening metrics={}", listener.local_addr()?);
        metrics_task = Some(tokio::spawn(nodectl_agent::metrics::serve(
            listener,
            std::sync::Arc::clone(&snapshotter),
            metrics,
            token.clone(),
        )));
    }
    // `ready` promises that a stream holds this boot's kernel log so far, not an empty history.
    if !kernel_log.caught_up(limits::KERNEL_LOG_FIRST_PASS).await {
        tracing::warn!(
            "the kernel log was not read to its end within {}s; serving anyway",
            limits::KERNEL_LOG_FIRST_PASS.as_secs()
        );
    }
    let service = server::DiagnosticsService::new(snapshotter)
        .with_kernel_log(Some(kernel_log.clone()))
        .with_full_kernel_log(args.full_kernel_log)
        .with_classifier(classifier)
        .with_shutdown(token.clone());
    let listeners = server::Listeners {
        listen: args.listen,
        unix: args.unix,
    };
    let served = server::serve(service, listeners, token.clone(), || {
        use std::io::Write as _;
        server::release_freed_memory();
        println!("ready");
        std::io::stdout().flush()
    })
    .await;
    token.cancel();
    tokio::task::spawn_blocking(move || kernel_log.join())
        .await
        .context("kernel log reader")?;
    if let Some(task) = metrics_task {
        task.await
            .context("metrics task")?
            .context("metrics server")?;
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}
