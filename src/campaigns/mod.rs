//! Campaign files: one TOML file per campaign under `campaigns.dir`, written by the CRM team.
//!
//! Files are parsed into [`CampaignFile`] (the raw shape, every key optional where the README
//! says so) and then validated into [`Campaign`] (the shape selection works with). Like the main
//! config, loading never stops at the first mistake: every problem in every file is collected
//! with its file, key path and a fix, so `check-config` can list them all before the daemon runs.

pub mod data_check;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ConfigIssue, IssueSink, parse_toml};
use crate::messages::placeholders::unknown_placeholders;
use crate::messages::{EMAIL_FAMILIES, EmailFamily};

/// A delivery channel, in the order a campaign prefers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
    Whatsapp,
}

pub const CHANNELS: &[&str] = &["email", "sms", "whatsapp"];

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "email" => Some(Channel::Email),
            "sms" => Some(Channel::Sms),
            "whatsapp" => Some(Channel::Whatsapp),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CampaignFile {
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub priority: i64,
    pub channels: Vec<String>,
    pub audience: AudienceFile,
    pub trigger: TriggerFile,
    pub offer: OfferFile,
    pub copy: CopyFile,
    pub copy_generic: Option<CopyFile>,
    pub email: EmailFile,
    pub whatsapp: Option<WhatsappFile>,
    pub limits: LimitsFile,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AudienceFile {
    pub min_orders: Option<u32>,
    pub max_orders: Option<u32>,
    pub min_spend: Option<f64>,
    pub max_spend: Option<f64>,
    pub min_days_since_last_order: Option<u32>,
    pub max_days_since_last_order: Option<u32>,
    pub countries: Vec<String>,
    pub categories_bought: Vec<String>,
    pub categories_never_bought: Vec<String>,
    /// Customer attribute → accepted values (attributes come from extra customers.csv columns).
    pub attributes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TriggerFile {
    pub lead_days: u32,
    pub min_lapse_risk: f64,
    pub min_p_alive: f64,
    pub skip_if_p_return_above: f64,
}

impl Default for TriggerFile {
    fn default() -> Self {
        Self {
            lead_days: 7,
            min_lapse_risk: 0.5,
            min_p_alive: 0.2,
            skip_if_p_return_above: 1.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OfferFile {
    /// `recommended`, `recommended_new`, `none`, or a category name.
    pub category: String,
    pub discount_percent: Option<f64>,
    pub discount_amount: Option<f64>,
    pub code: Option<String>,
    pub code_prefix: Option<String>,
    pub products: u32,
    /// `not_bought` (best sellers new to the customer) or `bought_before` (a restock).
    pub picks: String,
    /// Landing page; `{category}` and `{code}` are filled in, URL-encoded.
    pub landing_url: String,
}

impl Default for OfferFile {
    fn default() -> Self {
        Self {
            category: "recommended".into(),
            discount_percent: None,
            discount_amount: None,
            code: None,
            code_prefix: None,
            products: 3,
            picks: "not_bought".into(),
            landing_url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CopyFile {
    pub subject: String,
    pub headline: String,
    pub body: String,
    pub cta: String,
    pub sms: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EmailFile {
    pub template: String,
}

impl Default for EmailFile {
    fn default() -> Self {
        Self {
            template: "offer".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct WhatsappFile {
    pub template: String,
    pub language: String,
    pub params: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsFile {
    pub cooldown_days: u32,
    pub max_sends_per_run: u32,
    /// `HH:MM-HH:MM` in the customer's local time; may wrap past midnight.
    pub send_hours: String,
    /// `wait` (queue for the next allowed slot) or `skip`.
    pub outside_send_hours: String,
    pub holdout_percent: f64,
}

impl Default for LimitsFile {
    fn default() -> Self {
        Self {
            cooldown_days: 30,
            max_sends_per_run: 10_000,
            send_hours: "09:00-21:00".into(),
            outside_send_hours: "wait".into(),
            holdout_percent: 10.0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The validated campaign.

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum OfferCategory {
    /// The recommender's top category.
    Recommended,
    /// The highest-ranked recommended category the customer has never bought (cross-sell).
    RecommendedNew,
    /// A fixed category.
    Fixed(String),
    /// No category: a category-free offer.
    None,
}

/// Which of the offered category's products are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProductPicks {
    /// In-stock best sellers the customer has never bought (discovery).
    NotBought,
    /// In-stock products the customer bought before (a restock reminder), best sellers first;
    /// the category's best sellers when they bought none of it.
    BoughtBefore,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Discount {
    Percent(f64),
    Amount(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum CodeRule {
    None,
    Shared(String),
    /// Per-customer codes derived from this prefix and the code secret.
    Derived(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SendHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl SendHours {
    /// Whether a local time of day is inside the hours (the range may wrap past midnight).
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start == self.end {
            return true; // "00:00-24:00": all day
        }
        if self.start <= self.end {
            t >= self.start && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OutsideHours {
    Wait,
    Skip,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Audience {
    pub min_orders: Option<u32>,
    pub max_orders: Option<u32>,
    pub min_spend: Option<f64>,
    pub max_spend: Option<f64>,
    pub min_days_since_last_order: Option<u32>,
    pub max_days_since_last_order: Option<u32>,
    /// Upper-case ISO codes; empty = all countries.
    pub countries: Vec<String>,
    pub categories_bought: Vec<String>,
    pub categories_never_bought: Vec<String>,
    pub attributes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Trigger {
    pub lead_days: u32,
    pub min_lapse_risk: f64,
    pub min_p_alive: f64,
    pub skip_if_p_return_above: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Offer {
    pub category: OfferCategory,
    pub discount: Option<Discount>,
    pub code: CodeRule,
    pub products: u32,
    pub picks: ProductPicks,
    pub landing_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    pub cooldown_days: u32,
    pub max_sends_per_run: u32,
    pub send_hours: SendHours,
    pub outside_send_hours: OutsideHours,
    pub holdout_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Campaign {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub enabled: bool,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub priority: i64,
    pub channels: Vec<Channel>,
    pub audience: Audience,
    pub trigger: Trigger,
    pub offer: Offer,
    pub copy: CopyFile,
    /// Used when the offer has no category (e.g. a brand without product categories).
    pub copy_generic: CopyFile,
    pub email_family: EmailFamily,
    pub whatsapp: Option<WhatsappFile>,
    pub limits: Limits,
}

impl Campaign {
    /// Enabled and inside its start/end dates on `day`.
    pub fn active_on(&self, day: NaiveDate) -> bool {
        self.enabled
            && self.start_date.is_none_or(|s| day >= s)
            && self.end_date.is_none_or(|e| day <= e)
    }

    /// Whether the campaign's code needs the code secret.
    pub fn needs_code_secret(&self) -> bool {
        matches!(self.offer.code, CodeRule::Derived(_))
    }
}

/// The copy used when an offer has no category and the campaign gives no `[copy_generic]`.
pub fn default_generic_copy() -> CopyFile {
    CopyFile {
        subject: "{first_name}, it's been a while".into(),
        headline: "We saved something for you".into(),
        body: "Your favourites are waiting. Come back and pick up where you left off.".into(),
        cta: "Shop now".into(),
        sms: None,
    }
}

/// Every campaign file in a folder, validated; sorted by priority (highest first), then name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CampaignSet {
    pub dir: PathBuf,
    pub campaigns: Vec<Campaign>,
}

/// The campaigns in force, shared by the scheduler and the dispatcher: SIGHUP swaps in a
/// newly loaded set, and readers keep the set they started with until they finish.
#[derive(Debug, Clone, Default)]
pub struct SharedCampaigns(std::sync::Arc<std::sync::RwLock<std::sync::Arc<CampaignSet>>>);

impl SharedCampaigns {
    pub fn new(set: CampaignSet) -> Self {
        Self(std::sync::Arc::new(std::sync::RwLock::new(
            std::sync::Arc::new(set),
        )))
    }

    pub fn current(&self) -> std::sync::Arc<CampaignSet> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, set: CampaignSet) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(set);
    }
}

impl CampaignSet {
    /// Loads and validates every `*.toml` in `dir`. A missing folder is an empty set.
    pub fn load(dir: &Path) -> Result<CampaignSet, ConfigError> {
        let mut issues = Vec::new();
        let mut campaigns = Vec::new();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                issues.push(ConfigIssue {
                    file: dir.display().to_string(),
                    key: "(folder)".into(),
                    message: format!("cannot read: {e}"),
                    fix: "set campaigns.dir to a readable folder".into(),
                });
                return Err(ConfigError { issues });
            }
        };
        files.sort();
        for path in files {
            let file = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    if let Some(c) = parse_campaign(&text, &path, &mut issues) {
                        campaigns.push(c);
                    }
                }
                Err(e) => issues.push(ConfigIssue {
                    file,
                    key: "(file)".into(),
                    message: format!("cannot read: {e}"),
                    fix: "make the file readable".into(),
                }),
            }
        }
        check_names(&campaigns, &mut issues);
        campaigns.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        if issues.is_empty() {
            Ok(CampaignSet {
                dir: dir.to_path_buf(),
                campaigns,
            })
        } else {
            Err(ConfigError { issues })
        }
    }

    pub fn get(&self, name: &str) -> Option<&Campaign> {
        self.campaigns.iter().find(|c| c.name == name)
    }
}

fn check_names(campaigns: &[Campaign], issues: &mut Vec<ConfigIssue>) {
    let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
    for c in campaigns {
        if let Some(first) = seen.insert(&c.name, &c.file) {
            issues.push(ConfigIssue {
                file: c.file.display().to_string(),
                key: "name".into(),
                message: format!(
                    "campaign name {:?} is also used by {}",
                    c.name,
                    first.display()
                ),
                fix: "give every campaign a unique name (it keys the outbox and the holdout split)"
                    .into(),
            });
        }
    }
}

/// Parses and validates one campaign file; problems go to `issues`.
pub fn parse_campaign(text: &str, path: &Path, issues: &mut Vec<ConfigIssue>) -> Option<Campaign> {
    let before = issues.len();
    let mut sink = IssueSink {
        file: path.display().to_string(),
        issues,
    };
    let table = parse_toml(text, &mut sink)?;
    let raw: CampaignFile = sink.section_documented(
        "",
        Some(&toml::Value::Table(table)),
        &CampaignFile::example(),
        crate::config::CAMPAIGN_KEYS_DOC,
    );
    // A key with a type error was read as its default: its validation would add a second,
    // false problem for the same key, for a key inside it (a whole `[offer]` set aside
    // leaves `offer.landing_url` empty) or for its list (`channels[1]` sets `channels` aside).
    let typed = sink.issues.len();
    let campaign = validate(raw, path, &mut sink);
    let bad_keys: HashSet<String> = sink.issues[before..typed]
        .iter()
        .map(|i| i.key.split('[').next().unwrap_or(&i.key).to_string())
        .collect();
    let covered = |key: &str| {
        bad_keys.iter().any(|b| {
            key == b
                || key
                    .strip_prefix(b.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    };
    let mut i = typed;
    while i < sink.issues.len() {
        if covered(&sink.issues[i].key) {
            sink.issues.remove(i);
        } else {
            i += 1;
        }
    }
    if sink.issues.len() > before {
        None
    } else {
        campaign
    }
}

fn validate(f: CampaignFile, path: &Path, sink: &mut IssueSink<'_>) -> Option<Campaign> {
    if f.name.is_empty() {
        sink.push(
            "name",
            "is missing",
            "add `name = \"due-soon\"` (lower-case letters, digits and dashes)",
        );
    } else if f.name.len() > 64
        || !f
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        sink.push(
            "name",
            format!("{:?} is not a valid campaign name", f.name),
            "use up to 64 lower-case letters, digits and dashes, e.g. \"due-soon\"",
        );
    }
    if let (Some(s), Some(e)) = (f.start_date, f.end_date)
        && e < s
    {
        sink.push(
            "end_date",
            format!("{e} is before start_date {s}"),
            "set end_date on or after start_date",
        );
    }

    // Channels.
    let mut channels = Vec::new();
    if f.channels.is_empty() {
        sink.push(
            "channels",
            "is empty",
            "list channels in order of preference, e.g. [\"whatsapp\", \"email\"]",
        );
    }
    for (i, ch) in f.channels.iter().enumerate() {
        match Channel::parse(ch) {
            Some(c) if channels.contains(&c) => sink.push(
                format!("channels[{i}]"),
                format!("{ch:?} is listed twice"),
                "list each channel once",
            ),
            Some(c) => channels.push(c),
            None => sink.push(
                format!("channels[{i}]"),
                format!("unknown channel {ch:?}"),
                format!("use one of: {}", CHANNELS.join(", ")),
            ),
        }
    }

    // Audience.
    let a = &f.audience;
    range_check(
        sink,
        "audience",
        "orders",
        a.min_orders.map(f64::from),
        a.max_orders.map(f64::from),
    );
    range_check(sink, "audience", "spend", a.min_spend, a.max_spend);
    range_check(
        sink,
        "audience",
        "days_since_last_order",
        a.min_days_since_last_order.map(f64::from),
        a.max_days_since_last_order.map(f64::from),
    );
    for (key, v) in [
        ("audience.min_spend", a.min_spend),
        ("audience.max_spend", a.max_spend),
    ] {
        if v.is_some_and(|v| !(v >= 0.0 && v.is_finite())) {
            sink.push(
                key,
                format!("{} is not a non-negative amount", v.unwrap_or_default()),
                "use an amount of money ≥ 0",
            );
        }
    }
    for (i, c) in a.countries.iter().enumerate() {
        if c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()) {
            sink.push(
                format!("audience.countries[{i}]"),
                format!("{c:?} is not an ISO 3166 country code"),
                "use two letters such as \"IN\" or \"US\"",
            );
        }
    }
    for (key, list) in [
        ("audience.categories_bought", &a.categories_bought),
        (
            "audience.categories_never_bought",
            &a.categories_never_bought,
        ),
    ] {
        for (i, c) in list.iter().enumerate() {
            if c.trim().is_empty() {
                sink.push(
                    format!("{key}[{i}]"),
                    "is empty",
                    "name a product category as it appears in products.csv",
                );
            }
        }
    }
    for (k, values) in &a.attributes {
        if values.is_empty() {
            sink.push(
                format!("audience.attributes.{k}"),
                "lists no values",
                "list the accepted values, e.g. [\"gold\", \"silver\"], or remove the key",
            );
        }
    }

    // Trigger.
    let t = &f.trigger;
    for (key, v) in [
        ("trigger.min_lapse_risk", t.min_lapse_risk),
        ("trigger.min_p_alive", t.min_p_alive),
        ("trigger.skip_if_p_return_above", t.skip_if_p_return_above),
    ] {
        if !(0.0..=1.0).contains(&v) {
            sink.push(
                key,
                format!("{v} is not a probability"),
                "use a value between 0 and 1",
            );
        }
    }
    if t.lead_days > 365 {
        sink.push(
            "trigger.lead_days",
            format!("{} is out of range", t.lead_days),
            "use 0..=365 days",
        );
    }

    // Offer.
    let o = &f.offer;
    let category = match o.category.as_str() {
        "recommended" => OfferCategory::Recommended,
        "recommended_new" => OfferCategory::RecommendedNew,
        "none" => OfferCategory::None,
        "" => {
            sink.push(
                "offer.category",
                "is empty",
                "use \"recommended\", \"recommended_new\", \"none\" or a category name",
            );
            OfferCategory::None
        }
        c => OfferCategory::Fixed(c.to_string()),
    };
    let discount = match (o.discount_percent, o.discount_amount) {
        (Some(_), Some(_)) => {
            sink.push(
                "offer.discount_amount",
                "both discount_percent and discount_amount are set",
                "keep one of them",
            );
            None
        }
        (Some(p), None) if !(p > 0.0 && p <= 90.0) => {
            sink.push(
                "offer.discount_percent",
                format!("{p} is out of range"),
                "use a percentage in (0, 90]",
            );
            None
        }
        (None, Some(v)) if !(v > 0.0 && v.is_finite()) => {
            sink.push(
                "offer.discount_amount",
                format!("{v} is not a positive amount"),
                "use an amount > 0 in the brand's currency",
            );
            None
        }
        (Some(p), None) => Some(Discount::Percent(p)),
        (None, Some(v)) => Some(Discount::Amount(v)),
        (None, None) => None,
    };
    let code = match (&o.code, &o.code_prefix) {
        (Some(_), Some(_)) => {
            sink.push(
                "offer.code_prefix",
                "both code and code_prefix are set",
                "use `code` for one shared code or `code_prefix` for per-customer codes",
            );
            CodeRule::None
        }
        (Some(c), None) => {
            if !valid_code(c) {
                sink.push(
                    "offer.code",
                    format!("{c:?} is not a usable discount code"),
                    "use 3-32 letters, digits, dashes or underscores",
                );
            }
            CodeRule::Shared(c.clone())
        }
        (None, Some(p)) => {
            if !valid_code(p) || p.len() > 16 {
                sink.push(
                    "offer.code_prefix",
                    format!("{p:?} is not a usable code prefix"),
                    "use 3-16 letters, digits, dashes or underscores",
                );
            }
            CodeRule::Derived(p.clone())
        }
        (None, None) => CodeRule::None,
    };
    if discount.is_some() && code == CodeRule::None {
        sink.push(
            "offer.code",
            "a discount is offered without a code",
            "set `code` (shared) or `code_prefix` (per customer)",
        );
    }
    if o.products > 12 {
        sink.push(
            "offer.products",
            format!("{} is too many", o.products),
            "use 0..=12 product picks",
        );
    }
    let picks = match o.picks.as_str() {
        "not_bought" => ProductPicks::NotBought,
        "bought_before" => ProductPicks::BoughtBefore,
        other => {
            sink.push(
                "offer.picks",
                format!("unknown value {other:?}"),
                "use \"not_bought\" (new to the customer) or \"bought_before\" (a restock)",
            );
            ProductPicks::NotBought
        }
    };
    if let Err(why) = check_landing_url(&o.landing_url) {
        sink.push(
            "offer.landing_url",
            format!("{:?} {why}", o.landing_url),
            LANDING_URL_FIX,
        );
    }

    // Copy.
    check_copy(sink, "copy", &f.copy, &channels);
    if let Some(g) = &f.copy_generic {
        check_copy(sink, "copy_generic", g, &channels);
        for (key, text) in [
            ("subject", &g.subject),
            ("headline", &g.headline),
            ("body", &g.body),
        ] {
            if text.contains("{category}") || text.contains("{products}") {
                sink.push(
                    format!("copy_generic.{key}"),
                    "uses {category} or {products}, which are empty without a category",
                    "write this copy without them",
                );
            }
        }
    }
    let email_family = match f.email.template.parse::<EmailFamily>() {
        Ok(e) => e,
        Err(_) => {
            sink.push(
                "email.template",
                format!("unknown email template {:?}", f.email.template),
                format!("use one of: {}", EMAIL_FAMILIES.join(", ")),
            );
            EmailFamily::Offer
        }
    };
    match (&f.whatsapp, channels.contains(&Channel::Whatsapp)) {
        (None, true) => sink.push(
            "whatsapp",
            "the whatsapp channel needs an approved template",
            "add [whatsapp] with template, language and params",
        ),
        (Some(w), _) => {
            if w.template.is_empty()
                || !w
                    .template
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                sink.push(
                    "whatsapp.template",
                    format!("{:?} is not a WhatsApp template name", w.template),
                    "use the approved template's name: lower-case letters, digits and underscores",
                );
            }
            if w.language.is_empty() || w.language.len() > 8 {
                sink.push(
                    "whatsapp.language",
                    format!("{:?} is not a language code", w.language),
                    "use the template's language code, e.g. \"en\" or \"en_US\"",
                );
            }
            for (i, p) in w.params.iter().enumerate() {
                placeholder_check(sink, &format!("whatsapp.params[{i}]"), p);
            }
        }
        (None, false) => {}
    }

    // Limits.
    let l = &f.limits;
    let send_hours = match parse_hours(&l.send_hours) {
        Some(h) => h,
        None => {
            sink.push(
                "limits.send_hours",
                format!("{:?} is not a time range", l.send_hours),
                "use \"HH:MM-HH:MM\" in the customer's local time, e.g. \"09:00-21:00\"",
            );
            SendHours {
                start: NaiveTime::MIN,
                end: NaiveTime::MIN,
            }
        }
    };
    let outside = match l.outside_send_hours.as_str() {
        "wait" => OutsideHours::Wait,
        "skip" => OutsideHours::Skip,
        other => {
            sink.push(
                "limits.outside_send_hours",
                format!("unknown value {other:?}"),
                "use \"wait\" (next allowed slot) or \"skip\"",
            );
            OutsideHours::Wait
        }
    };
    if !(0.0..=50.0).contains(&l.holdout_percent) {
        sink.push(
            "limits.holdout_percent",
            format!("{} is out of range", l.holdout_percent),
            "use 0..=50 (percent of selected customers held out)",
        );
    }
    if l.max_sends_per_run == 0 {
        sink.push(
            "limits.max_sends_per_run",
            "must be at least 1",
            "use a value such as 10000",
        );
    }
    if l.cooldown_days > 3650 {
        sink.push(
            "limits.cooldown_days",
            format!("{} is out of range", l.cooldown_days),
            "use 0..=3650 days",
        );
    }

    Some(Campaign {
        name: f.name,
        file: path.to_path_buf(),
        description: f.description,
        enabled: f.enabled,
        start_date: f.start_date,
        end_date: f.end_date,
        priority: f.priority,
        channels,
        audience: Audience {
            min_orders: a.min_orders,
            max_orders: a.max_orders,
            min_spend: a.min_spend,
            max_spend: a.max_spend,
            min_days_since_last_order: a.min_days_since_last_order,
            max_days_since_last_order: a.max_days_since_last_order,
            countries: a.countries.iter().map(|c| c.to_ascii_uppercase()).collect(),
            categories_bought: a.categories_bought.clone(),
            categories_never_bought: a.categories_never_bought.clone(),
            attributes: a.attributes.clone(),
        },
        trigger: Trigger {
            lead_days: t.lead_days,
            min_lapse_risk: t.min_lapse_risk,
            min_p_alive: t.min_p_alive,
            skip_if_p_return_above: t.skip_if_p_return_above,
        },
        offer: Offer {
            category,
            discount,
            code,
            products: o.products,
            picks,
            landing_url: o.landing_url.clone(),
        },
        copy: f.copy,
        copy_generic: f.copy_generic.unwrap_or_else(default_generic_copy),
        email_family,
        whatsapp: f.whatsapp,
        limits: Limits {
            cooldown_days: l.cooldown_days,
            max_sends_per_run: l.max_sends_per_run,
            send_hours,
            outside_send_hours: outside,
            holdout_percent: l.holdout_percent,
        },
    })
}

const LANDING_URL_FIX: &str = "use the shop's absolute http(s) landing page, e.g. \"https://shop.example.com/collections/{category}?discount={code}\" \
     (only {category} and {code} may be filled in; encode spaces as %20)";

/// The placeholders a landing URL may carry: they are filled URL-encoded per customer.
const URL_PLACEHOLDERS: [&str; 2] = ["category", "code"];

/// Why a campaign's `landing_url` would not make a usable link for every customer: it must be an
/// absolute http(s) URL with a host, in printable ASCII without quotes, spaces, `<>\\` or a
/// backtick, and fill in only `{category}` and `{code}` (anything else would ship as literal
/// text or break the link).
pub fn check_landing_url(url: &str) -> Result<(), String> {
    if url.trim().is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = url
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\'' | '<' | '>' | '\\' | '`'))
    {
        return Err(format!(
            "contains {c:?}, which a link cannot carry as it is"
        ));
    }
    // Fill the placeholders with sample values; any other brace is a mistake.
    let mut filled = url.to_string();
    for p in URL_PLACEHOLDERS {
        filled = filled.replace(&format!("{{{p}}}"), "x");
    }
    if filled.contains('{') || filled.contains('}') {
        let others: Vec<&str> = url
            .match_indices('{')
            .filter_map(|(i, _)| url[i..].find('}').map(|j| &url[i..=i + j]))
            .filter(|p| !URL_PLACEHOLDERS.iter().any(|a| p[1..p.len() - 1] == **a))
            .collect();
        let detail = if others.is_empty() {
            "a stray brace".to_string()
        } else {
            others.join(", ")
        };
        return Err(format!(
            "uses a placeholder other than {{category}} and {{code}} ({detail})"
        ));
    }
    let parsed = url::Url::parse(&filled).map_err(|e| format!("is not an absolute URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "has scheme {:?}, not http or https",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

fn valid_code(c: &str) -> bool {
    (3..=32).contains(&c.len())
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

fn range_check(
    sink: &mut IssueSink<'_>,
    section: &str,
    what: &str,
    min: Option<f64>,
    max: Option<f64>,
) {
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        sink.push(
            format!("{section}.max_{what}"),
            format!("max_{what} {hi} is below min_{what} {lo}"),
            format!("set max_{what} ≥ min_{what}"),
        );
    }
}

fn placeholder_check(sink: &mut IssueSink<'_>, key: &str, text: &str) {
    for problem in unknown_placeholders(text) {
        sink.push(
            key.to_string(),
            format!("bad placeholder: {problem}"),
            format!(
                "use only {} (write {{{{ and }}}} for literal braces)",
                crate::messages::placeholders::PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
}

fn check_copy(sink: &mut IssueSink<'_>, section: &str, c: &CopyFile, channels: &[Channel]) {
    let needs_email = channels.contains(&Channel::Email);
    for (key, text, required) in [
        ("subject", &c.subject, needs_email),
        ("headline", &c.headline, true),
        ("body", &c.body, needs_email),
        ("cta", &c.cta, true),
    ] {
        if required && text.trim().is_empty() {
            sink.push(
                format!("{section}.{key}"),
                "is empty",
                format!("write the {key} (placeholders such as {{first_name}} are allowed)"),
            );
        }
        placeholder_check(sink, &format!("{section}.{key}"), text);
    }
    if c.subject.chars().count() > 150 {
        sink.push(
            format!("{section}.subject"),
            "is longer than 150 characters",
            "shorten it; inboxes show ~60 characters",
        );
    }
    if let Some(sms) = &c.sms {
        placeholder_check(sink, &format!("{section}.sms"), sms);
    }
}

/// `HH:MM-HH:MM`; `00:00-24:00` is all day.
pub fn parse_hours(s: &str) -> Option<SendHours> {
    let (a, b) = s.split_once('-')?;
    let start = NaiveTime::parse_from_str(a.trim(), "%H:%M").ok()?;
    let end = if b.trim() == "24:00" {
        NaiveTime::MIN
    } else {
        NaiveTime::parse_from_str(b.trim(), "%H:%M").ok()?
    };
    let all_day = start == NaiveTime::MIN && b.trim() == "24:00";
    (start != end || all_day).then_some(SendHours { start, end })
}

impl CampaignFile {
    /// Every key filled, so "did you mean" suggestions know optional keys too.
    pub fn example() -> CampaignFile {
        CampaignFile {
            start_date: Some(NaiveDate::MIN),
            end_date: Some(NaiveDate::MIN),
            audience: AudienceFile {
                min_orders: Some(0),
                max_orders: Some(0),
                min_spend: Some(0.0),
                max_spend: Some(0.0),
                min_days_since_last_order: Some(0),
                max_days_since_last_order: Some(0),
                countries: vec![String::new()],
                categories_bought: vec![String::new()],
                categories_never_bought: vec![String::new()],
                attributes: BTreeMap::from([(String::new(), vec![])]),
            },
            offer: OfferFile {
                discount_percent: Some(0.0),
                discount_amount: Some(0.0),
                code: Some(String::new()),
                code_prefix: Some(String::new()),
                ..OfferFile::default()
            },
            copy: CopyFile {
                sms: Some(String::new()),
                ..CopyFile::default()
            },
            copy_generic: Some(CopyFile {
                sms: Some(String::new()),
                ..CopyFile::default()
            }),
            whatsapp: Some(WhatsappFile::default()),
            ..CampaignFile::default()
        }
    }
}

#[cfg(test)]
mod tests;
