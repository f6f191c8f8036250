//! Configuration: `config/retentiond.toml`, parsed into validated settings.
//!
//! Every key has a default (the `Default` impls below are the single source of truth, and
//! `retentiond default-config` prints them). Loading never stops at the first mistake: unknown
//! keys, wrong types and out-of-range values are all collected, each with the file, the key path
//! and a fix, so `retentiond check-config` can report everything at once.
//! Secrets never live here: a setting such as `api_key_env` names the environment variable.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Environment variable that overrides `database.url` (as does `--database`).
pub const DATABASE_URL_ENV: &str = "RETENTIOND_DATABASE_URL";
pub const DEFAULT_CONFIG_PATH: &str = "config/retentiond.toml";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub brand: BrandSettings,
    pub import: ImportSettings,
    pub model: ModelSettings,
    pub campaigns: CampaignSettings,
    pub delivery: crate::delivery::providers::DeliverySettings,
    pub dispatch: crate::delivery::retry::DispatchSettings,
    pub http: HttpSettings,
    pub scheduler: crate::scheduler::SchedulerSettings,
    pub housekeeping: crate::scheduler::HousekeepingSettings,
    pub measurement: crate::measurement::MeasurementSettings,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (created on first use, WAL mode) or `postgres://…`. Default
    /// `sqlite://data/retentiond.db`, relative to the working directory.
    pub url: String,
    /// Connection pool size. Default 8 (SQLite still has a single writer).
    pub max_connections: u32,
    /// How long to wait for a lock or a connection, in milliseconds. Default 30000.
    pub busy_timeout_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/retentiond.db".into(),
            max_connections: 8,
            busy_timeout_ms: 30_000,
        }
    }
}

// The URL may carry a password: never print it.
impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BrandSettings {
    /// The brand's name as customers know it (messages are signed with it). Default "Veda Roots".
    pub name: String,
    /// The brand's IANA time zone: naive timestamps in imports are read in it, and schedules
    /// fire in it. Default "UTC".
    pub timezone: String,
    /// Currency assumed when an order has none. Default "INR".
    pub currency: String,
    /// ISO 3166 alpha-2 code: imports read national phone numbers (no `+`) of customers
    /// without their own `country` in it, to store them in E.164. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

impl Default for BrandSettings {
    fn default() -> Self {
        Self {
            name: "Veda Roots".into(),
            timezone: "UTC".into(),
            currency: "INR".into(),
            country: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportSettings {
    /// Errors reported in full before the rest are only counted. Default 100.
    pub max_errors: usize,
    /// Rows per multi-row INSERT. Default 500.
    pub batch_rows: usize,
    /// Where import reports and `rejected/` folders go. Default "data/imports".
    pub report_dir: PathBuf,
    /// Read contract files that are symbolic links. Default false: a link is refused, so an
    /// export folder cannot point the import at another file on the host.
    pub follow_symlinks: bool,
    /// Timestamps more than this many days after the import are refused. Default 1.
    pub max_future_days: u32,
}

impl Default for ImportSettings {
    fn default() -> Self {
        Self {
            max_errors: 100,
            batch_rows: 500,
            report_dir: PathBuf::from("data/imports"),
            follow_symlinks: false,
            max_future_days: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelSettings {
    /// Prediction horizon H in days. Default 90.
    pub horizon_days: u32,
    /// Days between training cutoffs. Default 30.
    pub cutoff_step_days: u32,
    /// Number of training cutoffs (fewer when the history is short). Default 4.
    pub cutoffs: u32,
    /// Central share of the conditional return-time distribution used as the predicted window.
    /// Default 0.5 (quartiles).
    pub window_coverage: f64,
    /// Half-life (days) of the time decay on a customer's category spend. Default 90.
    pub category_half_life_days: f64,
    /// Also try gradient-boosted trees for "will they return" (kept only if they win on the
    /// validation fold). Default true.
    pub try_gbt: bool,
    /// A customer-day with more browsing events than this is a bot burst and is ignored.
    /// Default 200.
    pub bot_events_per_day: u32,
    /// Cold start: below this many days of order history, the rule-based fallback is used
    /// instead of fitted models. Default 180.
    pub min_history_days: u32,
    /// Cold start: below this many repeat buyers, the rule-based fallback is used. Default 300.
    pub min_repeat_buyers: u32,
    /// Training rows over all cutoffs (a deterministic customer sample beyond it). Default 400000.
    pub max_train_rows: u32,
    /// `train` keeps the current champion when the new model is worse by more than this on
    /// return AUC, category hit@1 or timing C-index, all measured on the same window. Default 0.01.
    pub promotion_tolerance: f64,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            horizon_days: 90,
            cutoff_step_days: 30,
            cutoffs: 4,
            window_coverage: 0.5,
            category_half_life_days: 90.0,
            try_gbt: true,
            bot_events_per_day: 200,
            min_history_days: 180,
            min_repeat_buyers: 300,
            max_train_rows: 400_000,
            promotion_tolerance: 0.01,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CampaignSettings {
    /// Folder of campaign files (`*.toml`, one campaign each). Default "config/campaigns".
    pub dir: PathBuf,
    /// Frequency cap across all campaigns: at most this many messages per customer…
    /// Default 2.
    pub frequency_cap: u32,
    /// …within this many days (the run's day included). Default 7.
    pub frequency_window_days: u32,
    /// Base of the links in messages that reach this daemon (one-click unsubscribe).
    /// Default "http://127.0.0.1:8080".
    pub public_base_url: String,
    /// Optional `mailto:` unsubscribe address added to the `List-Unsubscribe` header.
    pub unsubscribe_mailto: String,
    /// Postal address printed in every email footer (anti-spam laws require one).
    pub postal_address: String,
    /// Environment variable holding the secret that signs unsubscribe links.
    /// Default "RETENTIOND_UNSUBSCRIBE_SECRET".
    pub unsubscribe_secret_env: String,
    /// Environment variable holding the secret that derives per-customer discount codes.
    /// Default "RETENTIOND_CODE_SECRET".
    pub code_secret_env: String,
    /// Days of sales that rank a category's best sellers for product picks. Default 90.
    pub best_seller_days: u32,
}

impl Default for CampaignSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("config/campaigns"),
            frequency_cap: 2,
            frequency_window_days: 7,
            public_base_url: "http://127.0.0.1:8080".into(),
            unsubscribe_mailto: String::new(),
            postal_address: "Veda Roots Wellness Pvt Ltd, 12 MG Road, Bengaluru 560001, India"
                .into(),
            unsubscribe_secret_env: "RETENTIOND_UNSUBSCRIBE_SECRET".into(),
            code_secret_env: "RETENTIOND_CODE_SECRET".into(),
            best_seller_days: 90,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Address the daemon's HTTP server binds. Default "127.0.0.1:8080".
    pub bind: String,
    /// Environment variable holding a bearer token that `GET /` and `/metrics` then require
    /// (`Authorization: Bearer <token>`). Default "" (no token: open, as on a loopback bind).
    pub auth_token_env: String,
    /// Environment variables holding each provider's webhook signing secret.
    pub webhooks: crate::http::WebhookSettings,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            auth_token_env: String::new(),
            webhooks: Default::default(),
        }
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    pub file: String,
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: `{}`: {} (fix: {})",
            self.file, self.key, self.message, self.fix
        )
    }
}

/// All the problems found while loading configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration error(s):", self.issues.len())?;
        for issue in &self.issues {
            writeln!(f, "  - {issue}")?;
        }
        Ok(())
    }
}

/// Collects issues for one file; shared by the main config and campaign files.
pub struct IssueSink<'a> {
    pub file: String,
    pub issues: &'a mut Vec<ConfigIssue>,
}

impl IssueSink<'_> {
    pub fn push(
        &mut self,
        key: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.issues.push(ConfigIssue {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// Deserializes one table, recording every unknown key and every type error in it: after a
    /// type error the offending key is set aside and the rest is read again, so one mistake
    /// does not hide the next. Typos get a "did you mean" fix.
    pub fn section<T: DeserializeOwned + Default + Serialize>(
        &mut self,
        prefix: &str,
        value: Option<&toml::Value>,
    ) -> T {
        self.section_with_example(prefix, value, &T::default())
    }

    /// Like [`IssueSink::section`]; `example` (every optional key filled) tells "did you mean"
    /// which keys exist at every nesting level.
    pub fn section_with_example<T: DeserializeOwned + Default + Serialize>(
        &mut self,
        prefix: &str,
        value: Option<&toml::Value>,
        example: &T,
    ) -> T {
        self.section_documented(prefix, value, example, MAIN_CONFIG_DOC)
    }

    /// Like [`IssueSink::section_with_example`]; `doc` tells where the keys are documented
    /// (the fix of a type error points there).
    pub fn section_documented<T: DeserializeOwned + Default + Serialize>(
        &mut self,
        prefix: &str,
        value: Option<&toml::Value>,
        example: &T,
        doc: &str,
    ) -> T {
        let Some(value) = value else {
            return T::default();
        };
        let mut value = value.clone();
        let example = toml::Value::try_from(example).ok();
        let defaults = toml::Value::try_from(T::default()).ok();
        for _ in 0..64 {
            let mut unknown = Vec::new();
            let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
            let de = serde_ignored::Deserializer::new(value.clone(), &mut record);
            let result: Result<T, _> = serde_path_to_error::deserialize(de);
            match result {
                Ok(v) => {
                    for path in unknown {
                        let known = known_keys_at(example.as_ref(), &path);
                        self.unknown_key(prefix, &path, &known);
                    }
                    return v;
                }
                Err(e) => {
                    let path = e.path().to_string();
                    let key = join_key(prefix, if path == "." { "" } else { &path });
                    let message = e.inner().to_string();
                    let message = message.lines().next().unwrap_or_default().to_string();
                    let default = value_at(defaults.as_ref(), if path == "." { "" } else { &path });
                    self.push(
                        key.clone(),
                        type_error_in_words(&message, &key, default),
                        format!("write a value of that type ({doc})"),
                    );
                    // Set the offending key aside (only it: removing its whole table would
                    // report its siblings as missing) and read the rest again.
                    let removed = path != "." && remove_key(&mut value, &path);
                    if !removed {
                        return T::default();
                    }
                }
            }
        }
        T::default()
    }

    fn unknown_key(&mut self, prefix: &str, path: &str, known: &[String]) {
        let key = join_key(prefix, path);
        let leaf = path.rsplit('.').next().unwrap_or(path);
        let fix = match closest(leaf, known) {
            Some(k) => {
                let parent = path
                    .rsplit_once('.')
                    .map_or(String::new(), |(p, _)| p.to_string());
                format!(
                    "did you mean `{}`? Otherwise remove it",
                    join_key(&join_key(prefix, &parent), k)
                )
            }
            None => format!("remove it; valid keys here are: {}", known.join(", ")),
        };
        self.push(key, "unknown key", fix);
    }
}

/// Where the main config's keys are documented, for the fix of a type error.
pub const MAIN_CONFIG_DOC: &str = "`retentiond default-config` prints every key with its default";
/// Where campaign file keys are documented (`default-config` has none of them).
pub const CAMPAIGN_KEYS_DOC: &str = "see the \"Campaign file keys\" table in the README";

/// The value at a serde path (`offer.products`, `channels[1]`) of a defaults value, if any.
fn value_at<'a>(root: Option<&'a toml::Value>, path: &str) -> Option<&'a toml::Value> {
    let mut node = root?;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let name = seg.split('[').next().unwrap_or(seg);
        node = node.as_table()?.get(name)?;
    }
    Some(node)
}

/// A serde type error (`invalid type: string "x", expected f64`) in words, with an example:
/// `expected a number, e.g. 0.5, found text "x"`. The example is the key's default when it
/// has a telling one. Messages of another shape are kept as they are.
pub fn type_error_in_words(raw: &str, key: &str, default: Option<&toml::Value>) -> String {
    let Some((head, expected)) = raw.rsplit_once(", expected ") else {
        return raw.to_string();
    };
    let Some(found) = head
        .strip_prefix("invalid type: ")
        .or_else(|| head.strip_prefix("invalid value: "))
    else {
        return raw.to_string();
    };
    let found = match found.split_once(' ') {
        Some(("string", v)) => format!("text {v}"),
        Some(("integer" | "floating", v)) => format!(
            "the number {}",
            v.trim_start_matches("point ").trim_matches('`')
        ),
        Some(("boolean", v)) => v.trim_matches('`').to_string(),
        None if found == "sequence" => "a list".into(),
        None if found == "map" => "a table".into(),
        _ => found.to_string(),
    };
    let leaf = key
        .rsplit('.')
        .next()
        .unwrap_or(key)
        .split('[')
        .next()
        .unwrap_or(key);
    let int = |fallback: &str| match default {
        Some(toml::Value::Integer(n)) if *n != 0 => n.to_string(),
        _ => fallback.to_string(),
    };
    let want = match expected.trim() {
        "f64" | "f32" => format!(
            "a number, e.g. {}",
            match default {
                Some(toml::Value::Float(f)) if *f != 0.0 => f.to_string(),
                Some(toml::Value::Integer(n)) if *n != 0 => n.to_string(),
                _ => "0.15".into(),
            }
        ),
        "u8" | "u16" | "u32" | "u64" | "usize" => {
            format!("a whole number (0 or more), e.g. {}", int("3"))
        }
        "i8" | "i16" | "i32" | "i64" | "isize" => format!("a whole number, e.g. {}", int("10")),
        "a boolean" => "true or false (without quotes)".into(),
        "a string" => format!(
            "text in double quotes, e.g. {}",
            match default {
                Some(toml::Value::String(s)) if !s.is_empty() => format!("{s:?}"),
                _ if leaf == "name" => "\"due-soon\"".into(),
                _ if leaf == "channels" => "\"email\"".into(),
                _ => "\"some text\"".into(),
            }
        ),
        "a sequence" => format!(
            "a list in brackets, e.g. {}",
            match leaf {
                "channels" => r#"["email", "sms"]"#.to_string(),
                "countries" => r#"["IN", "AE"]"#.to_string(),
                "categories_bought" | "categories_never_bought" =>
                    r#"["skin care", "hair care"]"#.to_string(),
                "params" => r#"["{first_name}", "{category}"]"#.to_string(),
                _ if key.contains("attributes.") => r#"["gold", "silver"]"#.to_string(),
                _ => match default {
                    Some(v @ toml::Value::Array(a)) if !a.is_empty() => v.to_string(),
                    _ => r#"["a", "b"]"#.to_string(),
                },
            }
        ),
        e if e == "a map" || e.starts_with("struct ") => {
            format!("a table: a [{key}] header with its keys on the lines below")
        }
        e if e.contains("date") => "a date, e.g. 2026-12-31".into(),
        _ => return raw.to_string(),
    };
    format!("expected {want}, found {found}")
}

/// Removes the value at a serde path such as `offer.discount_percent` or `channels[1]` (a
/// sequence element takes its whole sequence with it); false when nothing was there.
fn remove_key(value: &mut toml::Value, path: &str) -> bool {
    let segments: Vec<&str> = path.split('.').collect();
    let mut node = value;
    for (i, seg) in segments.iter().enumerate() {
        let name = seg.split('[').next().unwrap_or(seg);
        let last = i + 1 == segments.len() || seg.contains('[');
        let toml::Value::Table(t) = node else {
            return false;
        };
        if last {
            return t.remove(name).is_some();
        }
        match t.get_mut(name) {
            Some(next) => node = next,
            None => return false,
        }
    }
    false
}

fn join_key(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// Keys of the table that holds `path`'s last segment, in an example value.
fn known_keys_at(example: Option<&toml::Value>, path: &str) -> Vec<String> {
    let mut node = example;
    let segments: Vec<&str> = path.split('.').collect();
    for seg in &segments[..segments.len().saturating_sub(1)] {
        node = match node {
            Some(toml::Value::Table(t)) => t.get(*seg),
            Some(toml::Value::Array(a)) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .or_else(|| a.first()),
            _ => None,
        };
    }
    match node {
        Some(toml::Value::Table(t)) => t.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn known_keys<T: Serialize>(value: &T) -> Vec<String> {
    match toml::Value::try_from(value) {
        Ok(toml::Value::Table(t)) => t.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The known key within edit distance 2 of `word`, if any.
pub fn closest<'a>(word: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (levenshtein(word, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses TOML text into a table, or records the syntax error (with its line) as an issue.
pub fn parse_toml(text: &str, sink: &mut IssueSink<'_>) -> Option<toml::Table> {
    match text.parse::<toml::Table>() {
        Ok(t) => Some(t),
        Err(e) => {
            let line = e.span().map(|s| text[..s.start].lines().count().max(1));
            let key = line
                .map(|l| format!("line {l}"))
                .unwrap_or_else(|| "(file)".into());
            sink.push(key, e.message().to_string(), "fix the TOML syntax");
            None
        }
    }
}

impl Settings {
    /// Loads `path` (or the defaults when `path` is the default location and absent), applies
    /// the database override, and validates. Every problem is returned at once.
    pub fn load(path: &Path, database_override: Option<&str>) -> Result<Settings, ConfigError> {
        let mut issues = Vec::new();
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && path == Path::new(DEFAULT_CONFIG_PATH) =>
            {
                // Said on stderr whatever the log level: run outside the repository, a command
                // would otherwise silently use UTC and create `data/` in this folder.
                eprintln!(
                    "warning: no config file at {file} (run from the folder that holds `config/`, or pass --config); using built-in defaults: brand.timezone UTC, database {}",
                    database_override.map_or(
                        "sqlite://data/retentiond.db (created in this folder)".to_string(),
                        redact_url
                    )
                );
                None
            }
            Err(e) => {
                issues.push(ConfigIssue {
                    file: file.clone(),
                    key: "(file)".into(),
                    message: format!("cannot read: {e}"),
                    fix: "pass an existing file with --config".into(),
                });
                return Err(ConfigError { issues });
            }
        };
        let mut settings = match text {
            Some(text) => Self::from_toml_str(&text, &file, &mut issues),
            None => Settings::default(),
        };
        if let Some(url) = database_override {
            settings.database.url = url.to_string();
        }
        settings.validate(&file, &mut issues);
        if issues.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError { issues })
        }
    }

    /// Parses settings from TOML text, recording problems against `file`.
    pub fn from_toml_str(text: &str, file: &str, issues: &mut Vec<ConfigIssue>) -> Settings {
        let mut sink = IssueSink {
            file: file.to_string(),
            issues,
        };
        let Some(table) = parse_toml(text, &mut sink) else {
            return Settings::default();
        };
        let known = known_keys(&Settings::default());
        for key in table.keys() {
            if !known.contains(key) {
                let fix = match closest(key, &known) {
                    Some(k) => format!("did you mean `[{k}]`? Otherwise remove it"),
                    None => format!("remove it; valid sections are: {}", known.join(", ")),
                };
                sink.push(key.clone(), "unknown section", fix);
            }
        }
        Settings {
            database: sink.section("database", table.get("database")),
            brand: sink.section("brand", table.get("brand")),
            import: sink.section("import", table.get("import")),
            model: sink.section("model", table.get("model")),
            campaigns: sink.section("campaigns", table.get("campaigns")),
            delivery: crate::delivery::providers::DeliverySettings::from_toml(
                table.get("delivery"),
                &mut sink,
            ),
            dispatch: sink.section("dispatch", table.get("dispatch")),
            http: sink.section("http", table.get("http")),
            scheduler: sink.section("scheduler", table.get("scheduler")),
            housekeeping: sink.section("housekeeping", table.get("housekeeping")),
            measurement: sink.section("measurement", table.get("measurement")),
        }
    }

    /// Range and format checks that types alone cannot express.
    pub fn validate(&self, file: &str, issues: &mut Vec<ConfigIssue>) {
        let mut sink = IssueSink {
            file: file.to_string(),
            issues,
        };
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            sink.push(
                "database.url",
                format!("unsupported URL {:?}", redact_url(url)),
                "use sqlite://PATH or postgres://USER@HOST/DB",
            );
        }
        if self.database.max_connections == 0 {
            sink.push(
                "database.max_connections",
                "must be at least 1",
                "set a value such as 8",
            );
        }
        if self.brand.timezone.parse::<chrono_tz::Tz>().is_err() {
            sink.push(
                "brand.timezone",
                format!("{:?} is not an IANA time zone", self.brand.timezone),
                "use a name such as \"Asia/Kolkata\" or \"UTC\"",
            );
        }
        if self.brand.currency.len() != 3
            || !self.brand.currency.chars().all(|c| c.is_ascii_uppercase())
        {
            sink.push(
                "brand.currency",
                format!("{:?} is not an ISO 4217 code", self.brand.currency),
                "use three capital letters such as \"INR\"",
            );
        }
        if let Some(c) = &self.brand.country
            && crate::ingest::phone::country(c).is_none()
        {
            sink.push(
                "brand.country",
                format!("{c:?} is not an ISO 3166 country code"),
                "use two letters such as \"IN\", or remove the key",
            );
        }
        if self.import.max_errors == 0 {
            sink.push(
                "import.max_errors",
                "must be at least 1",
                "set a value such as 100",
            );
        }
        if !(1..=5000).contains(&self.import.batch_rows) {
            sink.push(
                "import.batch_rows",
                format!("{} is out of range", self.import.batch_rows),
                "use 1..=5000 (default 500)",
            );
        }
        if self.import.max_future_days > 366 {
            sink.push(
                "import.max_future_days",
                format!("{} is out of range", self.import.max_future_days),
                "use 0..=366 days (default 1)",
            );
        }
        if !(1..=730).contains(&self.model.horizon_days) {
            sink.push(
                "model.horizon_days",
                format!("{} is out of range", self.model.horizon_days),
                "use 1..=730 days (default 90)",
            );
        }
        if self.model.cutoff_step_days == 0 {
            sink.push(
                "model.cutoff_step_days",
                "must be at least 1",
                "use a value such as 30",
            );
        }
        if !(1..=52).contains(&self.model.cutoffs) {
            sink.push(
                "model.cutoffs",
                format!("{} is out of range", self.model.cutoffs),
                "use 1..=52 (default 4)",
            );
        }
        if !(self.model.window_coverage > 0.0 && self.model.window_coverage < 1.0) {
            sink.push(
                "model.window_coverage",
                format!("{} is not a share", self.model.window_coverage),
                "use a value strictly between 0 and 1 (default 0.5)",
            );
        }
        if !(self.model.category_half_life_days >= 1.0
            && self.model.category_half_life_days <= 3650.0)
        {
            sink.push(
                "model.category_half_life_days",
                format!("{} is out of range", self.model.category_half_life_days),
                "use 1..=3650 days (default 90)",
            );
        }
        if self.model.bot_events_per_day == 0 {
            sink.push(
                "model.bot_events_per_day",
                "must be at least 1",
                "use a value such as 200",
            );
        }
        if self.model.max_train_rows < 1000 {
            sink.push(
                "model.max_train_rows",
                format!("{} is too small", self.model.max_train_rows),
                "use at least 1000 (default 400000)",
            );
        }
        if !(0.0..=1.0).contains(&self.model.promotion_tolerance) {
            sink.push(
                "model.promotion_tolerance",
                format!("{} is out of range", self.model.promotion_tolerance),
                "use 0..=1 (default 0.01)",
            );
        }
        let c = &self.campaigns;
        if c.frequency_cap == 0 {
            sink.push(
                "campaigns.frequency_cap",
                "must be at least 1",
                "use a value such as 2 (messages per customer per window)",
            );
        }
        if !(1..=365).contains(&c.frequency_window_days) {
            sink.push(
                "campaigns.frequency_window_days",
                format!("{} is out of range", c.frequency_window_days),
                "use 1..=365 days (default 7)",
            );
        }
        if !(c.public_base_url.starts_with("https://") || c.public_base_url.starts_with("http://"))
            || c.public_base_url.ends_with('/')
        {
            sink.push("campaigns.public_base_url", format!("{:?} is not a base URL", c.public_base_url), "use an absolute http(s) URL without a trailing slash, e.g. \"https://crm.example.com\"");
        }
        if !c.unsubscribe_mailto.is_empty() && !c.unsubscribe_mailto.starts_with("mailto:") {
            sink.push(
                "campaigns.unsubscribe_mailto",
                format!("{:?} is not a mailto: URL", c.unsubscribe_mailto),
                "use \"mailto:unsubscribe@example.com\" or leave it empty",
            );
        }
        if c.postal_address.trim().is_empty() {
            sink.push(
                "campaigns.postal_address",
                "is empty",
                "set the brand's postal address; email footers must carry it",
            );
        }
        for (key, name) in [
            (
                "campaigns.unsubscribe_secret_env",
                &c.unsubscribe_secret_env,
            ),
            ("campaigns.code_secret_env", &c.code_secret_env),
        ] {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            {
                sink.push(
                    key,
                    format!("{name:?} is not an environment variable name"),
                    "use a name such as RETENTIOND_UNSUBSCRIBE_SECRET",
                );
            }
        }
        if !(1..=3650).contains(&c.best_seller_days) {
            sink.push(
                "campaigns.best_seller_days",
                format!("{} is out of range", c.best_seller_days),
                "use 1..=3650 days (default 90)",
            );
        }
        self.dispatch.validate(&mut sink);
        if self.brand.name.trim().is_empty() {
            sink.push(
                "brand.name",
                "is empty",
                "set the brand's name, e.g. \"Veda Roots\"",
            );
        }
        if self.http.bind.parse::<SocketAddr>().is_err() {
            sink.push(
                "http.bind",
                format!("{:?} is not an address:port", self.http.bind),
                "use a value such as \"127.0.0.1:8080\"",
            );
        }
        let auth = &self.http.auth_token_env;
        if !auth.is_empty()
            && !auth
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            sink.push(
                "http.auth_token_env",
                format!("{auth:?} is not an environment variable name"),
                "use a name such as RETENTIOND_HTTP_TOKEN, or \"\" for no token",
            );
        }
        self.http.webhooks.validate("http.webhooks", &mut sink);
        self.scheduler.validate(&mut sink);
        self.measurement.validate(&mut sink);
        if self.housekeeping.keep_scores_days < self.model.horizon_days {
            sink.push(
                "housekeeping.keep_scores_days",
                format!("{} is shorter than model.horizon_days ({})", self.housekeeping.keep_scores_days, self.model.horizon_days),
                "keep scores at least one horizon, so monitoring can compare them with what happened",
            );
        }
        for (key, v) in [
            (
                "housekeeping.keep_attempts_days",
                self.housekeeping.keep_attempts_days,
            ),
            (
                "housekeeping.keep_webhook_events_days",
                self.housekeeping.keep_webhook_events_days,
            ),
            (
                "housekeeping.keep_job_runs_days",
                self.housekeeping.keep_job_runs_days,
            ),
        ] {
            if v == 0 {
                sink.push(key, "must be at least 1", "keep at least a day");
            }
        }
        self.delivery.validate(file, sink.issues);
    }

    /// Builds the delivery providers, reporting every missing credential as a config error.
    pub fn providers(
        &self,
        file: &str,
    ) -> Result<crate::delivery::providers::Providers, ConfigError> {
        self.delivery
            .build(&|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
            .map_err(|mut issues| {
                for i in &mut issues {
                    if i.file.is_empty() {
                        i.file = file.to_string();
                    }
                }
                ConfigError { issues }
            })
    }

    pub fn timezone(&self) -> chrono_tz::Tz {
        self.brand.timezone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// The instant a day starts in the brand's time zone (as-of dates are days).
    pub fn day_start(&self, date: chrono::NaiveDate) -> i64 {
        use chrono::TimeZone;
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        // A DST gap at midnight: take the earliest valid instant after it.
        match self.timezone().from_local_datetime(&midnight) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.timestamp(),
            chrono::LocalResult::None => self.timezone().from_utc_datetime(&midnight).timestamp(),
        }
    }

    /// Today in the brand's time zone.
    pub fn today(&self) -> chrono::NaiveDate {
        chrono::Utc::now()
            .with_timezone(&self.timezone())
            .date_naive()
    }

    /// The defaults as TOML, for `retentiond default-config`.
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Settings::default()).expect("defaults serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues_of(text: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let s = Settings::from_toml_str(text, "t.toml", &mut issues);
        s.validate("t.toml", &mut issues);
        issues
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        assert!(issues_of(&Settings::default_toml()).is_empty());
        assert!(issues_of("").is_empty());
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let issues = issues_of(
            "[database]\nurll = \"x\"\n[model]\nhorizon_days = \"ninety\"\n[brand]\ntimezone = \"Mars/Base\"\n[http]\nbind = \"nope\"\n[nonsense]\n",
        );
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert!(keys.contains(&"database.urll"), "{keys:?}");
        assert!(keys.contains(&"model.horizon_days"), "{keys:?}");
        assert!(keys.contains(&"brand.timezone"), "{keys:?}");
        assert!(keys.contains(&"http.bind"), "{keys:?}");
        assert!(keys.contains(&"nonsense"), "{keys:?}");
        let typo = issues.iter().find(|i| i.key == "database.urll").unwrap();
        assert!(typo.fix.contains("database.url"), "{}", typo.fix);
        assert!(issues.iter().all(|i| i.file == "t.toml"));
    }

    #[test]
    fn out_of_range_values_name_the_fix() {
        let issues = issues_of("[model]\nhorizon_days = 0\nwindow_coverage = 1.5\n");
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(issues[0].fix.contains("1..=730"));
    }

    #[test]
    fn brand_country_is_an_iso_code() {
        assert!(issues_of("[brand]\ncountry = \"IN\"\n").is_empty());
        let issues = issues_of("[brand]\ncountry = \"India\"\n");
        assert_eq!(
            issues.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
            ["brand.country"],
            "{issues:?}"
        );
        assert!(issues[0].fix.contains("\"IN\""), "{}", issues[0].fix);
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let issues = issues_of("[model]\nhorizon_days = = 3\n");
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].key, "line 2");
    }

    #[test]
    fn database_url_is_redacted() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        let d = DatabaseSettings {
            url: "postgres://u:pw@h/db".into(),
            ..Default::default()
        };
        assert!(!format!("{d:?}").contains("pw"));
    }
}
