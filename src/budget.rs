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
//!   counted locally otherwise; when it is spent, requests fail fast instead of waiting a day.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// Requests allowed in the short window, as the provider reports it.
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
    day_reset_at: Option<Instant>,
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
    /// daily quota (also scaled by `share`).
    pub fn new(rate: Rate, share: f64, daily_limit: Option<u64>) -> Arc<Self> {
        let share = share.clamp(0.01, 1.0);
        let scaled = (f64::from(rate.requests.get()) * share).floor().max(1.0) as u32;
        let requests = NonZeroU32::new(scaled).unwrap_or(NonZeroU32::MIN);
        let target = Rate {
            requests,
            per: rate.per + JITTER_ALLOWANCE,
        };
        let daily_reserve = daily_limit.map_or(0, |d| d - ((d as f64) * share).floor() as u64);
        let daily_limit = daily_limit.map(|d| ((d as f64) * share).floor() as u64);
        Arc::new(RateBudget {
            target,
            daily_limit,
            daily_reserve,
            state: Mutex::new(Adaptive {
                limiter: Arc::new(limiter_for(target, 1.0)),
                factor: 1.0,
                successes_since_change: 0,
                paused_until: None,
                day_remaining: daily_limit,
                day_reset_at: None,
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
                if let Some(reset) = st.day_reset_at {
                    if now >= reset {
                        st.day_remaining = self.daily_limit;
                        st.day_reset_at = None;
                    }
                }
                if st.day_remaining == Some(0) {
                    let left = st
                        .day_reset_at
                        .map(|r| r.saturating_duration_since(now))
                        .unwrap_or(Duration::from_secs(86_400));
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
            // The provider allows less than we were told: slow down to its figure.
            let reported = f64::from(limit) / self.target.per.as_secs_f64();
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
            }
        }
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
