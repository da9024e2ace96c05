//! The time the operator hands the core as `now`.
//!
//! The core times failovers by differences of `now` (failoverDelay, the bound on a crashed
//! primary's restart in place). Read from the wall clock, an NTP step would move those
//! differences: stepped back an hour, a failover would wait an hour; stepped forward, a
//! primary restarting in place would be failed over at once. So the wall clock is read
//! once, when the operator starts, and advanced by the monotonic clock from then on: the
//! timestamps still read as dates in status and events, and no step of the wall clock
//! reaches a decision while the operator runs. (A stamp persisted by an earlier operator
//! process may come from a clock that has stepped since; the core counts a stamp from the
//! future from now.)

use cnpg_core::time::Timestamp;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch as of the operator's start, plus the monotonic time since.
pub fn now() -> Timestamp {
    static ANCHOR: OnceLock<(u64, Instant)> = OnceLock::new();
    let (wall, at) = ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        (wall, Instant::now())
    });
    Timestamp(wall.saturating_add(at.elapsed().as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_reads_as_a_date_and_never_goes_back() {
        let a = now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        assert!(a.millis().abs_diff(wall) < 60_000, "{a:?} vs {wall}");
        let b = now();
        assert!(b >= a);
    }
}
