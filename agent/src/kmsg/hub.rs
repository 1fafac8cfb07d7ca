//! Runs the kernel log pipeline in the agent: a reader thread, a bounded history, and a broadcast to stream subscribers.
//!
//! The reader thread never waits for a subscriber: a subscriber that falls behind the
//! broadcast buffer is told how many messages it missed (`lagged`), and the others go on.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nodectl_proto::nodectl::v1 as pb;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::analyze::{Analyzer, Entry, Event, Output};
use super::classify::{Class, Classifier};
use super::incident::Incident;
use super::metrics::KmsgMetrics;
use super::reader::{KmsgFile, KmsgReader, ReadOutcome, RecordSource};
use super::state::{CountedUpTo, StateFile};
use crate::HostRoot;

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
            history_capacity: 4096,
            broadcast_capacity: 1024,
        }
    }
}

/// One message of the history, converted once for every subscriber.
#[derive(Debug)]
pub struct Item {
    /// The kernel seq the message belongs to (an event's, the first record after a gap).
    pub seq: u64,
    /// Class of an event; `None` for unclassified events and non-events.
    pub class: Option<Class>,
    /// An event that no rule classified (or that user space wrote).
    pub unclassified: bool,
    pub message: pb::KernelStreamMessage,
}

impl Item {
    pub fn wanted(&self, filter: &StreamFilter) -> bool {
        if self.unclassified {
            return filter.include_unclassified;
        }
        match self.class {
            Some(class) => filter.classes.is_empty() || filter.classes.contains(&class),
            None => true,
        }
    }
}

/// What a subscriber asked for.
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    pub since_seq: u64,
    pub follow: bool,
    pub classes: Vec<Class>,
    pub include_unclassified: bool,
}

/// The kernel log cannot be read here (no /dev/kmsg in a fixture tree, no permission).
#[derive(Debug, Clone, thiserror::Error)]
#[error("kernel log unavailable: {0}")]
pub struct Unavailable(pub String);

#[derive(Debug, Default)]
struct History {
    all: VecDeque<Arc<Item>>,
    classified: VecDeque<Arc<Item>>,
    lost_total: u64,
}

#[derive(Debug)]
struct Shared {
    history: Mutex<History>,
    tx: broadcast::Sender<Arc<Item>>,
    capacity: usize,
    boot_id: String,
    boot_time: Option<jiff::Timestamp>,
    unavailable: Option<String>,
    metrics: KmsgMetrics,
    cancel: CancellationToken,
    reader_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Handle on the running pipeline; cheap to clone.
#[derive(Debug, Clone)]
pub struct KernelLog {
    shared: Arc<Shared>,
}

/// What a new subscriber gets: the header, the history it asked for, and (follow) a receiver.
#[derive(Debug)]
pub struct Subscription {
    pub header: pb::KernelStreamHeader,
    pub backlog: Vec<Arc<Item>>,
    pub live: Option<broadcast::Receiver<Arc<Item>>>,
    /// Records after since_seq that the history no longer holds.
    pub missed_before_backlog: u64,
}

/// Wall-clock time of monotonic 0 on this machine.
pub fn boot_time() -> Option<jiff::Timestamp> {
    use nix::time::{ClockId, clock_gettime};
    let mono = clock_gettime(ClockId::CLOCK_MONOTONIC).ok()?;
    let now = jiff::Timestamp::now();
    let mono = jiff::SignedDuration::new(mono.tv_sec(), i32::try_from(mono.tv_nsec()).ok()?);
    now.checked_sub(mono).ok()
}

fn monotonic_usec_now() -> Option<u64> {
    use nix::time::{ClockId, clock_gettime};
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(t.tv_sec()).ok()?;
    let nanos = u64::try_from(t.tv_nsec()).ok()?;
    Some(secs * 1_000_000 + nanos / 1000)
}

fn lock(history: &Mutex<History>) -> MutexGuard<'_, History> {
    // A panic while holding the lock leaves consistent deques; keep serving.
    history
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn timestamp(t: Option<jiff::Timestamp>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    })
}

/// Wire form of an event.
pub fn event_message(e: &Event) -> pb::KernelEvent {
    pb::KernelEvent {
        seq: e.seq.unwrap_or(0),
        monotonic_usec: e.monotonic_usec.unwrap_or(0),
        time: timestamp(e.time),
        facility: e.facility,
        level: u32::from(e.level.unwrap_or(0)),
        user_written: e.user_written,
        message: e.message.clone(),
        class: e.class.map(|c| c.as_str().to_owned()).unwrap_or_default(),
        id: e.id.as_deref().unwrap_or_default().to_owned(),
        fields: e
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        device: e.device.clone().unwrap_or_default(),
        subsystem: e.subsystem.clone().unwrap_or_default(),
    }
}

/// Wire form of an incident.
pub fn incident_message(i: &Incident) -> pb::IncidentUpdate {
    pb::IncidentUpdate {
        incident_id: i.incident_id,
        kind: i.kind.to_string(),
        device: i.device.clone().unwrap_or_default(),
        first_seq: i.first_seq.unwrap_or(0),
        last_seq: i.last_seq.unwrap_or(0),
        first_monotonic_usec: i.first_monotonic_usec.unwrap_or(0),
        last_monotonic_usec: i.last_monotonic_usec.unwrap_or(0),
        first_time: timestamp(i.first_time),
        last_time: timestamp(i.last_time),
        event_counts: i
            .event_counts
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        process: i.process.clone().unwrap_or_default(),
        pid: i.pid,
        recovered: i.recovered,
        closed: i.closed,
    }
}

impl KernelLog {
    /// Starts reading `root`'s /dev/kmsg in a thread. When the device cannot be opened the
    /// handle still exists and every subscription fails with the reason.
    pub fn start(
        root: &HostRoot,
        config: KernelLogConfig,
        metrics: KmsgMetrics,
        cancel: CancellationToken,
    ) -> KernelLog {
        let path = root.dev_kmsg();
        let boot_id = std::fs::read_to_string(root.path("proc/sys/kernel/random/boot_id"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        match KmsgFile::open(&path) {
            Ok(file) => Self::start_with_source(file, boot_id, config, metrics, cancel),
            Err(e) => {
                let reason = format!("{}: {e}", root.host_display(&path));
                tracing::warn!("kernel log unavailable: {reason}");
                Self::new_shared(boot_id, Some(reason), &config, metrics, cancel)
            }
        }
    }

    fn new_shared(
        boot_id: String,
        unavailable: Option<String>,
        config: &KernelLogConfig,
        metrics: KmsgMetrics,
        cancel: CancellationToken,
    ) -> KernelLog {
        let (tx, _) = broadcast::channel(config.broadcast_capacity.max(1));
        KernelLog {
            shared: Arc::new(Shared {
                history: Mutex::new(History::default()),
                tx,
                capacity: config.history_capacity.max(1),
                boot_id,
                boot_time: boot_time(),
                unavailable,
                metrics,
                cancel,
                reader_thread: Mutex::new(None),
            }),
        }
    }

    /// Starts the reader thread over any record source (tests use a scripted one).
    pub fn start_with_source<S: RecordSource + Send + 'static>(
        source: S,
        boot_id: String,
        config: KernelLogConfig,
        metrics: KmsgMetrics,
        cancel: CancellationToken,
    ) -> KernelLog {
        let log = Self::new_shared(boot_id, None, &config, metrics, cancel);
        let shared = log.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("kmsg-reader".to_owned())
            .spawn(move || read_loop(&shared, KmsgReader::new(source), &config));
        match spawned {
            Ok(handle) => {
                *log.shared
                    .reader_thread
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
            }
            Err(e) => tracing::error!("cannot start the kernel log reader: {e}"),
        }
        log
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

    pub fn boot_id(&self) -> &str {
        &self.shared.boot_id
    }

    pub fn metrics(&self) -> &KmsgMetrics {
        &self.shared.metrics
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.shared.cancel
    }

    /// Subscribes: the history after `since_seq` that matches the filter, then (follow) the
    /// live messages. Taken under the history lock, so nothing falls between the two.
    pub fn subscribe(&self, filter: &StreamFilter) -> Result<Subscription, Unavailable> {
        if let Some(reason) = &self.shared.unavailable {
            return Err(Unavailable(reason.clone()));
        }
        let history = lock(&self.shared.history);
        let deque = if filter.include_unclassified {
            &history.all
        } else {
            &history.classified
        };
        let backlog: Vec<Arc<Item>> = deque
            .iter()
            .filter(|i| i.seq > filter.since_seq && i.wanted(filter))
            .cloned()
            .collect();
        let oldest = deque.front().map(|i| i.seq);
        let missed_before_backlog = match oldest {
            Some(oldest) if filter.since_seq > 0 && oldest > filter.since_seq + 1 => {
                oldest - filter.since_seq - 1
            }
            _ => 0,
        };
        let live = filter.follow.then(|| self.shared.tx.subscribe());
        let header = pb::KernelStreamHeader {
            boot_id: self.shared.boot_id.clone(),
            boot_time: timestamp(self.shared.boot_time),
            first_seq: backlog.first().map_or(0, |i| i.seq),
            last_seq: backlog.last().map_or(0, |i| i.seq),
            records_lost_total: history.lost_total,
        };
        drop(history);
        Ok(Subscription {
            header,
            backlog,
            live,
            missed_before_backlog,
        })
    }

    #[cfg(test)]
    fn publish(&self, items: Vec<Item>, lost: u64) {
        publish(&self.shared, items, lost);
    }
}

fn publish(shared: &Shared, items: Vec<Item>, lost: u64) {
    if items.is_empty() && lost == 0 {
        return;
    }
    let mut history = lock(&shared.history);
    history.lost_total += lost;
    for item in items {
        let item = Arc::new(item);
        if !item.unclassified {
            if history.classified.len() == shared.capacity {
                history.classified.pop_front();
            }
            history.classified.push_back(item.clone());
        }
        if history.all.len() == shared.capacity {
            history.all.pop_front();
        }
        history.all.push_back(item.clone());
        // No receiver is fine; a full channel drops the oldest for the slow receiver only.
        let _ = shared.tx.send(item);
    }
}

/// Converts analyzer outputs to history items, counting what was not counted before.
///
/// Items are keyed by the seq of the last record read when they were made (`last_read_seq`
/// for incidents closed by the clock), so the history stays in seq order and a resume with
/// since_seq misses no incident update.
fn to_items(
    outputs: &mut Vec<Output>,
    metrics: &KmsgMetrics,
    counted_up_to: Option<u64>,
    last_read_seq: u64,
    items: &mut Vec<Item>,
) -> u64 {
    let fresh = |seq: Option<u64>| match (seq, counted_up_to) {
        (Some(seq), Some(done)) => seq > done,
        _ => true,
    };
    let mut lost_now = 0;
    let mut current_seq = last_read_seq;
    for output in outputs.drain(..) {
        match output {
            Output::Event(event) => {
                current_seq = event.seq.unwrap_or(current_seq);
                if let (Some(class), Some(id)) = (event.class, event.id.as_deref())
                    && fresh(event.seq)
                {
                    metrics.count_event(class, id);
                }
                items.push(Item {
                    seq: current_seq,
                    class: event.class,
                    unclassified: event.id.is_none(),
                    message: pb::KernelStreamMessage {
                        message: Some(pb::kernel_stream_message::Message::Event(event_message(
                            &event,
                        ))),
                    },
                });
            }
            Output::Incident(incident) => {
                if incident.closed && fresh(incident.last_seq) {
                    metrics.count_incident(&incident.kind);
                }
                items.push(Item {
                    seq: current_seq,
                    class: None,
                    unclassified: false,
                    message: pb::KernelStreamMessage {
                        message: Some(pb::kernel_stream_message::Message::Incident(
                            incident_message(&incident),
                        )),
                    },
                });
            }
            Output::Lost {
                first_seq,
                last_seq,
            } => {
                let count = last_seq.saturating_sub(first_seq) + 1;
                if fresh(Some(last_seq)) {
                    metrics.count_lost(count);
                }
                lost_now += count;
                items.push(Item {
                    seq: last_seq + 1,
                    class: None,
                    unclassified: false,
                    message: pb::KernelStreamMessage {
                        message: Some(pb::kernel_stream_message::Message::RecordsLost(
                            pb::RecordsLost {
                                count,
                                first_lost_seq: first_seq,
                                last_lost_seq: last_seq,
                            },
                        )),
                    },
                });
            }
        }
    }
    lost_now
}

/// How often the position is saved while records flow.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the reader sleeps in poll() before it checks for shutdown and quiet incidents.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

fn read_loop<S: RecordSource>(
    shared: &Shared,
    mut reader: KmsgReader<S>,
    config: &KernelLogConfig,
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
    let counted_up_to = saved
        .as_ref()
        .filter(|s| s.boot_id == shared.boot_id && !s.boot_id.is_empty())
        .map(|s| s.last_counted_seq);
    let mut first_record = true;
    let mut outputs = Vec::new();
    let mut items = Vec::new();
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
                break;
            }
        };
        match outcome {
            ReadOutcome::Record(record) => {
                if first_record {
                    first_record = false;
                    if let Some(done) = counted_up_to
                        && record.seq > done + 1
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
            ReadOutcome::Drained => {
                if let Some(now) = monotonic_usec_now() {
                    analyzer.tick(now, &mut outputs);
                }
                let lost = to_items(
                    &mut outputs,
                    &shared.metrics,
                    counted_up_to,
                    reader.last_seq().unwrap_or(0),
                    &mut items,
                );
                publish(shared, std::mem::take(&mut items), lost);
                if dirty && last_save.is_none_or(|t| t.elapsed() >= SAVE_INTERVAL) {
                    save_position(state_file.as_ref(), shared, reader.last_seq());
                    last_save = Some(Instant::now());
                    dirty = false;
                }
                match reader.wait(POLL_INTERVAL) {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!("waiting for kernel log records failed: {e}");
                        break;
                    }
                }
                continue;
            }
        }
        // Publish as soon as a record is read: a subscriber sees it without waiting for a drain.
        let lost = to_items(
            &mut outputs,
            &shared.metrics,
            counted_up_to,
            reader.last_seq().unwrap_or(0),
            &mut items,
        );
        publish(shared, std::mem::take(&mut items), lost);
    }
    save_position(state_file.as_ref(), shared, reader.last_seq());
}

fn save_position(file: Option<&StateFile>, shared: &Shared, last_seq: Option<u64>) {
    let (Some(file), Some(seq)) = (file, last_seq) else {
        return;
    };
    let state = CountedUpTo {
        boot_id: shared.boot_id.clone(),
        last_counted_seq: seq,
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
            if sub.backlog.len() >= n {
                return sub.backlog;
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
            config(),
            metrics.clone(),
            cancel.clone(),
        );
        let all = StreamFilter {
            include_unclassified: true,
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
        assert!(resumed.backlog.iter().all(|i| i.seq > 2));
        let seqs: Vec<u64> = resumed
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
    fn records_counted_before_a_restart_are_not_counted_again() {
        use crate::kmsg::classify::Class;
        let dir = tempfile::tempdir().unwrap();
        StateFile::in_dir(dir.path())
            .save(&CountedUpTo {
                boot_id: "b".into(),
                last_counted_seq: 5,
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
            cfg.clone(),
            metrics.clone(),
            cancel.clone(),
        );
        // The stream still holds every record; the counter only the new ones.
        let items = wait_for(&log, &StreamFilter::default(), 6);
        assert!(items.len() >= 6);
        assert_eq!(
            settle(|| metrics.events(Class::Firmware, "mes_timeout"), 3),
            3
        );
        cancel.cancel();
        log.join();
        let saved = StateFile::in_dir(dir.path()).load().unwrap().unwrap();
        assert_eq!(saved.last_counted_seq, 8);

        // Next run: the ring now starts at 12, so 9..=11 were lost while no agent ran.
        let metrics = KmsgMetrics::default();
        let cancel = CancellationToken::new();
        let source = ScriptedSource::new([gpu(12)]);
        let log =
            KernelLog::start_with_source(source, "b".into(), cfg, metrics.clone(), cancel.clone());
        wait_for(&log, &StreamFilter::default(), 2);
        assert_eq!(settle(|| metrics.records_lost(), 3), 3);
        assert_eq!(
            settle(|| metrics.events(Class::Firmware, "mes_timeout"), 1),
            1
        );
        cancel.cancel();
        log.join();
    }

    #[test]
    fn a_stalled_subscriber_lags_and_the_others_lose_nothing() {
        let mut cfg = config();
        cfg.broadcast_capacity = 8;
        let source = ScriptedSource::new([]);
        let cancel = CancellationToken::new();
        let log = KernelLog::start_with_source(
            source,
            "b".into(),
            cfg,
            KmsgMetrics::default(),
            cancel.clone(),
        );
        let follow = StreamFilter {
            follow: true,
            include_unclassified: true,
            ..Default::default()
        };
        let mut stalled = log.subscribe(&follow).unwrap().live.unwrap();
        let mut reader = log.subscribe(&follow).unwrap().live.unwrap();
        let mut received = Vec::new();
        let mut analyzer = Analyzer::new(log_classifier());
        for seq in 1..=100u64 {
            let mut outputs = Vec::new();
            analyzer.push(
                Entry::from_record(
                    crate::kmsg::record::parse_record(&plain(seq).unwrap()).unwrap(),
                    None,
                ),
                &mut outputs,
            );
            let mut items = Vec::new();
            to_items(&mut outputs, log.metrics(), None, 0, &mut items);
            log.publish(items, 0);
            // The active subscriber keeps up.
            while let Ok(item) = reader.try_recv() {
                received.push(item.seq);
            }
        }
        assert_eq!(received, (1..=100).collect::<Vec<_>>());
        match stalled.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(missed)) => assert_eq!(missed, 92),
            other => panic!("expected lagged, got {other:?}"),
        }
        cancel.cancel();
    }

    fn log_classifier() -> Arc<Classifier> {
        Arc::new(Classifier::embedded().unwrap())
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
