//! Conversions between kernel events, incidents and stream messages and their nodectl.v1 wire form.

use std::sync::Arc;

use nodectl_proto::nodectl::v1 as pb;
use pb::kernel_stream_message::Message;

use super::{WireError, invalid, timestamp_from_pb, timestamp_to_pb};
use crate::kernel_log::{
    Class, Incident, KernelEvent, RecordsLost, Source, SourceStatus, StreamHeader, StreamMessage,
};

fn time_from_pb(
    t: Option<prost_types::Timestamp>,
    field: &'static str,
) -> Result<Option<jiff::Timestamp>, WireError> {
    t.map(|t| timestamp_from_pb(t, field)).transpose()
}

// ---- model → wire -------------------------------------------------------------------------

impl From<KernelEvent> for pb::KernelEvent {
    fn from(e: KernelEvent) -> Self {
        pb::KernelEvent {
            seq: e.seq.unwrap_or(0),
            monotonic_usec: e.monotonic_usec.unwrap_or(0),
            time: e.time.map(timestamp_to_pb),
            facility: e.facility,
            level: u32::from(e.level.unwrap_or(0)),
            user_written: e.user_written,
            message: e.message,
            class: e.class.map(|c| c.as_str().to_owned()),
            id: e.id.map(|id| id.to_string()),
            fields: e.fields,
            device: e.device,
            subsystem: e.subsystem,
            injected: e.injected,
            source: e.source.as_str().to_owned(),
            cursor: e.cursor.unwrap_or(0),
        }
    }
}

impl From<Incident> for pb::IncidentUpdate {
    fn from(i: Incident) -> Self {
        pb::IncidentUpdate {
            incident_id: i.incident_id,
            kind: i.kind.to_string(),
            device: i.device,
            first_seq: i.first_seq.unwrap_or(0),
            last_seq: i.last_seq.unwrap_or(0),
            first_monotonic_usec: i.first_monotonic_usec.unwrap_or(0),
            last_monotonic_usec: i.last_monotonic_usec.unwrap_or(0),
            first_time: i.first_time.map(timestamp_to_pb),
            last_time: i.last_time.map(timestamp_to_pb),
            event_counts: i
                .event_counts
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            process: i.process,
            pid: i.pid,
            recovered: i.recovered,
            closed: i.closed,
            drill: i.drill,
            sources: i.sources.iter().map(|s| s.as_str().to_owned()).collect(),
        }
    }
}

impl From<StreamHeader> for pb::KernelStreamHeader {
    fn from(h: StreamHeader) -> Self {
        pb::KernelStreamHeader {
            boot_id: h.boot_id,
            boot_time: h.boot_time.map(timestamp_to_pb),
            first_seq: h.first_seq,
            last_seq: h.last_seq,
            records_lost_total: h.records_lost_total,
            sources: h
                .sources
                .into_iter()
                .map(|s| pb::EventSourceStatus {
                    source: s.source.as_str().to_owned(),
                    available: s.reason.is_none(),
                    reason: s.reason.unwrap_or_default(),
                    last_cursor: s.last_cursor,
                })
                .collect(),
        }
    }
}

impl From<StreamMessage> for pb::KernelStreamMessage {
    fn from(m: StreamMessage) -> Self {
        let message = match m {
            StreamMessage::Header(h) => Message::Header(h.into()),
            StreamMessage::Event(e) => Message::Event(e.into()),
            StreamMessage::Incident(i) => Message::Incident(i.into()),
            StreamMessage::RecordsLost(l) => Message::RecordsLost(pb::RecordsLost {
                count: l.count,
                first_lost_seq: l.first_lost_seq,
                last_lost_seq: l.last_lost_seq,
            }),
            StreamMessage::Lagged { missed } => Message::Lagged(pb::Lagged { missed }),
        };
        pb::KernelStreamMessage {
            message: Some(message),
        }
    }
}

// ---- wire → model -------------------------------------------------------------------------

impl TryFrom<pb::KernelEvent> for KernelEvent {
    type Error = WireError;

    fn try_from(e: pb::KernelEvent) -> Result<Self, Self::Error> {
        let class = e
            .class
            .map(|name| {
                Class::parse(&name).ok_or_else(|| {
                    invalid(
                        "event.class",
                        format!("`{name}` is not one of {}", Class::known()),
                    )
                })
            })
            .transpose()?;
        let level = u8::try_from(e.level)
            .ok()
            .filter(|l| *l <= 7)
            .ok_or_else(|| invalid("event.level", format!("{} is not 0..=7", e.level)))?;
        let source = Source::parse(&e.source).ok_or_else(|| {
            invalid(
                "event.source",
                format!("`{}` is not one of {}", e.source, Source::known()),
            )
        })?;
        let is_kmsg = source == Source::Kmsg;
        Ok(KernelEvent {
            source,
            // An agent before sources sent no cursor: a kernel log record's is its seq.
            cursor: Some(if is_kmsg && e.cursor == 0 {
                e.seq
            } else {
                e.cursor
            }),
            seq: is_kmsg.then_some(e.seq),
            line: None,
            monotonic_usec: Some(e.monotonic_usec),
            time: time_from_pb(e.time, "event.time")?,
            class,
            id: e.id.map(Arc::from),
            device: e.device,
            fields: e.fields,
            facility: e.facility,
            level: Some(level),
            user_written: e.user_written,
            subsystem: e.subsystem,
            injected: e.injected,
            message: e.message,
        })
    }
}

impl TryFrom<pb::IncidentUpdate> for Incident {
    type Error = WireError;

    fn try_from(i: pb::IncidentUpdate) -> Result<Self, Self::Error> {
        Ok(Incident {
            incident_id: i.incident_id,
            kind: Arc::from(i.kind),
            device: i.device,
            first_seq: Some(i.first_seq),
            last_seq: Some(i.last_seq),
            first_line: None,
            last_line: None,
            first_monotonic_usec: Some(i.first_monotonic_usec),
            last_monotonic_usec: Some(i.last_monotonic_usec),
            first_time: time_from_pb(i.first_time, "incident.first_time")?,
            last_time: time_from_pb(i.last_time, "incident.last_time")?,
            event_counts: i
                .event_counts
                .into_iter()
                .map(|(k, v)| (Arc::from(k), v))
                .collect(),
            process: i.process,
            pid: i.pid,
            recovered: i.recovered,
            closed: i.closed,
            drill: i.drill,
            sources: i
                .sources
                .iter()
                .map(|name| {
                    Source::parse(name).ok_or_else(|| {
                        invalid(
                            "incident.sources",
                            format!("`{name}` is not one of {}", Source::known()),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        })
    }
}

impl TryFrom<pb::KernelStreamMessage> for StreamMessage {
    type Error = WireError;

    fn try_from(m: pb::KernelStreamMessage) -> Result<Self, Self::Error> {
        Ok(
            match m
                .message
                .ok_or_else(|| invalid("message", "empty stream message"))?
            {
                Message::Header(h) => StreamMessage::Header(StreamHeader {
                    boot_id: h.boot_id,
                    boot_time: time_from_pb(h.boot_time, "header.boot_time")?,
                    first_seq: h.first_seq,
                    last_seq: h.last_seq,
                    records_lost_total: h.records_lost_total,
                    sources: h
                        .sources
                        .into_iter()
                        .map(|s| {
                            let source = Source::parse(&s.source).ok_or_else(|| {
                                invalid(
                                    "header.sources",
                                    format!("`{}` is not one of {}", s.source, Source::known()),
                                )
                            })?;
                            Ok(SourceStatus {
                                source,
                                reason: (!s.available).then_some(s.reason),
                                last_cursor: s.last_cursor,
                            })
                        })
                        .collect::<Result<_, WireError>>()?,
                }),
                Message::Event(e) => StreamMessage::Event(e.try_into()?),
                Message::Incident(i) => StreamMessage::Incident(i.try_into()?),
                Message::RecordsLost(l) => StreamMessage::RecordsLost(RecordsLost {
                    count: l.count,
                    first_lost_seq: l.first_lost_seq,
                    last_lost_seq: l.last_lost_seq,
                }),
                Message::Lagged(l) => StreamMessage::Lagged { missed: l.missed },
            },
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn event() -> KernelEvent {
        let mut fields = BTreeMap::new();
        fields.insert("mes_op".to_owned(), "REMOVE_QUEUE".to_owned());
        KernelEvent {
            source: Source::Kmsg,
            cursor: Some(7),
            seq: Some(7),
            line: None,
            monotonic_usec: Some(100_000_000),
            time: Some("2026-01-02T03:04:05.123456Z".parse().unwrap()),
            class: Some(Class::Hang),
            id: Some(Arc::from("mes_timeout")),
            device: Some("0000:c1:00.0".into()),
            fields,
            facility: 0,
            level: Some(3),
            user_written: false,
            subsystem: Some("pci".into()),
            message: "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond".into(),
            injected: true,
        }
    }

    fn incident() -> Incident {
        let mut counts = BTreeMap::new();
        counts.insert(Arc::from("mes_timeout"), 2);
        Incident {
            incident_id: 7,
            kind: Arc::from("mes_hang_reset"),
            device: Some("0000:c1:00.0".into()),
            first_seq: Some(7),
            last_seq: Some(9),
            first_line: None,
            last_line: None,
            first_monotonic_usec: Some(1),
            last_monotonic_usec: Some(2),
            first_time: None,
            last_time: Some("2026-01-02T03:04:05Z".parse().unwrap()),
            event_counts: counts,
            process: None,
            pid: Some(77),
            recovered: Some(false),
            closed: true,
            drill: true,
            sources: [Source::Kmsg, Source::KfdSmi].into(),
        }
    }

    fn through_bytes(m: StreamMessage) -> StreamMessage {
        let wire = pb::KernelStreamMessage::from(m);
        let bytes = prost::Message::encode_to_vec(&wire);
        let decoded: pb::KernelStreamMessage = prost::Message::decode(bytes.as_slice()).unwrap();
        StreamMessage::try_from(decoded).unwrap()
    }

    #[test]
    fn stream_messages_survive_the_wire() {
        let unclassified = KernelEvent {
            class: None,
            id: None,
            device: None,
            subsystem: None,
            fields: BTreeMap::new(),
            ..event()
        };
        for m in [
            StreamMessage::Event(event()),
            StreamMessage::Event(unclassified),
            StreamMessage::Event(KernelEvent {
                source: Source::KfdSmi,
                cursor: Some(3),
                seq: None,
                message: "3 1 MES hang".into(),
                ..event()
            }),
            StreamMessage::Incident(incident()),
            StreamMessage::RecordsLost(RecordsLost::between(3, 8)),
            StreamMessage::Lagged { missed: 9 },
            StreamMessage::Header(StreamHeader {
                boot_id: "b".into(),
                boot_time: Some("2026-01-01T00:00:00Z".parse().unwrap()),
                first_seq: 1,
                last_seq: 2,
                records_lost_total: 3,
                sources: vec![
                    SourceStatus {
                        source: Source::Kmsg,
                        reason: None,
                        last_cursor: 2,
                    },
                    SourceStatus {
                        source: Source::KfdSmi,
                        reason: Some("/dev/kfd: No such file or directory".into()),
                        last_cursor: 0,
                    },
                ],
            }),
        ] {
            assert_eq!(through_bytes(m.clone()), m);
        }
    }

    #[test]
    fn an_event_of_an_agent_before_sources_is_a_kernel_log_record_at_its_seq() {
        let mut wire = pb::KernelEvent::from(event());
        wire.source = String::new();
        wire.cursor = 0;
        let e = KernelEvent::try_from(wire).unwrap();
        assert_eq!(
            (e.source, e.cursor, e.seq),
            (Source::Kmsg, Some(7), Some(7))
        );
        let mut wire = pb::KernelEvent::from(event());
        wire.source = "ebpf".into();
        assert!(KernelEvent::try_from(wire).is_err());
    }

    #[test]
    fn bad_wire_values_are_refused() {
        let mut wire = pb::KernelEvent::from(event());
        wire.class = Some("meltdown".into());
        assert!(KernelEvent::try_from(wire).is_err());
        let mut wire = pb::KernelEvent::from(event());
        wire.level = 300;
        assert!(KernelEvent::try_from(wire).is_err());
        assert!(StreamMessage::try_from(pb::KernelStreamMessage { message: None }).is_err());
    }
}
