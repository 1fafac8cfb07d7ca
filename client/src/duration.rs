//! The one parser of the durations every flag takes (`--timeout`, `--node-timeout`, `--sample`, `--stall-after`).

use std::time::Duration;

/// Parses a positive duration: `30s`, `500ms`, `15m`, `1h 30m`, ISO 8601 (`PT15M`), or a bare
/// number of seconds (`120`). Zero and negative durations are refused: every flag that takes
/// one is a wait or a window, and none of them means anything at zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let signed: jiff::SignedDuration =
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            let seconds: i64 = trimmed
                .parse()
                .map_err(|_| format!("`{text}`: too many seconds"))?;
            jiff::SignedDuration::from_secs(seconds)
        } else {
            trimmed.parse().map_err(|e| {
                format!("`{text}` is not a duration like 30s, 500ms, 15m or 1h 30m: {e}")
            })?
        };
    if signed.is_negative() || signed.is_zero() {
        return Err(format!("`{text}`: the duration must be positive"));
    }
    Duration::try_from(signed).map_err(|e| format!("`{text}`: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_form_a_flag_has_taken() {
        for (text, seconds) in [
            ("15m", 900),
            ("30s", 30),
            ("1h 30m", 5400),
            ("PT2M", 120),
            ("120", 120),
            (" 90s ", 90),
            ("2m", 120),
            ("1h", 3600),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["soon", "2x", "", "0s", "0", "-5s", "99999999999999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse_duration(&text);
        }
    }
}
