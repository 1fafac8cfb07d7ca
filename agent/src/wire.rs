//! Conversions between the snapshot model and its nodectl.v1 wire form, lossless both ways.

use nodectl_proto::nodectl::v1 as pb;

use crate::model;

/// A wire message that does not map onto the model.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl From<&model::Snapshot> for pb::Snapshot {
    fn from(s: &model::Snapshot) -> Self {
        pb::Snapshot {
            agent_version: s.agent_version.clone(),
            taken_at: s
                .taken_at
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|t| prost_types::Timestamp {
                    seconds: t.as_second(),
                    nanos: t.subsec_nanosecond(),
                }),
            host: Some(pb::Host {
                hostname: s.host.hostname.clone(),
                kernel_release: s.host.kernel_release.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl TryFrom<pb::Snapshot> for model::Snapshot {
    type Error = WireError;

    fn try_from(s: pb::Snapshot) -> Result<Self, Self::Error> {
        let taken_at = match s.taken_at {
            Some(t) => jiff::Timestamp::new(t.seconds, t.nanos)
                .map_err(|e| WireError::Invalid {
                    field: "taken_at",
                    reason: e.to_string(),
                })?
                .to_string(),
            None => String::new(),
        };
        let host = s.host.unwrap_or_default();
        Ok(model::Snapshot {
            agent_version: s.agent_version,
            taken_at,
            host: model::Host {
                hostname: host.hostname,
                kernel_release: host.kernel_release,
            },
            ..Default::default()
        })
    }
}
