//! Conversions between the model and the nodectl.v1 wire types: by value towards the wire, checked (`TryFrom`) back.

mod inference;
mod kernel_log;
mod snapshot;

/// A wire message that does not map onto the model.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> WireError {
    WireError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Wire form of a UTC time.
pub fn timestamp_to_pb(t: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

/// A wire time as a UTC time; out of range is an error naming the field.
pub fn timestamp_from_pb(
    t: prost_types::Timestamp,
    field: &'static str,
) -> Result<jiff::Timestamp, WireError> {
    jiff::Timestamp::new(t.seconds, t.nanos).map_err(|e| invalid(field, e.to_string()))
}
