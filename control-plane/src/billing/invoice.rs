//! Invoices: one per org per calendar month (UTC), priced from the usage rollup and the org's
//! plan.
//!
//! Lines: the plan's monthly price, then one line per metered quantity — webhook deliveries,
//! job minutes (`ceil(sum of the period's job_seconds / 60)`), LLM tokens — with the plan's
//! included quantity, the billable rest and its unit price in micro-units of the minor unit.
//! **Rounding**, once per line: `amount = round_half_up(billable × unit_price_micros / 10^6)`
//! minor units; the subtotal is the sum of the rounded lines and the total equals it (no taxes).
//! All arithmetic is in integers (i128 for the products); no floats anywhere.
//!
//! **Plan changes within a month** are prorated by the seconds each plan was in force
//! ([`plan_seconds`], [`price_prorated`]; the rule is in docs/billing.md): each plan held
//! during the month gets its own lines — its base fee and its included quantities scaled by
//! its share of the month's seconds, its share of each metered quantity, and its own overage
//! prices — each rounded half up once.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::config::PlanConfig;

/// The currency of every price.
pub const CURRENCY: &str = "USD";

/// A calendar month, `YYYY-MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period {
    pub year: i32,
    pub month: u32,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        let (y, m) = s.split_once('-')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        let p = Period {
            year: y.parse().ok()?,
            month: m.parse().ok()?,
        };
        p.start()?;
        Some(p)
    }

    pub fn of(day: NaiveDate) -> Period {
        Period {
            year: day.year(),
            month: day.month(),
        }
    }

    pub fn start(self) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
    }

    /// The first day of the next month.
    pub fn end(self) -> Option<NaiveDate> {
        let (y, m) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        NaiveDate::from_ymd_opt(y, m, 1)
    }

    pub fn previous(self) -> Period {
        if self.month == 1 {
            Period {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Period {
                year: self.year,
                month: self.month - 1,
            }
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The invoice number of an org's period: unique, and the same however often it is made.
pub fn number(org: i64, period: Period) -> String {
    format!("SY-{:04}{:02}-{org}", period.year, period.month)
}

/// Usage of a period, summed from the rollup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub webhook_deliveries: i64,
    pub job_seconds: i64,
    pub llm_tokens: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    /// `base_fee`, `webhook_deliveries`, `job_minutes` or `llm_tokens`.
    pub metric: String,
    pub quantity: i64,
    pub included: i64,
    pub billable: i64,
    /// Price of one billable unit in micro-units of the minor unit (1 cent = 1,000,000).
    pub unit_price: i64,
    /// Minor units, rounded half up once for the line.
    pub amount: i64,
    /// Set when the org changed plans during the period: the plan this line is for and the
    /// share of the period it was in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proration: Option<Proration>,
}

/// A plan's share of a period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Proration {
    pub plan: String,
    /// Whole seconds of the period the plan was in force.
    pub seconds: i64,
    /// Whole seconds of the period.
    pub period_seconds: i64,
}

/// A recorded change of an org's plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanChange {
    pub at: DateTime<Utc>,
    pub from: String,
    pub to: String,
}

/// A plan in force for `seconds` whole seconds of a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanShare {
    pub plan: String,
    pub seconds: i64,
}

/// The plans in force during `[start, end)`, with their whole seconds, in order of first use
/// (a plan held twice is one share). `changes` are the org's recorded changes after `start`
/// (later ones are harmless), oldest first; `current` is its plan now. The plan in force at
/// `start` is the `from` of the first change after it, or `current` if there is none; a
/// change takes effect at its time truncated to the whole second. Also returns the plan in
/// force at the period's end (the invoice's plan).
pub fn plan_seconds(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    changes: &[PlanChange],
    current: &str,
) -> (Vec<PlanShare>, String) {
    let (s, e) = (start.timestamp(), end.timestamp().max(start.timestamp()));
    let after: Vec<&PlanChange> = changes.iter().filter(|c| c.at > start).collect();
    let mut plan = after.first().map_or(current, |c| c.from.as_str());
    let mut since = s;
    let mut shares: Vec<PlanShare> = Vec::new();
    let mut add = |plan: &str, seconds: i64| {
        if seconds <= 0 {
            return;
        }
        match shares.iter_mut().find(|p| p.plan == plan) {
            Some(p) => p.seconds += seconds,
            None => shares.push(PlanShare {
                plan: plan.to_owned(),
                seconds,
            }),
        }
    };
    for c in after.iter().filter(|c| c.at < end) {
        let at = c.at.timestamp().clamp(s, e);
        add(plan, at - since);
        since = at;
        plan = c.to.as_str();
    }
    add(plan, e - since);
    if shares.is_empty() {
        // An empty period: its one plan, for no time.
        shares.push(PlanShare {
            plan: plan.to_owned(),
            seconds: 0,
        });
    }
    (shares, plan.to_owned())
}

/// `value × part / whole`, rounded half up; `value` when `whole` is not positive. The one
/// rounding of a prorated base fee or included quantity.
pub fn prorate(value: i64, part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        return value;
    }
    let (v, p, w) = (
        i128::from(value.max(0)),
        i128::from(part.clamp(0, whole)),
        i128::from(whole),
    );
    i64::try_from((2 * v * p + w) / (2 * w)).unwrap_or(i64::MAX)
}

/// Splits `quantity` in proportion to `weights` (largest remainder: the parts sum to
/// `quantity` exactly, each within one of its exact share; ties go to the earlier weight).
pub fn split(quantity: i64, weights: &[i64]) -> Vec<i64> {
    let total: i128 = weights.iter().map(|w| i128::from((*w).max(0))).sum();
    let q = i128::from(quantity.max(0));
    if weights.is_empty() {
        return Vec::new();
    }
    if total == 0 {
        let mut parts = vec![0; weights.len()];
        parts[0] = quantity.max(0);
        return parts;
    }
    let mut parts: Vec<i128> = Vec::with_capacity(weights.len());
    let mut rems: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let exact = q * i128::from((*w).max(0));
        parts.push(exact / total);
        rems.push((exact % total, i));
    }
    let left = q - parts.iter().sum::<i128>();
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in rems.into_iter().take(usize::try_from(left).unwrap_or(0)) {
        parts[i] += 1;
    }
    parts
        .into_iter()
        .map(|p| i64::try_from(p).unwrap_or(i64::MAX))
        .collect()
}

/// A plan an invoice needs that the configuration does not have.
#[derive(Debug, thiserror::Error)]
#[error("plan {0} is not configured")]
pub struct UnknownPlan(pub String);

/// The lines and subtotal of a period in which the org held the plans of `shares` (from
/// [`plan_seconds`]). With one plan it is exactly [`price`]; with several, see the module
/// header and docs/billing.md.
pub fn price_prorated(
    plans: &BTreeMap<String, PlanConfig>,
    shares: &[PlanShare],
    usage: Totals,
) -> Result<(Vec<Line>, i64), UnknownPlan> {
    let held: Vec<(&PlanShare, &PlanConfig)> = shares
        .iter()
        .map(|s| {
            plans
                .get(&s.plan)
                .map(|p| (s, p))
                .ok_or_else(|| UnknownPlan(s.plan.clone()))
        })
        .collect::<Result<_, _>>()?;
    if let [(_, plan)] = held.as_slice() {
        return Ok(price(plan, usage));
    }
    let period: i64 = shares.iter().map(|s| s.seconds).sum();
    let weights: Vec<i64> = shares.iter().map(|s| s.seconds).collect();
    let proration = |s: &PlanShare| {
        Some(Proration {
            plan: s.plan.clone(),
            seconds: s.seconds,
            period_seconds: period,
        })
    };
    let mut lines = Vec::new();
    for (share, plan) in &held {
        lines.push(Line {
            metric: "base_fee".into(),
            quantity: 1,
            included: 0,
            billable: 1,
            unit_price: plan.monthly_price_minor.saturating_mul(1_000_000),
            amount: prorate(plan.monthly_price_minor, share.seconds, period),
            proration: proration(share),
        });
    }
    for (metric, quantity) in [
        ("webhook_deliveries", usage.webhook_deliveries),
        ("job_minutes", job_minutes(usage.job_seconds)),
        ("llm_tokens", usage.llm_tokens),
    ] {
        let parts = split(quantity, &weights);
        for ((share, plan), quantity) in held.iter().zip(parts) {
            let (included, unit) = metric_terms(plan, metric);
            let included = prorate(included, share.seconds, period);
            let billable = (quantity - included).max(0);
            lines.push(Line {
                metric: metric.into(),
                quantity,
                included,
                billable,
                unit_price: unit,
                amount: amount(billable, unit),
                proration: proration(share),
            });
        }
    }
    let subtotal = lines.iter().map(|l| l.amount).sum();
    Ok((lines, subtotal))
}

/// A plan's included quantity and overage unit price (micro-units) of `metric`.
fn metric_terms(plan: &PlanConfig, metric: &str) -> (i64, i64) {
    match metric {
        "webhook_deliveries" => (
            plan.included.webhook_deliveries,
            plan.overage_micros.webhook_deliveries,
        ),
        "job_minutes" => (plan.included.job_minutes, plan.overage_micros.job_minutes),
        _ => (plan.included.llm_tokens, plan.overage_micros.llm_tokens),
    }
}

/// `billable × unit_micros / 10^6`, rounded half up, in minor units.
pub fn amount(billable: i64, unit_micros: i64) -> i64 {
    let p = i128::from(billable.max(0)) * i128::from(unit_micros.max(0));
    i64::try_from((p + 500_000) / 1_000_000).unwrap_or(i64::MAX)
}

/// Job minutes of a period: its job seconds in whole minutes, rounded up.
pub fn job_minutes(job_seconds: i64) -> i64 {
    (job_seconds.max(0) + 59) / 60
}

/// The lines of an invoice and their subtotal.
pub fn price(plan: &PlanConfig, usage: Totals) -> (Vec<Line>, i64) {
    let mut lines = vec![Line {
        metric: "base_fee".into(),
        quantity: 1,
        included: 0,
        billable: 1,
        unit_price: plan.monthly_price_minor.saturating_mul(1_000_000),
        amount: plan.monthly_price_minor,
        proration: None,
    }];
    for (metric, quantity, included, unit) in [
        (
            "webhook_deliveries",
            usage.webhook_deliveries,
            plan.included.webhook_deliveries,
            plan.overage_micros.webhook_deliveries,
        ),
        (
            "job_minutes",
            job_minutes(usage.job_seconds),
            plan.included.job_minutes,
            plan.overage_micros.job_minutes,
        ),
        (
            "llm_tokens",
            usage.llm_tokens,
            plan.included.llm_tokens,
            plan.overage_micros.llm_tokens,
        ),
    ] {
        let billable = (quantity - included).max(0);
        lines.push(Line {
            metric: metric.into(),
            quantity,
            included,
            billable,
            unit_price: unit,
            amount: amount(billable, unit),
            proration: None,
        });
    }
    let subtotal = lines.iter().map(|l| l.amount).sum();
    (lines, subtotal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> PlanConfig {
        let cfg: crate::config::Config = protocol::service::config::load(
            crate::config::DEFAULTS,
            None,
            "SWITCHYARD_TESTS_NO_ENV_",
        )
        .expect("defaults");
        cfg.plans["team"].clone()
    }

    #[test]
    fn amounts_round_half_up_once_per_line() {
        assert_eq!(amount(1, 499_999), 0);
        assert_eq!(amount(1, 500_000), 1);
        assert_eq!(amount(3, 333_333), 1);
        assert_eq!(amount(1_000_000, 2_000), 2_000);
        assert_eq!(amount(-5, 1_000_000), 0);
        assert_eq!(amount(i64::MAX, i64::MAX), i64::MAX);
    }

    #[test]
    fn job_minutes_round_up() {
        assert_eq!(job_minutes(0), 0);
        assert_eq!(job_minutes(1), 1);
        assert_eq!(job_minutes(60), 1);
        assert_eq!(job_minutes(61), 2);
    }

    #[test]
    fn an_invoice_is_the_base_fee_plus_what_exceeds_the_included_quantities() {
        let p = plan();
        let usage = Totals {
            webhook_deliveries: p.included.webhook_deliveries + 10,
            job_seconds: (p.included.job_minutes + 3) * 60 - 30,
            llm_tokens: p.included.llm_tokens - 1,
        };
        let (lines, subtotal) = price(&p, usage);
        let by: std::collections::HashMap<&str, &Line> =
            lines.iter().map(|l| (l.metric.as_str(), l)).collect();
        assert_eq!(by["base_fee"].amount, p.monthly_price_minor);
        assert_eq!(by["webhook_deliveries"].billable, 10);
        assert_eq!(by["job_minutes"].quantity, p.included.job_minutes + 3);
        assert_eq!(by["job_minutes"].billable, 3);
        assert_eq!(
            by["job_minutes"].amount,
            amount(3, p.overage_micros.job_minutes)
        );
        assert_eq!(by["llm_tokens"].billable, 0);
        assert_eq!(subtotal, lines.iter().map(|l| l.amount).sum::<i64>());
    }

    #[test]
    fn periods_parse_and_step() {
        let p = Period::parse("2026-12").unwrap();
        assert_eq!(p.to_string(), "2026-12");
        assert_eq!(p.end(), NaiveDate::from_ymd_opt(2027, 1, 1));
        assert_eq!(Period::parse("2027-01").unwrap().previous(), p);
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "2026-00"] {
            assert!(Period::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(number(1_000_000, p), "SY-202612-1000000");
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn change(at: &str, from: &str, to: &str) -> PlanChange {
        PlanChange {
            at: t(at),
            from: from.into(),
            to: to.into(),
        }
    }

    fn share(plan: &str, days: i64) -> PlanShare {
        PlanShare {
            plan: plan.into(),
            seconds: days * 86_400,
        }
    }

    const APRIL: (&str, &str) = ("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z");

    #[test]
    fn without_changes_the_current_plan_holds_the_whole_period() {
        let (shares, plan) = plan_seconds(t(APRIL.0), t(APRIL.1), &[], "team");
        assert_eq!(shares, vec![share("team", 30)]);
        assert_eq!(plan, "team");
    }

    #[test]
    fn a_change_splits_the_period_at_its_second_and_names_the_final_plan() {
        let changes = [change("2026-04-11T00:00:00.900Z", "team", "enterprise")];
        let (shares, plan) = plan_seconds(t(APRIL.0), t(APRIL.1), &changes, "enterprise");
        assert_eq!(shares, vec![share("team", 10), share("enterprise", 20)]);
        assert_eq!(plan, "enterprise");
    }

    #[test]
    fn a_change_after_the_period_says_which_plan_held_during_it() {
        let changes = [change("2026-06-03T10:00:00Z", "free", "team")];
        let (shares, plan) = plan_seconds(t(APRIL.0), t(APRIL.1), &changes, "team");
        assert_eq!(shares, vec![share("free", 30)]);
        assert_eq!(plan, "free");
    }

    #[test]
    fn a_change_at_the_periods_first_instant_holds_the_whole_period() {
        // Changes at or before the start are not passed (they are not after it).
        let (shares, _) = plan_seconds(t(APRIL.0), t(APRIL.1), &[], "enterprise");
        assert_eq!(shares, vec![share("enterprise", 30)]);
        // One within its first second counts from that second: the old plan gets nothing.
        let changes = [change("2026-04-01T00:00:00.5Z", "team", "enterprise")];
        let (shares, _) = plan_seconds(t(APRIL.0), t(APRIL.1), &changes, "enterprise");
        assert_eq!(shares, vec![share("enterprise", 30)]);
    }

    #[test]
    fn a_plan_held_twice_is_one_share() {
        let changes = [
            change("2026-04-06T00:00:00Z", "team", "enterprise"),
            change("2026-04-16T00:00:00Z", "enterprise", "team"),
        ];
        let (shares, plan) = plan_seconds(t(APRIL.0), t(APRIL.1), &changes, "team");
        assert_eq!(shares, vec![share("team", 20), share("enterprise", 10)]);
        assert_eq!(plan, "team");
    }

    fn plans() -> BTreeMap<String, PlanConfig> {
        let cfg: crate::config::Config = protocol::service::config::load(
            crate::config::DEFAULTS,
            None,
            "SWITCHYARD_TESTS_NO_ENV_",
        )
        .expect("defaults");
        cfg.plans
    }

    #[test]
    fn one_plan_is_priced_exactly_as_without_proration() {
        let usage = Totals {
            webhook_deliveries: 123_456,
            job_seconds: 200_000,
            llm_tokens: 9_000_000,
        };
        let all = plans();
        let prorated = price_prorated(&all, &[share("team", 30)], usage).unwrap();
        assert_eq!(prorated, price(&all["team"], usage));
        assert!(prorated.0.iter().all(|l| l.proration.is_none()));
        assert!(price_prorated(&all, &[share("gold", 30)], usage).is_err());
    }

    #[test]
    fn a_month_split_between_two_plans_is_a_worked_example() {
        // April: team for 10 days, enterprise for 20. 3,000 job minutes used.
        let all = plans();
        let usage = Totals {
            webhook_deliveries: 0,
            job_seconds: 3_000 * 60,
            llm_tokens: 0,
        };
        let shares = [share("team", 10), share("enterprise", 20)];
        let (lines, total) = price_prorated(&all, &shares, usage).unwrap();
        let line = |metric: &str, plan: &str| {
            lines
                .iter()
                .find(|l| {
                    l.metric == metric && l.proration.as_ref().is_some_and(|p| p.plan == plan)
                })
                .cloned()
                .unwrap()
        };
        // Base fees: 4,900 × 1/3 = 1,633.33 → 1,633; 99,900 × 2/3 = 66,600.
        assert_eq!(line("base_fee", "team").amount, 1_633);
        assert_eq!(line("base_fee", "enterprise").amount, 66_600);
        // Job minutes by time share: 1,000 on team (1,000 of its 3,000 included), 2,000 on
        // enterprise (40,000 of its 60,000 included): nothing billable.
        let team = line("job_minutes", "team");
        assert_eq!(
            (team.quantity, team.included, team.billable),
            (1_000, 1_000, 0)
        );
        let ent = line("job_minutes", "enterprise");
        assert_eq!(
            (ent.quantity, ent.included, ent.billable),
            (2_000, 40_000, 0)
        );
        assert_eq!(
            ent.proration,
            Some(Proration {
                plan: "enterprise".into(),
                seconds: 20 * 86_400,
                period_seconds: 30 * 86_400,
            })
        );
        assert_eq!(total, 1_633 + 66_600);
        // 3,003 minutes: the 3 over team's prorated 1,000 are billed at team's price.
        let usage = Totals {
            job_seconds: 3_003 * 60 - 59,
            ..usage
        };
        let (lines, _) = price_prorated(&all, &shares, usage).unwrap();
        let team = lines
            .iter()
            .find(|l| {
                l.metric == "job_minutes" && l.proration.as_ref().is_some_and(|p| p.plan == "team")
            })
            .unwrap();
        assert_eq!((team.quantity, team.billable), (1_001, 1));
        assert_eq!(
            team.amount,
            amount(1, all["team"].overage_micros.job_minutes)
        );
    }

    #[test]
    fn prorating_rounds_half_up_once() {
        assert_eq!(prorate(4_900, 10, 30), 1_633);
        assert_eq!(prorate(5, 1, 2), 3);
        assert_eq!(prorate(5, 1, 4), 1);
        assert_eq!(prorate(100, 0, 30), 0);
        assert_eq!(prorate(100, 30, 30), 100);
        assert_eq!(prorate(100, 5, 0), 100);
        assert_eq!(prorate(i64::MAX, 1, 1), i64::MAX);
    }

    #[test]
    fn splitting_gives_the_remainder_to_the_largest_fractions() {
        assert_eq!(split(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(split(2, &[1, 2]), vec![1, 1]);
        assert_eq!(split(7, &[0, 5]), vec![0, 7]);
        assert_eq!(split(7, &[0, 0]), vec![7, 0]);
        assert_eq!(split(0, &[3, 4]), vec![0, 0]);
        assert!(split(5, &[]).is_empty());
    }

    /// Money is integers: the billing code has no floating-point type in it at all.
    #[test]
    fn money_never_uses_floats() {
        let source = include_str!("invoice.rs");
        let code = source.split("#[cfg(test)]").next().unwrap();
        for float in [concat!("f", "32"), concat!("f", "64")] {
            assert!(!code.contains(float), "{float} in billing/invoice.rs");
        }
        let invoicing = include_str!("invoicing.rs");
        for float in [concat!("f", "32"), concat!("f", "64")] {
            assert!(
                !invoicing.contains(float),
                "{float} in billing/invoicing.rs"
            );
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use crate::config::Quantities;

        fn quantities(max: i64) -> impl Strategy<Value = Quantities> {
            (0..max, 0..max, 0..max).prop_map(|(a, b, c)| Quantities {
                webhook_deliveries: a,
                job_minutes: b,
                llm_tokens: c,
            })
        }

        fn a_plan() -> impl Strategy<Value = PlanConfig> {
            (
                0..10_000_000i64,
                quantities(10_000_000),
                quantities(100_000_000),
            )
                .prop_map(|(price, included, overage_micros)| PlanConfig {
                    monthly_price_minor: price,
                    webhook_rate_per_minute: 60,
                    webhook_burst: 10,
                    api_rate_per_minute: 60,
                    api_burst: 10,
                    api_key_rate_per_minute: 60,
                    api_key_burst: 10,
                    max_concurrent_jobs: 1,
                    hard_job_minutes: false,
                    included,
                    overage_micros,
                })
        }

        fn usage() -> impl Strategy<Value = Totals> {
            (
                0..1_000_000_000i64,
                0..10_000_000_000i64,
                0..10_000_000_000i64,
            )
                .prop_map(|(w, j, l)| Totals {
                    webhook_deliveries: w,
                    job_seconds: j,
                    llm_tokens: l,
                })
        }

        /// A period of `total` seconds cut into parts at random points.
        fn cuts(total: i64, max_parts: usize) -> impl Strategy<Value = Vec<i64>> {
            prop::collection::vec(0..=total, 0..max_parts).prop_map(move |mut points| {
                points.push(0);
                points.push(total);
                points.sort_unstable();
                points.windows(2).map(|w| w[1] - w[0]).collect()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn an_amount_is_the_exact_product_rounded_half_up_once(
                billable in 0..1_000_000_000_000i64,
                unit in 0..1_000_000_000i64,
            ) {
                let exact = i128::from(billable) * i128::from(unit);
                let a = i128::from(amount(billable, unit));
                // Within half a minor unit of the exact value, ties up.
                prop_assert!(2 * (a * 1_000_000 - exact).abs() <= 1_000_000);
                prop_assert!(a * 1_000_000 - exact < 500_000 || exact % 1_000_000 == 500_000);
                prop_assert!(exact - a * 1_000_000 < 500_000);
            }

            #[test]
            fn job_minutes_are_the_sum_of_job_seconds_over_60_rounded_up(
                jobs in prop::collection::vec(0..100_000i64, 0..200),
            ) {
                let seconds: i64 = jobs.iter().sum();
                let minutes = job_minutes(seconds);
                prop_assert!(minutes * 60 >= seconds);
                prop_assert!(minutes * 60 < seconds + 60);
                prop_assert_eq!(i128::from(minutes), (i128::from(seconds) + 59).div_euclid(60));
            }

            #[test]
            fn an_invoice_total_is_the_sum_of_its_lines_each_rounded_once(
                plan in a_plan(),
                usage in usage(),
            ) {
                let (lines, subtotal) = price(&plan, usage);
                prop_assert_eq!(subtotal, lines.iter().map(|l| l.amount).sum::<i64>());
                for l in lines.iter().filter(|l| l.metric != "base_fee") {
                    prop_assert_eq!(l.billable, (l.quantity - l.included).max(0));
                    prop_assert_eq!(l.amount, amount(l.billable, l.unit_price));
                }
                let minutes = lines.iter().find(|l| l.metric == "job_minutes").unwrap();
                prop_assert_eq!(minutes.quantity, job_minutes(usage.job_seconds));
            }

            #[test]
            fn a_prorated_invoice_keeps_every_rule_of_an_invoice(
                plan_a in a_plan(),
                plan_b in a_plan(),
                usage in usage(),
                parts in cuts(31 * 86_400, 4),
            ) {
                let plans = BTreeMap::from([("a".to_owned(), plan_a), ("b".to_owned(), plan_b)]);
                // Alternate the plans over the parts, as successive changes would.
                let mut shares: Vec<PlanShare> = Vec::new();
                for (i, seconds) in parts.iter().enumerate() {
                    let name = if i % 2 == 0 { "a" } else { "b" };
                    match shares.iter_mut().find(|s| s.plan == name) {
                        Some(s) => s.seconds += seconds,
                        None => shares.push(PlanShare { plan: name.to_owned(), seconds: *seconds }),
                    }
                }
                let period: i64 = shares.iter().map(|s| s.seconds).sum();
                prop_assert_eq!(period, 31 * 86_400);
                let (lines, subtotal) = price_prorated(&plans, &shares, usage).unwrap();
                prop_assert_eq!(subtotal, lines.iter().map(|l| l.amount).sum::<i64>());
                for l in &lines {
                    if l.metric == "base_fee" {
                        let p = l.proration.as_ref().map_or(period, |p| p.seconds);
                        prop_assert_eq!(l.amount, prorate(l.unit_price / 1_000_000, p, period));
                    } else {
                        prop_assert_eq!(l.billable, (l.quantity - l.included).max(0));
                        prop_assert_eq!(l.amount, amount(l.billable, l.unit_price));
                    }
                }
                // The quantities of a metric add up to the period's, whatever the split.
                let sum = |metric: &str| -> i64 {
                    lines.iter().filter(|l| l.metric == metric).map(|l| l.quantity).sum()
                };
                prop_assert_eq!(sum("job_minutes"), job_minutes(usage.job_seconds));
                prop_assert_eq!(sum("webhook_deliveries"), usage.webhook_deliveries);
                prop_assert_eq!(sum("llm_tokens"), usage.llm_tokens);
            }

            #[test]
            fn prorated_parts_of_a_price_add_up_to_it_within_half_a_unit_each(
                price in 0..100_000_000i64,
                parts in cuts(31 * 86_400, 6),
            ) {
                let period: i64 = parts.iter().sum();
                let sum: i64 = parts.iter().map(|p| prorate(price, *p, period)).sum();
                let k = i64::try_from(parts.len()).unwrap();
                // Each part is off by at most half a unit.
                prop_assert!(2 * (sum - price).abs() <= k, "{} vs {} over {} parts", sum, price, k);
            }

            #[test]
            fn one_plan_over_any_split_of_the_period_is_the_unsplit_price(
                plan in a_plan(),
                usage in usage(),
                parts in cuts(30 * 86_400, 6),
            ) {
                // The same plan across every part is one share: priced as if never split.
                let mut changes = Vec::new();
                let start = DateTime::parse_from_rfc3339("2026-04-01T00:00:00Z").unwrap().with_timezone(&Utc);
                let end = start + chrono::Duration::days(30);
                let mut at = start;
                for p in parts.iter().take(parts.len().saturating_sub(1)) {
                    at += chrono::Duration::seconds(*p);
                    changes.push(PlanChange { at, from: "a".into(), to: "a".into() });
                }
                let (shares, _) = plan_seconds(start, end, &changes, "a");
                prop_assert_eq!(shares.len(), 1);
                let plans = BTreeMap::from([("a".to_owned(), plan.clone())]);
                prop_assert_eq!(price_prorated(&plans, &shares, usage).unwrap(), price(&plan, usage));
            }

            #[test]
            fn plan_shares_cover_the_period_exactly(
                parts in cuts(31 * 86_400, 5),
                millis in prop::collection::vec(0..1_000i64, 5),
            ) {
                let start = DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z").unwrap().with_timezone(&Utc);
                let end = start + chrono::Duration::days(31);
                let mut at = start;
                let mut changes = Vec::new();
                let names = ["free", "team", "enterprise"];
                for (i, p) in parts.iter().take(parts.len().saturating_sub(1)).enumerate() {
                    at += chrono::Duration::seconds(*p);
                    let when = at + chrono::Duration::milliseconds(millis[i % millis.len()]);
                    changes.push(PlanChange {
                        at: when,
                        from: names[i % 3].into(),
                        to: names[(i + 1) % 3].into(),
                    });
                }
                let current = names[changes.len() % 3];
                let (shares, last) = plan_seconds(start, end, &changes, current);
                prop_assert_eq!(shares.iter().map(|s| s.seconds).sum::<i64>(), 31 * 86_400);
                prop_assert!(shares.iter().all(|s| s.seconds > 0));
                prop_assert_eq!(last, current);
            }

            #[test]
            fn a_split_adds_up_and_each_part_is_within_one_of_its_share(
                quantity in 0..10_000_000_000i64,
                weights in prop::collection::vec(0..3_000_000i64, 1..6),
            ) {
                let parts = split(quantity, &weights);
                prop_assert_eq!(parts.iter().sum::<i64>(), quantity);
                let total: i128 = weights.iter().map(|w| i128::from(*w)).sum();
                if total > 0 {
                    for (p, w) in parts.iter().zip(&weights) {
                        let exact = i128::from(quantity) * i128::from(*w);
                        let p = i128::from(*p) * total;
                        prop_assert!((p - exact).abs() < total, "part off by a unit or more");
                    }
                }
            }
        }
    }
}
