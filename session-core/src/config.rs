//! Timeouts, limits and the clock every store reads time from.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default limit on the encoded size of one session's data: 256 KiB.
pub const DEFAULT_MAX_DATA_SIZE: usize = 256 * 1024;

/// Encoded size of a session with no data (the format byte and `{}`): the
/// smallest useful data limit, since every save stores at least this much.
pub(crate) const EMPTY_DATA_LEN: usize = 3;

/// Where a store reads the current time from.
///
/// Stores never call `SystemTime::now()` themselves, so tests can drive expiry
/// with a [`ManualClock`] instead of sleeping.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The real wall clock.
///
/// Stores follow it as it is: if it steps back (a manual or NTP
/// correction), a session that had expired but is still stored is live
/// again until the clock passes its deadline once more. Purged sessions
/// stay gone, so running `purge_expired` regularly keeps that window
/// short (Redis also drops expired records by itself). A clock that
/// never stepped back would be no cure: after a step forward was
/// corrected, it would stand still, and no session would expire.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        to_ms(SystemTime::now())
    }
}

/// A clock that moves only when told to: for tests of expiry without sleeps.
///
/// It starts at the real current time (so deadlines a server enforces on its
/// own, such as Redis key expiry, stay sensible) and is shared by cloning.
///
/// ```
/// use std::time::Duration;
/// use session_core::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let start = clock.now_ms();
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now_ms() - start, 90_000);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at the real current time.
    pub fn new() -> Self {
        Self(Arc::new(AtomicI64::new(SystemClock.now_ms())))
    }

    /// Move the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = duration_ms(by);
        // Saturating: a huge step parks the clock at the end of time rather
        // than wrapping it to a negative one.
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by))
            });
    }

    /// Set the clock to a point in time.
    pub fn set(&self, to: SystemTime) {
        self.0.store(to_ms(to), Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What happens when an owner who already has the maximum number of sessions
/// signs in again (see [`SessionConfig::max_sessions_per_owner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnerLimitPolicy {
    /// Refuse to bind the new session: the save returns
    /// [`Error::TooManySessions`](crate::Error::TooManySessions) and nothing
    /// changes.
    RefuseNew,
    /// End the owner's oldest sessions (earliest created) to make room.
    EndOldest,
}

/// A per-owner limit on concurrent sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerLimit {
    /// Most live sessions one owner may have. At least 1.
    pub max: u32,
    /// What to do when a new session would exceed it.
    pub policy: OwnerLimitPolicy,
}

/// Timeouts and limits shared by every store.
///
/// * **Idle timeout** (required): a session not saved or touched for this long
///   expires. Each save or [`touch`](crate::SessionStore::touch) slides it.
/// * **Absolute timeout** (optional): a session expires this long after it was
///   created, however active it is. OWASP recommends one for anything that
///   guards an account.
///
/// Both are enforced by the store on every read, not only by cleanup.
///
/// ```
/// use std::time::Duration;
/// use session_core::SessionConfig;
///
/// let config = SessionConfig::new(Duration::from_secs(30 * 60))
///     .with_absolute_timeout(Duration::from_secs(12 * 3600));
/// assert_eq!(config.idle_timeout(), Duration::from_secs(1800));
/// ```
#[derive(Clone)]
pub struct SessionConfig {
    idle_timeout: Duration,
    absolute_timeout: Option<Duration>,
    max_data_size: usize,
    owner_limit: Option<OwnerLimit>,
    clock: Arc<dyn Clock>,
}

impl SessionConfig {
    /// Sessions expire after `idle_timeout` without a save or touch. No
    /// absolute timeout, a 256 KiB data limit and the system clock.
    ///
    /// A zero `idle_timeout` is raised to one millisecond: there is no
    /// "never expires" (for a very long one, `Duration::MAX` saturates
    /// at the end of time).
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            idle_timeout: idle_timeout.max(Duration::from_millis(1)),
            absolute_timeout: None,
            max_data_size: DEFAULT_MAX_DATA_SIZE,
            owner_limit: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Shorthand for [`SessionConfig::new`] with an idle timeout in seconds.
    pub fn from_secs(idle_timeout_secs: u64) -> Self {
        Self::new(Duration::from_secs(idle_timeout_secs))
    }

    /// Also expire sessions this long after creation, however active.
    /// Zero is raised to one millisecond. It may be shorter than the idle
    /// timeout: sessions then end at their absolute deadline.
    ///
    /// A session keeps the absolute deadline it was stored with, except
    /// that a store configured with an earlier one (an absolute timeout
    /// added or shortened after sessions were stored) applies it, counted
    /// from the session's creation, at the session's next save or touch.
    #[must_use]
    pub fn with_absolute_timeout(mut self, absolute: Duration) -> Self {
        self.absolute_timeout = Some(absolute.max(Duration::from_millis(1)));
        self
    }

    /// Refuse to save sessions whose encoded data exceeds `bytes`
    /// ([`Error::TooLarge`](crate::Error::TooLarge)).
    ///
    /// `bytes` is raised to 3, the encoded size of a session with no data,
    /// if given smaller: a lower limit would refuse every save, even of an
    /// empty session.
    #[must_use]
    pub fn with_max_data_size(mut self, bytes: usize) -> Self {
        self.max_data_size = bytes.max(EMPTY_DATA_LEN);
        self
    }

    /// Limit how many live sessions one owner may have at once. `max` is
    /// raised to 1 if given as 0.
    #[must_use]
    pub fn with_max_sessions_per_owner(mut self, max: u32, policy: OwnerLimitPolicy) -> Self {
        self.owner_limit = Some(OwnerLimit {
            max: max.max(1),
            policy,
        });
        self
    }

    /// Read time from `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The sliding idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The absolute lifetime, if any.
    pub fn absolute_timeout(&self) -> Option<Duration> {
        self.absolute_timeout
    }

    /// The limit on a session's encoded data, in bytes.
    pub fn max_data_size(&self) -> usize {
        self.max_data_size
    }

    /// The per-owner session limit, if any.
    pub fn max_sessions_per_owner(&self) -> Option<OwnerLimit> {
        self.owner_limit
    }

    /// The clock.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// The current time in Unix milliseconds, from the configured clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The absolute deadline of a session created at `created_ms`.
    pub fn absolute_deadline(&self, created_ms: i64) -> Option<i64> {
        self.absolute_timeout
            .map(|a| created_ms.saturating_add(duration_ms(a)))
    }

    /// When a session active at `now_ms` expires: the idle deadline, capped by
    /// its absolute deadline.
    pub fn expiry_after_activity(&self, now_ms: i64, absolute_deadline: Option<i64>) -> i64 {
        let idle = now_ms.saturating_add(duration_ms(self.idle_timeout));
        absolute_deadline.map_or(idle, |abs| idle.min(abs))
    }
}

impl Default for SessionConfig {
    /// A 24-hour idle timeout, no absolute timeout.
    fn default() -> Self {
        Self::new(Duration::from_secs(24 * 3600))
    }
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("idle_timeout", &self.idle_timeout)
            .field("absolute_timeout", &self.absolute_timeout)
            .field("max_data_size", &self.max_data_size)
            .field("owner_limit", &self.owner_limit)
            .field("clock", &self.clock)
            .finish()
    }
}

/// Milliseconds since the Unix epoch for `t` (negative before 1970).
pub fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ms(d),
        Err(e) => -duration_ms(e.duration()),
    }
}

/// The `SystemTime` for Unix milliseconds `ms`.
pub fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// A duration in whole milliseconds, saturating.
pub fn duration_ms(d: Duration) -> i64 {
    // Not `as_millis()`: its u128 division is a measurable part of reading
    // the clock on every store operation.
    let ms = d
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()));
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_idle_deadline_capped_by_absolute() {
        let config = SessionConfig::from_secs(60).with_absolute_timeout(Duration::from_secs(100));
        let abs = config.absolute_deadline(1_000);
        assert_eq!(abs, Some(101_000));
        assert_eq!(config.expiry_after_activity(1_000, abs), 61_000);
        assert_eq!(config.expiry_after_activity(80_000, abs), 101_000);
        assert_eq!(
            SessionConfig::from_secs(60).expiry_after_activity(5, None),
            60_005
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let t0 = clock.now_ms();
        assert_eq!(clock.now_ms(), t0);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_ms(), t0 + 1500);
        clock.set(from_ms(42));
        assert_eq!(clock.now_ms(), 42);
    }

    #[test]
    fn millis_round_trip_and_saturate() {
        let t = from_ms(1_700_000_000_123);
        assert_eq!(to_ms(t), 1_700_000_000_123);
        assert_eq!(to_ms(from_ms(-5)), -5);
        assert_eq!(duration_ms(Duration::MAX), i64::MAX);
        assert_eq!(duration_ms(Duration::from_micros(1_234_567)), 1_234);
        assert_eq!(
            duration_ms(Duration::from_secs(u64::MAX / 1000 + 1)),
            i64::MAX
        );
    }

    #[test]
    fn zero_limits_are_clamped() {
        let c = SessionConfig::new(Duration::ZERO)
            .with_max_sessions_per_owner(0, OwnerLimitPolicy::RefuseNew);
        assert!(c.idle_timeout() > Duration::ZERO);
        assert_eq!(c.max_sessions_per_owner().map(|l| l.max), Some(1));
    }

    #[test]
    fn a_data_limit_below_an_empty_session_is_raised_to_fit_one() {
        for tiny in [0, 1, 2] {
            let c = SessionConfig::from_secs(60).with_max_data_size(tiny);
            assert_eq!(c.max_data_size(), EMPTY_DATA_LEN, "{tiny}");
        }
        let c = SessionConfig::from_secs(60).with_max_data_size(64);
        assert_eq!(c.max_data_size(), 64, "a usable limit is kept as given");
    }
}
