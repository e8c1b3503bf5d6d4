//! Time as the index cache sees it. In the mirror it is the system's; a test
//! holds a clock it can move forward, so that expiry, stale-while-revalidate,
//! negative caching and the revalidate interval are tested by moving time
//! instead of sleeping through it.
//!
//! A moved clock is the real clock plus an offset, never a frozen one: code
//! that waits on tokio timers (the upstream client's timeouts) keeps working
//! in such a test, and only what reads this clock sees the jump.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A cheap handle to the time source; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system's clock. `Some`: how far a test has moved it, in ns.
    offset: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that starts at the system's time and moves ahead only when
    /// `advance` is called (besides the real time passing).
    pub fn movable() -> Self {
        Self {
            offset: Some(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Moves a movable clock forward by `by`, for every clone of it.
    ///
    /// # Panics
    /// On the system's clock: moving it is a mistake in a test, not a
    /// condition to handle.
    pub fn advance(&self, by: Duration) {
        let offset = self
            .offset
            .as_ref()
            .unwrap_or_else(|| panic!("the system clock cannot be moved"));
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        offset.fetch_add(nanos, Ordering::SeqCst);
    }

    fn offset(&self) -> Duration {
        self.offset.as_ref().map_or(Duration::ZERO, |o| {
            Duration::from_nanos(o.load(Ordering::SeqCst))
        })
    }

    /// Monotonic time, for expiry.
    pub fn now(&self) -> Instant {
        Instant::now() + self.offset()
    }

    /// Wall-clock time, for what is stored and what HTTP dates say.
    pub fn system_now(&self) -> SystemTime {
        SystemTime::now() + self.offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_movable_clock_moves_for_every_clone_and_both_times_agree() {
        let clock = Clock::movable();
        let other = clock.clone();
        let (before, before_wall) = (clock.now(), clock.system_now());
        other.advance(Duration::from_secs(3600));
        let moved = clock.now() - before;
        let moved_wall = clock
            .system_now()
            .duration_since(before_wall)
            .expect("wall time moved forward");
        assert!(moved >= Duration::from_secs(3600), "{moved:?}");
        assert!(moved_wall >= Duration::from_secs(3600), "{moved_wall:?}");
        // Only real time separates the two readings from the hour.
        assert!(moved < Duration::from_secs(3660), "{moved:?}");
    }

    #[test]
    fn the_system_clock_is_not_offset() {
        let clock = Clock::system();
        let before = Instant::now();
        let now = clock.now();
        assert!(now >= before && now - before < Duration::from_secs(60));
    }

    #[test]
    #[should_panic(expected = "cannot be moved")]
    fn the_system_clock_cannot_be_moved() {
        Clock::system().advance(Duration::from_secs(1));
    }
}
