//! Wall-clock time as the records store it: milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the epoch. Commands carry the time chosen by the
/// proposer so that applying a command is deterministic on every member.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// ISO-8601 with milliseconds, as EC2 answers: `2026-01-01T00:00:00.000Z`.
pub fn iso8601_ms(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_ec2() {
        assert_eq!(super::iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::iso8601_ms(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
    }
}
