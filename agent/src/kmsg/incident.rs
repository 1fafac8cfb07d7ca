//! Groups classified events of every source that are close in time on one device into incidents with a kind, and names them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use nodectl_model::Incident;
use nodectl_model::{Class, Source};

use super::classify::{Classifier, EventRole, IncidentRole, Recovery};
use crate::limits::{MAX_INCIDENT_PROCESS_BYTES, MAX_OPEN_INCIDENTS};

/// An open incident and what the tracker keeps beside it: what a restarted agent takes up
/// again from its state file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenIncident {
    pub incident: Incident,
    /// Class of its first event: names the incident when no kind rule matches.
    pub first_class: Class,
    /// Closeness key of its last event.
    pub last_key_usec: Option<u64>,
    /// Its events, all ids together.
    pub events_total: u32,
    /// When an event last joined it, counted in events added to the tracker.
    #[serde(skip)]
    last_touch: u64,
}

/// A process name as an incident keeps it: at most [`MAX_INCIDENT_PROCESS_BYTES`].
fn process_name(name: &str) -> String {
    let mut end = name.len().min(MAX_INCIDENT_PROCESS_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

impl OpenIncident {
    pub fn new(
        incident: Incident,
        first_class: Class,
        last_key_usec: Option<u64>,
        events_total: u32,
    ) -> Self {
        Self {
            incident,
            first_class,
            last_key_usec,
            events_total,
            last_touch: 0,
        }
    }
}

/// Where an event sits: what the tracker needs of it.
#[derive(Debug, Clone, Copy)]
pub struct EventPlace<'a> {
    pub source: Source,
    pub seq: Option<u64>,
    pub line: Option<u64>,
    pub monotonic_usec: Option<u64>,
    pub time: Option<jiff::Timestamp>,
    pub device: Option<&'a str>,
    pub process: Option<&'a str>,
    pub pid: Option<u32>,
    /// An injected event (a drill): it opens or joins only drill incidents.
    pub injected: bool,
}

impl EventPlace<'_> {
    /// Time used for closeness: monotonic µs, else wall-clock µs.
    fn key_usec(&self) -> Option<u64> {
        self.monotonic_usec.or_else(|| {
            self.time
                .and_then(|t| u64::try_from(t.as_microsecond()).ok())
        })
    }
}

/// Open incidents, the rules that name them, and the next incident id.
#[derive(Debug)]
pub struct IncidentTracker {
    classifier: Arc<Classifier>,
    /// In the order they opened.
    open: Vec<OpenIncident>,
    /// Events added so far: the clock of `last_touch`.
    touches: u64,
    /// The id the next incident gets: ids count up from 1, whatever source opens them; shared
    /// with a tracker of replayed records (see [`IncidentTracker::share_ids`]).
    next_id: Arc<AtomicU64>,
}

impl IncidentTracker {
    pub fn new(classifier: Arc<Classifier>) -> Self {
        Self {
            classifier,
            open: Vec::new(),
            touches: 0,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The id the next incident will get.
    pub fn next_id(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Takes ids from the same run as `other`: two trackers of one pipeline never give one id
    /// twice.
    pub fn share_ids(&mut self, other: &IncidentTracker) {
        self.next_id = Arc::clone(&other.next_id);
    }

    fn allocate_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn skip_ids_to(&self, at_least: u64) {
        self.next_id.fetch_max(at_least, Ordering::Relaxed);
    }

    /// Goes on from where an earlier tracker (an earlier run of the agent) stopped: its next
    /// id, and the incidents it had open (at most [`MAX_OPEN_INCIDENTS`] of them).
    pub fn resume(&mut self, next_id: u64, open: Vec<OpenIncident>) {
        self.skip_ids_to(next_id);
        for mut incident in open.into_iter().take(MAX_OPEN_INCIDENTS) {
            self.skip_ids_to(incident.incident.incident_id.saturating_add(1));
            self.touches += 1;
            incident.last_touch = self.touches;
            self.open.push(incident);
        }
    }

    /// The incidents open now, with what the tracker keeps of each.
    pub fn open_incidents(&self) -> &[OpenIncident] {
        &self.open
    }

    /// Takes the incidents open now out of the tracker.
    pub fn take_open(&mut self) -> Vec<OpenIncident> {
        std::mem::take(&mut self.open)
    }

    /// The kind an incident's counts name; `current` is kept when it is already the fallback
    /// name (a long incident is looked at on every event, and the name need not be rebuilt).
    fn kind_of(
        &self,
        counts: &BTreeMap<Arc<str>, u32>,
        first_class: &str,
        current: Option<&Arc<str>>,
    ) -> Arc<str> {
        if let Some(kind) = self.classifier.kinds().iter().find(|k| k.matches(counts)) {
            return kind.kind.clone();
        }
        match current {
            Some(kind) if kind.strip_prefix("gpu_") == Some(first_class) => kind.clone(),
            _ => Arc::from(format!("gpu_{first_class}")),
        }
    }

    /// The ids of the incidents open now (not yet closed, so not yet counted).
    pub fn open_ids(&self) -> Vec<u64> {
        self.open.iter().map(|o| o.incident.incident_id).collect()
    }

    /// The incident open longest, if any: every incident that opens later starts after it.
    pub fn oldest_open(&self) -> Option<&Incident> {
        self.open.first().map(|o| &o.incident)
    }

    /// Closes incidents whose last event is more than the gap before `now_key_usec`.
    pub fn expire(&mut self, now_key_usec: u64, out: &mut Vec<Incident>) {
        let gap = self.classifier.incident_gap_usec;
        let mut i = 0;
        while i < self.open.len() {
            let stale = self.open[i]
                .last_key_usec
                .is_some_and(|last| now_key_usec.saturating_sub(last) > gap);
            if stale {
                let mut incident = self.open.remove(i).incident;
                incident.closed = true;
                out.push(incident);
            } else {
                i += 1;
            }
        }
    }

    /// Closes every open incident (end of input, shutdown).
    pub fn close_all(&mut self, out: &mut Vec<Incident>) {
        for open in self.open.drain(..) {
            let mut incident = open.incident;
            incident.closed = true;
            out.push(incident);
        }
    }

    /// Adds a classified event; pushes the incident updates worth sending (opened, kind or
    /// outcome changed, a source added, counts at powers of two, closed).
    pub fn add(&mut self, rule: EventRole<'_>, place: EventPlace<'_>, out: &mut Vec<Incident>) {
        if rule.incident == IncidentRole::None {
            return;
        }
        let key = place.key_usec();
        if let Some(key) = key {
            self.expire(key, out);
        }
        // A drill never mixes with a real incident, either way.
        let same_kind = |o: &&OpenIncident| o.incident.drill == place.injected;
        let candidate = match place.device {
            Some(device) => self
                .open
                .iter()
                .rposition(|o| same_kind(&o) && o.incident.device.as_deref() == Some(device))
                .or_else(|| {
                    self.open
                        .iter()
                        .rposition(|o| same_kind(&o) && o.incident.device.is_none())
                }),
            None => self.open.iter().rposition(|o| same_kind(&o)),
        };
        self.touches += 1;
        let Some(index) = candidate else {
            if rule.incident == IncidentRole::Open {
                if self.open.len() >= MAX_OPEN_INCIDENTS
                    && let Some(idle) = self
                        .open
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, o)| o.last_touch)
                        .map(|(index, _)| index)
                {
                    let mut incident = self.open.remove(idle).incident;
                    incident.closed = true;
                    out.push(incident);
                }
                let mut counts = BTreeMap::new();
                counts.insert(rule.id.clone(), 1);
                let kind = self.kind_of(&counts, rule.class.as_str(), None);
                let incident_id = self.allocate_id();
                let incident = Incident {
                    incident_id,
                    kind,
                    device: place.device.map(str::to_owned),
                    first_seq: place.seq,
                    last_seq: place.seq,
                    first_line: place.line,
                    last_line: place.line,
                    first_monotonic_usec: place.monotonic_usec,
                    last_monotonic_usec: place.monotonic_usec,
                    first_time: place.time,
                    last_time: place.time,
                    event_counts: counts,
                    process: place.process.map(process_name),
                    pid: place.pid,
                    recovered: rule.recovery.map(|r| r == Recovery::Succeeded),
                    closed: false,
                    drill: place.injected,
                    sources: [place.source].into(),
                };
                out.push(incident.clone());
                self.open.push(OpenIncident {
                    incident,
                    first_class: rule.class,
                    last_key_usec: key,
                    events_total: 1,
                    last_touch: self.touches,
                });
            }
            return;
        };
        let (kind_may_change, new_source) = {
            let open = &mut self.open[index];
            open.last_key_usec = key.or(open.last_key_usec);
            open.last_touch = self.touches;
            let incident = &mut open.incident;
            if incident.device.is_none() {
                incident.device = place.device.map(str::to_owned);
            }
            incident.last_seq = place.seq.or(incident.last_seq);
            incident.last_line = place.line.or(incident.last_line);
            incident.last_monotonic_usec = place.monotonic_usec.or(incident.last_monotonic_usec);
            incident.last_time = place.time.or(incident.last_time);
            if incident.process.is_none() {
                incident.process = place.process.map(process_name);
            }
            if incident.pid.is_none() {
                incident.pid = place.pid;
            }
            let new_source = incident.sources.insert(place.source);
            let count = incident.event_counts.entry(rule.id.clone()).or_insert(0);
            *count += 1;
            open.events_total = open.events_total.saturating_add(1);
            // The kind can change only when an id appears for the first time or reaches a
            // count a kind asks for: a long incident is not looked at anew on every event.
            let kind_may_change = *count == 1 || self.classifier.counted_in_kinds(rule.id);
            (kind_may_change, new_source)
        };
        let open = &self.open[index];
        let kind = if kind_may_change {
            self.kind_of(
                &open.incident.event_counts,
                open.first_class.as_str(),
                Some(&open.incident.kind),
            )
        } else {
            open.incident.kind.clone()
        };
        let total = open.events_total;
        let incident = &mut self.open[index].incident;
        let recovered = rule
            .recovery
            .map(|r| r == Recovery::Succeeded)
            .or(incident.recovered);
        let changed = kind != incident.kind || recovered != incident.recovered;
        incident.kind = kind;
        incident.recovered = recovered;
        if changed || new_source || total.is_power_of_two() {
            out.push(incident.clone());
        }
    }
}
