//! Runs the kernel log pipeline in the agent: a reader thread that classifies records and publishes them to a feed for stream subscribers.
//!
//! The reader thread never waits for a subscriber (see [`crate::feed`]); it saves its position
//! so that a restarted agent counts no record twice, and it closes quiet incidents on the
//! source's clock.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodectl_model::Source;
use nodectl_model::kernel_log::{RecordsLost, SourceStatus, StreamHeader, StreamMessage};
use nodectl_model::kfd_smi::SmiRecord;
use nodectl_proto::nodectl::v1 as pb;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::analyze::{Analyzer, Entry, Output, SmiEntry};
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
    /// Its place in the pipeline's output, counting up from 1 whatever the source: the order
    /// subscribers get messages in.
    pub position: u64,
    /// An event's source and cursor within it; `None` for notices and incident updates.
    pub source: Option<Source>,
    pub cursor: Option<u64>,
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
        if let Some(source) = self.source {
            if !filter.wants_source(source) {
                return false;
            }
            if let (Some(cursor), Some(since)) = (self.cursor, filter.since.get(&source))
                && cursor <= *since
            {
                return false;
            }
        }
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
        self.position
    }

    /// Classified events and every notice outlive the unclassified records around them.
    fn important(&self) -> bool {
        !self.unclassified
    }
}

/// What a subscriber asked for.
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    /// Events of a source with a cursor up to this were had already.
    pub since: BTreeMap<Source, u64>,
    /// The sources wanted; empty: all of them.
    pub sources: Vec<Source>,
    pub follow: bool,
    pub classes: Vec<Class>,
    pub include_unclassified: bool,
    /// The agent serves the whole log (`--full-kernel-log`); else unclassified records only
    /// when they are GPU-stack context.
    pub full_log: bool,
}

impl StreamFilter {
    pub fn wants_source(&self, source: Source) -> bool {
        self.sources.is_empty() || self.sources.contains(&source)
    }
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
    /// Drills for the reader thread (`None`: no reader runs).
    injections: Mutex<Option<std::sync::mpsc::SyncSender<Drill>>>,
    /// KFD SMI records for the reader thread (`None`: no reader runs).
    smi_records: Mutex<Option<std::sync::mpsc::SyncSender<Box<SmiInput>>>>,
    /// Whether the KFD SMI channel is read, and why not.
    smi_status: watch::Sender<SmiStatus>,
}

impl Shared {
    /// The kernel log reader is down, and why: readiness, the stream header and
    /// `nodectl_event_source_up{source="kmsg"}` say so.
    fn reader_down(&self, reason: String) {
        // The gauge first: whoever sees readiness drop finds the exporter saying so too.
        self.metrics.set_source_up(Source::Kmsg.as_str(), false);
        self.down.send_replace(Some(reason));
    }
}

/// Why no KFD SMI record comes from a pipeline no channel reader feeds.
pub const SMI_NOT_READ_HERE: &str =
    "no KFD channel is read here: only an agent on the node itself reads it, live";

/// Whether the KFD SMI channel is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmiStatus {
    /// No channel reader was started (a report's pipeline, the client's own agent).
    NotStarted,
    Reading,
    /// A reader was started and cannot read the channel, for this reason.
    Unavailable(String),
}

/// A drill for the reader thread: a rule's example, as its source would give it.
#[derive(Debug)]
enum Drill {
    KernelMessage(String),
    SmiRecord(String),
}

/// A KFD SMI record as a channel reader hands it to the pipeline.
#[derive(Debug)]
pub struct SmiInput {
    pub record: SmiRecord,
    /// When it was read: CLOCK_MONOTONIC µs, the kernel log's clock.
    pub monotonic_usec: Option<u64>,
    /// PCI address of the GPU whose channel gave it.
    pub device: Option<String>,
    /// What the reader found out about the record's pid: its container and pod.
    pub placement: BTreeMap<String, String>,
}

/// Where a channel reader hands its records to the pipeline; cheap to clone.
#[derive(Debug, Clone)]
pub struct SmiSink {
    shared: Arc<Shared>,
    tx: std::sync::mpsc::SyncSender<Box<SmiInput>>,
}

impl SmiSink {
    /// Hands a record over without waiting; a record the pipeline has no room for is counted
    /// as dropped (the reader thread is stuck: the records would be stale anyway).
    pub fn send(&self, input: SmiInput) {
        if self.tx.try_send(Box::new(input)).is_err() {
            let before = self
                .shared
                .metrics
                .count_source_dropped(Source::KfdSmi.as_str());
            if before.is_power_of_two() || before == 0 {
                tracing::warn!(
                    "{} KFD SMI records dropped: the kernel event reader is not taking them",
                    before + 1
                );
            }
        }
    }
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
                    log.shared.reader_down(reason);
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
                smi_records: Mutex::new(None),
                smi_status: watch::Sender::new(SmiStatus::NotStarted),
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
        *lock(&log.shared.injections) = Some(injections);
        let (smi_records, smi_received) = std::sync::mpsc::sync_channel(MAX_QUEUED_SMI_RECORDS);
        *lock(&log.shared.smi_records) = Some(smi_records);
        let shared = log.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("kmsg-reader".to_owned())
            .spawn(move || {
                let inputs = Inputs {
                    drills: injected,
                    smi_records: smi_received,
                };
                shared.metrics.set_source_up(Source::Kmsg.as_str(), true);
                read_loop(&shared, KmsgReader::new(source), &config, &inputs);
                if !shared.cancel.is_cancelled() {
                    shared.metrics.set_source_up(Source::Kmsg.as_str(), false);
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
                    .reader_down(format!("cannot start the kernel log reader: {e}"));
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

    /// Where a KFD SMI channel reader hands its records; `None` when no reader thread runs.
    pub fn smi_sink(&self) -> Option<SmiSink> {
        lock(&self.shared.smi_records).clone().map(|tx| SmiSink {
            shared: Arc::clone(&self.shared),
            tx,
        })
    }

    /// Says whether the KFD SMI channel is read.
    pub fn set_smi_status(&self, status: SmiStatus) {
        match &status {
            SmiStatus::Reading => self
                .shared
                .metrics
                .set_source_up(Source::KfdSmi.as_str(), true),
            SmiStatus::Unavailable(_) => {
                self.shared
                    .metrics
                    .set_source_up(Source::KfdSmi.as_str(), false);
            }
            SmiStatus::NotStarted => {}
        }
        self.shared.smi_status.send_if_modified(|now| {
            let changed = *now != status;
            *now = status;
            changed
        });
    }

    /// Whether the KFD SMI channel is read, as it changes.
    pub fn smi_status(&self) -> watch::Receiver<SmiStatus> {
        self.shared.smi_status.subscribe()
    }

    /// Why the KFD SMI channel is not read, or `None` when it is.
    pub fn smi_unavailable(&self) -> Option<String> {
        match &*self.shared.smi_status.borrow() {
            SmiStatus::Reading => None,
            SmiStatus::NotStarted => Some(SMI_NOT_READ_HERE.to_owned()),
            SmiStatus::Unavailable(reason) => Some(reason.clone()),
        }
    }

    /// Feeds the example of rule `rule_id` (a kernel message, or a KFD SMI record) into the
    /// pipeline as an injected event (a drill): it is classified, opens or joins a drill
    /// incident, is counted and streamed like a kernel event, marked `injected`. Returns the
    /// example.
    pub fn inject(&self, rule_id: &str) -> Result<String, InjectError> {
        let classifier = &self.shared.classifier;
        if classifier.class_of(rule_id).is_none() {
            return Err(InjectError::UnknownRule(rule_id.to_owned()));
        }
        let drill = match classifier.smi_rule(rule_id) {
            Some(rule) => rule.example.clone().map(Drill::SmiRecord),
            None => classifier
                .example(rule_id)
                .map(|e| Drill::KernelMessage(e.to_owned())),
        }
        .ok_or_else(|| InjectError::NoExample(rule_id.to_owned()))?;
        let example = match &drill {
            Drill::KernelMessage(text) | Drill::SmiRecord(text) => text.clone(),
        };
        let sender = lock(&self.shared.injections).clone();
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
        match sender.try_send(drill) {
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
        // Resume after the newest event the subscriber had, of any source: the messages
        // between (incident updates, notices, events of other sources) it has not had.
        let had = |item: &Item| {
            item.source
                .zip(item.cursor)
                .is_some_and(|(source, cursor)| {
                    filter.since.get(&source).is_some_and(|s| cursor <= *s)
                })
        };
        let (after, oldest) = self.shared.feed.locate(filter.include_unclassified, had);
        // Events are kept by their cursor (sources need not interleave in cursor order: a
        // source the subscriber did not ask for before sends its whole history); the rest by
        // their place after the newest event it had.
        let after = after.unwrap_or(0);
        let mut feed =
            self.shared
                .feed
                .subscribe(0, filter.include_unclassified, filter.follow, |item| {
                    item.wanted(filter) && (item.source.is_some() || item.position > after)
                });
        // The subscriber's place is no longer in the history: the kernel log records between
        // it and the oldest one held are gone for it.
        feed.missed_before_backlog = match (after, filter.since.get(&Source::Kmsg), oldest) {
            (0, Some(&since), Some(oldest)) if since > 0 => oldest
                .cursor
                .filter(|_| oldest.source == Some(Source::Kmsg))
                .filter(|cursor| *cursor > since.saturating_add(1))
                .map_or(0, |cursor| cursor - since - 1),
            _ => 0,
        };
        let cursors_of = |source: Source| {
            feed.backlog
                .iter()
                .filter(move |i| i.source == Some(source))
                .filter_map(|i| i.cursor)
        };
        let sources = Source::ALL
            .into_iter()
            .filter(|s| filter.wants_source(*s))
            .map(|source| SourceStatus {
                source,
                reason: match source {
                    Source::Kmsg => None,
                    Source::KfdSmi => self.smi_unavailable(),
                },
                last_cursor: cursors_of(source).next_back().unwrap_or(0),
            })
            .collect();
        let header = StreamHeader {
            boot_id: self.shared.boot_id.clone(),
            boot_time: self.shared.boot_time,
            first_seq: cursors_of(Source::Kmsg).next().unwrap_or(0),
            last_seq: cursors_of(Source::Kmsg).next_back().unwrap_or(0),
            records_lost_total: self.shared.lost_total.load(Ordering::Relaxed),
            sources,
        };
        Ok(KernelSubscription {
            header: header.into(),
            feed,
        })
    }
}

/// What one output adds to the metrics.
#[derive(Debug)]
enum Count {
    Event { class: Class, id: Arc<str> },
    Incident { kind: Arc<str> },
    Lost { records: u64 },
}

/// Counts outputs into the metrics, except kernel log records an earlier run of this boot
/// counted already.
///
/// The saved position can only be checked against the log once the records there were at
/// start are read (a position beyond the newest of them is corrupt), so during that first pass
/// counts are held back and settled at its end.
#[derive(Debug)]
struct Tally {
    /// Kernel log records up to this seq were counted by an earlier run.
    counted_up_to: Option<u64>,
    /// The first pass: counts not yet made, with the kernel log seq each belongs to.
    held: Option<Vec<(Option<u64>, Count)>>,
}

impl Tally {
    fn new(counted_up_to: Option<u64>) -> Self {
        Self {
            counted_up_to,
            held: Some(Vec::new()),
        }
    }

    fn add(&mut self, metrics: &KmsgMetrics, seq: Option<u64>, count: Count) {
        match &mut self.held {
            Some(held) => held.push((seq, count)),
            None => self.count(metrics, seq, count),
        }
    }

    fn count(&self, metrics: &KmsgMetrics, seq: Option<u64>, count: Count) {
        if let (Some(seq), Some(done)) = (seq, self.counted_up_to)
            && seq <= done
        {
            return;
        }
        match count {
            Count::Event { class, id } => metrics.count_event(class, &id),
            Count::Incident { kind } => metrics.count_incident(&kind),
            Count::Lost { records } => metrics.count_lost(records),
        }
    }

    /// Whether the saved position lies beyond `newest_seq`, the newest record of the first
    /// pass: then it is corrupt.
    fn corrupt(&self, newest_seq: Option<u64>) -> bool {
        matches!((self.counted_up_to, newest_seq), (Some(done), Some(newest)) if done > newest)
    }

    /// Ends the first pass: a corrupt saved position is reported and nothing is taken as
    /// counted, then the held counts are made.
    fn settle(&mut self, metrics: &KmsgMetrics, newest_seq: Option<u64>) {
        let Some(held) = self.held.take() else {
            return;
        };
        if self.corrupt(newest_seq) {
            tracing::warn!(
                "the saved kernel log position ({}) is beyond the newest record ({}) of this boot: it is corrupt and ignored, and rewritten",
                self.counted_up_to.unwrap_or(0),
                newest_seq.unwrap_or(0)
            );
            self.counted_up_to = None;
        }
        for (seq, count) in held {
            self.count(metrics, seq, count);
        }
    }
}

/// The records an earlier run of this boot counted, read again: their events are history,
/// their incidents are history too (closed, never counted twice), and the incidents that were
/// open then are the restored ones of the live tracker.
#[derive(Debug)]
struct Replay {
    analyzer: Analyzer,
    /// Records up to this seq are replayed.
    up_to_seq: u64,
}

/// The reader thread's state between two reads.
struct Reading<'a> {
    shared: &'a Shared,
    config: &'a KernelLogConfig,
    live: Analyzer,
    replay: Option<Replay>,
    tally: Tally,
    outputs: Vec<Output>,
    /// Position of the last item published.
    position: u64,
    /// Number of the last KFD SMI record read this boot.
    smi_cursor: u64,
}

impl Reading<'_> {
    /// Turns outputs into items (counting them unless `replayed`) and publishes them.
    fn flush(&mut self, replayed: bool) {
        if self.outputs.is_empty() {
            return;
        }
        let mut items = Vec::with_capacity(self.outputs.len());
        let mut lost_now: u64 = 0;
        let metrics = &self.shared.metrics;
        for output in self.outputs.drain(..) {
            let mut incident_classes = Vec::new();
            let mut context = false;
            let (source, cursor, class, unclassified, message) = match output {
                Output::Event(event) => {
                    if let (Some(class), Some(id)) = (event.class, event.id.clone()) {
                        if event.injected {
                            metrics.count_injected(class, &id);
                        }
                        self.tally
                            .add(metrics, event.seq, Count::Event { class, id });
                    }
                    let (class, unclassified) = (event.class, event.id.is_none());
                    // The KFD channel is the GPU stack's own, whatever its record says.
                    context = unclassified
                        && !event.user_written
                        && (event.source != Source::Kmsg
                            || super::classify::is_gpu_stack_message(&event.message));
                    (
                        Some(event.source),
                        event.cursor,
                        class,
                        unclassified,
                        StreamMessage::Event(event),
                    )
                }
                Output::Incident(incident) => {
                    // A replayed incident still open is one of the restored ones: the live
                    // tracker speaks for it.
                    if replayed && !incident.closed {
                        continue;
                    }
                    for id in incident.event_counts.keys() {
                        if let Some(class) = self.config.classifier.class_of(id)
                            && !incident_classes.contains(&class)
                        {
                            incident_classes.push(class);
                        }
                    }
                    if incident.closed && !replayed {
                        let kind = incident.kind.clone();
                        self.tally.add(metrics, None, Count::Incident { kind });
                    }
                    (None, None, None, false, StreamMessage::Incident(incident))
                }
                Output::Lost {
                    first_seq,
                    last_seq,
                } => {
                    let lost = RecordsLost::between(first_seq, last_seq);
                    self.tally.add(
                        metrics,
                        Some(last_seq),
                        Count::Lost {
                            records: lost.count,
                        },
                    );
                    lost_now = lost_now.saturating_add(lost.count);
                    (None, None, None, false, StreamMessage::RecordsLost(lost))
                }
            };
            self.position += 1;
            items.push(Item {
                position: self.position,
                source,
                cursor,
                class,
                unclassified,
                context,
                incident_classes,
                message: message.into(),
            });
        }
        self.shared
            .lost_total
            .fetch_add(lost_now, Ordering::Relaxed);
        if !items.is_empty() {
            self.shared.feed.publish(items);
        }
    }

    /// One kernel log record: replayed while an earlier run had counted it, else live.
    fn push_record(&mut self, entry: Entry) {
        let replaying = self
            .replay
            .as_ref()
            .is_some_and(|r| entry.seq.is_some_and(|seq| seq <= r.up_to_seq));
        if replaying && let Some(replay) = &mut self.replay {
            replay.analyzer.push(entry, &mut self.outputs);
            self.flush(true);
            return;
        }
        self.end_replay(false);
        self.live.push(entry, &mut self.outputs);
        self.flush(false);
    }

    /// The replay is over: incidents it left open that the live tracker does not hold (they
    /// closed in the earlier run by the clock, not by a later record) are history, closed.
    /// With a corrupt saved position the replay's open incidents are the true ones, and the
    /// live tracker takes them up instead of those the file held.
    fn end_replay(&mut self, corrupt: bool) {
        let Some(mut replay) = self.replay.take() else {
            return;
        };
        let open = replay.analyzer.incidents_mut().take_open();
        if corrupt {
            let live = self.live.incidents_mut();
            let next_id = live.next_id();
            live.take_open();
            live.resume(next_id, open);
            return;
        }
        let restored: Vec<(Option<u64>, Option<u64>)> = self
            .live
            .incidents()
            .open_incidents()
            .iter()
            .map(|o| (o.incident.first_seq, o.incident.first_monotonic_usec))
            .collect();
        for o in open {
            let mut incident = o.incident;
            if restored.contains(&(incident.first_seq, incident.first_monotonic_usec)) {
                continue;
            }
            incident.closed = true;
            self.outputs.push(Output::Incident(incident));
        }
        self.flush(true);
    }

    /// The KFD SMI records the channel readers handed over, numbered on from the last.
    fn take_smi_records(&mut self, inputs: &Inputs) {
        let mut any = false;
        while let Ok(input) = inputs.smi_records.try_recv() {
            self.smi_cursor += 1;
            let entry = SmiEntry {
                record: input.record,
                cursor: Some(self.smi_cursor),
                line: None,
                monotonic_usec: input.monotonic_usec,
                time: self.time_of(input.monotonic_usec),
                device: input.device,
                placement: input.placement,
                injected: false,
            };
            self.live.push_smi(entry, &mut self.outputs);
            any = true;
        }
        if any {
            self.flush(false);
        }
    }

    /// Drills join between reads, stamped with this machine's clock (the live log's); they
    /// are never saved as a position.
    fn take_drills(&mut self, inputs: &Inputs) {
        while let Ok(drill) = inputs.drills.try_recv() {
            let now = nodectl_model::clock::monotonic_usec_now();
            match drill {
                Drill::KernelMessage(message) => {
                    tracing::info!("drill: injecting `{message}`");
                    self.live.push(
                        Entry::injected(message, now, self.shared.boot_time),
                        &mut self.outputs,
                    );
                }
                Drill::SmiRecord(text) => {
                    tracing::info!("drill: injecting the KFD SMI record `{text}`");
                    let entry = SmiEntry {
                        record: nodectl_model::kfd_smi::parse_record(text.as_bytes()),
                        monotonic_usec: now,
                        time: self.time_of(now),
                        injected: true,
                        ..SmiEntry::default()
                    };
                    self.live.push_smi(entry, &mut self.outputs);
                }
            }
        }
        self.flush(false);
    }

    fn time_of(&self, monotonic_usec: Option<u64>) -> Option<jiff::Timestamp> {
        self.shared
            .boot_time
            .zip(monotonic_usec)
            .and_then(|(boot, usec)| nodectl_model::clock::at_monotonic(boot, usec))
    }

    /// Saves how far each source was counted, the next incident id and the open incidents.
    fn save(&self, file: Option<&StateFile>, last_seq: Option<u64>) {
        let Some(file) = file else {
            return;
        };
        // While replaying, the records read so far were counted already: the position saved
        // is never behind the one loaded.
        let last_counted_seq = last_seq.max(self.tally.counted_up_to);
        let tracker = self.live.incidents();
        if last_counted_seq.is_none() && self.smi_cursor == 0 && tracker.open_incidents().is_empty()
        {
            return;
        }
        let state = CountedUpTo {
            boot_id: self.shared.boot_id.clone(),
            last_counted_seq: last_counted_seq.unwrap_or(0),
            last_smi_cursor: self.smi_cursor,
            next_incident_id: tracker.next_id(),
            open: tracker
                .open_incidents()
                .iter()
                .filter(|o| !o.incident.drill)
                .take(crate::limits::MAX_OPEN_INCIDENTS_SAVED)
                .cloned()
                .collect(),
        };
        if let Err(e) = file.save(&state) {
            tracing::warn!("cannot save the kernel event position: {e}");
        }
    }
}

/// How often the position is saved while records flow.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the reader sleeps in poll() before it checks for shutdown, quiet incidents and
/// KFD SMI records: the most an SMI record waits to be published.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Drills queued for the reader thread: an operator injects one at a time.
const MAX_QUEUED_DRILLS: usize = 16;

/// KFD SMI records queued for the reader thread: a GPU's channel holds at most 8 KiB (some
/// 400 records) in the kernel, so a node's two GPUs' worth is room enough for a burst. The
/// channel allocates and writes every slot when it is made, so a slot holds a box: 1024 records
/// in place were 344 KiB resident on every node, KFD channel or not.
const MAX_QUEUED_SMI_RECORDS: usize = 1024;

/// What the reader thread takes besides kernel log records.
struct Inputs {
    drills: std::sync::mpsc::Receiver<Drill>,
    smi_records: std::sync::mpsc::Receiver<Box<SmiInput>>,
}

/// A mutex's value; a panic while it was held leaves it usable (it holds a plain value).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_loop<S: RecordSource>(
    shared: &Shared,
    mut reader: KmsgReader<S>,
    config: &KernelLogConfig,
    inputs: &Inputs,
) {
    let state_file = config.state_dir.as_deref().map(StateFile::in_dir);
    let saved = state_file.as_ref().and_then(|f| match f.load() {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!("ignoring the saved kernel event position: {e}");
            None
        }
    });
    // What an earlier run in this boot counted, and the incidents it had open.
    let this_boot = saved.filter(|s| s.boot_id == shared.boot_id && !s.boot_id.is_empty());
    let counted_up_to = this_boot.as_ref().map(|s| s.last_counted_seq);
    let mut live = Analyzer::new(config.classifier.clone());
    let mut replay = None;
    let mut smi_cursor = 0;
    if let Some(saved) = this_boot {
        let mut history = Analyzer::new(config.classifier.clone());
        // One run of ids for both: a replayed incident never takes a live one's id.
        live.incidents_mut()
            .resume(saved.next_incident_id, saved.open);
        history.incidents_mut().share_ids(live.incidents());
        replay = Some(Replay {
            analyzer: history,
            up_to_seq: saved.last_counted_seq,
        });
        smi_cursor = saved.last_smi_cursor;
    }
    let mut reading = Reading {
        shared,
        config,
        live,
        replay,
        tally: Tally::new(counted_up_to),
        outputs: Vec::new(),
        position: 0,
        smi_cursor,
    };
    // The open incidents as last saved: a change is saved at once (an incident that closed and
    // was counted must not be counted again after a crash).
    let mut saved_open: Vec<u64> = reading.live.open_incident_ids();
    let mut first_record = true;
    // KFD SMI records wait until the records there were at start are read: they are of now,
    // and the incidents of the log's past must not take them in.
    let mut first_pass_done = false;
    let mut last_save: Option<Instant> = None;
    let mut dirty = false;
    loop {
        if shared.cancel.is_cancelled() {
            break;
        }
        if first_pass_done {
            reading.take_smi_records(inputs);
        }
        let outcome = match reader.next_outcome() {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!("reading the kernel log failed: {e}");
                shared.reader_down(format!("reading the kernel log failed: {e}"));
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
                        reading.end_replay(false);
                        reading
                            .live
                            .lost(done + 1, record.seq - 1, &mut reading.outputs);
                    }
                }
                reading.push_record(Entry::from_record(record, shared.boot_time));
                dirty = true;
            }
            ReadOutcome::Lost {
                first_seq,
                last_seq,
            } => {
                reading.live.lost(first_seq, last_seq, &mut reading.outputs);
                reading.flush(false);
            }
            ReadOutcome::Malformed { reason } => {
                tracing::warn!("kernel log record skipped: {reason}");
            }
            ReadOutcome::Restarted { after_seq, seq } => {
                tracing::warn!(
                    "kernel log sequence numbers started over ({after_seq} then {seq}): records of another boot or a corrupt input; nothing counted as lost"
                );
            }
            ReadOutcome::Drained => {
                let corrupt = reading.tally.corrupt(reader.last_seq());
                reading.end_replay(corrupt);
                first_pass_done = true;
                reading.take_smi_records(inputs);
                reading.take_drills(inputs);
                if let Some(now) = reader.source_mut().now_usec() {
                    reading.live.tick(now, &mut reading.outputs);
                    reading.flush(false);
                }
                reading.tally.settle(&shared.metrics, reader.last_seq());
                shared.caught_up.send_replace(true);
                let open_now = reading.live.open_incident_ids();
                if (dirty && last_save.is_none_or(|t| t.elapsed() >= SAVE_INTERVAL))
                    || open_now != saved_open
                {
                    reading.save(state_file.as_ref(), reader.last_seq());
                    last_save = Some(Instant::now());
                    dirty = false;
                    saved_open = open_now;
                }
                if let Err(e) = reader.wait(POLL_INTERVAL) {
                    tracing::error!("waiting for kernel log records failed: {e}");
                    shared.reader_down(format!("waiting for kernel log records failed: {e}"));
                    break;
                }
            }
        }
    }
    reading.take_smi_records(inputs);
    reading.save(state_file.as_ref(), reader.last_seq());
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

    /// A pipeline over `ring` with `cfg` (a state directory: one run of an agent), counting
    /// into `metrics`.
    fn run_over(
        ring: ScriptedSource,
        cfg: &KernelLogConfig,
        metrics: &KmsgMetrics,
    ) -> (KernelLog, CancellationToken) {
        let cancel = CancellationToken::new();
        let log = KernelLog::start_with_source(
            ring,
            "b".into(),
            None,
            cfg.clone(),
            metrics.clone(),
            cancel.clone(),
        );
        (log, cancel)
    }

    /// Waits (at most 15 s: an incident closes only after its gap) until `done`.
    fn wait(done: &dyn Fn() -> bool) -> bool {
        for _ in 0..1500 {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn open_ids(state: &CountedUpTo) -> Vec<u64> {
        state.open.iter().map(|o| o.incident.incident_id).collect()
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
                since: [(Source::Kmsg, 2)].into(),
                ..all.clone()
            })
            .unwrap();
        assert!(
            resumed
                .feed
                .backlog
                .iter()
                .all(|i| i.cursor.is_none_or(|c| c > 2))
        );
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
        let run = |metrics: &KmsgMetrics| run_over(ring(), &cfg, metrics);

        // First run: the incident opens and the agent stops before it goes quiet.
        let first = KmsgMetrics::default();
        let (log, cancel) = run(&first);
        assert!(wait(&|| state
            .load()
            .ok()
            .flatten()
            .is_some_and(|s| open_ids(&s) == [1])));
        cancel.cancel();
        log.join();
        assert_eq!(first.incidents(&kind), 0);
        assert_eq!(open_ids(&state.load().unwrap().unwrap()), [1]);

        // After the restart the ring still holds its record: it closes and is counted, once.
        let second = KmsgMetrics::default();
        let (log, cancel) = run(&second);
        assert!(wait(&|| second.incidents(&kind) == 1));
        assert!(wait(&|| state
            .load()
            .ok()
            .flatten()
            .is_some_and(|s| s.open.is_empty())));
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
                last_smi_cursor: 0,
                next_incident_id: 0,
                open: Vec::new(),
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

    /// The incident updates of a history, by id.
    fn incidents_of(items: &[Arc<Item>]) -> Vec<pb::IncidentUpdate> {
        items
            .iter()
            .filter_map(|i| match &i.message.message {
                Some(pb::kernel_stream_message::Message::Incident(u)) => Some(u.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_reset_in_the_kernel_log_and_the_kfd_channel_is_one_incident_across_a_restart() {
        // The kernel log's MES timeout, then the agent restarts, then the KFD channel's
        // pre- and post-reset records of the same reset (saved records of the fixture).
        let classifier =
            Arc::new(Classifier::from_toml("incident_gap_seconds = 5\n", "test rules").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = KernelLogConfig::new(classifier);
        cfg.state_dir = Some(dir.path().to_owned());
        let state = StateFile::in_dir(dir.path());
        let now = nodectl_model::clock::monotonic_usec_now().unwrap();
        let ring = || {
            ScriptedSource::new((1..=6).map(plain).chain([Some(
                format!(
                    "3,7,{now},-;amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE\n"
                )
                .into_bytes(),
            )]))
        };
        let run = |metrics: &KmsgMetrics| run_over(ring(), &cfg, metrics);
        let first = KmsgMetrics::default();
        let (log, cancel) = run(&first);
        assert!(wait(&|| state
            .load()
            .ok()
            .flatten()
            .is_some_and(|s| open_ids(&s) == [1])));
        cancel.cancel();
        log.join();

        let second = KmsgMetrics::default();
        let (log, cancel) = run(&second);
        let sink = log.smi_sink().unwrap();
        let saved = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/kfd-smi/mes-hang-reset.records"
        ))
        .unwrap();
        for line in saved.lines() {
            sink.send(SmiInput {
                record: nodectl_model::kfd_smi::parse_record(line.as_bytes()),
                monotonic_usec: nodectl_model::clock::monotonic_usec_now(),
                device: Some("0000:c1:00.0".into()),
                placement: BTreeMap::new(),
            });
        }
        assert!(wait(&|| second.incidents("mes_hang_reset") == 1));
        let history = wait_for(&log, &StreamFilter::default(), 1);
        let updates = incidents_of(&history);
        let last = updates.last().unwrap();
        assert!(updates.iter().all(|u| u.incident_id == 1), "{updates:?}");
        assert!(last.closed);
        assert_eq!(last.kind, "mes_hang_reset");
        assert_eq!(last.sources, ["kmsg", "kfd_smi"]);
        assert_eq!(last.recovered, Some(true));
        assert_eq!(
            last.event_counts,
            BTreeMap::from([
                ("kfd_smi_gpu_post_reset".to_owned(), 1),
                ("kfd_smi_mes_hang_reset".to_owned(), 1),
                ("mes_timeout".to_owned(), 1),
            ])
        );
        // The kernel log's record was counted before the restart, the channel's after it.
        assert_eq!(second.events(Class::Hang, "mes_timeout"), 0);
        assert_eq!(second.events(Class::Hang, "kfd_smi_mes_hang_reset"), 1);
        assert_eq!(second.events(Class::Reset, "kfd_smi_gpu_post_reset"), 1);
        // The channel's records are numbered, and a client resumes after the first of them.
        let smi_cursors: Vec<u64> = history
            .iter()
            .filter(|i| i.source == Some(Source::KfdSmi))
            .filter_map(|i| i.cursor)
            .collect();
        assert_eq!(smi_cursors, [1, 2]);
        let resumed = log
            .subscribe(&StreamFilter {
                since: [(Source::Kmsg, 7), (Source::KfdSmi, 1)].into(),
                ..StreamFilter::default()
            })
            .unwrap();
        let events: Vec<(Option<Source>, Option<u64>)> = resumed
            .feed
            .backlog
            .iter()
            .filter(|i| i.source.is_some())
            .map(|i| (i.source, i.cursor))
            .collect();
        assert_eq!(events, [(Some(Source::KfdSmi), Some(2))]);
        cancel.cancel();
        log.join();
        let saved = state.load().unwrap().unwrap();
        assert_eq!(saved.last_smi_cursor, 2);
        // Id 1 is never given again (the replay's own copy of the incident took one more).
        assert!(saved.next_incident_id > 1);
        assert!(saved.open.is_empty());

        // A third run reads the kernel log's record again: nothing is counted, no incident
        // opens, and the channel's numbering goes on.
        let third = KmsgMetrics::default();
        let (log, cancel) = run(&third);
        assert!(wait(&|| log
            .subscribe(&StreamFilter::default())
            .is_ok_and(|s| !s.feed.backlog.is_empty())));
        std::thread::sleep(Duration::from_millis(300));
        log.smi_sink().unwrap().send(SmiInput {
            record: nodectl_model::kfd_smi::parse_record(b"2 4:1a"),
            monotonic_usec: nodectl_model::clock::monotonic_usec_now(),
            device: None,
            placement: BTreeMap::new(),
        });
        assert!(wait(&|| third
            .events(Class::Info, "kfd_smi_thermal_throttle")
            == 1));
        cancel.cancel();
        log.join();
        assert_eq!(third.incidents("mes_hang_reset"), 0);
        assert_eq!(third.events(Class::Hang, "mes_timeout"), 0);
        assert_eq!(state.load().unwrap().unwrap().last_smi_cursor, 3);
    }

    #[test]
    fn a_kfd_rule_is_drilled_as_a_kfd_record() {
        let metrics = KmsgMetrics::default();
        let cancel = CancellationToken::new();
        let log = KernelLog::start_with_source(
            ScriptedSource::new([plain(1)]),
            "b".into(),
            None,
            config(),
            metrics.clone(),
            cancel.clone(),
        );
        assert_eq!(
            log.inject("kfd_smi_vm_fault").unwrap(),
            "1 10e1:llama-server"
        );
        let items = wait_for(&log, &StreamFilter::default(), 2);
        let event = items
            .iter()
            .find_map(|i| match &i.message.message {
                Some(pb::kernel_stream_message::Message::Event(e)) if e.injected => Some(e),
                _ => None,
            })
            .unwrap();
        assert_eq!(event.source, "kfd_smi");
        assert_eq!(event.id.as_deref(), Some("kfd_smi_vm_fault"));
        assert_eq!(event.fields.get("pid").map(String::as_str), Some("4321"));
        assert_eq!(
            settle(|| metrics.events(Class::Fault, "kfd_smi_vm_fault"), 1),
            1
        );
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
