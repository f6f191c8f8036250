//! The selection engine on hand-made customers: every filter, the holdout split, priority,
//! the frequency cap and send hours across time zones.

use std::path::Path;

use chrono::TimeZone;

use super::*;
use crate::campaigns::parse_campaign;

type Tweak = fn(&mut Customer);

fn campaign(extra: &str) -> Campaign {
    campaign_named("c", 0, extra)
}

fn campaign_named(name: &str, priority: i64, extra: &str) -> Campaign {
    let text = format!(
        r#"name = "{name}"
enabled = true
priority = {priority}
channels = ["whatsapp", "email"]
{extra}
[offer]
landing_url = "https://shop.example/c/{{category}}"
[copy]
subject = "s"
headline = "h"
body = "b"
cta = "c"
[whatsapp]
template = "t"
language = "en"
params = ["{{first_name}}"]
"#
    );
    let mut issues = Vec::new();
    let c = parse_campaign(&text, Path::new("t.toml"), &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
    c.unwrap()
}

fn set(campaigns: Vec<Campaign>) -> CampaignSet {
    let mut campaigns = campaigns;
    campaigns.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
    CampaignSet {
        dir: "t".into(),
        campaigns,
    }
}

/// A customer who passes the default rule: in the window, at risk, alive, reachable.
fn customer(id: &str) -> Customer {
    Customer {
        customer_id: id.into(),
        email: Some(format!("{id}@example.com")),
        phone: Some("+919800000000".into()),
        first_name: Some("Asha".into()),
        country: Some("IN".into()),
        tz: Some(chrono_tz::Asia::Kolkata),
        email_opt_in: true,
        sms_opt_in: true,
        whatsapp_opt_in: true,
        attributes: Some(r#"{"loyalty_tier":"gold"}"#.into()),
        score: Score {
            model_version_id: 1,
            model_kind: "model".into(),
            p_return: 0.4,
            p_alive: 0.8,
            lapse_risk: 0.7,
            window_lo_days: 0,
            window_median_days: 10,
            window_hi_days: 30,
            categories: vec![
                ("hair care".into(), 0.5),
                ("oils".into(), 0.3),
                ("teas".into(), 0.2),
            ],
            orders_count: 3,
            total_spend: 2400.0,
            last_order_at: Some(
                day().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp() - 40 * 86_400,
            ),
            categories_bought: Some("hair care\tskin care".into()),
            ..Score::default()
        },
    }
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 10).unwrap()
}

/// 12:00 in Kolkata on the run day: inside default send hours there.
fn noon_ist() -> DateTime<Utc> {
    chrono_tz::Asia::Kolkata
        .with_ymd_and_hms(2026, 3, 10, 12, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn params(now: DateTime<Utc>) -> RunParams {
    RunParams {
        day: day(),
        now,
        brand_tz: chrono_tz::Asia::Kolkata,
        frequency_cap: 2,
        frequency_window_days: 7,
    }
}

fn inputs(customers: Vec<Customer>) -> Inputs {
    Inputs {
        customers,
        ..Inputs::default()
    }
}

fn one(c: Campaign, cust: Customer) -> Result<Pick, Step> {
    let sel = select(
        &set(vec![c]),
        None,
        &inputs(vec![cust]),
        &params(noon_ist()),
    );
    let s = &sel[0];
    if let Some(p) = s.picks.first() {
        return if p.held_out {
            Err(Step::HeldOut)
        } else {
            Ok(p.clone())
        };
    }
    Err(s
        .funnel
        .counts
        .iter()
        .find(|(_, n)| *n > 0)
        .map(|(s, _)| *s)
        .expect("one step counted"))
}

const NO_HOLDOUT: &str = "[limits]\nholdout_percent = 0\n";

#[test]
fn a_matching_customer_is_selected_with_the_recommended_category() {
    let p = one(campaign(NO_HOLDOUT), customer("a")).unwrap();
    assert_eq!(p.category.as_deref(), Some("hair care"));
    assert_eq!(p.channels, [Channel::Whatsapp, Channel::Email]);
    assert_eq!(p.not_before, noon_ist().timestamp());
}

#[test]
fn every_audience_filter_excludes_with_its_own_step() {
    let cases: &[(&str, Tweak, Step)] = &[
        ("[audience]\nmin_orders = 4\n", |_| {}, Step::AudienceOrders),
        ("[audience]\nmax_orders = 2\n", |_| {}, Step::AudienceOrders),
        (
            "[audience]\nmin_spend = 5000\n",
            |_| {},
            Step::AudienceSpend,
        ),
        (
            "[audience]\nmax_spend = 1000\n",
            |_| {},
            Step::AudienceSpend,
        ),
        (
            "[audience]\nmin_days_since_last_order = 60\n",
            |_| {},
            Step::AudienceDaysSinceLastOrder,
        ),
        (
            "[audience]\nmax_days_since_last_order = 30\n",
            |_| {},
            Step::AudienceDaysSinceLastOrder,
        ),
        (
            "[audience]\nmin_days_since_last_order = 1\n",
            |c| c.score.last_order_at = None,
            Step::AudienceDaysSinceLastOrder,
        ),
        (
            "[audience]\ncountries = [\"US\", \"GB\"]\n",
            |_| {},
            Step::AudienceCountry,
        ),
        (
            "[audience]\ncategories_bought = [\"teas\"]\n",
            |_| {},
            Step::AudienceCategoriesBought,
        ),
        (
            "[audience]\ncategories_never_bought = [\"skin care\"]\n",
            |_| {},
            Step::AudienceCategoriesNeverBought,
        ),
        (
            "[audience.attributes]\nloyalty_tier = [\"silver\"]\n",
            |_| {},
            Step::AudienceAttributes,
        ),
        (
            "[audience.attributes]\nloyalty_tier = [\"gold\"]\n",
            |c| c.attributes = None,
            Step::AudienceAttributes,
        ),
    ];
    for (extra, tweak, step) in cases {
        let mut c = customer("a");
        tweak(&mut c);
        assert_eq!(
            one(campaign(&format!("{extra}{NO_HOLDOUT}")), c).unwrap_err(),
            *step,
            "{extra}"
        );
    }
    // And the same filters let a matching customer through.
    for extra in [
        "[audience]\nmin_orders = 3\nmax_orders = 3\nmin_spend = 2400\nmax_spend = 2400\n",
        "[audience]\nmin_days_since_last_order = 40\nmax_days_since_last_order = 40\ncountries = [\"in\"]\n",
        "[audience]\ncategories_bought = [\"teas\", \"skin care\"]\ncategories_never_bought = [\"oils\"]\n",
        "[audience.attributes]\nloyalty_tier = [\"Gold\", \"silver\"]\n",
    ] {
        assert!(
            one(campaign(&format!("{extra}{NO_HOLDOUT}")), customer("a")).is_ok(),
            "{extra}"
        );
    }
}

#[test]
fn the_lapse_rule_checks_window_risk_alive_and_sure_returners() {
    let cases: &[(Tweak, Step)] = &[
        (|c| c.score.window_lo_days = 8, Step::NotInWindowYet),
        (|c| c.score.lapse_risk = 0.49, Step::BelowLapseRisk),
        (|c| c.score.p_alive = 0.19, Step::LikelyLost),
        (|c| c.score.p_return = 0.95, Step::WillReturnAnyway),
    ];
    let rule = "[trigger]\nlead_days = 7\nmin_lapse_risk = 0.5\nmin_p_alive = 0.2\nskip_if_p_return_above = 0.9\n";
    for (tweak, step) in cases {
        let mut c = customer("a");
        tweak(&mut c);
        assert_eq!(
            one(campaign(&format!("{rule}{NO_HOLDOUT}")), c).unwrap_err(),
            *step
        );
    }
    // lead_days: a window opening in 7 days is close enough.
    let mut c = customer("a");
    c.score.window_lo_days = 7;
    assert!(one(campaign(&format!("{rule}{NO_HOLDOUT}")), c).is_ok());
}

#[test]
fn suppression_and_consent_beat_the_campaign_and_channels_fall_back() {
    let mut c = customer("a");
    c.whatsapp_opt_in = false;
    let p = one(campaign(NO_HOLDOUT), c).unwrap();
    assert_eq!(p.channels, [Channel::Email]);
    assert_eq!(p.channel_reason, "whatsapp: no consent → email");

    let mut c = customer("a");
    c.phone = None;
    let p = one(campaign(NO_HOLDOUT), c).unwrap();
    assert_eq!(p.channel_reason, "whatsapp: no contact → email");

    let mut c = customer("a");
    c.email_opt_in = false;
    c.whatsapp_opt_in = false;
    assert_eq!(one(campaign(NO_HOLDOUT), c).unwrap_err(), Step::NoConsent);

    let mut c = customer("a");
    c.email = None;
    c.phone = None;
    assert_eq!(one(campaign(NO_HOLDOUT), c).unwrap_err(), Step::NoContact);

    // A suppression on every channel (or one for all channels) wins.
    let sel = |sup: Suppression| {
        let mut i = inputs(vec![customer("a")]);
        i.suppressions.insert("a".into(), sup);
        select(
            &set(vec![campaign(NO_HOLDOUT)]),
            None,
            &i,
            &params(noon_ist()),
        )
        .remove(0)
    };
    assert_eq!(
        sel(Suppression {
            all: true,
            ..Default::default()
        })
        .funnel
        .get(Step::Suppressed),
        1
    );
    let s = sel(Suppression {
        whatsapp: true,
        ..Default::default()
    });
    assert_eq!(s.picks[0].channels, [Channel::Email]);
    assert_eq!(s.picks[0].channel_reason, "whatsapp: suppressed → email");
    assert_eq!(
        sel(Suppression {
            whatsapp: true,
            email: true,
            ..Default::default()
        })
        .funnel
        .get(Step::Suppressed),
        1
    );
}

#[test]
fn cross_sell_picks_the_best_category_not_yet_bought() {
    let mut c = campaign(NO_HOLDOUT);
    c.offer.category = OfferCategory::RecommendedNew;
    assert_eq!(
        one(c.clone(), customer("a")).unwrap().category.as_deref(),
        Some("oils")
    );
    let mut cust = customer("a");
    cust.score.categories_bought = Some("hair care\toils\tteas".into());
    assert_eq!(one(c.clone(), cust).unwrap_err(), Step::NoNewCategory);
    // Without category data (e.g. CDNOW): a category-free offer.
    let mut cust = customer("a");
    cust.score.categories.clear();
    cust.score.categories_bought = None;
    assert_eq!(one(c, cust).unwrap().category, None);
}

#[test]
fn holdout_split_is_stable_and_close_to_the_share() {
    let customers: Vec<Customer> = (0..20_000)
        .map(|i| customer(&format!("cust-{i}")))
        .collect();
    let c = campaign("[limits]\nholdout_percent = 20\nmax_sends_per_run = 100000\n");
    let s1 = select(
        &set(vec![c.clone()]),
        None,
        &inputs(customers.clone()),
        &params(noon_ist()),
    )
    .remove(0);
    let held = s1.funnel.get(Step::HeldOut) as f64 / 20_000.0;
    // Binomial sd at n = 20,000, p = 0.2 is 0.0028: 4 sd.
    assert!((held - 0.2).abs() < 0.0113, "held out share {held}");
    // Same draw on another run, with customers in another order.
    let mut rev = customers.clone();
    rev.reverse();
    let s2 = select(&set(vec![c]), None, &inputs(rev), &params(noon_ist())).remove(0);
    let groups = |s: &CampaignSelection, cs: &[Customer]| {
        let mut v: Vec<(String, bool)> = s
            .picks
            .iter()
            .map(|p| (cs[p.customer].customer_id.clone(), p.held_out))
            .collect();
        v.sort();
        v
    };
    let mut rev = customers.clone();
    rev.reverse();
    assert_eq!(groups(&s1, &customers), groups(&s2, &rev));
    // Different campaigns draw independently.
    let a: Vec<f64> = (0..1000)
        .map(|i| holdout_draw("a", &format!("c{i}")))
        .collect();
    let b: Vec<f64> = (0..1000)
        .map(|i| holdout_draw("b", &format!("c{i}")))
        .collect();
    let both = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| **x < 0.2 && **y < 0.2)
        .count();
    assert!(
        (15..=65).contains(&both),
        "{both} in both holdouts (expected ~40)"
    );
}

#[test]
fn priority_gives_each_customer_one_campaign_a_day() {
    let high = campaign_named(
        "high",
        10,
        "[audience]\nmin_orders = 3\n[limits]\nholdout_percent = 0\n",
    );
    let low = campaign_named("low", 1, NO_HOLDOUT);
    let mut b = customer("b");
    b.score.orders_count = 1;
    let sel = select(
        &set(vec![low, high]),
        None,
        &inputs(vec![customer("a"), b]),
        &params(noon_ist()),
    );
    assert_eq!(sel[0].campaign, "high");
    assert_eq!(sel[0].picks.len(), 1);
    assert_eq!(sel[0].picks[0].customer, 0);
    assert_eq!(sel[1].campaign, "low");
    assert_eq!(
        sel[1].picks.iter().map(|p| p.customer).collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(sel[1].funnel.get(Step::AlreadyMessagedToday), 1);
}

#[test]
fn frequency_cap_counts_outreach_across_campaigns_within_the_window() {
    let d = |n: i64| day() - Duration::days(n);
    let past = |campaign: &str, day: NaiveDate, outreach: bool| Past {
        campaign: campaign.into(),
        day,
        outreach,
    };
    let run = |history: Vec<Past>| {
        let mut i = inputs(vec![customer("a")]);
        i.history.insert("a".into(), history);
        select(
            &set(vec![campaign(NO_HOLDOUT)]),
            None,
            &i,
            &params(noon_ist()),
        )
        .remove(0)
    };
    // Two messages from other campaigns in the last 7 days (cap 2): capped.
    assert_eq!(
        run(vec![past("x", d(1), true), past("y", d(6), true)])
            .funnel
            .get(Step::FrequencyCapped),
        1
    );
    // One of them is older than the window, or was only a holdout row: not capped.
    assert_eq!(
        run(vec![past("x", d(1), true), past("y", d(7), true)])
            .funnel
            .get(Step::Selected),
        1
    );
    assert_eq!(
        run(vec![past("x", d(1), true), past("y", d(2), false)])
            .funnel
            .get(Step::Selected),
        1
    );
    // Cooldown: this campaign 10 days ago with a 30-day cooldown.
    assert_eq!(
        run(vec![past("c", d(10), false)])
            .funnel
            .get(Step::CoolingDown),
        1
    );
    assert_eq!(
        run(vec![past("c", d(30), true)]).funnel.get(Step::Selected),
        1
    );
    // Already written today: a re-run counts it and selects nothing new.
    let s = run(vec![past("c", day(), true)]);
    assert_eq!(s.funnel.get(Step::AlreadyInOutbox), 1);
    assert!(s.picks.is_empty());
    assert_eq!(
        run(vec![past("other", day(), true)])
            .funnel
            .get(Step::AlreadyMessagedToday),
        1
    );
}

#[test]
fn run_limit_keeps_the_most_at_risk_and_counts_rows_already_written() {
    let mut customers: Vec<Customer> = (0..10).map(|i| customer(&format!("c{i}"))).collect();
    for (i, c) in customers.iter_mut().enumerate() {
        c.score.lapse_risk = 0.5 + i as f64 / 100.0;
    }
    let c = campaign("[limits]\nholdout_percent = 0\nmax_sends_per_run = 3\n");
    let s = select(
        &set(vec![c.clone()]),
        None,
        &inputs(customers.clone()),
        &params(noon_ist()),
    )
    .remove(0);
    let mut chosen: Vec<usize> = s.picks.iter().map(|p| p.customer).collect();
    chosen.sort();
    assert_eq!(chosen, [7, 8, 9]);
    assert_eq!(s.funnel.get(Step::OverRunLimit), 7);
    // Two already written today by an earlier run: room for one more.
    let mut i = inputs(customers);
    for id in ["c9", "c8"] {
        i.history.insert(
            id.into(),
            vec![Past {
                campaign: "c".into(),
                day: day(),
                outreach: true,
            }],
        );
    }
    let s = select(&set(vec![c]), None, &i, &params(noon_ist())).remove(0);
    assert_eq!(s.picks.iter().map(|p| p.customer).collect::<Vec<_>>(), [7]);
}

#[test]
fn send_hours_follow_each_customers_time_zone() {
    let hours = crate::campaigns::parse_hours("09:00-21:00").unwrap();
    // 2026-03-10 06:00 UTC = 11:30 in Kolkata, 02:00 in New York (EDT since 8 March), 19:00 in
    // Auckland (NZDT).
    let now = Utc.with_ymd_and_hms(2026, 3, 10, 6, 0, 0).unwrap();
    let (nb, exp) = send_slot(hours, now, chrono_tz::Asia::Kolkata);
    assert_eq!(nb, now.timestamp());
    assert_eq!(
        exp,
        Utc.with_ymd_and_hms(2026, 3, 10, 15, 30, 0)
            .unwrap()
            .timestamp()
    );
    let (nb, exp) = send_slot(hours, now, chrono_tz::America::New_York);
    assert_eq!(
        nb,
        Utc.with_ymd_and_hms(2026, 3, 10, 13, 0, 0)
            .unwrap()
            .timestamp(),
        "09:00 EDT"
    );
    assert_eq!(
        exp,
        Utc.with_ymd_and_hms(2026, 3, 11, 1, 0, 0)
            .unwrap()
            .timestamp(),
        "21:00 EDT"
    );
    let (nb, _) = send_slot(hours, now, chrono_tz::Pacific::Auckland);
    assert_eq!(nb, now.timestamp());
    // 22:00 in Kolkata: next slot tomorrow 09:00 IST.
    let late = chrono_tz::Asia::Kolkata
        .with_ymd_and_hms(2026, 3, 10, 22, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let (nb, _) = send_slot(hours, late, chrono_tz::Asia::Kolkata);
    assert_eq!(
        nb,
        chrono_tz::Asia::Kolkata
            .with_ymd_and_hms(2026, 3, 11, 9, 0, 0)
            .unwrap()
            .timestamp()
    );
    // Across the DST change in New York (8 March 2026, 02:00 → 03:00): 09:00 EDT on the 8th.
    let before = Utc.with_ymd_and_hms(2026, 3, 8, 4, 0, 0).unwrap(); // 23:00 EST on the 7th
    let (nb, _) = send_slot(hours, before, chrono_tz::America::New_York);
    assert_eq!(
        nb,
        Utc.with_ymd_and_hms(2026, 3, 8, 13, 0, 0)
            .unwrap()
            .timestamp()
    );

    // In selection: "wait" queues for the slot, "skip" drops the customer.
    let mut ny = customer("ny");
    ny.tz = Some(chrono_tz::America::New_York);
    let mut i = inputs(vec![customer("in"), ny]);
    i.customers[0].tz = None; // falls back to the brand's zone (Kolkata)
    let wait = select(&set(vec![campaign(NO_HOLDOUT)]), None, &i, &params(now)).remove(0);
    assert_eq!(wait.funnel.get(Step::Selected), 2);
    assert_eq!(wait.funnel.waiting_for_send_hours, 1);
    let skip = campaign("[limits]\nholdout_percent = 0\noutside_send_hours = \"skip\"\n");
    let s = select(&set(vec![skip]), None, &i, &params(now)).remove(0);
    assert_eq!(s.funnel.get(Step::Selected), 1);
    assert_eq!(s.funnel.get(Step::OutsideSendHours), 1);
    assert_eq!(i.customers[s.picks[0].customer].customer_id, "in");
}

#[test]
fn inactive_campaigns_select_nobody() {
    let mut c = campaign(NO_HOLDOUT);
    c.enabled = false;
    let s = select(
        &set(vec![c]),
        None,
        &inputs(vec![customer("a")]),
        &params(noon_ist()),
    )
    .remove(0);
    assert!(!s.active);
    assert!(s.picks.is_empty());
    let mut c = campaign(NO_HOLDOUT);
    c.end_date = Some(day() - Duration::days(1));
    assert!(
        select(
            &set(vec![c]),
            None,
            &inputs(vec![customer("a")]),
            &params(noon_ist())
        )[0]
        .picks
        .is_empty()
    );
}

#[test]
fn funnel_json_names_each_step() {
    let mut f = Funnel::new(3);
    f.add(Step::HeldOut);
    let v = serde_json::to_value(&f).unwrap();
    let counts = v["counts"].as_array().unwrap();
    assert_eq!(counts.len(), Step::ALL.len());
    assert!(
        counts
            .iter()
            .any(|c| c["step"] == "held_out" && c["count"] == 1),
        "{v}"
    );
}
