//! Keeps the node's `AMDGPUHealthy` condition, its optional NoSchedule taint and one Event per GPU incident in step with the agent's incidents and checks, as node-problem-detector does for its rules.
//!
//! Unlike node-problem-detector, the condition clears itself: it is False only while an
//! incident is open or a critical finding holds. The API server may answer 500 or not at all;
//! the agent then keeps serving and tries again after a wait that doubles up to a limit.

pub mod kube_api;
pub mod verdict;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use nodectl_model::Incident;
use nodectl_proto::nodectl::v1 as pb;
use pb::kernel_stream_message::Message;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::kmsg::Classifier;
use crate::kmsg::pipeline::{Item, KernelLog, StreamFilter};
use crate::limits::{
    KUBE_RETRY_FIRST, KUBE_RETRY_MAX, MAX_PENDING_KUBE_EVENTS, NODE_CONDITION_HEARTBEAT,
    NODE_HEALTH_CHECK_INTERVAL,
};
use crate::snapshot::{SampleOptions, Snapshotter};
pub use kube_api::{KubeError, NodeApi, TAINT_KEY};
use verdict::{Checks, IncidentText, OpenIncident, Verdict};

/// What the node-health task is told at start.
#[derive(Debug)]
pub struct NodeHealth {
    pub api: NodeApi,
    pub classifier: Arc<Classifier>,
    pub kernel_log: Option<KernelLog>,
    pub snapshotter: Arc<Snapshotter>,
    pub taint_on_critical: bool,
    /// Told once the first checks have run and the first write was tried: the agent's start-up
    /// ends there (`resident::release_start_up_pages`).
    pub first_pass: Option<tokio::sync::oneshot::Sender<()>>,
}

/// An Event waiting to be recorded.
#[derive(Debug, Clone)]
struct PendingEvent {
    key: String,
    reason: String,
    message: String,
    at: jiff::Timestamp,
}

/// What was last written to the API server.
#[derive(Debug, Clone)]
struct Applied {
    verdict: Verdict,
    at: Instant,
}

/// The incidents of this boot as the kernel-log stream tells them.
#[derive(Debug, Default)]
struct Incidents {
    boot_id: String,
    open: BTreeMap<u64, OpenIncident>,
    /// Incidents an Event was queued for (once each).
    announced: BTreeSet<u64>,
    /// Why incidents cannot be seen, when they cannot.
    unread: Option<String>,
}

impl Incidents {
    fn update(
        &mut self,
        incident: &Incident,
        classifier: &Classifier,
        events: &mut VecDeque<PendingEvent>,
    ) {
        if self.announced.insert(incident.incident_id) {
            if events.len() >= MAX_PENDING_KUBE_EVENTS {
                tracing::warn!(
                    "{} Events wait for the API server already; not recording one for incident {}",
                    events.len(),
                    incident.incident_id
                );
                return self.track(incident);
            }
            let boot: String = self.boot_id.chars().filter(|c| *c != '-').take(8).collect();
            events.push_back(PendingEvent {
                key: format!("{boot}-incident-{}", incident.incident_id),
                reason: verdict::reason_of(&incident.kind),
                message: IncidentText::of(classifier, &incident.kind)
                    .sentence(&OpenIncident::from(incident)),
                at: incident.first_time.unwrap_or_else(jiff::Timestamp::now),
            });
        }
        self.track(incident);
    }

    fn track(&mut self, incident: &Incident) {
        if incident.closed {
            self.open.remove(&incident.incident_id);
            // Seen again after a re-read of the history, its Event is found there (409).
            self.announced.remove(&incident.incident_id);
        } else {
            self.open
                .insert(incident.incident_id, OpenIncident::from(incident));
        }
    }
}

/// The kernel-log messages the task follows: the history, then live ones.
struct Follow {
    backlog: VecDeque<Arc<Item>>,
    live: Option<broadcast::Receiver<Arc<Item>>>,
}

impl Follow {
    fn start(log: &KernelLog, incidents: &mut Incidents) -> Option<Follow> {
        let filter = StreamFilter {
            follow: true,
            ..StreamFilter::default()
        };
        match log.subscribe(&filter) {
            Ok(subscription) => {
                incidents.boot_id = subscription.header.boot_id.clone();
                incidents.unread = None;
                Some(Follow {
                    backlog: subscription.feed.backlog.into(),
                    live: subscription.feed.live,
                })
            }
            Err(unavailable) => {
                incidents.unread = Some(unavailable.to_string());
                None
            }
        }
    }

    /// The next message; `None` when the reader stopped or this fell behind (then start again).
    async fn next(&mut self) -> Result<Arc<Item>, Option<u64>> {
        if let Some(item) = self.backlog.pop_front() {
            return Ok(item);
        }
        let Some(live) = &mut self.live else {
            return std::future::pending().await;
        };
        match live.recv().await {
            Ok(item) => Ok(item),
            Err(broadcast::error::RecvError::Lagged(missed)) => Err(Some(missed)),
            Err(broadcast::error::RecvError::Closed) => Err(None),
        }
    }
}

/// Runs until `cancel`: follows incidents, runs the checks every
/// [`NODE_HEALTH_CHECK_INTERVAL`], and writes the condition (and taint, and Events) whenever
/// they change, at least every [`NODE_CONDITION_HEARTBEAT`].
pub async fn run(mut health: NodeHealth, cancel: CancellationToken) {
    let mut incidents = Incidents::default();
    let mut follow = health
        .kernel_log
        .as_ref()
        .and_then(|log| Follow::start(log, &mut incidents));
    if health.kernel_log.is_none() {
        incidents.unread = Some("the agent does not read the kernel log".to_owned());
    }
    let mut down = health.kernel_log.as_ref().map(KernelLog::down);
    let mut events: VecDeque<PendingEvent> = VecDeque::new();
    let mut checks = Checks::Failed("not run yet".to_owned());
    let mut next_check = Instant::now();
    let mut applied: Option<Applied> = None;
    let mut retry_wait = KUBE_RETRY_FIRST;
    let mut next_try = Instant::now();
    let mut failing = false;

    loop {
        if Instant::now() >= next_check {
            checks = match health.snapshotter.snapshot(SampleOptions::default()).await {
                Ok(snapshot) => Checks::Ran(snapshot.findings.clone()),
                Err(e) => Checks::Failed(e.to_string()),
            };
            next_check = Instant::now() + NODE_HEALTH_CHECK_INTERVAL;
        }
        let reader_down = down.as_ref().and_then(|d| d.borrow().clone());
        let unread = incidents
            .unread
            .clone()
            .or_else(|| reader_down.map(|why| format!("the kernel log reader is down: {why}")));
        let open: Vec<OpenIncident> = incidents.open.values().cloned().collect();
        let verdict = verdict::decide(&health.classifier, &open, unread.as_deref(), &checks);
        let due = match &applied {
            None => true,
            Some(last) => last.verdict != verdict || last.at.elapsed() >= NODE_CONDITION_HEARTBEAT,
        } || !events.is_empty();

        if due && Instant::now() >= next_try {
            match apply(&health, &verdict, &mut events).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("the API server answers again; node condition set");
                    }
                    tracing::debug!(status = verdict.status.as_str(), reason = %verdict.reason, "node condition set");
                    applied = Some(Applied {
                        verdict: verdict.clone(),
                        at: Instant::now(),
                    });
                    failing = false;
                    retry_wait = KUBE_RETRY_FIRST;
                }
                Err(e) => {
                    // Every failure is logged at debug; the first of a run of them at warn, so
                    // an API server that is down for an hour writes one warning, not hundreds.
                    if failing {
                        tracing::debug!("{e}; next try in {}s", retry_wait.as_secs());
                    } else {
                        tracing::warn!(
                            "{e}; trying again in {}s, and later with longer waits",
                            retry_wait.as_secs()
                        );
                    }
                    failing = true;
                    next_try = Instant::now() + retry_wait;
                    retry_wait = (retry_wait * 2).min(KUBE_RETRY_MAX);
                }
            }
        }

        if let Some(first_pass) = health.first_pass.take() {
            // The waiter may be gone (the agent shutting down); nothing is owed to it then.
            let _ = first_pass.send(());
        }

        let now = Instant::now();
        let mut wake = next_check;
        if due {
            wake = wake.min(next_try.max(now));
        }
        if let Some(last) = &applied {
            wake = wake.min(last.at + NODE_CONDITION_HEARTBEAT);
        }
        let sleep = tokio::time::sleep_until(wake.max(now + Duration::from_millis(1)));
        tokio::select! {
            () = cancel.cancelled() => return,
            () = sleep => {}
            changed = async {
                match &mut down {
                    Some(d) => d.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if changed.is_err() {
                    down = None;
                }
            }
            next = async {
                match &mut follow {
                    Some(f) => f.next().await,
                    None => std::future::pending().await,
                }
            } => match next {
                Ok(item) => {
                    if let Some(Message::Incident(update)) = &item.message.message
                        && let Ok(incident) = Incident::try_from(update.clone())
                    {
                        incidents.update(&incident, &health.classifier, &mut events);
                    }
                }
                Err(Some(missed)) => {
                    tracing::warn!("the node-condition task fell {missed} kernel-log messages behind; reading the history again");
                    incidents.open.clear();
                    follow = health.kernel_log.as_ref().and_then(|log| Follow::start(log, &mut incidents));
                }
                Err(None) => follow = None,
            },
        }
    }
}

/// One round against the API server: the condition, the taint, then queued Events.
async fn apply(
    health: &NodeHealth,
    verdict: &Verdict,
    events: &mut VecDeque<PendingEvent>,
) -> Result<(), KubeError> {
    let node = health.api.read().await?;
    // The taint first: its patch is guarded by the resourceVersion just read, which the
    // condition's write would make stale.
    if health.taint_on_critical {
        let want = verdict.critical.then_some(verdict);
        if health.api.set_taint(want, &node).await? {
            match want {
                Some(v) => {
                    tracing::info!(reason = %v.reason, "tainted the node {TAINT_KEY}:NoSchedule")
                }
                None => tracing::info!("removed the taint {TAINT_KEY} from the node"),
            }
        }
    }
    health
        .api
        .set_condition(verdict, &node, jiff::Timestamp::now())
        .await?;
    while let Some(event) = events.front() {
        health
            .api
            .record_event(&event.key, &event.reason, &event.message, event.at)
            .await?;
        events.pop_front();
    }
    Ok(())
}
