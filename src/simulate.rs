//! Simulated responses to outreach with a known effect: the ground truth that measurement is
//! tested against, and what `retentiond demo` uses to show measured uplift on a synthetic brand
//! (with [`send_in_simulation`] for the outreach it rehearses in the past). The report labels
//! whatever [`footprint`] finds as simulated.
//!
//! For every outbox row of the given days, the customer orders within the row's attribution
//! window with probability `p` = their scored chance of returning within the horizon, scaled
//! to the window (`1 − (1 − p_return)^(window / horizon)`); customers who were messaged
//! (status `sent` or `delivered`) get `p + effect` instead. Orders are inserted with ids
//! `SIM-<message_id>`, at a uniform instant inside the window. The draw for a row depends only
//! on the seed and the message id, so a run is reproducible.

use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::campaigns::CampaignSet;
use crate::db::{Db, Val};
use crate::measurement::{MeasurementSettings, exposures};
use crate::scan::{Bind, scan_with};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Simulated {
    pub exposures: usize,
    pub treated: usize,
    pub orders: usize,
    /// Mean of the probability actually added for messaged customers (the effect after capping
    /// probabilities at 1): the true intention-to-treat effect when every treated row was sent.
    pub true_effect: f64,
}

pub async fn simulate_responses(
    db: &Db,
    m: &MeasurementSettings,
    campaigns: &CampaignSet,
    day: chrono::NaiveDate,
    effect: f64,
    seed: u64,
) -> anyhow::Result<Simulated> {
    let ex = exposures(db, m, campaigns, Some((day, day))).await?;
    let mut p_return: std::collections::HashMap<String, (f64, f64)> = Default::default();
    let d = day.to_string();
    scan_with(
        db,
        "SELECT customer_id, p_return, horizon_days FROM scores WHERE as_of_date = $1",
        &[Bind::Text(&d)],
        |r| {
            p_return.insert(
                r.text(0)?.unwrap_or_default().to_string(),
                (r.real(1)?.unwrap_or(0.0), r.int(2)?.unwrap_or(90) as f64),
            );
            Ok(())
        },
    )
    .await?;
    let mut out = Simulated {
        exposures: ex.len(),
        ..Default::default()
    };
    let mut added = 0.0;
    let mut rows = Vec::new();
    for e in &ex {
        let (p, h) = p_return.get(&e.customer_id).copied().unwrap_or((0.0, 90.0));
        let window_days = (e.window_end - e.start) as f64 / 86_400.0;
        let base = 1.0 - (1.0 - p.clamp(0.0, 1.0)).powf(window_days / h.max(1.0));
        let messaged = matches!(e.status.as_str(), "sent" | "delivered");
        let prob = if messaged {
            (base + effect).clamp(0.0, 1.0)
        } else {
            base
        };
        if messaged {
            out.treated += 1;
            added += prob - base;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            seed ^ (e.message_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        if rng.random::<f64>() < prob {
            let at = e.start + rng.random_range(0..(e.window_end - e.start).max(1));
            let amount = (rng.random_range(400.0..2500.0f64) * 100.0).round() / 100.0;
            rows.push(vec![
                Val::Text(Some(format!("{SIMULATED_ORDER_PREFIX}{}", e.message_id))),
                Val::Text(Some(e.customer_id.clone())),
                Val::Int(Some(at)),
                Val::Real(Some(amount)),
                Val::Text(Some("completed".into())),
            ]);
        }
    }
    out.orders = rows.len();
    out.true_effect = if out.treated > 0 {
        added / out.treated as f64
    } else {
        0.0
    };
    let mut tx = db.begin().await?;
    tx.execute("DELETE FROM orders WHERE order_id LIKE 'SIM-%'", &[])
        .await?;
    for chunk in rows.chunks(2000) {
        tx.insert_rows(
            "orders",
            &[
                "order_id",
                "customer_id",
                "ordered_at",
                "total_amount",
                "status",
            ],
            chunk,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(out)
}

/// `outbox.provider` of the messages [`send_in_simulation`] marks sent: no provider saw them.
pub const SIMULATED_PROVIDER: &str = "simulation";
/// Order ids of simulated responses start with this.
pub const SIMULATED_ORDER_PREFIX: &str = "SIM-";

/// Marks the day's queued messages sent at their first allowed send instant, without any
/// provider (`provider = 'simulation'`): what `retentiond demo` does to the outreach it
/// rehearses in the past, whose send slots are long gone. Returns how many.
pub async fn send_in_simulation(db: &Db, day: chrono::NaiveDate) -> anyhow::Result<u64> {
    let mut tx = db.begin().await?;
    let n = tx
        .execute(
            "UPDATE outbox SET status = 'sent', provider = $1, sent_at = not_before, attempts = 1, updated_at = $2 WHERE day = $3 AND status = 'queued'",
            &[Val::Text(Some(SIMULATED_PROVIDER.into())), Val::Int(Some(chrono::Utc::now().timestamp())), Val::Text(Some(day.to_string()))],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// What in the database was simulated, for the report's label.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimulationFootprint {
    /// Messages marked sent by [`send_in_simulation`], and the first and last of their days.
    pub sends: u64,
    pub first_day: Option<String>,
    pub last_day: Option<String>,
    /// Orders whose id starts with [`SIMULATED_ORDER_PREFIX`].
    pub orders: u64,
}

impl SimulationFootprint {
    pub fn is_empty(&self) -> bool {
        self.sends == 0 && self.orders == 0
    }

    /// Sentences for the report (none when nothing was simulated).
    pub fn describe(&self) -> Vec<String> {
        if self.is_empty() {
            return Vec::new();
        }
        let days = match (&self.first_day, &self.last_day) {
            (Some(a), Some(b)) if a != b => format!("of {a} to {b}"),
            (Some(a), _) => format!("of {a}"),
            _ => String::new(),
        };
        let mut out = Vec::new();
        if self.sends > 0 {
            out.push(format!("{} message(s) {days} were sent in simulation (provider \u{201c}{SIMULATED_PROVIDER}\u{201d}): no provider or customer saw them.", self.sends));
        }
        if self.orders > 0 {
            out.push(format!(
                "{} order(s) with ids {SIMULATED_ORDER_PREFIX}\u{2026} are simulated responses: customers order within the attribution window with their scored chance, messaged customers with a known effect added (`retentiond demo` prints it).",
                self.orders
            ));
        }
        out.push("The uplift, conversions and revenue of those days come from this simulation; the rest of the page is computed from the data as for any brand.".into());
        out
    }
}

/// Counts what [`send_in_simulation`] and [`simulate_responses`] left in the database.
pub async fn footprint(db: &Db) -> anyhow::Result<SimulationFootprint> {
    let mut f = SimulationFootprint::default();
    scan_with(
        db,
        "SELECT COUNT(*), MIN(day), MAX(day) FROM outbox WHERE provider = $1",
        &[Bind::Text(SIMULATED_PROVIDER)],
        |r| {
            f.sends = r.int(0)?.unwrap_or(0) as u64;
            f.first_day = r.text(1)?.map(str::to_string);
            f.last_day = r.text(2)?.map(str::to_string);
            Ok(())
        },
    )
    .await?;
    let like = format!("{SIMULATED_ORDER_PREFIX}%");
    scan_with(
        db,
        "SELECT COUNT(*) FROM orders WHERE order_id LIKE $1",
        &[Bind::Text(&like)],
        |r| {
            f.orders = r.int(0)?.unwrap_or(0) as u64;
            Ok(())
        },
    )
    .await?;
    Ok(f)
}
