//! Counters of the kernel event pipeline (events by class and id, records lost, incidents by kind) and whether each event source is read, for the Prometheus exporter.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::classify::Class;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    class: String,
    id: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// Counters of the kernel log pipeline; clones share the same counts.
#[derive(Debug, Clone, Default)]
pub struct KmsgMetrics {
    events: Family<EventLabels, Counter>,
    lost: Counter,
    incidents: Family<KindLabels, Counter>,
    /// Events fed in by `nodectl-agent inject` (also counted in `events`: a drill fires the
    /// same alerts); this says which of them were drills.
    injected: Family<EventLabels, Counter>,
    /// 1 while a source the agent tried to read is read, 0 while it cannot be (a pod that lost
    /// `/dev/kfd`): absent for a source no reader was started for.
    sources_up: Family<SourceLabels, Gauge>,
    /// Records of a source the pipeline had no room for (the reader thread fell behind).
    sources_dropped: Family<SourceLabels, Counter>,
}

impl KmsgMetrics {
    pub fn count_event(&self, class: Class, id: &str) {
        self.events
            .get_or_create(&EventLabels {
                class: class.as_str().to_owned(),
                id: id.to_owned(),
            })
            .inc();
    }

    pub fn count_injected(&self, class: Class, id: &str) {
        self.injected
            .get_or_create(&EventLabels {
                class: class.as_str().to_owned(),
                id: id.to_owned(),
            })
            .inc();
    }

    pub fn count_lost(&self, records: u64) {
        self.lost.inc_by(records);
    }

    pub fn count_incident(&self, kind: &str) {
        self.incidents
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn incidents(&self, kind: &str) -> u64 {
        self.incidents
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .get()
    }

    pub fn set_source_up(&self, source: &str, up: bool) {
        self.sources_up
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .set(i64::from(up));
    }

    /// Counts one dropped record of `source`; the count before it.
    pub fn count_source_dropped(&self, source: &str) -> u64 {
        self.sources_dropped
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .inc()
    }

    pub fn source_up(&self, source: &str) -> Option<bool> {
        let labels = SourceLabels {
            source: source.to_owned(),
        };
        self.sources_up.get(&labels).map(|g| g.get() == 1)
    }

    pub fn records_lost(&self) -> u64 {
        self.lost.get()
    }

    pub fn events(&self, class: Class, id: &str) -> u64 {
        self.events
            .get_or_create(&EventLabels {
                class: class.as_str().to_owned(),
                id: id.to_owned(),
            })
            .get()
    }

    /// Adds the counters to a registry (the exporter renders one per scrape).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "nodectl_kernel_events",
            "Classified amdgpu/KFD kernel log events",
            self.events.clone(),
        );
        registry.register(
            "nodectl_kmsg_records_lost",
            "Kernel log records overwritten before the agent read them",
            self.lost.clone(),
        );
        registry.register(
            "nodectl_kernel_events_injected",
            "Kernel events fed in by `nodectl-agent inject` as drills (also in nodectl_kernel_events)",
            self.injected.clone(),
        );
        registry.register(
            "nodectl_incidents",
            "Closed GPU incidents (related kernel events on one device)",
            self.incidents.clone(),
        );
        registry.register(
            "nodectl_event_source_up",
            "Whether an event source the agent reads is read now (kmsg: the kernel log, kfd_smi: the KFD SMI channel)",
            self.sources_up.clone(),
        );
        registry.register(
            "nodectl_event_source_records_dropped",
            "Records of an event source the agent dropped because its reader fell behind",
            self.sources_dropped.clone(),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_their_counts() {
        let m = KmsgMetrics::default();
        let clone = m.clone();
        clone.count_event(Class::Hang, "mes_timeout");
        clone.count_lost(3);
        assert_eq!(m.events(Class::Hang, "mes_timeout"), 1);
        assert_eq!(m.records_lost(), 3);
        assert_eq!(m.source_up("kfd_smi"), None);
        clone.set_source_up("kfd_smi", false);
        assert_eq!(m.source_up("kfd_smi"), Some(false));
        assert_eq!(clone.count_source_dropped("kfd_smi"), 0);
        assert_eq!(m.count_source_dropped("kfd_smi"), 1);
    }
}
