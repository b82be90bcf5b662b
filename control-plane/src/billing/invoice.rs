//! Invoices: one per org per calendar month (UTC), priced from the usage rollup and the org's
//! plan.
//!
//! Lines: the plan's monthly price, then one line per metered quantity — webhook deliveries,
//! job minutes (`ceil(sum of the period's job_seconds / 60)`), LLM tokens — with the plan's
//! included quantity, the billable rest and its unit price in micro-units of the minor unit.
//! **Rounding**, once per line: `amount = round_half_up(billable × unit_price_micros / 10^6)`
//! minor units; the subtotal is the sum of the rounded lines and the total equals it (no taxes).
//! All arithmetic is in integers (i128 for the products); no floats anywhere.

use chrono::{Datelike, NaiveDate};
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
}
