//! Selection: which scored customers each campaign reaches today, and why the others are left
//! out.
//!
//! The engine ([`select`]) is a pure function over what [`load`] reads from the database: the
//! day's scores joined to customers, suppressions, and recent outbox history. Campaigns are
//! taken highest priority first and a customer gets at most one campaign per day, so the order
//! of filters below is also the order of the funnel `campaigns plan` prints:
//! already in the outbox today → audience → lapse rule → cooldown → reachable channel
//! (suppression, consent, contact) → frequency cap → send hours → run limit → holdout split.
//! The holdout is drawn last, among customers who would otherwise be messaged, so the two groups
//! are comparable when measured.

pub mod load;
pub mod offer;
pub mod preflight;
pub mod run;

use std::collections::HashMap;

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::campaigns::{Campaign, CampaignSet, Channel, OfferCategory, OutsideHours, SendHours};

/// One scored customer with what the filters need.
#[derive(Debug, Clone, Default)]
pub struct Customer {
    pub customer_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: Option<String>,
    /// Upper-case ISO code.
    pub country: Option<String>,
    pub tz: Option<chrono_tz::Tz>,
    pub email_opt_in: bool,
    pub sms_opt_in: bool,
    pub whatsapp_opt_in: bool,
    /// JSON object of extra customers.csv columns.
    pub attributes: Option<String>,
    pub score: Score,
}

impl Customer {
    /// (opted in, has an address) for a channel.
    pub fn consent_and_contact(&self, ch: Channel) -> (bool, bool) {
        match ch {
            Channel::Email => (self.email_opt_in, self.email.is_some()),
            Channel::Sms => (self.sms_opt_in, self.phone.is_some()),
            Channel::Whatsapp => (self.whatsapp_opt_in, self.phone.is_some()),
        }
    }
}

/// The customer's row of the day's `scores`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Score {
    pub model_version_id: i64,
    pub model_kind: String,
    pub p_return: f64,
    pub p_alive: f64,
    pub lapse_risk: f64,
    pub window_lo_days: i64,
    pub window_median_days: i64,
    pub window_hi_days: i64,
    pub window_lo_at: i64,
    pub window_hi_at: i64,
    /// Up to three recommended categories with their probabilities, best first.
    pub categories: Vec<(String, f64)>,
    pub orders_count: i64,
    pub total_spend: f64,
    pub last_order_at: Option<i64>,
    /// Tab-separated category names ever bought.
    #[serde(skip)]
    pub categories_bought: Option<String>,
}

impl Score {
    pub fn has_bought(&self, category: &str) -> bool {
        self.categories_bought
            .as_deref()
            .is_some_and(|s| s.split('\t').any(|c| c == category))
    }
}

/// Suppressed channels of one customer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Suppression {
    pub all: bool,
    pub email: bool,
    pub sms: bool,
    pub whatsapp: bool,
}

impl Suppression {
    /// Records a `suppressions.channel` value (NULL or unknown = every channel).
    pub fn add(&mut self, channel: Option<&str>) {
        match channel {
            Some("email") => self.email = true,
            Some("sms") => self.sms = true,
            Some("whatsapp") => self.whatsapp = true,
            _ => self.all = true,
        }
    }

    pub fn blocks(&self, ch: Channel) -> bool {
        self.all
            || match ch {
                Channel::Email => self.email,
                Channel::Sms => self.sms,
                Channel::Whatsapp => self.whatsapp,
            }
    }
}

/// A row already in the outbox.
#[derive(Debug, Clone)]
pub struct Past {
    pub campaign: String,
    pub day: NaiveDate,
    /// Something was (or will be) sent: counts towards the frequency cap.
    pub outreach: bool,
}

/// Everything selection reads, loaded once per run.
#[derive(Debug, Default)]
pub struct Inputs {
    pub customers: Vec<Customer>,
    pub suppressions: HashMap<String, Suppression>,
    pub history: HashMap<String, Vec<Past>>,
}

/// The run's day, clock and cross-campaign limits.
#[derive(Debug, Clone)]
pub struct RunParams {
    pub day: NaiveDate,
    pub now: DateTime<Utc>,
    pub brand_tz: chrono_tz::Tz,
    pub frequency_cap: u32,
    pub frequency_window_days: u32,
}

/// Why a customer was left out (or not), in funnel order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    AlreadyInOutbox,
    AlreadyMessagedToday,
    AudienceOrders,
    AudienceSpend,
    AudienceDaysSinceLastOrder,
    AudienceCountry,
    AudienceCategoriesBought,
    AudienceCategoriesNeverBought,
    AudienceAttributes,
    NotInWindowYet,
    BelowLapseRisk,
    LikelyLost,
    WillReturnAnyway,
    NoNewCategory,
    CoolingDown,
    Suppressed,
    NoConsent,
    NoContact,
    FrequencyCapped,
    OutsideSendHours,
    OverRunLimit,
    HeldOut,
    Selected,
}

impl Step {
    pub const ALL: [Step; 23] = [
        Step::AlreadyInOutbox,
        Step::AlreadyMessagedToday,
        Step::AudienceOrders,
        Step::AudienceSpend,
        Step::AudienceDaysSinceLastOrder,
        Step::AudienceCountry,
        Step::AudienceCategoriesBought,
        Step::AudienceCategoriesNeverBought,
        Step::AudienceAttributes,
        Step::NotInWindowYet,
        Step::BelowLapseRisk,
        Step::LikelyLost,
        Step::WillReturnAnyway,
        Step::NoNewCategory,
        Step::CoolingDown,
        Step::Suppressed,
        Step::NoConsent,
        Step::NoContact,
        Step::FrequencyCapped,
        Step::OutsideSendHours,
        Step::OverRunLimit,
        Step::HeldOut,
        Step::Selected,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Step::AlreadyInOutbox => "already in the outbox today (re-run)",
            Step::AlreadyMessagedToday => "another campaign reached them today",
            Step::AudienceOrders => "audience: order count",
            Step::AudienceSpend => "audience: spend",
            Step::AudienceDaysSinceLastOrder => "audience: days since last order",
            Step::AudienceCountry => "audience: country",
            Step::AudienceCategoriesBought => "audience: categories bought",
            Step::AudienceCategoriesNeverBought => "audience: categories never bought",
            Step::AudienceAttributes => "audience: customer attributes",
            Step::NotInWindowYet => "window not open yet (beyond lead days)",
            Step::BelowLapseRisk => "lapse risk below threshold",
            Step::LikelyLost => "P(alive) below floor (likely lost)",
            Step::WillReturnAnyway => "P(return) above skip threshold",
            Step::NoNewCategory => "no recommended category they haven't bought",
            Step::CoolingDown => "cooling down (campaign sent recently)",
            Step::Suppressed => "suppressed (unsubscribed, bounced, complained)",
            Step::NoConsent => "no consent on any campaign channel",
            Step::NoContact => "no contact for a consented channel",
            Step::FrequencyCapped => "frequency cap reached",
            Step::OutsideSendHours => "outside send hours (skipped)",
            Step::OverRunLimit => "over the run's send limit",
            Step::HeldOut => "held out (control group)",
            Step::Selected => "selected",
        }
    }
}

/// Counts per step for one campaign.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Funnel {
    pub scored: u64,
    /// In JSON (`plan --json`, `campaign_runs.funnel`): `[{"step": "held_out", "count": 3}, …]`.
    #[serde(serialize_with = "step_counts")]
    pub counts: Vec<(Step, u64)>,
    /// Among the selected: queued for the next send slot rather than now.
    pub waiting_for_send_hours: u64,
    /// Among the selected: reached on a later channel than their first choice.
    pub channel_fallbacks: u64,
}

fn step_counts<S: serde::Serializer>(counts: &[(Step, u64)], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct StepCount {
        step: Step,
        count: u64,
    }
    s.collect_seq(
        counts
            .iter()
            .map(|&(step, count)| StepCount { step, count }),
    )
}

impl Funnel {
    fn new(scored: u64) -> Funnel {
        Funnel {
            scored,
            counts: Step::ALL.iter().map(|s| (*s, 0)).collect(),
            ..Funnel::default()
        }
    }
    fn add(&mut self, step: Step) {
        if let Some(c) = self.counts.iter_mut().find(|(s, _)| *s == step) {
            c.1 += 1;
        }
    }
    pub fn get(&self, step: Step) -> u64 {
        self.counts
            .iter()
            .find(|(s, _)| *s == step)
            .map_or(0, |c| c.1)
    }
}

/// A customer the campaign picked, to message or to hold out.
#[derive(Debug, Clone, Serialize)]
pub struct Pick {
    /// Index into [`Inputs::customers`].
    #[serde(skip)]
    pub customer: usize,
    pub held_out: bool,
    pub holdout_draw: f64,
    /// First channel, then the fallbacks left if it fails permanently. Empty when held out
    /// customers have no reachable channel (never: they pass the same filters).
    pub channels: Vec<Channel>,
    /// Why this channel: e.g. "whatsapp: no consent → email".
    pub channel_reason: String,
    pub not_before: i64,
    pub expires_at: i64,
    /// The offer's category (None for a category-free offer).
    pub category: Option<String>,
}

/// One campaign's result.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignSelection {
    pub campaign: String,
    pub active: bool,
    pub funnel: Funnel,
    pub picks: Vec<Pick>,
}

/// Runs every campaign (highest priority first) over the inputs.
pub fn select(
    set: &CampaignSet,
    only: Option<&str>,
    inputs: &Inputs,
    run: &RunParams,
) -> Vec<CampaignSelection> {
    // Customers taken by an earlier (higher-priority) campaign in this run.
    let mut taken = vec![false; inputs.customers.len()];
    let mut out = Vec::new();
    let window_start = run.day - Duration::days(run.frequency_window_days as i64 - 1);
    // Messages in the frequency window from earlier runs, per customer.
    let recent: HashMap<&str, u32> = inputs
        .history
        .iter()
        .map(|(c, past)| {
            (
                c.as_str(),
                past.iter()
                    .filter(|p| p.outreach && p.day >= window_start && p.day <= run.day)
                    .count() as u32,
            )
        })
        .collect();
    for campaign in &set.campaigns {
        if only.is_some_and(|n| n != campaign.name) {
            continue;
        }
        let sel = select_one(campaign, inputs, run, &recent, &mut taken);
        out.push(sel);
    }
    out
}

fn select_one(
    c: &Campaign,
    inputs: &Inputs,
    run: &RunParams,
    recent: &HashMap<&str, u32>,
    taken: &mut [bool],
) -> CampaignSelection {
    let mut funnel = Funnel::new(inputs.customers.len() as u64);
    if !c.active_on(run.day) {
        return CampaignSelection {
            campaign: c.name.clone(),
            active: false,
            funnel,
            picks: Vec::new(),
        };
    }
    let cooldown_start = run.day - Duration::days(c.limits.cooldown_days as i64);
    let mut already_today = 0u64;
    let mut eligible: Vec<Pick> = Vec::new();
    for (i, cust) in inputs.customers.iter().enumerate() {
        let past = inputs
            .history
            .get(&cust.customer_id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let step = (|| {
            if let Some(p) = past.iter().find(|p| p.day == run.day) {
                if p.campaign == c.name {
                    already_today += 1;
                    return Err(Step::AlreadyInOutbox);
                }
                return Err(Step::AlreadyMessagedToday);
            }
            if taken[i] {
                return Err(Step::AlreadyMessagedToday);
            }
            audience(c, cust, run)?;
            trigger(c, &cust.score)?;
            let category = offer_category(c, &cust.score)?;
            if c.limits.cooldown_days > 0
                && past
                    .iter()
                    .any(|p| p.campaign == c.name && p.day > cooldown_start && p.day < run.day)
            {
                return Err(Step::CoolingDown);
            }
            let suppression = inputs
                .suppressions
                .get(&cust.customer_id)
                .copied()
                .unwrap_or_default();
            let (channels, reason) = reachable(c, cust, suppression)?;
            if recent.get(cust.customer_id.as_str()).copied().unwrap_or(0) >= run.frequency_cap {
                return Err(Step::FrequencyCapped);
            }
            let tz = cust.tz.unwrap_or(run.brand_tz);
            let (not_before, expires_at) = send_slot(c.limits.send_hours, run.now, tz);
            if not_before > run.now.timestamp() && c.limits.outside_send_hours == OutsideHours::Skip
            {
                return Err(Step::OutsideSendHours);
            }
            Ok(Pick {
                customer: i,
                held_out: false,
                holdout_draw: 0.0,
                channels,
                channel_reason: reason,
                not_before,
                expires_at,
                category,
            })
        })();
        match step {
            Ok(p) => eligible.push(p),
            Err(s) => funnel.add(s),
        }
    }
    // The run limit keeps the customers most at risk; rows already written today count.
    eligible.sort_by(|a, b| {
        let (x, y) = (&inputs.customers[a.customer], &inputs.customers[b.customer]);
        y.score
            .lapse_risk
            .total_cmp(&x.score.lapse_risk)
            .then_with(|| x.customer_id.cmp(&y.customer_id))
    });
    let room = (c.limits.max_sends_per_run as u64).saturating_sub(already_today) as usize;
    for _ in eligible.len().min(room)..eligible.len() {
        funnel.add(Step::OverRunLimit);
    }
    eligible.truncate(room);
    for p in &mut eligible {
        taken[p.customer] = true;
        p.holdout_draw = holdout_draw(&c.name, &inputs.customers[p.customer].customer_id);
        p.held_out = p.holdout_draw < c.limits.holdout_percent / 100.0;
        if p.held_out {
            funnel.add(Step::HeldOut);
        } else {
            funnel.add(Step::Selected);
            if p.not_before > run.now.timestamp() {
                funnel.waiting_for_send_hours += 1;
            }
            if p.channels.first() != c.channels.first() {
                funnel.channel_fallbacks += 1;
            }
        }
    }
    CampaignSelection {
        campaign: c.name.clone(),
        active: true,
        funnel,
        picks: eligible,
    }
}

fn audience(c: &Campaign, cust: &Customer, run: &RunParams) -> Result<(), Step> {
    let a = &c.audience;
    let s = &cust.score;
    let orders = s.orders_count.max(0) as u64;
    if a.min_orders.is_some_and(|m| orders < m as u64)
        || a.max_orders.is_some_and(|m| orders > m as u64)
    {
        return Err(Step::AudienceOrders);
    }
    if a.min_spend.is_some_and(|m| s.total_spend < m)
        || a.max_spend.is_some_and(|m| s.total_spend > m)
    {
        return Err(Step::AudienceSpend);
    }
    if a.min_days_since_last_order.is_some() || a.max_days_since_last_order.is_some() {
        let today = run.day;
        let tz = cust.tz.unwrap_or(run.brand_tz);
        let days = s
            .last_order_at
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .map(|t| (today - t.with_timezone(&tz).date_naive()).num_days());
        let Some(days) = days else {
            return Err(Step::AudienceDaysSinceLastOrder);
        };
        if a.min_days_since_last_order.is_some_and(|m| days < m as i64)
            || a.max_days_since_last_order.is_some_and(|m| days > m as i64)
        {
            return Err(Step::AudienceDaysSinceLastOrder);
        }
    }
    if !a.countries.is_empty()
        && !cust
            .country
            .as_deref()
            .is_some_and(|k| a.countries.iter().any(|x| x.eq_ignore_ascii_case(k)))
    {
        return Err(Step::AudienceCountry);
    }
    if !a.categories_bought.is_empty() && !a.categories_bought.iter().any(|k| s.has_bought(k)) {
        return Err(Step::AudienceCategoriesBought);
    }
    if a.categories_never_bought.iter().any(|k| s.has_bought(k)) {
        return Err(Step::AudienceCategoriesNeverBought);
    }
    if !a.attributes.is_empty() {
        let attrs: serde_json::Map<String, serde_json::Value> = cust
            .attributes
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        for (key, accepted) in &a.attributes {
            let value = attrs.get(key).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            if !value.is_some_and(|v| accepted.iter().any(|x| x.eq_ignore_ascii_case(&v))) {
                return Err(Step::AudienceAttributes);
            }
        }
    }
    Ok(())
}

/// The lapse rule: inside (or `lead_days` before) the predicted window, at risk of not coming
/// back before it closes, still alive, and not a near-certain returner.
fn trigger(c: &Campaign, s: &Score) -> Result<(), Step> {
    let t = &c.trigger;
    if s.window_lo_days > t.lead_days as i64 {
        return Err(Step::NotInWindowYet);
    }
    if s.lapse_risk < t.min_lapse_risk {
        return Err(Step::BelowLapseRisk);
    }
    if s.p_alive < t.min_p_alive {
        return Err(Step::LikelyLost);
    }
    if s.p_return > t.skip_if_p_return_above {
        return Err(Step::WillReturnAnyway);
    }
    Ok(())
}

fn offer_category(c: &Campaign, s: &Score) -> Result<Option<String>, Step> {
    Ok(match &c.offer.category {
        OfferCategory::Recommended => s.categories.first().map(|(k, _)| k.clone()),
        OfferCategory::RecommendedNew => {
            if s.categories.is_empty() {
                None
            } else {
                Some(
                    s.categories
                        .iter()
                        .find(|(k, _)| !s.has_bought(k))
                        .map(|(k, _)| k.clone())
                        .ok_or(Step::NoNewCategory)?,
                )
            }
        }
        OfferCategory::Fixed(k) => Some(k.clone()),
        OfferCategory::None => None,
    })
}

/// The campaign's channels this customer can be reached on, in preference order. Suppression
/// and consent always win over the campaign.
fn reachable(
    c: &Campaign,
    cust: &Customer,
    sup: Suppression,
) -> Result<(Vec<Channel>, String), Step> {
    let mut ok = Vec::new();
    let mut notes = Vec::new();
    let (mut suppressed, mut consented) = (false, false);
    for &ch in &c.channels {
        let (consent, contact) = cust.consent_and_contact(ch);
        let why = if sup.blocks(ch) {
            suppressed = true;
            Some("suppressed")
        } else if !consent {
            Some("no consent")
        } else if !contact {
            consented = true;
            Some("no contact")
        } else {
            None
        };
        match why {
            None => ok.push(ch),
            Some(w) if ok.is_empty() => notes.push(format!("{}: {w}", ch.as_str())),
            Some(_) => {}
        }
    }
    if ok.is_empty() {
        return Err(if suppressed {
            Step::Suppressed
        } else if consented {
            Step::NoContact
        } else {
            Step::NoConsent
        });
    }
    notes.push(ok[0].as_str().to_string());
    Ok((ok, notes.join(" → ")))
}

/// The deterministic uniform draw in [0, 1) that splits (campaign, customer) into holdout or
/// treated: SHA-256, so it is stable across versions, machines and runs.
pub fn holdout_draw(campaign: &str, customer_id: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(b"retentiond-holdout\0");
    h.update(campaign.as_bytes());
    h.update(b"\0");
    h.update(customer_id.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// The send slot for a message decided at `now`: `(not_before, expires_at)` in UTC seconds.
/// Inside the customer's local send hours: now until the hours end. Outside: the next slot.
pub fn send_slot(hours: SendHours, now: DateTime<Utc>, tz: chrono_tz::Tz) -> (i64, i64) {
    let local = now.with_timezone(&tz);
    let date = local.date_naive();
    let t = local.time();
    let at = |d: NaiveDate, time: NaiveTime| local_instant(tz, d.and_time(time));
    let next = |d: NaiveDate| d.succ_opt().unwrap_or(d);
    if hours.start < hours.end {
        if hours.contains(t) {
            (now.timestamp(), at(date, hours.end))
        } else if t < hours.start {
            (at(date, hours.start), at(date, hours.end))
        } else {
            (at(next(date), hours.start), at(next(date), hours.end))
        }
    } else {
        // Wraps midnight: [start, 24:00) ∪ [00:00, end).
        if t >= hours.start {
            (now.timestamp(), at(next(date), hours.end))
        } else if t < hours.end {
            (now.timestamp(), at(date, hours.end))
        } else {
            (at(date, hours.start), at(next(date), hours.end))
        }
    }
}

/// A local wall-clock time as UTC seconds; in a DST gap, the first valid instant after it.
fn local_instant(tz: chrono_tz::Tz, t: NaiveDateTime) -> i64 {
    match tz.from_local_datetime(&t) {
        LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => x.timestamp(),
        LocalResult::None => (1..=4)
            .find_map(|h| {
                tz.from_local_datetime(&(t + Duration::minutes(30 * h)))
                    .earliest()
            })
            .map_or(t.and_utc().timestamp(), |x| x.timestamp()),
    }
}

#[cfg(test)]
mod tests;
