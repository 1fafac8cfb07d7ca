//! This machine's clocks: monotonic time now, the UTC time of monotonic 0, and monotonic µs turned into UTC.

use nix::time::{ClockId, clock_gettime};

/// CLOCK_MONOTONIC now, in µs since boot.
pub fn monotonic_usec_now() -> Option<u64> {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(t.tv_sec()).ok()?;
    let nanos = u64::try_from(t.tv_nsec()).ok()?;
    secs.checked_mul(1_000_000)?.checked_add(nanos / 1000)
}

/// UTC wall-clock time of monotonic 0 on this machine (now − monotonic now).
///
/// Valid for records of this boot only; NTP steps move it by the size of the step.
pub fn boot_time_now() -> Option<jiff::Timestamp> {
    let mono = clock_gettime(ClockId::CLOCK_MONOTONIC).ok()?;
    let now = jiff::Timestamp::now();
    let mono = jiff::SignedDuration::new(mono.tv_sec(), i32::try_from(mono.tv_nsec()).ok()?);
    now.checked_sub(mono).ok()
}

/// The UTC time of a monotonic stamp, given the boot time.
pub fn at_monotonic(boot_time: jiff::Timestamp, monotonic_usec: u64) -> Option<jiff::Timestamp> {
    let usec = i64::try_from(monotonic_usec).ok()?;
    boot_time
        .checked_add(jiff::SignedDuration::from_micros(usec))
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_is_in_the_past_and_monotonic_time_maps_back() {
        let boot = boot_time_now().unwrap();
        assert!(boot < jiff::Timestamp::now());
        let now = at_monotonic(boot, monotonic_usec_now().unwrap()).unwrap();
        let drift = jiff::Timestamp::now().duration_since(now);
        assert!(drift.as_secs().abs() < 5, "{drift:?}");
        assert_eq!(at_monotonic(boot, u64::MAX), None);
    }
}
