//! Simulated responses to outreach with a known effect: the ground truth that measurement is
//! tested against (and a way to rehearse the report on a synthetic brand).
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
                Val::Text(Some(format!("SIM-{}", e.message_id))),
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
