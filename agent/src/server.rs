//! The agent's gRPC server as parts: the NodeDiagnostics service and its router (health, reflection) without sockets, and the binding of TCP and Unix listeners.
//!
//! The agent binary binds listeners with [`serve`]; `nodectl` in embedded mode serves the same
//! [`router`] over an in-memory transport, so both answer through one code path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use nodectl_proto::nodectl::v1 as pb;
use pb::node_diagnostics_server::{NodeDiagnostics, NodeDiagnosticsServer};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::held_replies::{HeldReplies, ReplyHold};
use crate::limits::{
    HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT, MAX_KERNEL_STREAMS, MAX_PROCESS_SAMPLE,
    MAX_REPLY_BYTES, MAX_SAMPLE_COUNT, MAX_SAMPLE_WINDOW, MAX_STREAMS_PER_CONNECTION,
    POD_LOG_REPLY_CHUNK_BYTES, POD_LOG_SEND_DEADLINE,
};
use crate::pod_log::reads::PodLogReadError;
use crate::pod_log::{PodLogError, PodLogQuery};
use crate::snapshot::{SampleOptions, SnapshotError, Snapshotter};

/// Where the agent listens.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    pub listen: Option<SocketAddr>,
    pub unix: Option<PathBuf>,
    /// TLS on the TCP listener (the Unix socket is guarded by its file permissions).
    pub tls: Option<crate::tls::ReloadingConfig>,
    /// Plaintext grpc.health.v1 alone, for the kubelet's probes.
    pub health: Option<SocketAddr>,
}

/// Implements nodectl.v1.NodeDiagnostics over one host root.
#[derive(Debug, Clone)]
pub struct DiagnosticsService {
    snapshotter: Arc<Snapshotter>,
    kernel_log: Option<crate::kmsg::pipeline::KernelLog>,
    /// Cancelled when the agent stops: running samples end with it.
    shutdown: CancellationToken,
    /// One permit per open kernel event stream.
    streams: Arc<tokio::sync::Semaphore>,
    /// Serve records no rule classified (the whole kernel log), not only amdgpu/KFD events.
    full_kernel_log: bool,
    /// The kernel message rules a report classifies with (the embedded ones when `None`).
    classifier: Option<Arc<crate::kmsg::Classifier>>,
    /// Honour `no_redact` in report requests: only the client's in-process agent, whose caller
    /// reads the host with its own rights.
    unredacted_reports: bool,
    /// One report at a time: a report holds its recording (up to MAX_RECORDED_BYTES).
    reports: Arc<tokio::sync::Semaphore>,
}

impl DiagnosticsService {
    /// The one line a snapshot carries when this agent reads the KFD event channel and cannot.
    fn kfd_problem(&self) -> Option<nodectl_model::snapshot::Problem> {
        match &*self.kernel_log.as_ref()?.smi_status().borrow() {
            crate::kmsg::pipeline::SmiStatus::Unavailable(reason) => {
                Some(nodectl_model::snapshot::Problem {
                    path: "/dev/kfd".to_owned(),
                    reason: format!(
                        "KFD event channel unavailable (kernel log events still served): {reason}"
                    ),
                })
            }
            _ => None,
        }
    }

    pub fn new(snapshotter: Arc<Snapshotter>) -> Self {
        Self {
            snapshotter,
            kernel_log: None,
            shutdown: CancellationToken::new(),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_KERNEL_STREAMS)),
            full_kernel_log: false,
            classifier: None,
            unredacted_reports: false,
            reports: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Classifies a report's kernel log with these rules.
    pub fn with_classifier(mut self, classifier: Arc<crate::kmsg::Classifier>) -> Self {
        self.classifier = Some(classifier);
        self
    }

    /// Lets report requests ask for no redaction (the in-process agent only).
    pub fn with_unredacted_reports(mut self, allowed: bool) -> Self {
        self.unredacted_reports = allowed;
        self
    }

    /// Serves the whole kernel log to clients that ask (`include_unclassified`). Off by
    /// default: the log holds more than GPU events, and hosts set `dmesg_restrict` for a reason.
    pub fn with_full_kernel_log(mut self, full: bool) -> Self {
        self.full_kernel_log = full;
        self
    }

    /// Ends the work of running requests when `shutdown` fires.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Serves kernel events from this pipeline.
    pub fn with_kernel_log(mut self, kernel_log: Option<crate::kmsg::pipeline::KernelLog>) -> Self {
        self.kernel_log = kernel_log;
        self
    }
}

fn sample_options(
    request: &pb::GetSnapshotRequest,
    stop: CancellationToken,
) -> Result<SampleOptions, Status> {
    let count = request.sample_count.max(1);
    if count > MAX_SAMPLE_COUNT {
        return Err(Status::invalid_argument(format!(
            "sample_count is {count}; at most {MAX_SAMPLE_COUNT}"
        )));
    }
    let window_ms = u64::from(count - 1) * u64::from(request.sample_interval_ms);
    let max_ms = u64::try_from(MAX_SAMPLE_WINDOW.as_millis()).unwrap_or(u64::MAX);
    if window_ms > max_ms {
        return Err(Status::invalid_argument(format!(
            "sample_count × sample_interval_ms is {window_ms} ms; at most {max_ms} ms"
        )));
    }
    Ok(SampleOptions {
        count,
        interval: std::time::Duration::from_millis(u64::from(request.sample_interval_ms)),
        stop: Some(stop),
    })
}

type KernelStream = crate::kmsg::stream::KernelStream;

type ReportStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ReportChunk, Status>> + Send>>;

/// Chunks of a report waiting for the client: the writer waits when they are not taken.
const REPORT_CHUNKS_QUEUED: usize = 4;

#[tonic::async_trait]
impl NodeDiagnostics for DiagnosticsService {
    type GetReportStream = ReportStream;

    async fn get_report(
        &self,
        request: Request<pb::GetReportRequest>,
    ) -> Result<Response<ReportStream>, Status> {
        let request = request.into_inner();
        if request.no_redact && !self.unredacted_reports {
            return Err(Status::permission_denied(
                "no_redact: an agent reached over the network always redacts its reports; take an unredacted bundle on the node itself (nodectl report --no-redact, without --endpoint)",
            ));
        }
        let mut pods = Vec::with_capacity(request.pods.len());
        for p in request.pods {
            pods.push(PodLogQuery {
                namespace: p.namespace,
                pod: p.pod,
                pod_uid: p.pod_uid,
                container: p.container,
            });
        }
        let options = crate::report::ReportOptions {
            safe_mode: request.safe_mode,
            redact: !request.no_redact,
            redact_ips: request.redact_ips,
            pods,
        };
        let permit = Arc::clone(&self.reports).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted("a report is being taken already; ask again when it ends")
        })?;
        let classifier = match &self.classifier {
            Some(classifier) => Arc::clone(classifier),
            None => Arc::new(
                crate::kmsg::Classifier::embedded()
                    .map_err(|e| Status::internal(format!("kernel message rules: {e}")))?,
            ),
        };
        let taker = crate::report::ReportTaker::new(
            self.snapshotter.root().clone(),
            classifier,
            self.shutdown.child_token(),
        )
        .with_full_kernel_log(self.full_kernel_log)
        .with_events(self.kernel_log.clone());
        let (chunks_tx, mut chunks_rx) =
            tokio::sync::mpsc::channel::<Vec<u8>>(REPORT_CHUNKS_QUEUED);
        let (tx, rx) = tokio::sync::mpsc::channel(REPORT_CHUNKS_QUEUED);
        let runtime = tokio::runtime::Handle::current();
        let done = tokio::task::spawn_blocking(move || {
            let taken = taker.take(&options, &runtime, crate::report::ChunkSink::new(chunks_tx));
            drop(permit);
            // The recording and the compressor's buffers (tens of MiB) were freed just now;
            // glibc would keep them mapped for the agent's life.
            crate::resident::release_freed_memory();
            taken
        });
        tokio::spawn(async move {
            while let Some(data) = chunks_rx.recv().await {
                if tx.send(Ok(pb::ReportChunk { data })).await.is_err() {
                    // The client went away: dropping the receiver stops the writer.
                    return;
                }
            }
            let end = match done.await {
                Ok(Ok(())) => return,
                Ok(Err(crate::report::TarballError::Gone)) => return,
                Ok(Err(e)) => Status::resource_exhausted(e.to_string()),
                Err(e) => Status::internal(format!("the report task failed: {e}")),
            };
            let _ = tx.send(Err(end)).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        // Cancelled when the client goes away (tonic drops this future) or the agent stops, so
        // sampling never goes on for nobody.
        let stop = self.shutdown.child_token();
        let _cancel_on_drop = stop.clone().drop_guard();
        let options = sample_options(request.get_ref(), stop)?;
        let snapshot = self
            .snapshotter
            .snapshot(options)
            .await
            .map_err(|e| match e {
                SnapshotError::Busy => Status::resource_exhausted(e.to_string()),
                SnapshotError::Task(_) => Status::internal(e.to_string()),
            })?;
        let mut snapshot = Arc::unwrap_or_clone(snapshot);
        if let Some(problem) = self.kfd_problem() {
            snapshot.problems.push(problem);
        }
        Ok(Response::new(pb::Snapshot::from(snapshot)))
    }

    type StreamKernelEventsStream = KernelStream;

    async fn stream_kernel_events(
        &self,
        request: Request<pb::StreamKernelEventsRequest>,
    ) -> Result<Response<Self::StreamKernelEventsStream>, Status> {
        let Some(kernel_log) = &self.kernel_log else {
            return Err(Status::failed_precondition(
                "kernel log unavailable: this agent does not read it",
            ));
        };
        let permit = Arc::clone(&self.streams).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_KERNEL_STREAMS} kernel event streams are open already; close one first"
            ))
        })?;
        crate::kmsg::stream::open(kernel_log, request.get_ref(), self.full_kernel_log, permit)
            .map(Response::new)
    }

    async fn inject_kernel_message(
        &self,
        request: Request<pb::InjectKernelMessageRequest>,
    ) -> Result<Response<pb::InjectKernelMessageReply>, Status> {
        // Only root on the node, through the Unix socket: the kernel credentials of the peer
        // say who it is; over TCP nobody can be told apart from an attacker.
        let Some(peer) = request
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
        else {
            return Err(Status::permission_denied(
                "fault injection is taken only over the agent's Unix socket (--unix), from root on the node; never over TCP",
            ));
        };
        match peer.peer_cred.map(|c| c.uid()) {
            Some(0) => {}
            Some(uid) => {
                return Err(Status::permission_denied(format!(
                    "fault injection needs root on the node; the caller runs as uid {uid}"
                )));
            }
            None => {
                return Err(Status::permission_denied(
                    "fault injection: the caller's credentials could not be read",
                ));
            }
        }
        let Some(kernel_log) = &self.kernel_log else {
            return Err(Status::failed_precondition(
                "this agent does not read the kernel log",
            ));
        };
        let rule_id = request.into_inner().rule_id;
        use crate::kmsg::pipeline::InjectError;
        match kernel_log.inject(&rule_id) {
            Ok(message) => {
                tracing::info!(rule = %rule_id, "drill requested by root over the Unix socket");
                Ok(Response::new(pb::InjectKernelMessageReply { message }))
            }
            Err(e @ InjectError::UnknownRule(_)) => Err(Status::not_found(e.to_string())),
            Err(e @ InjectError::NoExample(_)) => Err(Status::invalid_argument(e.to_string())),
            Err(e @ InjectError::NotRunning(_)) => Err(Status::failed_precondition(e.to_string())),
            Err(e @ InjectError::Busy(_)) => Err(Status::resource_exhausted(e.to_string())),
        }
    }

    async fn get_inference_processes(
        &self,
        request: Request<pb::GetInferenceProcessesRequest>,
    ) -> Result<Response<pb::InferenceProcesses>, Status> {
        let window = std::time::Duration::from_millis(u64::from(request.get_ref().sample_ms));
        if window > MAX_PROCESS_SAMPLE {
            return Err(Status::invalid_argument(format!(
                "sample_ms is {}; at most {}",
                window.as_millis(),
                MAX_PROCESS_SAMPLE.as_millis()
            )));
        }
        let processes =
            self.snapshotter
                .inference_processes(window)
                .await
                .map_err(|e| match e {
                    SnapshotError::Busy => Status::resource_exhausted(e.to_string()),
                    SnapshotError::Task(_) => Status::internal(e.to_string()),
                })?;
        Ok(Response::new(processes.into()))
    }

    async fn tail_pod_log(
        &self,
        request: Request<pb::TailPodLogRequest>,
    ) -> Result<Response<pb::PodLog>, Status> {
        let r = request.into_inner();
        let query = PodLogQuery {
            namespace: r.namespace,
            pod: r.pod,
            pod_uid: r.pod_uid,
            container: r.container,
        };
        let root = self.snapshotter.root().clone();
        let (log, held) = crate::pod_log::reads::shared()
            .tail(root, query)
            .await
            .map_err(|e| {
                let text = e.to_string();
                match e {
                    PodLogReadError::Busy(_) => Status::resource_exhausted(text),
                    PodLogReadError::TimedOut(_) => Status::deadline_exceeded(text),
                    PodLogReadError::Task(_) => Status::internal(text),
                    PodLogReadError::Log(e) => match e {
                        PodLogError::BadName { .. }
                        | PodLogError::BadUid(_)
                        | PodLogError::NoPod => Status::invalid_argument(text),
                        PodLogError::NoPodLogs(_)
                        | PodLogError::NoContainer { .. }
                        | PodLogError::NoLogFile(_) => Status::not_found(text),
                        PodLogError::WhichContainer { .. } => Status::failed_precondition(text),
                        // Something planted where the runtime writes its logs: refused, not a
                        // fault of the agent. Not PERMISSION_DENIED, which says the caller may
                        // not ask (and will, once clients are authenticated).
                        PodLogError::NotPlain { .. } => Status::failed_precondition(text),
                        PodLogError::Read { .. } => Status::internal(text),
                    },
                }
            })?;
        let mut response = Response::new(pb::PodLog::from(log));
        // The reply's bytes count against the budget until the client has taken them.
        response.extensions_mut().insert(ReplyHold::new(held));
        Ok(response)
    }
}

/// The router of everything the agent serves: NodeDiagnostics, grpc.health.v1 and reflection
/// of the nodectl.v1 API. Binds nothing; health is set before it returns and kept by a task.
pub async fn router(
    service: DiagnosticsService,
) -> Result<tonic::transport::server::Router, tonic_reflection::server::Error> {
    let health_service = health_service(&service).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nodectl_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok(tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(HeldReplies::new(
            NodeDiagnosticsServer::new(service).max_encoding_message_size(MAX_REPLY_BYTES),
            POD_LOG_REPLY_CHUNK_BYTES,
            POD_LOG_SEND_DEADLINE,
        )))
}

/// grpc.health.v1 for `service`, kept up to date by a task: `""` always SERVING, the
/// NodeDiagnostics service as [`Readiness`] says.
async fn health_service(
    service: &DiagnosticsService,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let mut readiness = Readiness {
        host_stuck: crate::collect::read_pool::shared().stuck_reads(),
        pod_log_stuck: crate::pod_log::reads::shared().stuck_reads(),
        kernel_log_down: service.kernel_log.as_ref().map(|log| log.down()),
        kfd_status: service.kernel_log.as_ref().map(|log| log.smi_status()),
    };
    readiness.report(&health_reporter).await;
    tokio::spawn(readiness.keep(health_reporter));
    health_service
}

/// The router of the health port: grpc.health.v1 alone, in plaintext, for the kubelet's gRPC
/// probes, which speak neither TLS nor client certificates. It tells whether the agent is
/// ready and nothing about the node.
pub async fn health_router(service: &DiagnosticsService) -> tonic::transport::server::Router {
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .add_service(health_service(service).await)
}

/// What the health of `nodectl.v1.NodeDiagnostics` follows.
///
/// NOT_SERVING while a host read is stuck (the SMU may be hung: snapshots lack what those files
/// hold), a pod-log read is (pod logs cannot be read), or the kernel-log reader is down (the
/// node's log exists and nothing reads it: no events, no incidents); SERVING otherwise. The
/// overall service (`""`) stays SERVING: the agent answers, and restarting it cannot end a read
/// blocked in the kernel, so a liveness probe asks `""` and a readiness probe the service.
struct Readiness {
    host_stuck: tokio::sync::watch::Receiver<usize>,
    pod_log_stuck: tokio::sync::watch::Receiver<usize>,
    kernel_log_down: Option<tokio::sync::watch::Receiver<Option<String>>>,
    /// The KFD event channel: ready without it (the kernel log is the main source), and the
    /// readiness line says so.
    kfd_status: Option<tokio::sync::watch::Receiver<crate::kmsg::pipeline::SmiStatus>>,
}

impl Readiness {
    /// Why the service is not ready, or `None`; marks every input as seen.
    fn not_ready(&mut self) -> Option<String> {
        let stuck = *self.host_stuck.borrow_and_update() + *self.pod_log_stuck.borrow_and_update();
        let down = self
            .kernel_log_down
            .as_mut()
            .and_then(|down| down.borrow_and_update().clone());
        match (stuck, down) {
            (0, None) => None,
            (0, Some(down)) => Some(format!("kernel log reader down: {down}")),
            (stuck, down) => Some(format!(
                "{stuck} host read(s) stuck{}",
                down.map(|d| format!("; kernel log reader down: {d}"))
                    .unwrap_or_default()
            )),
        }
    }

    /// What the agent lacks while it is ready: the KFD event channel.
    fn ready_without(&mut self) -> Option<String> {
        match &*self.kfd_status.as_mut()?.borrow_and_update() {
            crate::kmsg::pipeline::SmiStatus::Unavailable(reason) => {
                Some(format!("KFD event channel unavailable: {reason}"))
            }
            _ => None,
        }
    }

    async fn report(&mut self, reporter: &tonic_health::server::HealthReporter) {
        let lacking = self.ready_without();
        match self.not_ready() {
            None => {
                if let Some(lacking) = lacking {
                    tracing::info!("ready; {lacking}");
                }
                reporter
                    .set_serving::<NodeDiagnosticsServer<DiagnosticsService>>()
                    .await;
            }
            Some(why) => {
                tracing::warn!("not ready: {why}");
                reporter
                    .set_not_serving::<NodeDiagnosticsServer<DiagnosticsService>>()
                    .await;
            }
        }
    }

    async fn keep(mut self, reporter: tonic_health::server::HealthReporter) {
        loop {
            let kernel_log_changed = async {
                match self.kernel_log_down.as_mut() {
                    Some(down) => down.changed().await,
                    None => std::future::pending().await,
                }
            };
            let kfd_changed = async {
                match self.kfd_status.as_mut() {
                    Some(status) => status.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.host_stuck.changed() => if changed.is_err() { return },
                changed = self.pod_log_stuck.changed() => if changed.is_err() { return },
                changed = kernel_log_changed => if changed.is_err() { return },
                changed = kfd_changed => if changed.is_err() { return },
            }
            self.report(&reporter).await;
        }
    }
}

/// Binds every configured listener, prints one `listening grpc=ADDR` line per listener on
/// stdout (tests and scripts read the port chosen for `:0` there), and serves `service` until
/// `shutdown`. The caller prints `ready` once this has bound everything: `on_bound` runs then.
pub async fn serve(
    service: DiagnosticsService,
    listeners: Listeners,
    shutdown: CancellationToken,
    on_bound: impl FnOnce() -> std::io::Result<()>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;

    if listeners.listen.is_none() && listeners.unix.is_none() {
        anyhow::bail!("nothing to serve on: give --listen ADDR and/or --unix PATH");
    }
    let mut tasks = tokio::task::JoinSet::new();

    if let Some(addr) = listeners.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --listen {addr}"))?;
        let local = listener.local_addr()?;
        println!("listening grpc={local}");
        let router = router(service.clone()).await?;
        let token = shutdown.clone();
        let guarded = crate::listener::GuardedListener::new(listener, "grpc");
        match listeners.tls.clone() {
            Some(tls) => tasks.spawn(async move {
                router
                    .serve_with_incoming_shutdown(guarded.into_tls_incoming(tls), token.cancelled())
                    .await
                    .context("gRPC server on TCP (TLS)")
            }),
            None => tasks.spawn(async move {
                router
                    .serve_with_incoming_shutdown(guarded.into_incoming(), token.cancelled())
                    .await
                    .context("gRPC server on TCP")
            }),
        };
    }
    if let Some(addr) = listeners.health {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --health-listen {addr}"))?;
        println!("listening health={}", listener.local_addr()?);
        let router = health_router(&service).await;
        let token = shutdown.clone();
        tasks.spawn(async move {
            router
                .serve_with_incoming_shutdown(
                    crate::listener::GuardedListener::new(listener, "health").into_incoming(),
                    token.cancelled(),
                )
                .await
                .context("health server")
        });
    }
    let mut bound_socket = None;
    if let Some(path) = listeners.unix.clone() {
        let listener = bind_unix(&path)?;
        bound_socket = Some(SocketFile::of(&path)?);
        println!("listening grpc=unix:{}", path.display());
        let router = router(service.clone()).await?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), token.cancelled())
                .await
                .context("gRPC server on Unix socket")
        });
    }
    on_bound()?;

    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.context("server task panicked").and_then(|r| r);
        if let Err(e) = outcome {
            shutdown.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    if let Some(socket) = bound_socket {
        socket.remove_if_ours();
    }
    result
}

/// Binds `--unix PATH`. Something at PATH is removed only when it is a socket nobody answers
/// on (left by an agent that was killed); a live socket or any other file is refused.
fn bind_unix(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    use anyhow::Context as _;
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("--unix {}", path.display())),
        Ok(meta) if !meta.file_type().is_socket() => anyhow::bail!(
            "--unix {}: the path exists and is not a socket; not removed (choose another path)",
            path.display()
        ),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => anyhow::bail!(
                "--unix {}: another process answers on this socket (a second agent?); not taken over",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("--unix {}: checking the socket", path.display()));
            }
        },
    }
    UnixListener::bind(path).with_context(|| format!("binding --unix {}", path.display()))
}

/// The socket file this agent bound, by device and inode.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn of(path: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Self {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Removes the socket unless something else stands at its path now (another agent that
    /// bound the path after this one, say).
    fn remove_if_ours(self) {
        use std::os::unix::fs::MetadataExt as _;
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("removing {}: {e}", self.path.display());
        }
    }
}
