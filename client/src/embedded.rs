//! The agent in this process: its gRPC service on a host root, served over an in-memory transport, and its saved-log analysis.
//!
//! This is the one module of the client that names the agent library. With no `--endpoint`,
//! nodectl talks to this service exactly as it talks to a remote agent, so embedded mode, the
//! DaemonSet and the tests share one code path.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
pub use nodectl_agent::kmsg::JournalYear;
use nodectl_agent::kmsg::analyze::analyze_reader;
pub use nodectl_agent::kmsg::analyze::{Found, LogCounts};
use nodectl_agent::kmsg::metrics::KmsgMetrics;
use nodectl_agent::kmsg::pipeline::{KernelLog, KernelLogConfig};
use nodectl_agent::kmsg::{Class, Classifier};
pub use nodectl_agent::logging::{LogFormat, init as init_logging};
pub use nodectl_agent::redact::bundle::BundleRedactor;
pub use nodectl_agent::redact::{redact_args, secret_name};
use nodectl_agent::snapshot::Snapshotter;
use nodectl_agent::{HostRoot, limits, server};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// Bytes in flight per direction of the in-memory connection: a snapshot fits in a few writes.
const DUPLEX_BUFFER_BYTES: usize = 64 * 1024;

/// What the in-process agent runs besides snapshots.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Read the root's kernel log (only `events` needs it; it reads the whole ring).
    pub kernel_log: bool,
}

/// The agent service running in this process; stopped when dropped.
#[derive(Debug)]
pub struct Embedded {
    channel: Channel,
    cancel: CancellationToken,
    kernel_log: Option<KernelLog>,
}

impl Embedded {
    /// Starts the agent's service on `root` and connects to it.
    pub async fn start(root: &Path, options: &EmbeddedOptions) -> anyhow::Result<Embedded> {
        let host_root =
            HostRoot::checked(root).with_context(|| format!("--host-root {}", root.display()))?;
        let cancel = CancellationToken::new();
        let classifier = Arc::new(Classifier::embedded()?);
        let kernel_log = if options.kernel_log {
            let log = KernelLog::start(
                &host_root,
                KernelLogConfig::new(Arc::clone(&classifier)),
                KmsgMetrics::default(),
                cancel.clone(),
            );
            if !log.caught_up(limits::KERNEL_LOG_FIRST_PASS).await {
                tracing::warn!("the kernel log was not read to its end in time");
            }
            Some(log)
        } else {
            None
        };
        // This process reads the kernel log with its own rights: nothing to keep from itself.
        let service = server::DiagnosticsService::new(Arc::new(Snapshotter::new(host_root)))
            .with_kernel_log(kernel_log.clone())
            .with_full_kernel_log(true)
            .with_unredacted_reports(true)
            .with_classifier(classifier)
            .with_shutdown(cancel.clone());
        let router = server::router(service)
            .await
            .context("building the in-process agent")?;

        let (connections, incoming) = mpsc::channel::<std::io::Result<DuplexStream>>(1);
        let stop = cancel.clone();
        tokio::spawn(async move {
            let served = router
                .serve_with_incoming_shutdown(ReceiverStream::new(incoming), stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("in-process agent: {e}");
            }
        });
        // The URI is required by tonic but unused: the connector hands over one end of a pipe.
        let channel = Endpoint::from_static("http://in-process.invalid")
            .connect_with_connector(tower::service_fn(move |_| {
                let connections = connections.clone();
                async move {
                    let (client, server) = tokio::io::duplex(DUPLEX_BUFFER_BYTES);
                    connections
                        .send(Ok(server))
                        .await
                        .map_err(|_| std::io::Error::other("the in-process agent has stopped"))?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
                }
            }))
            .await
            .context("connecting to the in-process agent")?;
        Ok(Embedded {
            channel,
            cancel,
            kernel_log,
        })
    }

    /// A channel to the service (cheap to clone).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(log) = self.kernel_log.take() {
            // The reader wakes within its poll interval; don't hold up the runtime for it.
            std::thread::spawn(move || log.join());
        }
    }
}

/// Analyses a saved log of any supported format as it is read, giving each event and each
/// closed incident to `sink` as it is found (memory stays with the open incidents, not with the
/// size of the log; `sink` stops the reading by breaking), with the agent's classifier (`rules`,
/// or the embedded ones). `years` dates journalctl lines, which print none. Only the lines with
/// a GPU marker are read whole unless `unclassified_wanted`. Only the incidents with an event of
/// one of `classes` are given (all when it is empty), as an agent streams them.
pub fn analyze_saved_log(
    input: impl std::io::BufRead,
    years: JournalYear,
    classes: &[Class],
    unclassified_wanted: bool,
    mut sink: impl FnMut(Found) -> ControlFlow<()>,
) -> anyhow::Result<LogCounts> {
    let classifier = Arc::new(Classifier::embedded()?);
    let wanted = Arc::clone(&classifier);
    analyze_reader(
        input,
        classifier,
        years,
        unclassified_wanted,
        |found| match found {
            Found::Incident(incident) if !wanted.incident_has_class(&incident, classes) => {
                ControlFlow::Continue(())
            }
            found => sink(found),
        },
    )
    .context("reading the log")
}
