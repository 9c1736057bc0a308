//! Quota-aware scan cadence (SPEC section 14): which providers a run lists, and which it defers.
//!
//! No provider has an updated-since filter, so every scan re-lists every record, and a listing
//! spends the same daily quota as writing. Per provider the state store keeps a [`CostModel`]:
//! the last scan's pages, contacts and writes, and the requests spent in the current quota day
//! (the provider's own `X-RateLimit-*-Day` count where it sends one, our count otherwise).
//! [`decide`] is a pure function of that model, the provider's [`Quota`] and the time: it reads
//! no clock, so a whole simulated day can be tested tick by tick.
//!
//! The rule. A scan is expected to cost its pages plus the writes the last scan sent. Our share
//! of the day is `daily_limit × headroom` (the rest is left to other users of the key). A scan
//! that would leave the day's spending above that share is never started: the provider is
//! deferred until the quota resets. The daemon also *spreads* scans: it lets the day's spending
//! grow no faster than the share accrues over the day, plus an allowance of one hour's share (or
//! one scan, whichever is more) so that a small account is scanned every tick. A 50,000-contact
//! Privy account (500 pages) at 10,000 a day and headroom 0.8 is then scanned every 90 minutes,
//! 16 times a day, which is `daily_limit × headroom × page_size / contacts`, the physical limit.
//! `min_scan_interval` can ask for less.
//!
//! A deferred provider takes part through its snapshot (its records as last listed, see
//! `crate::state`); its own writes wait for its next scan.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::config::{ProviderConfig, ProviderSpecific};
use crate::model::ProviderKind;

/// The length of a quota day.
pub const DAY: Duration = Duration::from_secs(86_400);

/// What one provider's scans cost and what it spent today, as last measured. Kept in the state
/// store (`scan_costs`), one row per provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostModel {
    /// When its last complete listing finished.
    pub last_scan_at: Option<DateTime<Utc>>,
    /// Pages the last complete listing took.
    pub pages: u64,
    /// Records the last complete listing returned.
    pub contacts: u64,
    /// Writes sent after the last listing: what the next scan is expected to send too.
    pub writes: u64,
    /// Requests we sent in the current quota day (listings, writes and retries).
    pub spent_today: u64,
    /// Requests the provider last said are left today for every user of the key.
    pub day_remaining: Option<u64>,
    /// When the current quota day ends: as the provider said (`X-RateLimit-Reset-Day`), else
    /// the next midnight UTC after the first request of the day.
    pub day_resets_at: Option<DateTime<Utc>>,
}

impl CostModel {
    /// The model as it stands at `now`: once its quota day has ended, the day's spending is
    /// forgotten.
    pub fn at(&self, now: DateTime<Utc>) -> CostModel {
        let mut m = self.clone();
        if m.day_resets_at.is_some_and(|end| end <= now) {
            m.spent_today = 0;
            m.day_remaining = None;
            m.day_resets_at = None;
        }
        m
    }

    /// Requests a scan is expected to cost: its pages (at least one, for a provider never
    /// listed) plus the writes the last scan sent.
    pub fn scan_cost(&self) -> u64 {
        self.pages.max(1) + self.writes
    }

    /// Counts `requests` sent at `now`, with the provider's own account of its daily quota when
    /// it gave one (requests left for every user of the key; time until it resets).
    pub fn spend(
        &mut self,
        now: DateTime<Utc>,
        requests: u64,
        reported_remaining: Option<u64>,
        resets_in: Option<Duration>,
    ) {
        *self = self.at(now);
        self.spent_today += requests;
        if reported_remaining.is_some() {
            self.day_remaining = reported_remaining;
        }
        let reported_end = resets_in.and_then(|d| TimeDelta::from_std(d).ok().map(|d| now + d));
        self.day_resets_at = reported_end
            .or(self.day_resets_at)
            .or_else(|| Some(next_midnight(now)));
    }

    /// Records a complete listing that finished at `now`.
    pub fn scanned(&mut self, now: DateTime<Utc>, pages: u64, contacts: u64) {
        self.last_scan_at = Some(now);
        self.pages = pages;
        self.contacts = contacts;
    }
}

/// A provider's quota settings, from its config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Requests a day the provider allows the key (Privy's `daily_limit`); `None`: no daily
    /// quota, so scans are paced only by `min_scan_interval`.
    pub daily_limit: Option<u64>,
    /// The share of the quota that is ours (`headroom`).
    pub share: f64,
    /// Least time between two scans (`min_scan_interval`).
    pub min_scan_interval: Option<Duration>,
}

impl Quota {
    /// The quota settings of a configured provider.
    pub fn of(p: &ProviderConfig) -> Quota {
        let daily_limit = match &p.specific {
            ProviderSpecific::Privy { daily_limit, .. } => *daily_limit,
            _ => None,
        };
        Quota {
            daily_limit,
            share: p.share,
            min_scan_interval: p.min_scan_interval,
        }
    }

    /// Whether a scan of the provider can ever be deferred (a daily quota or a least interval
    /// between scans); if not, its snapshot is never read.
    pub fn can_defer(&self) -> bool {
        self.daily_limit.is_some() || self.min_scan_interval.is_some()
    }

    /// Our requests a day: the daily limit times the share, as the rate budget counts it.
    pub fn budget(&self) -> Option<u64> {
        self.daily_limit
            .map(|d| ((d as f64) * self.share.clamp(0.0, 1.0)).floor() as u64)
    }

    /// Requests spent today as far as our share goes: our own count, or what the provider's
    /// count says every user of the key spent, whichever is more (others spending more than
    /// their headroom eats into ours).
    fn spent(&self, m: &CostModel) -> u64 {
        let reported = match (self.daily_limit, m.day_remaining) {
            (Some(limit), Some(left)) => limit.saturating_sub(left),
            _ => 0,
        };
        m.spent_today.max(reported)
    }
}

/// How a run picks the providers it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pacing {
    /// A one-shot run: list every provider whose scan today's quota can still pay for.
    #[default]
    WhenAffordable,
    /// The daemon: also spread each provider's scans over the day, and keep
    /// `min_scan_interval`.
    Spread,
}

/// Why a provider is not listed this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeferReason {
    /// Today's share of the daily quota cannot pay for a scan.
    QuotaSpent,
    /// The day's scans are spread out: its next one is due later.
    Spread,
    /// `min_scan_interval` has not passed since its last scan.
    MinInterval,
}

/// A provider that is not listed this run, and when it can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferral {
    pub reason: DeferReason,
    /// The earliest time a scan is allowed again.
    pub until: DateTime<Utc>,
    /// Requests a scan is expected to cost.
    pub cost: u64,
    /// Requests of our share left today (`None`: no daily quota).
    pub left: Option<u64>,
}

impl std::fmt::Display for Deferral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let when = self
            .until
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match self.reason {
            DeferReason::QuotaSpent => write!(
                f,
                "not listed: a scan costs about {} requests and {} of today's quota share are left; it can be listed again after {when}, when the daily quota resets",
                self.cost,
                self.left.unwrap_or(0)
            ),
            DeferReason::Spread => write!(
                f,
                "not listed: its scans are spread over the day to fit the daily quota; next scan after {when}"
            ),
            DeferReason::MinInterval => {
                write!(f, "not listed: `min_scan_interval` has not passed; next scan after {when}")
            }
        }
    }
}

/// Whether to list a provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Scan,
    Defer(Deferral),
}

/// Decides whether to list a provider at `now`. Pure: the same inputs give the same verdict.
pub fn decide(now: DateTime<Utc>, quota: &Quota, model: &CostModel, pacing: Pacing) -> Verdict {
    let m = model.at(now);
    let cost = m.scan_cost();
    let mut due = now;
    let mut reason = DeferReason::Spread;
    if pacing == Pacing::Spread {
        if let (Some(every), Some(last)) = (quota.min_scan_interval, m.last_scan_at) {
            let next = last + delta(every);
            if next > due {
                due = next;
                reason = DeferReason::MinInterval;
            }
        }
    }
    let left = quota.budget().map(|b| b.saturating_sub(quota.spent(&m)));
    if let Some(budget) = quota.budget() {
        let spent = quota.spent(&m);
        let day_end = m.day_resets_at.unwrap_or_else(|| next_midnight(now));
        if spent + cost > budget {
            return Verdict::Defer(Deferral {
                reason: DeferReason::QuotaSpent,
                until: day_end.max(due),
                cost,
                left,
            });
        }
        if pacing == Pacing::Spread {
            let allowed = spread_until(day_end, budget, spent + cost, cost);
            if allowed > due {
                due = allowed;
                reason = DeferReason::Spread;
            }
        }
    }
    if due <= now {
        Verdict::Scan
    } else {
        Verdict::Defer(Deferral {
            reason,
            until: due,
            cost,
            left,
        })
    }
}

/// The earliest time the day's spending may reach `need` when our share of `budget` accrues
/// evenly over the day ending at `day_end`, plus an allowance of one hour's share or one scan
/// (`cost`), whichever is more.
fn spread_until(day_end: DateTime<Utc>, budget: u64, need: u64, cost: u64) -> DateTime<Utc> {
    let day_start = day_end - delta(DAY);
    let allowance = cost.max(budget / 24);
    let Some(accrued) = need.checked_sub(allowance).filter(|n| *n > 0) else {
        return day_start;
    };
    if budget == 0 {
        return day_end;
    }
    // Seconds into the day at which `budget × t / DAY` reaches `accrued`, rounded up.
    let secs = (u128::from(accrued) * u128::from(DAY.as_secs())).div_ceil(u128::from(budget));
    day_start + TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1_000_000))
}

/// What one tick does: the providers it lists, and those it defers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickPlan {
    pub scan: Vec<ProviderKind>,
    pub defer: Vec<(ProviderKind, Deferral)>,
}

/// Decides one tick for every provider (see [`decide`]).
pub fn plan_tick<'a>(
    now: DateTime<Utc>,
    providers: impl IntoIterator<Item = (ProviderKind, &'a Quota, &'a CostModel)>,
    pacing: Pacing,
) -> TickPlan {
    let mut plan = TickPlan::default();
    for (kind, quota, model) in providers {
        match decide(now, quota, model, pacing) {
            Verdict::Scan => plan.scan.push(kind),
            Verdict::Defer(d) => plan.defer.push((kind, d)),
        }
    }
    plan
}

/// What `status` and `/metrics` show for one provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outlook {
    #[serde(serialize_with = "ser_kind")]
    pub provider: ProviderKind,
    /// When its last complete listing finished.
    pub last_scan: Option<DateTime<Utc>>,
    /// When the daemon will list it next (the first tick at or after the time it is allowed).
    pub next_scan: Option<DateTime<Utc>>,
    /// Requests spent in the current quota day.
    pub requests_today: u64,
    /// Requests the day will have cost if the daemon keeps its cadence until the quota resets.
    pub projected_today: u64,
    /// Our share of the daily quota (`daily_limit × headroom`), where it has one.
    pub daily_budget: Option<u64>,
    /// Records its last listing returned.
    pub contacts: u64,
    /// Requests a scan is expected to cost.
    pub scan_cost: u64,
    /// Scans a day its quota, `min_scan_interval` and the schedule allow (`None`: one per tick
    /// of an unknown schedule).
    pub scans_per_day: Option<u64>,
    /// The staleness that allows: a day over `scans_per_day`.
    #[serde(serialize_with = "ser_secs")]
    pub freshness: Option<Duration>,
    /// Why it is not listed at the next tick, if it is not.
    pub deferred: Option<DeferReason>,
}

fn ser_kind<S: serde::Serializer>(k: &ProviderKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

fn ser_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_secs()),
        None => s.serialize_none(),
    }
}

impl Outlook {
    /// The freshness line `status` prints.
    pub fn freshness_line(&self) -> String {
        match (self.freshness, self.scans_per_day) {
            (Some(f), Some(n)) => format!("the quota allows a scan every {} ({n} a day)", human(f)),
            _ => "every scheduled run (no daily quota)".to_owned(),
        }
    }
}

/// Where a provider stands at `now`, and where its cadence takes it: `tick` is the schedule's
/// period, `next_tick` maps a time to the first tick at or after it (the daemon's cron).
pub fn outlook(
    now: DateTime<Utc>,
    provider: ProviderKind,
    quota: &Quota,
    model: &CostModel,
    tick: Option<Duration>,
    next_tick: &dyn Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> Outlook {
    let m = model.at(now);
    let cost = m.scan_cost();
    let budget = quota.budget();
    let spent = quota.spent(&m);
    let per_day_limits = [
        budget.map(|b| b / cost),
        quota
            .min_scan_interval
            .map(|i| DAY.as_secs() / i.as_secs().max(1)),
        tick.map(|t| DAY.as_secs() / t.as_secs().max(1)),
    ];
    let scans_per_day = per_day_limits.into_iter().flatten().min();
    let freshness = scans_per_day.map(|n| {
        if n == 0 {
            DAY
        } else {
            DAY / u32::try_from(n).unwrap_or(u32::MAX)
        }
    });
    let verdict = decide(now, quota, &m, Pacing::Spread);
    let allowed_at = match verdict {
        Verdict::Scan => now,
        Verdict::Defer(d) => d.until,
    };
    let next_scan = next_tick(allowed_at);
    // Scans left today at this cadence: what the quota leaves, the ticks left, and the interval.
    let day_end = m.day_resets_at.unwrap_or_else(|| next_midnight(now));
    let left_secs = (day_end - now).num_seconds().max(0) as u64;
    let scans_left = [
        budget.map(|b| b.saturating_sub(spent) / cost),
        tick.map(|t| left_secs / t.as_secs().max(1)),
        quota
            .min_scan_interval
            .map(|i| left_secs / i.as_secs().max(1)),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(1);
    Outlook {
        provider,
        last_scan: m.last_scan_at,
        next_scan,
        requests_today: spent,
        projected_today: spent + scans_left * cost,
        daily_budget: budget,
        contacts: m.contacts,
        scan_cost: cost,
        scans_per_day,
        freshness,
        deferred: match verdict {
            Verdict::Scan => None,
            Verdict::Defer(d) => Some(d.reason),
        },
    }
}

/// Every configured provider's [`Outlook`] at `now`, from each provider's cost model as
/// `model_of` reads it (the state store's, or the default of a provider never scanned) and the
/// daemon's schedule.
pub fn outlooks<E>(
    config: &crate::config::Config,
    model_of: impl Fn(ProviderKind) -> Result<CostModel, E>,
    now: DateTime<Utc>,
) -> Result<Vec<Outlook>, E> {
    let schedule = &config.schedule;
    let tick = schedule.next_after(now).and_then(|a| {
        let b = schedule.next_after(a)?;
        (b - a).to_std().ok()
    });
    // The first tick at or after `t` (cron resolution is a second).
    let next_tick = |t: DateTime<Utc>| schedule.next_after(t - TimeDelta::seconds(1));
    let mut out = Vec::new();
    for p in &config.providers {
        let model = model_of(p.kind)?;
        out.push(outlook(
            now,
            p.kind,
            &Quota::of(p),
            &model,
            tick,
            &next_tick,
        ));
    }
    Ok(out)
}

/// A duration to the minute, for people (`1h 30m`).
pub fn human(d: Duration) -> String {
    let mins = d.as_secs().div_ceil(60);
    match (mins / 60, mins % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h {m}m"),
    }
}

/// The first midnight UTC after `t`.
pub fn next_midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    let day = t.date_naive() + chrono::Days::new(1);
    day.and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc())
        .unwrap_or(t + delta(DAY))
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-01-05T00:00:00Z".parse().expect("a time")
    }

    fn privy(limit: u64, share: f64) -> Quota {
        Quota {
            daily_limit: Some(limit),
            share,
            min_scan_interval: None,
        }
    }

    fn unlimited() -> Quota {
        Quota {
            daily_limit: None,
            share: 1.0,
            min_scan_interval: None,
        }
    }

    /// One provider in the simulated day: its quota, its cost model, and what one scan costs.
    struct Sim {
        kind: ProviderKind,
        quota: Quota,
        model: CostModel,
        pages: u64,
        contacts: u64,
        writes: u64,
        scans: u64,
    }

    /// Runs a day of `tick`-spaced ticks, scanning what [`plan_tick`] says to; returns the
    /// providers as the day left them.
    fn simulate_day(mut sims: Vec<Sim>, tick: Duration) -> Vec<Sim> {
        let ticks = DAY.as_secs() / tick.as_secs();
        for i in 0..ticks {
            let now = t0() + TimeDelta::seconds((i * tick.as_secs()) as i64);
            let plan = plan_tick(
                now,
                sims.iter().map(|s| (s.kind, &s.quota, &s.model)),
                Pacing::Spread,
            );
            for s in sims.iter_mut().filter(|s| plan.scan.contains(&s.kind)) {
                s.model.spend(now, s.pages + s.writes, None, None);
                s.model.scanned(now, s.pages, s.contacts);
                s.model.writes = s.writes;
                s.scans += 1;
            }
        }
        sims
    }

    fn sim(kind: ProviderKind, quota: Quota, contacts: u64, page_size: u64, writes: u64) -> Sim {
        Sim {
            kind,
            quota,
            model: CostModel::default(),
            pages: contacts.div_ceil(page_size),
            contacts,
            writes,
            scans: 0,
        }
    }

    /// Issue 13: a simulated day, 50,000 Privy contacts, 15-minute ticks, `daily_limit` 10,000,
    /// headroom 0.8. Privy's projected requests stay within 8,000, it is scanned as often as
    /// that allows (the physical limit is 10,000 × 0.8 × 100 / 50,000 = 16 scans), and the
    /// providers without a daily quota are scanned every tick.
    #[test]
    fn a_simulated_day_fits_privy_into_its_quota_and_scans_the_others_every_tick() {
        let tick = Duration::from_secs(15 * 60);
        let day = simulate_day(
            vec![
                sim(ProviderKind::Protocol, unlimited(), 50_000, 100, 0),
                sim(ProviderKind::Callbell, unlimited(), 50_000, 20, 0),
                sim(ProviderKind::Chatwoot, unlimited(), 50_000, 15, 0),
                sim(ProviderKind::Privy, privy(10_000, 0.8), 50_000, 100, 0),
            ],
            tick,
        );
        let privy = &day[3];
        let physical = (10_000.0 * 0.8 * 100.0 / 50_000.0) as u64;
        assert_eq!(physical, 16);
        assert!(
            privy.model.spent_today <= 8_000,
            "spent {}",
            privy.model.spent_today
        );
        assert!(
            privy.scans + 1 >= physical && privy.scans <= physical,
            "Privy scanned {} times, physical limit {physical}",
            privy.scans
        );
        // Evenly: every 90 minutes from the start of the day (16 scans, the last at 22:30).
        assert_eq!(privy.scans, 16);
        assert_eq!(
            privy.model.last_scan_at,
            Some(t0() + TimeDelta::minutes(22 * 60 + 30))
        );
        for other in &day[..3] {
            assert_eq!(other.scans, 96, "{} scanned every tick", other.kind);
        }
    }

    /// What the day projects at its start agrees with the simulation: at most the budget.
    #[test]
    fn the_projection_at_the_start_of_the_day_stays_within_the_share() {
        let mut m = CostModel::default();
        m.scanned(t0() - TimeDelta::hours(1), 500, 50_000);
        let q = privy(10_000, 0.8);
        let o = outlook(
            t0(),
            ProviderKind::Privy,
            &q,
            &m,
            Some(Duration::from_secs(900)),
            &|t| Some(t),
        );
        assert!(o.projected_today <= 8_000, "{o:?}");
        assert_eq!(o.scans_per_day, Some(16));
        assert_eq!(o.freshness, Some(Duration::from_secs(5_400)));
        assert_eq!(
            o.freshness_line(),
            "the quota allows a scan every 1h 30m (16 a day)"
        );
        assert_eq!(o.next_scan, Some(t0()), "a new day starts with a scan");
    }

    /// Expected writes count against the quota like pages: with 50 writes a scan, fewer scans
    /// fit, and spending still stays within the share.
    #[test]
    fn expected_writes_are_part_of_a_scans_cost() {
        let day = simulate_day(
            vec![sim(
                ProviderKind::Privy,
                privy(10_000, 0.8),
                50_000,
                100,
                50,
            )],
            Duration::from_secs(900),
        );
        let p = &day[0];
        assert!(p.model.spent_today <= 8_000, "{}", p.model.spent_today);
        let physical = 8_000 / 550;
        assert!(
            p.scans + 1 >= physical && p.scans <= physical,
            "{} scans, limit {physical}",
            p.scans
        );
    }

    /// A small account is scanned every tick even with a daily quota (one hour's share is
    /// allowed up front), and `min_scan_interval` asks for less.
    #[test]
    fn small_accounts_scan_every_tick_and_min_interval_asks_for_less() {
        let tick = Duration::from_secs(900);
        let mut slow = privy(10_000, 0.8);
        slow.min_scan_interval = Some(Duration::from_secs(3600));
        let day = simulate_day(
            vec![
                sim(ProviderKind::Privy, privy(10_000, 0.8), 300, 100, 2),
                sim(ProviderKind::Protocol, slow, 300, 100, 2),
            ],
            tick,
        );
        assert_eq!(day[0].scans, 96);
        assert_eq!(day[1].scans, 24);
    }

    /// Spent quota defers until the day resets (the provider's reset time when it said one),
    /// in either pacing; our count and the provider's count both limit, whichever is more.
    #[test]
    fn a_spent_quota_defers_until_the_reset_the_provider_named() {
        let now = t0() + TimeDelta::hours(5);
        let q = privy(40, 1.0);
        let mut m = CostModel::default();
        m.scanned(now, 3, 30);
        // We counted 10; the provider says 2 are left for everyone: 38 are gone.
        m.spend(now, 10, Some(2), Some(Duration::from_secs(600)));
        for pacing in [Pacing::WhenAffordable, Pacing::Spread] {
            let Verdict::Defer(d) = decide(now, &q, &m, pacing) else {
                panic!("38 of 40 spent and a scan costs 3: deferred ({pacing:?})");
            };
            assert_eq!(d.reason, DeferReason::QuotaSpent);
            assert_eq!(d.until, now + TimeDelta::seconds(600));
            assert_eq!((d.cost, d.left), (3, Some(2)));
            assert!(
                d.to_string().contains("2026-01-05T05:10:00Z"),
                "the message says when: {d}"
            );
        }
        let later = now + TimeDelta::seconds(600);
        assert_eq!(
            decide(later, &q, &m, Pacing::WhenAffordable),
            Verdict::Scan,
            "the quota reset"
        );
        assert_eq!(m.at(later).spent_today, 0);
        // Our own count limits too, when the provider sends no headers.
        let mut counted = CostModel::default();
        counted.scanned(now, 3, 30);
        counted.spend(now, 38, None, None);
        assert_eq!(counted.day_resets_at, Some(next_midnight(now)));
        assert!(matches!(
            decide(now, &q, &counted, Pacing::WhenAffordable),
            Verdict::Defer(_)
        ));
        counted.spent_today = 37;
        assert_eq!(
            decide(now, &q, &counted, Pacing::WhenAffordable),
            Verdict::Scan
        );
    }

    #[test]
    fn human_durations_round_up_to_the_minute() {
        assert_eq!(human(Duration::from_secs(5_400)), "1h 30m");
        assert_eq!(human(Duration::from_secs(59)), "1m");
        assert_eq!(human(Duration::from_secs(7_200)), "2h");
    }
}
