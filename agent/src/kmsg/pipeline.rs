//! Runs the kernel log pipeline in the agent: a reader thread that classifies records and publishes them to a feed for stream subscribers.
//!
//! The reader thread never waits for a subscriber (see [`crate::feed`]); it saves its position
//! so that a restarted agent counts no record twice, and it closes quiet incidents on the
//! source's clock.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodectl_model::kernel_log::{RecordsLost, StreamHeader, StreamMessage};
use nodectl_proto::nodectl::v1 as pb;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::analyze::{Analyzer, Entry, Output};
use super::classify::{Class, Classifier};
use super::metrics::KmsgMetrics;
use super::reader::{KmsgReader, ReadOutcome, RecordSource, RootKmsg};
use super::state::{CountedUpTo, StateFile};
use crate::HostRoot;
use crate::feed::{Feed, FeedCapacity, Sequenced, Subscription};
use crate::limits::MAX_SMALL_FILE_BYTES;

/// Sizes and places of the pipeline.
#[derive(Debug, Clone)]
pub struct KernelLogConfig {
    pub classifier: Arc<Classifier>,
    /// Where `(boot_id, last counted seq)` is kept; `None`: not kept.
    pub state_dir: Option<PathBuf>,
    /// Messages kept for late subscribers, per history (all records / classified only).
    pub history_capacity: usize,
    /// Messages a subscriber may fall behind before it is told it lagged.
    pub broadcast_capacity: usize,
}

impl KernelLogConfig {
    pub fn new(classifier: Arc<Classifier>) -> Self {
        Self {
            classifier,
            state_dir: None,
            history_capacity: crate::limits::KERNEL_LOG_HISTORY,
            broadcast_capacity: crate::limits::KERNEL_LOG_BROADCAST,
        }
    }
}

/// One message of the history, converted to its wire form once for every subscriber.
#[derive(Debug)]
pub struct Item {
    /// The kernel seq the message belongs to (an event's, the first record after a gap).
    pub seq: u64,
    /// Class of an event; `None` for unclassified events and non-events.
    pub class: Option<Class>,
    /// An event that no rule classified (or that user space wrote).
    pub unclassified: bool,
    /// An unclassified record the GPU stack's driver wrote: context of the classified events,
    /// served without `--full-kernel-log`.
    pub context: bool,
    /// An incident update: the classes of its events.
    pub incident_classes: Vec<Class>,
    pub message: pb::KernelStreamMessage,
}

impl Item {
    pub fn wanted(&self, filter: &StreamFilter) -> bool {
        if self.unclassified {
            return filter.include_unclassified && (filter.full_log || self.context);
        }
        let wanted = |class: &Class| filter.classes.is_empty() || filter.classes.contains(class);
        match self.class {
            Some(class) => wanted(&class),
            None if !self.incident_classes.is_empty() => self.incident_classes.iter().any(wanted),
            None => true,
        }
    }
}

impl Sequenced for Item {
    fn seq(&self) -> u64 {
        self.seq
    }

    /// Classified events and every notice outlive the unclassified records around them.
    fn important(&self) -> bool {
        !self.unclassified
    }
}

/// What a subscriber asked for.
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    pub since_seq: u64,
    pub follow: bool,
    pub classes: Vec<Class>,
    pub include_unclassified: bool,
    /// The agent serves the whole log (`--full-kernel-log`); else unclassified records only
    /// when they are GPU-stack context.
    pub full_log: bool,
}

/// The kernel log cannot be read here (no /dev/kmsg in a fixture tree, no permission).
#[derive(Debug, Clone, thiserror::Error)]
#[error("kernel log unavailable: {0}")]
pub struct Unavailable(pub String);

#[derive(Debug)]
struct Shared {
    feed: Feed<Item>,
    lost_total: AtomicU64,
    boot_id: String,
    boot_time: Option<jiff::Timestamp>,
    unavailable: Option<String>,
    metrics: KmsgMetrics,
    cancel: CancellationToken,
    /// True once the reader has read every record there was at its start (or stopped).
    caught_up: watch::Sender<bool>,
    /// Why the reader is down (the node's log exists and is not being read), or `None`.
    down: watch::Sender<Option<String>>,
    reader_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    classifier: Arc<Classifier>,
    /// Drill messages for the reader thread (`None`: no reader runs).
    injections: Mutex<Option<std::sync::mpsc::SyncSender<String>>>,
}

/// Why a drill could not be fed in.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InjectError {
    #[error("no kernel message rule has the id `{0}` (nodectl-agent's rules list them)")]
    UnknownRule(String),
    #[error("rule `{0}` has no example message to inject")]
    NoExample(String),
    #[error("the kernel log reader is not running: {0}")]
    NotRunning(String),
    #[error("{0} drills wait for the reader already; try again in a moment")]
    Busy(usize),
}

/// Handle on the running pipeline; cheap to clone.
#[derive(Debug, Clone)]
pub struct KernelLog {
    shared: Arc<Shared>,
}

/// What a new subscriber gets: the header, then the feed's history and (follow) live messages.
#[derive(Debug)]
pub struct KernelSubscription {
    pub header: pb::KernelStreamHeader,
    pub feed: Subscription<Item>,
}

/// The boot id a host root names (empty when it names none); at most a line is read.
fn read_boot_id(root: &HostRoot) -> String {
    read_small(root, "proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A small procfs-like file of `root`: at most [`MAX_SMALL_FILE_BYTES`], never waiting for a
/// writer (a FIFO standing in for the file reads as empty).
fn read_small(root: &HostRoot, host_path: &str) -> Option<String> {
    let bytes = root
        .read_prefix(&root.path(host_path), MAX_SMALL_FILE_BYTES)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// `btime` of a `/proc/stat` text: the boot time in whole seconds since the epoch.
pub fn parse_btime(stat: &str) -> Option<jiff::Timestamp> {
    let seconds = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse::<i64>()
        .ok()?;
    jiff::Timestamp::from_second(seconds).ok()
}

/// UTC time of monotonic 0 for the records of `root`: this machine's clocks when the root's
/// boot is this machine's boot (the host, or the DaemonSet's `/host`), else the `btime` the
/// root's `/proc/stat` carries (a saved tree: whole seconds), else unknown.
pub fn boot_time_of(root: &HostRoot, boot_id: &str) -> Option<jiff::Timestamp> {
    let this_boot = read_boot_id(&HostRoot::default());
    // Read either way: a recording keeps it, so the bundle's clock is the node's.
    let recorded = read_small(root, "proc/stat").and_then(|stat| parse_btime(&stat));
    if root.is_live_host() || (!boot_id.is_empty() && boot_id == this_boot) {
        return nodectl_model::clock::boot_time_now();
    }
    recorded
}

impl KernelLog {
    /// Starts reading `root`'s /dev/kmsg (the device, or a saved kmsg stream in a tree) in a
    /// thread. When it cannot be opened the handle still exists and every subscription fails
    /// with the reason.
    pub fn start(
        root: &HostRoot,
        config: KernelLogConfig,
        metrics: KmsgMetrics,
        cancel: CancellationToken,
    ) -> KernelLog {
        let path = root.dev_kmsg();
        let boot_id = read_boot_id(root);
        let boot_time = boot_time_of(root, &boot_id);
        match RootKmsg::open(root) {
            Ok(source) => {
                Self::start_with_source(source, boot_id, boot_time, config, metrics, cancel)
            }
            Err(e) => {
                let reason = format!("{}: {e}", root.host_display(&path));
                tracing::warn!("kernel log unavailable: {reason}");
                // A tree with no kernel log (a fixture, a bundle taken without one) has nothing to
                // read; a host whose log is there and cannot be opened has a reader that is down.
                let absent = !root.is_live_host()
                    && e.kind() == std::io::ErrorKind::NotFound
                    && root.metadata(&path).is_err();
                let log = Self::new_shared(
                    boot_id,
                    boot_time,
                    Some(reason.clone()),
                    &config,
                    metrics,
                    cancel,
                );
                if !absent {
                    log.shared.down.send_replace(Some(reason));
                }
                log.shared.caught_up.send_replace(true);
                log
            }
        }
    }

    fn new_shared(
        boot_id: String,
        boot_time: Option<jiff::Timestamp>,
        unavailable: Option<String>,
        config: &KernelLogConfig,
        metrics: KmsgMetrics,
        cancel: CancellationToken,
    ) -> KernelLog {
        KernelLog {
            shared: Arc::new(Shared {
                feed: Feed::new(FeedCapacity {
                    history: config.history_capacity,
                    broadcast: config.broadcast_capacity,
                }),
                lost_total: AtomicU64::new(0),
                boot_id,
                boot_time,
                unavailable,
                metrics,
                cancel,
                caught_up: watch::Sender::new(false),
                down: watch::Sender::new(None),
                reader_thread: Mutex::new(None),
                classifier: Arc::clone(&config.classifier),
                injections: Mutex::new(None),
            }),
        }
    }

    /// Starts the reader thread over any record source (tests use a scripted one).
    pub fn start_with_source<S: RecordSource + Send + 'static>(
        source: S,
        boot_id: String,
        boot_time: Option<jiff::Timestamp>,
        config: KernelLogConfig,
        metrics: KmsgMetrics,
        cancel: CancellationToken,
    ) -> KernelLog {
        let log = Self::new_shared(boot_id, boot_time, None, &config, metrics, cancel);
        let (injections, injected) = std::sync::mpsc::sync_channel(MAX_QUEUED_DRILLS);
        *log.shared
            .injections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(injections);
        let shared = log.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("kmsg-reader".to_owned())
            .spawn(move || {
                read_loop(&shared, KmsgReader::new(source), &config, &injected);
                if !shared.cancel.is_cancelled() {
                    shared.down.send_if_modified(|down| {
                        down.get_or_insert_with(|| "the kernel log reader stopped".to_owned());
                        true
                    });
                }
                // Whoever waits for the first pass must not wait for a reader that stopped.
                shared.caught_up.send_replace(true);
            });
        match spawned {
            Ok(handle) => {
                *log.shared
                    .reader_thread
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
            }
            Err(e) => {
                tracing::error!("cannot start the kernel log reader: {e}");
                log.shared
                    .down
                    .send_replace(Some(format!("cannot start the kernel log reader: {e}")));
                log.shared.caught_up.send_replace(true);
            }
        }
        log
    }

    /// Waits (at most `timeout`) until the reader has read the records there were when it
    /// started, so that a subscriber sees the boot's history. Returns whether it had.
    pub async fn caught_up(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.caught_up.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await,
            Ok(Ok(_))
        )
    }

    /// Waits for the reader thread to stop (after the cancel token fired); it saves the
    /// position on its way out.
    pub fn join(&self) {
        let handle = self
            .shared
            .reader_thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the kernel log reader panicked");
        }
    }

    /// Why the reader is down, as it changes: `Some(reason)` while the node's kernel log exists
    /// and is not being read (it could not be opened, or reading it failed), else `None`.
    pub fn down(&self) -> watch::Receiver<Option<String>> {
        self.shared.down.subscribe()
    }

    /// Feeds the example message of rule `rule_id` into the pipeline as an injected event (a
    /// drill): it is classified, opens or joins a drill incident, is counted and streamed like
    /// a kernel event, marked `injected`. Returns the message.
    pub fn inject(&self, rule_id: &str) -> Result<String, InjectError> {
        let classifier = &self.shared.classifier;
        if classifier.class_of(rule_id).is_none() {
            return Err(InjectError::UnknownRule(rule_id.to_owned()));
        }
        let example = classifier
            .example(rule_id)
            .ok_or_else(|| InjectError::NoExample(rule_id.to_owned()))?
            .to_owned();
        let sender = self
            .shared
            .injections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let not_running = || {
            InjectError::NotRunning(
                self.shared
                    .unavailable
                    .clone()
                    .or_else(|| self.shared.down.borrow().clone())
                    .unwrap_or_else(|| "it stopped".to_owned()),
            )
        };
        let sender = sender.ok_or_else(not_running)?;
        match sender.try_send(example.clone()) {
            Ok(()) => Ok(example),
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                Err(InjectError::Busy(MAX_QUEUED_DRILLS))
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(not_running()),
        }
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.shared.cancel
    }

    /// Subscribes: the history after `since_seq` that matches the filter, then (follow) the
    /// live messages.
    pub fn subscribe(&self, filter: &StreamFilter) -> Result<KernelSubscription, Unavailable> {
        if let Some(reason) = &self.shared.unavailable {
            return Err(Unavailable(reason.clone()));
        }
        let feed = self.shared.feed.subscribe(
            filter.since_seq,
            filter.include_unclassified,
            filter.follow,
            |item| item.wanted(filter),
        );
        let header = StreamHeader {
            boot_id: self.shared.boot_id.clone(),
            boot_time: self.shared.boot_time,
            first_seq: feed.backlog.first().map_or(0, |i| i.seq),
            last_seq: feed.backlog.last().map_or(0, |i| i.seq),
            records_lost_total: self.shared.lost_total.load(Ordering::Relaxed),
        };
        Ok(KernelSubscription {
            header: header.into(),
            feed,
        })
    }
}

/// Turns the analyzer's outputs into items and publishes them to the feed.
fn flush(
    shared: &Shared,
    classifier: &Classifier,
    outputs: &mut Vec<Output>,
    tally: &mut Tally,
    last_read_seq: Option<u64>,
) {
    let mut items = Vec::new();
    let lost = to_items(
        outputs,
        classifier,
        &shared.metrics,
        tally,
        last_read_seq.unwrap_or(0),
        &mut items,
    );
    if items.is_empty() && lost == 0 {
        return;
    }
    shared.lost_total.fetch_add(lost, Ordering::Relaxed);
    shared.feed.publish(items);
}

/// What one output adds to the metrics.
#[derive(Debug)]
enum Count {
    Event { class: Class, id: Arc<str> },
    Incident { kind: Arc<str>, incident_id: u64 },
    Lost { records: u64 },
}

/// Counts outputs into the metrics, except those an earlier run of this boot counted already.
///
/// The saved position can only be checked against the log once the records there were at
/// start are read (a position beyond the newest of them is corrupt), so during that first pass
/// counts are held back and settled at its end.
#[derive(Debug)]
struct Tally {
    /// Records up to this seq were counted by an earlier run.
    counted_up_to: Option<u64>,
    /// Incidents an earlier run left open (uncounted): each is counted once it closes here.
    left_open: Vec<u64>,
    /// The first pass: counts not yet made, with the seq each belongs to.
    held: Option<Vec<(Option<u64>, Count)>>,
}

impl Tally {
    fn new(counted_up_to: Option<u64>, left_open: Vec<u64>) -> Self {
        Self {
            counted_up_to,
            left_open,
            held: Some(Vec::new()),
        }
    }

    fn add(&mut self, metrics: &KmsgMetrics, seq: Option<u64>, count: Count) {
        match &mut self.held {
            Some(held) => held.push((seq, count)),
            None => self.count(metrics, seq, count),
        }
    }

    fn count(&mut self, metrics: &KmsgMetrics, seq: Option<u64>, count: Count) {
        if let Count::Incident { incident_id, .. } = &count
            && let Some(at) = self.left_open.iter().position(|id| id == incident_id)
        {
            // Open when the earlier run stopped: not counted there, so counted here, once.
            self.left_open.swap_remove(at);
        } else if let (Some(seq), Some(done)) = (seq, self.counted_up_to)
            && seq <= done
        {
            return;
        }
        match count {
            Count::Event { class, id } => metrics.count_event(class, &id),
            Count::Incident { kind, .. } => metrics.count_incident(&kind),
            Count::Lost { records } => metrics.count_lost(records),
        }
    }

    /// Ends the first pass, whose newest record is `newest_seq` and after which `open_now` are
    /// open: a saved position beyond it is corrupt (reported, and nothing is taken as counted),
    /// then the held counts are made. An incident left open that is not open again had its
    /// records overwritten while no agent ran: it cannot be read again, and is let go.
    fn settle(&mut self, metrics: &KmsgMetrics, newest_seq: Option<u64>, open_now: &[u64]) {
        let Some(held) = self.held.take() else {
            return;
        };
        if let (Some(done), Some(newest)) = (self.counted_up_to, newest_seq)
            && done > newest
        {
            tracing::warn!(
                "the saved kernel log position ({done}) is beyond the newest record ({newest}) of this boot: it is corrupt and ignored, and rewritten"
            );
            self.counted_up_to = None;
            self.left_open.clear();
        }
        for (seq, count) in held {
            self.count(metrics, seq, count);
        }
        self.left_open.retain(|id| open_now.contains(id));
    }
}

/// Converts analyzer outputs to history items, and tallies what they count.
///
/// Items are keyed by the seq of the last record read when they were made (`last_read_seq`
/// for incidents closed by the clock), so the history stays in seq order and a resume with
/// since_seq misses no incident update.
fn to_items(
    outputs: &mut Vec<Output>,
    classifier: &Classifier,
    metrics: &KmsgMetrics,
    tally: &mut Tally,
    last_read_seq: u64,
    items: &mut Vec<Item>,
) -> u64 {
    let mut lost_now: u64 = 0;
    let mut current_seq = last_read_seq;
    for output in outputs.drain(..) {
        let mut incident_classes = Vec::new();
        let mut context = false;
        let (seq, class, unclassified, message) = match output {
            Output::Event(event) => {
                current_seq = event.seq.unwrap_or(current_seq);
                if let (Some(class), Some(id)) = (event.class, event.id.clone()) {
                    if event.injected {
                        metrics.count_injected(class, &id);
                    }
                    tally.add(metrics, event.seq, Count::Event { class, id });
                }
                let (class, unclassified) = (event.class, event.id.is_none());
                context = unclassified
                    && !event.user_written
                    && super::classify::is_gpu_stack_message(&event.message);
                (
                    current_seq,
                    class,
                    unclassified,
                    StreamMessage::Event(event),
                )
            }
            Output::Incident(incident) => {
                for id in incident.event_counts.keys() {
                    if let Some(class) = classifier.class_of(id)
                        && !incident_classes.contains(&class)
                    {
                        incident_classes.push(class);
                    }
                }
                if incident.closed {
                    let kind = incident.kind.clone();
                    let incident_id = incident.incident_id;
                    tally.add(
                        metrics,
                        incident.last_seq,
                        Count::Incident { kind, incident_id },
                    );
                }
                (current_seq, None, false, StreamMessage::Incident(incident))
            }
            Output::Lost {
                first_seq,
                last_seq,
            } => {
                let lost = RecordsLost::between(first_seq, last_seq);
                tally.add(
                    metrics,
                    Some(last_seq),
                    Count::Lost {
                        records: lost.count,
                    },
                );
                lost_now = lost_now.saturating_add(lost.count);
                (
                    last_seq.saturating_add(1),
                    None,
                    false,
                    StreamMessage::RecordsLost(lost),
                )
            }
        };
        items.push(Item {
            seq,
            class,
            unclassified,
            context,
            incident_classes,
            message: message.into(),
        });
    }
    lost_now
}

/// How often the position is saved while records flow.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the reader sleeps in poll() before it checks for shutdown and quiet incidents.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Drills queued for the reader thread: an operator injects one at a time.
const MAX_QUEUED_DRILLS: usize = 16;

fn read_loop<S: RecordSource>(
    shared: &Shared,
    mut reader: KmsgReader<S>,
    config: &KernelLogConfig,
    injected: &std::sync::mpsc::Receiver<String>,
) {
    let mut analyzer = Analyzer::new(config.classifier.clone());
    let state_file = config.state_dir.as_deref().map(StateFile::in_dir);
    let saved = state_file.as_ref().and_then(|f| match f.load() {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!("ignoring the saved kernel log position: {e}");
            None
        }
    });
    // Records up to this seq were counted by an earlier run in this boot.
    let this_boot = saved
        .as_ref()
        .filter(|s| s.boot_id == shared.boot_id && !s.boot_id.is_empty());
    let counted_up_to = this_boot.map(|s| s.last_counted_seq);
    let left_open = this_boot
        .map(|s| s.open_incidents.clone())
        .unwrap_or_default();
    let mut tally = Tally::new(counted_up_to, left_open);
    // The open incidents as last saved: a change is saved at once (an incident that closed and
    // was counted must not be counted again after a crash).
    let mut saved_open: Vec<u64> = Vec::new();
    let mut first_record = true;
    let mut outputs = Vec::new();
    let mut last_save: Option<Instant> = None;
    let mut dirty = false;
    loop {
        if shared.cancel.is_cancelled() {
            break;
        }
        let outcome = match reader.next_outcome() {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!("reading the kernel log failed: {e}");
                shared
                    .down
                    .send_replace(Some(format!("reading the kernel log failed: {e}")));
                break;
            }
        };
        match outcome {
            ReadOutcome::Record(record) => {
                if first_record {
                    first_record = false;
                    if let Some(done) = counted_up_to
                        && record.seq > done.saturating_add(1)
                    {
                        // Overwritten while no agent ran.
                        analyzer.lost(done + 1, record.seq - 1, &mut outputs);
                    }
                }
                analyzer.push(Entry::from_record(record, shared.boot_time), &mut outputs);
                dirty = true;
            }
            ReadOutcome::Lost {
                first_seq,
                last_seq,
            } => analyzer.lost(first_seq, last_seq, &mut outputs),
            ReadOutcome::Malformed { reason } => {
                tracing::warn!("kernel log record skipped: {reason}");
            }
            ReadOutcome::Restarted { after_seq, seq } => {
                tracing::warn!(
                    "kernel log sequence numbers started over ({after_seq} then {seq}): records of another boot or a corrupt input; nothing counted as lost"
                );
            }
            ReadOutcome::Drained => {
                // Drills join between reads, stamped with this machine's clock (the live
                // log's); they are never saved as a position.
                while let Ok(message) = injected.try_recv() {
                    tracing::info!("drill: injecting `{message}`");
                    analyzer.push(
                        Entry::injected(
                            message,
                            nodectl_model::clock::monotonic_usec_now(),
                            shared.boot_time,
                        ),
                        &mut outputs,
                    );
                }
                if let Some(now) = reader.source_mut().now_usec() {
                    analyzer.tick(now, &mut outputs);
                }
                flush(
                    shared,
                    &config.classifier,
                    &mut outputs,
                    &mut tally,
                    reader.last_seq(),
                );
                let open_now = analyzer.open_incident_ids();
                tally.settle(&shared.metrics, reader.last_seq(), &open_now);
                shared.caught_up.send_replace(true);
                if (dirty && last_save.is_none_or(|t| t.elapsed() >= SAVE_INTERVAL))
                    || open_now != saved_open
                {
                    save_position(
                        state_file.as_ref(),
                        shared,
                        reader.last_seq(),
                        &open_now,
                        &tally,
                    );
                    last_save = Some(Instant::now());
                    dirty = false;
                    saved_open = open_now;
                }
                match reader.wait(POLL_INTERVAL) {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!("waiting for kernel log records failed: {e}");
                        shared.down.send_replace(Some(format!(
                            "waiting for kernel log records failed: {e}"
                        )));
                        break;
                    }
                }
                continue;
            }
        }
        // Publish as soon as a record is read: a subscriber sees it without waiting for a drain.
        flush(
            shared,
            &config.classifier,
            &mut outputs,
            &mut tally,
            reader.last_seq(),
        );
    }
    save_position(
        state_file.as_ref(),
        shared,
        reader.last_seq(),
        &analyzer.open_incident_ids(),
        &tally,
    );
}

/// Saves how far records were counted and which incidents are open (with those an earlier
/// run left open whose records were not read again yet: still owed a count).
fn save_position(
    file: Option<&StateFile>,
    shared: &Shared,
    last_seq: Option<u64>,
    open: &[u64],
    tally: &Tally,
) {
    let (Some(file), Some(seq)) = (file, last_seq) else {
        return;
    };
    let mut open_incidents = open.to_vec();
    for id in &tally.left_open {
        if !open_incidents.contains(id) {
            open_incidents.push(id.to_owned());
        }
    }
    open_incidents.truncate(crate::limits::MAX_OPEN_INCIDENTS_SAVED);
    let state = CountedUpTo {
        boot_id: shared.boot_id.clone(),
        last_counted_seq: seq,
        open_incidents,
    };
    if let Err(e) = file.save(&state) {
        tracing::warn!("cannot save the kernel log position: {e}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::kmsg::reader::ScriptedSource;

    fn gpu(seq: u64) -> Option<Vec<u8>> {
        Some(
            format!(
                "3,{seq},{},-;amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE\n",
                seq * 100_000_000
            )
            .into_bytes(),
        )
    }

    fn plain(seq: u64) -> Option<Vec<u8>> {
        Some(format!("6,{seq},{seq},-;usb {seq}\n").into_bytes())
    }

    fn config() -> KernelLogConfig {
        KernelLogConfig::new(Arc::new(Classifier::embedded().unwrap()))
    }

    /// Waits (at most 2 s) until `value()` reaches `at_least`: the reader thread publishes a
    /// record to the history before it counts it, so a test that saw the history must wait
    /// for the count too.
    fn settle(value: impl Fn() -> u64, at_least: u64) -> u64 {
        for _ in 0..200 {
            if value() >= at_least {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        value()
    }

    fn wait_for(log: &KernelLog, filter: &StreamFilter, n: usize) -> Vec<Arc<Item>> {
        for _ in 0..200 {
            let sub = log.subscribe(filter).unwrap();
            if sub.feed.backlog.len() >= n {
                return sub.feed.backlog;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("history never reached {n} items");
    }

    #[test]
    fn overrun_and_resume_give_exact_counts_and_no_duplicates() {
        let source = ScriptedSource::new([gpu(1), plain(2), None, plain(9), gpu(10)]);
        let metrics = KmsgMetrics::default();
        let cancel = CancellationToken::new();
        let log = KernelLog::start_with_source(
            source,
            "b".into(),
            None,
            config(),
            metrics.clone(),
            cancel.clone(),
        );
        let all = StreamFilter {
            include_unclassified: true,
            full_log: true,
            ..Default::default()
        };
        let items = wait_for(&log, &all, 6);
        let lost: Vec<&pb::RecordsLost> = items
            .iter()
            .filter_map(|i| match &i.message.message {
                Some(pb::kernel_stream_message::Message::RecordsLost(l)) => Some(l),
                _ => None,
            })
            .collect();
        assert_eq!(lost.len(), 1);
        assert_eq!(
            (lost[0].count, lost[0].first_lost_seq, lost[0].last_lost_seq),
            (6, 3, 8)
        );
        assert_eq!(metrics.records_lost(), 6);
        // Resume after seq 2: the lost notice, 9 and 10 follow, and nothing from before.
        let resumed = log
            .subscribe(&StreamFilter {
                since_seq: 2,
                ..all.clone()
            })
            .unwrap();
        assert!(resumed.feed.backlog.iter().all(|i| i.seq > 2));
        let seqs: Vec<u64> = resumed
            .feed
            .backlog
            .iter()
            .filter_map(|i| match &i.message.message {
                Some(pb::kernel_stream_message::Message::Event(e)) => Some(e.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, [9, 10]);
        cancel.cancel();
    }

    #[test]
    fn an_incident_open_at_shutdown_is_counted_once_after_the_restart() {
        // A 3 s gap: the first run stops well within it, the second sees the incident close.
        let classifier =
            Arc::new(Classifier::from_toml("incident_gap_seconds = 3\n", "test rules").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = KernelLogConfig::new(classifier.clone());
        cfg.state_dir = Some(dir.path().to_owned());
        let state = StateFile::in_dir(dir.path());
        let now = nodectl_model::clock::monotonic_usec_now().unwrap();
        let text = "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE";
        let ring = || ScriptedSource::new([Some(format!("3,7,{now},-;{text}\n").into_bytes())]);
        let kind = crate::kmsg::analyze::analyze_text(
            &format!("3,7,{now},-;{text}"),
            classifier.clone(),
            2025,
            |_| false,
        )
        .incidents[0]
            .kind
            .to_string();
        let run = |metrics: &KmsgMetrics| {
            let cancel = CancellationToken::new();
            let log = KernelLog::start_with_source(
                ring(),
                "b".into(),
                None,
                cfg.clone(),
                metrics.clone(),
                cancel.clone(),
            );
            (log, cancel)
        };
        let wait = |done: &dyn Fn() -> bool| {
            for _ in 0..800 {
                if done() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        };

        // First run: the incident opens and the agent stops before it goes quiet.
        let first = KmsgMetrics::default();
        let (log, cancel) = run(&first);
        assert!(wait(&|| state
            .load()
            .ok()
            .flatten()
            .is_some_and(|s| s.open_incidents == [7])));
        cancel.cancel();
        log.join();
        assert_eq!(first.incidents(&kind), 0);
        assert_eq!(state.load().unwrap().unwrap().open_incidents, [7]);

        // After the restart the ring still holds its record: it closes and is counted, once.
        let second = KmsgMetrics::default();
        let (log, cancel) = run(&second);
        assert!(wait(&|| second.incidents(&kind) == 1));
        assert!(wait(&|| state
            .load()
            .ok()
            .flatten()
            .is_some_and(|s| s.open_incidents.is_empty())));
        cancel.cancel();
        log.join();
        assert_eq!(second.incidents(&kind), 1);
        // Its event was counted by the first run.
        assert_eq!(second.events(Class::Hang, "mes_timeout"), 0);

        // Another restart reads it again, and counts nothing.
        let third = KmsgMetrics::default();
        let (log, cancel) = run(&third);
        std::thread::sleep(Duration::from_millis(500));
        cancel.cancel();
        log.join();
        assert_eq!(third.incidents(&kind), 0);
    }

    #[test]
    fn records_counted_before_a_restart_are_not_counted_again() {
        use crate::kmsg::classify::Class;
        let dir = tempfile::tempdir().unwrap();
        StateFile::in_dir(dir.path())
            .save(&CountedUpTo {
                boot_id: "b".into(),
                last_counted_seq: 5,
                open_incidents: Vec::new(),
            })
            .unwrap();
        let mut cfg = config();
        cfg.state_dir = Some(dir.path().to_owned());
        let metrics = KmsgMetrics::default();
        let cancel = CancellationToken::new();
        let source = ScriptedSource::new((3..=8).map(gpu));
        let log = KernelLog::start_with_source(
            source,
            "b".into(),
            None,
            cfg.clone(),
            metrics.clone(),
            cancel.clone(),
        );
        // The stream still holds every record; the counter only the new ones.
        let items = wait_for(&log, &StreamFilter::default(), 6);
        assert!(items.len() >= 6);
        assert_eq!(settle(|| metrics.events(Class::Hang, "mes_timeout"), 3), 3);
        cancel.cancel();
        log.join();
        let saved = StateFile::in_dir(dir.path()).load().unwrap().unwrap();
        assert_eq!(saved.last_counted_seq, 8);

        // Next run: the ring now starts at 12, so 9..=11 were lost while no agent ran.
        let metrics = KmsgMetrics::default();
        let cancel = CancellationToken::new();
        let source = ScriptedSource::new([gpu(12)]);
        let log = KernelLog::start_with_source(
            source,
            "b".into(),
            None,
            cfg,
            metrics.clone(),
            cancel.clone(),
        );
        wait_for(&log, &StreamFilter::default(), 2);
        assert_eq!(settle(|| metrics.records_lost(), 3), 3);
        assert_eq!(settle(|| metrics.events(Class::Hang, "mes_timeout"), 1), 1);
        cancel.cancel();
        log.join();
    }

    #[test]
    fn an_unreadable_device_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let log = KernelLog::start(
            &HostRoot::new(dir.path()),
            config(),
            KmsgMetrics::default(),
            CancellationToken::new(),
        );
        let e = log.subscribe(&StreamFilter::default()).unwrap_err();
        assert!(e.to_string().contains("/dev/kmsg"), "{e}");
    }
}
