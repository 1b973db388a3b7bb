//! The one back-off policy of every retry loop in Cairn: start short, double
//! after each failure, stop growing at a cap, start short again after a
//! success. Pure arithmetic; the callers sleep.

use std::time::Duration;

/// A doubling delay between `first` and `max`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max, next: first }
    }

    /// The delay to wait now; the one after it is twice as long (up to the
    /// cap).
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay before attempt `n + 1` of a bounded retry (`n` from 1),
    /// without keeping state: `first * 2^(n-1)`, at most `max`.
    pub fn delay(first: Duration, max: Duration, n: u32) -> Duration {
        first.saturating_mul(1 << n.saturating_sub(1).min(16)).min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let seen: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(seen, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(Backoff::delay(ms(200), ms(5000), 1), ms(200));
        assert_eq!(Backoff::delay(ms(200), ms(5000), 3), ms(800));
        assert_eq!(Backoff::delay(ms(200), ms(5000), 40), ms(5000));
    }
}
