//! Shared, adaptive rate budgets: one per provider credential.
//!
//! Every request a process sends to a provider (list pages and writes alike) first takes a
//! permit from that provider's [`RateBudget`]. The budget is a governor limiter at the configured
//! quota less the configured headroom, plus:
//!
//! - a *pause gate*: after a 429 with `Retry-After`, or when the provider's rate-limit headers say
//!   the window is spent, nobody sends until the provider said it is fine;
//! - *adaptive shrinking*: each 429 halves the rate (down to a floor); successes let it recover
//!   gradually back to the configured rate;
//! - an optional *daily quota* (Privy), tracked from the provider's headers when it sends them and
//!   counted locally otherwise; when it is spent, requests fail fast instead of waiting a day. A
//!   locally counted quota starts afresh at the provider's day boundary (midnight in its time
//!   zone, UTC unless configured), so a long-running daemon is never refused past it.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use governor::{DefaultDirectRateLimiter as Limiter, Quota, RateLimiter};
use tokio::time::Instant;

/// A rate: `requests` per `per`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub requests: NonZeroU32,
    pub per: Duration,
}

impl Rate {
    /// Requests per second, as a float.
    pub fn per_second(&self) -> f64 {
        f64::from(self.requests.get()) / self.per.as_secs_f64()
    }
}

/// What a provider told us about its quota in response headers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QuotaReport {
    /// Requests allowed per minute (the short window; Privy's `X-RateLimit-Limit-Minute`).
    /// Compared with the configured rate converted to a minute, whatever its `per`.
    pub window_limit: Option<u32>,
    /// Requests left in the short window.
    pub window_remaining: Option<u32>,
    /// Time until the short window resets.
    pub window_reset: Option<Duration>,
    /// Requests left today.
    pub day_remaining: Option<u32>,
    /// Time until the daily quota resets.
    pub day_reset: Option<Duration>,
}

/// Why a permit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The daily quota is spent; it resets in this long.
    DailyQuotaExhausted(Duration),
}

struct Adaptive {
    limiter: Arc<Limiter>,
    /// Current share of the target rate, 1.0 = full speed.
    factor: f64,
    successes_since_change: u32,
    paused_until: Option<Instant>,
    day_remaining: Option<u64>,
    /// When the daily quota starts afresh (set whenever there is a daily quota).
    day_reset_at: Option<Instant>,
    /// The wall-clock day boundary `day_reset_at` stands for, to find the one after it.
    day_boundary: DateTime<Utc>,
    throttled: u64,
    /// Permits granted since the budget was made (every request sent, retries included).
    granted: u64,
    /// The provider's own last account of its daily quota: requests left for every user of
    /// the key.
    day_reported: Option<u64>,
}

/// What a budget has spent, for the scan-cadence cost model (`crate::cadence`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Requests sent through this budget since it was made, retries included.
    pub requests: u64,
    /// Requests the provider last said are left today for every user of the key.
    pub day_remaining_reported: Option<u64>,
    /// How long until the provider's daily quota resets, as it last said.
    pub day_resets_in: Option<Duration>,
}

/// One provider's shared request budget. Clone the `Arc` to share it.
pub struct RateBudget {
    /// The rate we aim for: the configured quota times (1 - headroom).
    target: Rate,
    /// Our share of the daily quota (the quota times the share).
    daily_limit: Option<u64>,
    /// Requests per day left for other users of the key: the quota times (1 - share).
    daily_reserve: u64,
    /// The time zone whose midnight starts the provider's day.
    day_timezone: chrono_tz::Tz,
    state: Mutex<Adaptive>,
}

impl std::fmt::Debug for RateBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateBudget")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

const MIN_FACTOR: f64 = 1.0 / 16.0;

/// Providers count requests in windows that admit exactly their quota; evenly spaced requests
/// therefore sit on the window's edge, and a millisecond of network jitter tips one over. The
/// budget spaces requests as if each window were this much longer, which tolerates that much
/// jitter at any quota for a cost of (period + allowance) / period (1.025 on a one-second quota).
pub const JITTER_ALLOWANCE: Duration = Duration::from_millis(25);
const RECOVER_AFTER: u32 = 20;

impl RateBudget {
    /// A budget at `rate` scaled by `share` (e.g. 0.8 leaves 20% headroom), with an optional
    /// daily quota (also scaled by `share`) whose day starts at midnight UTC.
    pub fn new(rate: Rate, share: f64, daily_limit: Option<u64>) -> Arc<Self> {
        Self::with_day_boundary(rate, share, daily_limit, chrono_tz::UTC)
    }

    /// As [`RateBudget::new`], with the provider's day starting at midnight in `day_timezone`.
    pub fn with_day_boundary(
        rate: Rate,
        share: f64,
        daily_limit: Option<u64>,
        day_timezone: chrono_tz::Tz,
    ) -> Arc<Self> {
        let share = share.clamp(0.01, 1.0);
        let scaled = (f64::from(rate.requests.get()) * share).floor().max(1.0) as u32;
        let requests = NonZeroU32::new(scaled).unwrap_or(NonZeroU32::MIN);
        let target = Rate {
            requests,
            per: rate.per + JITTER_ALLOWANCE,
        };
        let daily_reserve = daily_limit.map_or(0, |d| d - ((d as f64) * share).floor() as u64);
        let daily_limit = daily_limit.map(|d| ((d as f64) * share).floor() as u64);
        let wall = Utc::now();
        let day_boundary = next_day_boundary(day_timezone, wall);
        let day_reset_at = daily_limit.map(|_| Instant::now() + until(wall, day_boundary));
        Arc::new(RateBudget {
            target,
            daily_limit,
            daily_reserve,
            day_timezone,
            state: Mutex::new(Adaptive {
                limiter: Arc::new(limiter_for(target, 1.0)),
                factor: 1.0,
                successes_since_change: 0,
                paused_until: None,
                day_remaining: daily_limit,
                day_reset_at,
                day_boundary,
                throttled: 0,
                granted: 0,
                day_reported: None,
            }),
        })
    }

    /// The rate this budget aims for.
    pub fn target(&self) -> Rate {
        self.target
    }

    /// Waits until a request may be sent. Fails fast when the daily quota is spent.
    pub async fn acquire(&self) -> Result<(), Refusal> {
        loop {
            let (limiter, paused_until) = {
                let mut st = self.lock();
                let now = Instant::now();
                self.start_new_day_if_due(&mut st, now);
                if st.day_remaining == Some(0) {
                    let left = st.day_reset_at.map_or(Duration::from_secs(86_400), |r| {
                        r.saturating_duration_since(now)
                    });
                    return Err(Refusal::DailyQuotaExhausted(left));
                }
                (st.limiter.clone(), st.paused_until.filter(|p| *p > now))
            };
            if let Some(until) = paused_until {
                tokio::time::sleep_until(until).await;
                continue;
            }
            limiter.until_ready().await;
            let mut st = self.lock();
            // A pause may have started while we waited for the limiter: honour it.
            if st.paused_until.is_some_and(|p| p > Instant::now()) {
                continue;
            }
            if let Some(left) = st.day_remaining.as_mut() {
                *left = left.saturating_sub(1);
            }
            st.granted += 1;
            return Ok(());
        }
    }

    /// Records a 429: pause for `retry_after` (or a short default), and halve the rate.
    pub fn throttled(&self, retry_after: Option<Duration>) {
        let mut st = self.lock();
        st.throttled += 1;
        let pause = retry_after.unwrap_or_else(|| {
            self.target
                .per
                .div_f64(f64::from(self.target.requests.get()))
                .max(Duration::from_millis(500))
        });
        let until = Instant::now() + pause;
        if st.paused_until.is_none_or(|p| p < until) {
            st.paused_until = Some(until);
        }
        let factor = (st.factor / 2.0).max(MIN_FACTOR);
        self.set_factor(&mut st, factor);
    }

    /// Records a success; after a run of them the rate recovers one step.
    pub fn succeeded(&self) {
        let mut st = self.lock();
        if st.factor >= 1.0 {
            return;
        }
        st.successes_since_change += 1;
        if st.successes_since_change >= RECOVER_AFTER {
            let factor = (st.factor * 1.5).min(1.0);
            self.set_factor(&mut st, factor);
        }
    }

    /// Takes the provider's own account of its quota into account.
    pub fn observe(&self, report: &QuotaReport) {
        let mut st = self.lock();
        let now = Instant::now();
        if report.window_remaining == Some(0) {
            let until = now + report.window_reset.unwrap_or(self.target.per);
            if st.paused_until.is_none_or(|p| p < until) {
                st.paused_until = Some(until);
            }
        }
        if let Some(limit) = report.window_limit {
            // The provider allows less than we were told: slow down to its figure. Both are
            // compared per second: the header counts a minute, the config any `per`.
            let reported = f64::from(limit) / 60.0;
            let current = self.target.per_second() * st.factor;
            if reported < current && limit > 0 {
                let factor = (reported * 0.9 / self.target.per_second()).clamp(MIN_FACTOR, 1.0);
                self.set_factor(&mut st, factor);
            }
        }
        if let Some(left) = report.day_remaining {
            let ours = st.day_remaining.unwrap_or(u64::MAX);
            // The provider counts every user of the key: leave the headroom share of its
            // remaining count to the others.
            st.day_remaining = Some(ours.min(u64::from(left).saturating_sub(self.daily_reserve)));
            st.day_reported = Some(u64::from(left));
            if let Some(reset) = report.day_reset {
                st.day_reset_at = Some(now + reset);
                let wall = Utc::now();
                st.day_boundary =
                    wall + chrono::TimeDelta::from_std(reset).unwrap_or(chrono::TimeDelta::zero());
            }
        }
    }

    /// Requests per second this budget currently aims for (the target, less any slowing down
    /// after 429s or a provider's lower figure).
    pub fn current_rate(&self) -> f64 {
        self.target.per_second() * self.lock().factor
    }

    /// Starts a new day once its boundary has passed: the daily quota is whole again, and the
    /// next reset is the day boundary after this one (however many days went by).
    fn start_new_day_if_due(&self, st: &mut Adaptive, now: Instant) {
        let Some(mut reset) = st.day_reset_at else {
            return;
        };
        if now < reset {
            return;
        }
        while now >= reset {
            let next = next_day_boundary(self.day_timezone, st.day_boundary);
            reset += until(st.day_boundary, next);
            st.day_boundary = next;
        }
        st.day_remaining = self.daily_limit;
        st.day_reset_at = Some(reset);
        tracing::debug!(timezone = %self.day_timezone, "A new day: the daily quota is whole again.");
    }

    /// What this budget has spent, and the provider's last word on its daily quota.
    pub fn usage(&self) -> Usage {
        let st = self.lock();
        let now = Instant::now();
        Usage {
            requests: st.granted,
            day_remaining_reported: st.day_reported,
            day_resets_in: st.day_reset_at.map(|r| r.saturating_duration_since(now)),
        }
    }

    /// How many 429s this budget has seen.
    pub fn throttled_count(&self) -> u64 {
        self.lock().throttled
    }

    fn set_factor(&self, st: &mut Adaptive, factor: f64) {
        if (factor - st.factor).abs() > f64::EPSILON {
            st.factor = factor;
            st.limiter = Arc::new(limiter_for(self.target, factor));
        }
        st.successes_since_change = 0;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Adaptive> {
        // The lock is never held across an await and no code path panics while holding it, so a
        // poisoned lock still holds consistent numbers: recover it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The first midnight in `tz` strictly after `after`. A midnight that a daylight-saving change
/// skips is taken as the first instant of that day.
fn next_day_boundary(tz: chrono_tz::Tz, after: DateTime<Utc>) -> DateTime<Utc> {
    let local = after.with_timezone(&tz).date_naive();
    let mut day = local;
    loop {
        day = day.succ_opt().unwrap_or(day);
        let midnight = day.and_time(chrono::NaiveTime::MIN);
        let found = tz
            .from_local_datetime(&midnight)
            .earliest()
            .or_else(|| {
                tz.from_local_datetime(&(midnight + chrono::TimeDelta::hours(1)))
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc));
        match found {
            Some(t) if t > after => return t,
            // Unreachable for real time zones; one more day keeps the loop finite anyway.
            _ if day.succ_opt().is_none() => return after + chrono::TimeDelta::days(1),
            _ => {}
        }
    }
}

/// The time from `from` to `to` (zero if `to` is not later).
fn until(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

/// A limiter that spaces requests evenly at `factor` times `rate`, never bursting: any window of
/// the provider's period then holds at most its quota, whether the provider counts in fixed or
/// sliding windows.
fn limiter_for(rate: Rate, factor: f64) -> Limiter {
    let interval = rate.per.div_f64(f64::from(rate.requests.get()) * factor);
    let quota = Quota::with_period(interval.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN);
    RateLimiter::direct(quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u32, per_ms: u64) -> Rate {
        Rate {
            requests: NonZeroU32::new(n).expect("non-zero"),
            per: Duration::from_millis(per_ms),
        }
    }

    #[tokio::test]
    async fn headroom_scales_the_target() {
        let b = RateBudget::new(rate(100, 1000), 0.8, Some(1000));
        assert_eq!(b.target().requests.get(), 80);
    }

    #[tokio::test]
    async fn daily_quota_refuses_when_spent() {
        let b = RateBudget::new(rate(1000, 1000), 1.0, Some(2));
        assert!(b.acquire().await.is_ok());
        assert!(b.acquire().await.is_ok());
        assert!(matches!(
            b.acquire().await,
            Err(Refusal::DailyQuotaExhausted(_))
        ));
    }

    #[tokio::test]
    async fn reported_daily_remaining_keeps_only_the_headroom_reserve() {
        let full = RateBudget::new(rate(1000, 1000), 1.0, Some(10_000));
        full.observe(&QuotaReport {
            day_remaining: Some(997),
            ..QuotaReport::default()
        });
        assert!(
            full.acquire().await.is_ok(),
            "no headroom configured: all 997 are ours"
        );
        let shared = RateBudget::new(rate(1000, 1000), 0.8, Some(10_000));
        shared.observe(&QuotaReport {
            day_remaining: Some(2001),
            ..QuotaReport::default()
        });
        assert!(
            shared.acquire().await.is_ok(),
            "2001 left, 2000 reserved: one is ours"
        );
        assert!(shared.acquire().await.is_err());
    }

    /// The wall-clock time from now to the next midnight in `tz`.
    fn to_midnight(tz: chrono_tz::Tz) -> Duration {
        let now = Utc::now();
        until(now, next_day_boundary(tz, now))
    }

    fn refused_for(result: Result<(), Refusal>) -> Duration {
        match result {
            Err(Refusal::DailyQuotaExhausted(left)) => left,
            Ok(()) => panic!("the daily quota should be spent"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_locally_counted_daily_quota_starts_afresh_at_midnight_utc() {
        let b = RateBudget::new(rate(1000, 1000), 1.0, Some(2));
        b.acquire().await.expect("first");
        b.acquire().await.expect("second");
        let left = refused_for(b.acquire().await);
        let expected = to_midnight(chrono_tz::UTC);
        assert!(
            left.abs_diff(expected) < Duration::from_secs(5),
            "refused until midnight UTC: {left:?} vs {expected:?}"
        );
        tokio::time::advance(left.saturating_sub(Duration::from_secs(1))).await;
        refused_for(b.acquire().await);
        tokio::time::advance(Duration::from_secs(2)).await;
        b.acquire()
            .await
            .expect("a new day: the quota is whole again");
        b.acquire().await.expect("both of it");
        let next = refused_for(b.acquire().await);
        assert!(
            next > Duration::from_secs(86_400 - 5) && next <= Duration::from_secs(86_400),
            "the next reset is the following midnight: {next:?}"
        );
        // Days without a single request: the next one still starts whole, at its own midnight.
        tokio::time::advance(next + Duration::from_secs(3 * 86_400)).await;
        b.acquire().await.expect("days later");
        b.acquire().await.expect("days later, both");
        assert!(refused_for(b.acquire().await) <= Duration::from_secs(86_400));
    }

    #[tokio::test(start_paused = true)]
    async fn the_day_boundary_follows_the_configured_time_zone() {
        let tz: chrono_tz::Tz = "Asia/Tokyo".parse().expect("zone");
        let b = RateBudget::with_day_boundary(rate(1000, 1000), 1.0, Some(1), tz);
        b.acquire().await.expect("first");
        let left = refused_for(b.acquire().await);
        let expected = to_midnight(tz);
        assert!(
            left.abs_diff(expected) < Duration::from_secs(5),
            "refused until midnight in Tokyo: {left:?} vs {expected:?}"
        );
        tokio::time::advance(left + Duration::from_millis(1)).await;
        b.acquire().await.expect("a new day in Tokyo");
    }

    #[tokio::test]
    async fn a_per_minute_limit_header_is_compared_per_minute_whatever_the_configured_per() {
        // Configured 10/s (600 a minute); the provider says 300 a minute (5/s): slow down.
        let b = RateBudget::new(rate(10, 1000), 1.0, None);
        b.observe(&QuotaReport {
            window_limit: Some(300),
            ..QuotaReport::default()
        });
        let r = b.current_rate();
        assert!(r < 5.0 && r > 4.0, "slowed to 90% of 5/s: {r}");
        // Configured 60 a minute; the provider says 120 a minute: nothing to slow down.
        let m = RateBudget::new(rate(60, 60_000), 1.0, None);
        let before = m.current_rate();
        m.observe(&QuotaReport {
            window_limit: Some(120),
            ..QuotaReport::default()
        });
        assert!((m.current_rate() - before).abs() < 1e-9);
        // Configured 10/s; the provider allows 6000 a minute (100/s): no slowing either.
        let fast = RateBudget::new(rate(10, 1000), 1.0, None);
        let before = fast.current_rate();
        fast.observe(&QuotaReport {
            window_limit: Some(6000),
            ..QuotaReport::default()
        });
        assert!((fast.current_rate() - before).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_429_pauses_everyone_until_retry_after() {
        let b = RateBudget::new(rate(1000, 1000), 1.0, None);
        b.acquire().await.expect("permit");
        b.throttled(Some(Duration::from_millis(200)));
        let start = Instant::now();
        b.acquire().await.expect("permit");
        assert!(start.elapsed() >= Duration::from_millis(190));
        assert_eq!(b.throttled_count(), 1);
    }
}
#[cfg(test)]
mod pacing {
    use super::*;

    /// Evenly spaced: eleven permits at 50/s take at least ten intervals (a lower bound, so
    /// this cannot flake on a slow machine).
    #[tokio::test(flavor = "multi_thread")]
    async fn permits_are_spaced_not_bursted() {
        let b = RateBudget::new(
            Rate {
                requests: NonZeroU32::new(50).expect("nz"),
                per: Duration::from_secs(1),
            },
            1.0,
            None,
        );
        let t = Instant::now();
        for _ in 0..11 {
            b.acquire().await.expect("ok");
        }
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }
}
