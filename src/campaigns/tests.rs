use super::*;

fn issues_of(text: &str) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let c = parse_campaign(text, Path::new("c.toml"), &mut issues);
    assert_eq!(c.is_some(), issues.is_empty(), "{issues:?}");
    issues
}

const MINIMAL: &str = r#"
name = "due-soon"
enabled = true
channels = ["email"]
[offer]
landing_url = "https://shop.example/c/{category}"
[copy]
subject = "Hi {first_name}"
headline = "Restock {category}"
body = "Body"
cta = "Shop"
"#;

#[test]
fn shipped_examples_are_valid() {
    let set = CampaignSet::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/campaigns"
    )))
    .unwrap();
    let names: Vec<&str> = set.campaigns.iter().map(|c| c.name.as_str()).collect();
    // Sorted by priority, highest first.
    assert_eq!(names, ["slipping-away", "due-soon", "cross-sell"]);
    let s = set.get("slipping-away").unwrap();
    assert_eq!(s.channels, [Channel::Whatsapp, Channel::Email]);
    assert_eq!(s.offer.discount, Some(Discount::Percent(15.0)));
    assert_eq!(s.offer.code, CodeRule::Derived("BACK".into()));
    assert_eq!(
        set.get("cross-sell").unwrap().offer.category,
        OfferCategory::RecommendedNew
    );
}

#[test]
fn minimal_file_takes_defaults() {
    assert!(issues_of(MINIMAL).is_empty());
    let mut issues = Vec::new();
    let c = parse_campaign(MINIMAL, Path::new("c.toml"), &mut issues).unwrap();
    assert_eq!(c.trigger.lead_days, 7);
    assert_eq!(c.limits.holdout_percent, 10.0);
    assert_eq!(c.limits.outside_send_hours, OutsideHours::Wait);
    assert_eq!(c.offer.category, OfferCategory::Recommended);
    assert_eq!(c.copy_generic, default_generic_copy());
}

#[test]
fn every_mistake_is_reported_at_once_with_key_and_fix() {
    let text = r#"
name = "Due Soon!"
enabled = true
channels = ["whatsapp", "pigeon", "email", "email"]
[audience]
min_orders = 5
max_orders = 2
countries = ["India"]
[trigger]
min_lapse_riks = 0.5
min_p_alive = 1.5
[offer]
category = "recommended"
discount_percent = 15
landing_url = "shop.example"
[copy]
subject = "Hi {firstname}"
headline = "x {"
body = "b"
cta = "c"
[email]
template = "fancy"
[limits]
send_hours = "9-5"
outside_send_hours = "later"
holdout_percent = 80
"#;
    let issues = issues_of(text);
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    for expected in [
        "name",
        "channels[1]",
        "channels[3]",
        "audience.max_orders",
        "audience.countries[0]",
        "trigger.min_lapse_riks",
        "trigger.min_p_alive",
        "offer.code",
        "offer.landing_url",
        "copy.subject",
        "copy.headline",
        "email.template",
        "whatsapp",
        "limits.send_hours",
        "limits.outside_send_hours",
        "limits.holdout_percent",
    ] {
        assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
    }
    let typo = issues
        .iter()
        .find(|i| i.key == "trigger.min_lapse_riks")
        .unwrap();
    assert!(typo.fix.contains("trigger.min_lapse_risk"), "{}", typo.fix);
    let tpl = issues.iter().find(|i| i.key == "email.template").unwrap();
    assert!(
        tpl.fix.contains("offer") && tpl.fix.contains("plain"),
        "{}",
        tpl.fix
    );
    assert!(issues.iter().all(|i| i.file == "c.toml"));
}

#[test]
fn wrong_types_and_syntax_are_reported() {
    let issues = issues_of(&format!(
        "{MINIMAL}\n[limits]\ncooldown_days = \"thirty\"\n"
    ));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "limits.cooldown_days");
    let issues = issues_of("name = \"x\"\nchannels = [\n");
    assert_eq!(issues.len(), 1);
    assert!(issues[0].key.starts_with("line "), "{issues:?}");
}

#[test]
fn overlapping_names_across_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), MINIMAL).unwrap();
    std::fs::write(dir.path().join("b.toml"), MINIMAL).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let err = CampaignSet::load(dir.path()).unwrap_err();
    assert_eq!(err.issues.len(), 1, "{err}");
    assert_eq!(err.issues[0].key, "name");
    assert!(
        err.issues[0].message.contains("a.toml"),
        "{}",
        err.issues[0].message
    );
}

#[test]
fn missing_folder_is_an_empty_set() {
    let set = CampaignSet::load(Path::new("/nonexistent/campaigns")).unwrap();
    assert!(set.campaigns.is_empty());
}

#[test]
fn generic_copy_may_not_name_the_category() {
    let text = format!(
        "{MINIMAL}\n[copy_generic]\nsubject = \"s\"\nheadline = \"Back to {{category}}\"\nbody = \"b\"\ncta = \"c\"\n"
    );
    let issues = issues_of(&text);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "copy_generic.headline");
}

#[test]
fn send_hours_may_wrap_midnight() {
    let h = parse_hours("21:00-02:00").unwrap();
    assert!(h.contains(NaiveTime::from_hms_opt(23, 0, 0).unwrap()));
    assert!(h.contains(NaiveTime::from_hms_opt(1, 59, 0).unwrap()));
    assert!(!h.contains(NaiveTime::from_hms_opt(2, 0, 0).unwrap()));
    assert!(!h.contains(NaiveTime::from_hms_opt(12, 0, 0).unwrap()));
    let d = parse_hours("09:00-21:00").unwrap();
    assert!(d.contains(NaiveTime::from_hms_opt(9, 0, 0).unwrap()));
    assert!(!d.contains(NaiveTime::from_hms_opt(21, 0, 0).unwrap()));
    assert!(parse_hours("09:00-09:00").is_none());
    assert!(parse_hours("25:00-26:00").is_none());
    // All day, and sendable at once with the day's end as its deadline.
    let all = parse_hours("00:00-24:00").unwrap();
    for h in [0, 7, 23] {
        assert!(all.contains(NaiveTime::from_hms_opt(h, 59, 0).unwrap()));
    }
    let tz: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T20:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let (from, until) = crate::selection::send_slot(all, now, tz);
    assert_eq!(from, now.timestamp());
    assert_eq!(
        until,
        chrono::DateTime::parse_from_rfc3339("2026-11-26T18:30:00Z")
            .unwrap()
            .timestamp(),
        "local midnight after"
    );
}

#[test]
fn active_dates_bound_the_campaign() {
    let text = MINIMAL.replacen(
        "enabled = true\n",
        "enabled = true\nstart_date = 2026-01-01\nend_date = 2026-01-31\n",
        1,
    );
    let mut issues = Vec::new();
    let c = parse_campaign(&text, Path::new("c.toml"), &mut issues).unwrap();
    let d = |s: &str| s.parse::<NaiveDate>().unwrap();
    assert!(!c.active_on(d("2025-12-31")));
    assert!(c.active_on(d("2026-01-01")));
    assert!(c.active_on(d("2026-01-31")));
    assert!(!c.active_on(d("2026-02-01")));
}

#[test]
fn landing_urls_must_be_usable_links_for_every_customer() {
    use super::check_landing_url;
    for ok in [
        "https://shop.example/c/{category}?discount={code}",
        "http://127.0.0.1:8080/x",
        "https://shop.example/a%20b?x=1&y={code}",
    ] {
        assert_eq!(check_landing_url(ok), Ok(()), "{ok}");
    }
    for (bad, why) in [
        ("", "is empty"),
        ("https://", "not an absolute URL"),
        ("ftp://shop.example/x", "not http or https"),
        ("shop.example/{category}", "not an absolute URL"),
        ("https://shop.example/c/{category}\"x", "'\"'"),
        ("https://shop.example/c/{category} x", "' '"),
        ("https://shop.example/c/{first_name}", "{first_name}"),
        ("https://shop.example/c/{category", "a stray brace"),
        ("https://shop.example/é", "'é'"),
    ] {
        let err = check_landing_url(bad).expect_err(bad);
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn a_type_error_inside_a_table_keeps_its_siblings() {
    // Before: the whole [offer] table was set aside, so a valid landing_url was reported too.
    let issues = issues_of(&MINIMAL.replace("[offer]", "[offer]\nproducts = \"three\""));
    assert_eq!(
        issues.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
        vec!["offer.products"],
        "{issues:?}"
    );
}
