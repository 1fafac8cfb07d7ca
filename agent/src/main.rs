//! `nodectl-agent`: the node agent binary (privileged DaemonSet, or by hand on a tree).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use nodectl_agent::{HostRoot, kmsg, limits, server, shutdown, snapshot};
use tokio_util::sync::CancellationToken;

/// Serves a node's amdgpu, KFD, host and kernel-log state over gRPC (read-only).
#[derive(Debug, Parser)]
#[command(
    name = "nodectl-agent",
    version,
    args_conflicts_with_subcommands = true
)]
#[deny(missing_docs)]
struct Args {
    /// Without a command the agent serves.
    #[command(subcommand)]
    command: Option<AgentCommand>,
    /// Directory that stands for the host's `/` (`/host` in the DaemonSet, a fixture tree in tests).
    #[arg(long, default_value = "/", value_name = "DIR")]
    host_root: PathBuf,
    /// TCP address for gRPC, e.g. `0.0.0.0:50151`; port 0 picks a free one (printed on stdout).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Unix socket path for gRPC (plaintext; its file mode decides who may connect).
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// TLS certificate chain (PEM) for the gRPC and metrics ports; reloaded when it changes.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Only clients with a certificate signed by this CA (PEM) may connect (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Serve plaintext on an address other than loopback (without --tls-cert). Anyone who can
    /// reach the port then reads the node's state, kernel log and pod logs.
    #[arg(long)]
    insecure_listen: bool,
    /// TCP address for grpc.health.v1 alone, in plaintext, for the kubelet's gRPC liveness
    /// and readiness probes (which cannot speak TLS); it says nothing about the node.
    #[arg(long, value_name = "ADDR")]
    health_listen: Option<SocketAddr>,
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
    /// Knowledge files (a TOML file, or a folder of them) over the embedded catalog: kernel
    /// rules, incident kinds, check settings and strategies (knowledge/README.md). Repeatable.
    #[arg(long, value_name = "PATH", alias = "rules")]
    knowledge: Vec<PathBuf>,
    /// Keep the Node's `AMDGPUHealthy` condition: False while a GPU incident is open or a
    /// critical finding holds, with one Event per incident (in-cluster service account, or
    /// --kubeconfig).
    #[arg(long, requires = "node_name")]
    kube_node_conditions: bool,
    /// This node's name in Kubernetes (the DaemonSet passes `spec.nodeName`).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// Reach the API server with this kubeconfig instead of the pod's service account.
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// With --kube-node-conditions: taint the node `nodectl/amdgpu-unhealthy:NoSchedule` while
    /// a critical incident is open or a critical finding holds, so new pods stay off it.
    #[arg(long, requires = "kube_node_conditions")]
    taint_on_critical: bool,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
    /// How log lines are written to standard error: text, or one JSON object per line for a
    /// log shipper.
    #[arg(long, value_enum, default_value_t = nodectl_agent::logging::LogFormat::Text)]
    log_format: nodectl_agent::logging::LogFormat,
}

#[derive(Debug, clap::Subcommand)]
#[deny(missing_docs)]
enum AgentCommand {
    /// A drill: the agent running on this node feeds the example message of a kernel message
    /// rule into its pipeline as an event marked `injected`, so its event, drill incident,
    /// metric and node condition fire on a healthy node, and clear after. Root only, through
    /// the agent's Unix socket; nothing is written to the kernel log.
    Inject {
        /// The kernel message rule to fire, e.g. `mes_timeout` (see the agent's rules).
        #[arg(long, value_name = "ID")]
        kernel_message: String,
        /// The running agent's Unix socket (its --unix).
        #[arg(long, value_name = "PATH", default_value = nodectl_agent::drill::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
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
    if let Some(AgentCommand::Inject {
        kernel_message,
        socket,
    }) = &args.command
    {
        let message = nodectl_agent::drill::inject(socket, kernel_message).await?;
        println!("injected as a drill: {message}");
        return Ok(());
    }
    let mut filter = tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?;
    if !args.log.contains("kube") {
        // kube-rs logs every failed API call at error level; the node-condition task says it
        // once per run of failures, with the retry.
        filter = filter.add_directive(
            "kube_client::client::builder=off"
                .parse()
                .context("the kube_client log directive")?,
        );
    }
    nodectl_agent::logging::init(filter, args.log_format);

    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone()).context("installing signal handlers")?;
    let root = HostRoot::checked(&args.host_root)
        .with_context(|| format!("--host-root {}", args.host_root.display()))?;
    if !args.knowledge.is_empty() {
        let knowledge = nodectl_agent::knowledge::load(&args.knowledge)
            .map_err(|e| anyhow::anyhow!("--knowledge:\n{e}"))?;
        nodectl_model::knowledge::Knowledge::install(knowledge);
    }
    let classifier = kmsg::Classifier::embedded()?;
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
    // A tree (a fixture, a bundle) holds no devices: only the live host has a KFD channel.
    let kfd_task = root.is_live_host().then(|| {
        tokio::spawn(nodectl_agent::kfd::run(
            root.clone(),
            kernel_log.clone(),
            token.clone(),
        ))
    });

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            nodectl_agent::tls::ReloadingConfig::watch(
                nodectl_agent::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: args.client_ca.clone(),
                },
                token.clone(),
            )
            .context("TLS")?,
        ),
        _ => None,
    };
    if tls.is_none() && !args.insecure_listen {
        for (flag, addr) in [
            ("--listen", args.listen),
            ("--metrics-listen", args.metrics_listen),
        ] {
            if let Some(addr) = addr
                && !nodectl_agent::tls::plaintext_allowed(&addr)
            {
                anyhow::bail!(
                    "{flag} {addr}: plaintext on a non-loopback address lets anyone who reaches it read this node's state and logs; give --tls-cert and --tls-key (and --client-ca), or --insecure-listen to accept that"
                );
            }
        }
    }

    let snapshotter = std::sync::Arc::new(snapshot::Snapshotter::new(root));

    let mut node_health_task = None;
    let mut node_health_first_pass = None;
    if args.kube_node_conditions {
        let node_name = args
            .node_name
            .clone()
            .context("--kube-node-conditions needs --node-name (or NODE_NAME)")?;
        let api =
            nodectl_agent::node_health::NodeApi::connect(args.kubeconfig.as_deref(), node_name)
                .await
                .context("--kube-node-conditions")?;
        let (first_pass, first_pass_done) = tokio::sync::oneshot::channel();
        node_health_first_pass = Some(first_pass_done);
        node_health_task = Some(tokio::spawn(nodectl_agent::node_health::run(
            nodectl_agent::node_health::NodeHealth {
                api,
                classifier: std::sync::Arc::clone(&classifier),
                kernel_log: Some(kernel_log.clone()),
                snapshotter: std::sync::Arc::clone(&snapshotter),
                taint_on_critical: args.taint_on_critical,
                first_pass: Some(first_pass),
            },
            token.clone(),
        )));
    }

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
            tls.as_ref()
                .map(nodectl_agent::tls::ReloadingConfig::http1_only),
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
        tls,
        health: args.health_listen,
    };
    let served = server::serve(service, listeners, token.clone(), || {
        use std::io::Write as _;
        // Start-up ends once every listener is bound and the node-condition task has run its
        // first checks and write; what start-up alone used is given back then.
        tokio::spawn(async move {
            if let Some(first_pass) = node_health_first_pass {
                let _ = tokio::time::timeout(limits::START_UP_FIRST_PASS, first_pass).await;
            }
            nodectl_agent::resident::release_start_up_pages();
        });
        println!("ready");
        std::io::stdout().flush()
    })
    .await;
    token.cancel();
    if let Some(task) = kfd_task {
        task.await.context("KFD event channel task")?;
    }
    tokio::task::spawn_blocking(move || kernel_log.join())
        .await
        .context("kernel log reader")?;
    if let Some(task) = node_health_task {
        task.await.context("node condition task")?;
    }
    if let Some(task) = metrics_task {
        task.await
            .context("metrics task")?
            .context("metrics server")?;
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}
