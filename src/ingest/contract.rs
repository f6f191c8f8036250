//! The import contract: which files exist, their columns, and how each field is parsed.
//!
//! Parsing turns raw CSV fields into typed, normalized values (`Val`) or a reason why not;
//! nothing downstream re-checks them.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

pub use super::phone::Country;
use crate::db::Val;

/// A field longer than this is rejected (it is almost certainly a broken export).
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// The largest amount accepted (in the order's currency): more is a broken export, and
/// `1e308` made a customer's total spend infinite.
pub const MAX_AMOUNT: f64 = 1e9;
/// The largest quantity accepted on an order line.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// At most this many extra `customers.csv` columns are kept as attributes.
pub const MAX_ATTRIBUTE_COLUMNS: usize = 256;

pub const ORDER_STATUSES: &[&str] = &["completed", "cancelled", "refunded"];
pub const EVENT_TYPES: &[&str] = &[
    "view",
    "add_to_cart",
    "remove_from_cart",
    "wishlist",
    "search",
    "checkout_start",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A non-empty identifier.
    Id,
    /// Free text; empty is NULL.
    Text,
    /// A non-empty free text (e.g. category).
    RequiredText,
    /// RFC 3339, `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD` → Unix seconds.
    Timestamp,
    /// A non-negative decimal amount.
    Money,
    /// A non-negative integer.
    Count,
    /// true/false/1/0/yes/no; empty is `default`.
    Bool(bool),
    /// completed | cancelled | refunded; empty is completed.
    Status,
    /// One of [`EVENT_TYPES`].
    EventType,
    /// ISO 4217 code; empty is the brand currency.
    Currency,
    /// IANA time zone name.
    Timezone,
    Email,
    Phone,
    /// An absolute http(s) URL with a host (product page, product image); empty is NULL.
    Url,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ref {
    Order,
    Product,
}

#[derive(Debug)]
pub struct Column {
    /// Header name in the CSV file.
    pub name: &'static str,
    /// Column in the table.
    pub db: &'static str,
    pub required: bool,
    pub kind: Kind,
    /// Must name an existing row of another table.
    pub refers: Option<Ref>,
}

impl Column {
    /// An invalid value of this column is dropped from its row (stored as NULL, with a
    /// warning) instead of rejecting the row: optional contact details and product links,
    /// whose loss costs only that detail (a bad email must not cost the customer's phone,
    /// consent and attributes; a bad link must not cost the product and its orders).
    pub fn drops_when_invalid(&self) -> bool {
        !self.required
            && matches!(
                self.kind,
                Kind::Email | Kind::Phone | Kind::Timezone | Kind::Url
            )
    }
}

const fn col(name: &'static str, required: bool, kind: Kind) -> Column {
    Column {
        name,
        db: name,
        required,
        kind,
        refers: None,
    }
}

const fn refcol(name: &'static str, refers: Ref) -> Column {
    Column {
        name,
        db: name,
        required: true,
        kind: Kind::Id,
        refers: Some(refers),
    }
}

#[derive(Debug)]
pub struct FileSpec {
    pub file: &'static str,
    pub table: &'static str,
    /// Columns of the table's primary key, by `db` name.
    pub key: &'static [&'static str],
    pub columns: &'static [Column],
    /// The file must be present.
    pub required: bool,
    /// Rows name a `customer_id` that is created (without contact or consent) if unknown.
    pub creates_customers: bool,
    /// Columns not in the contract are kept, per row, as one JSON object in the table's
    /// `attributes` column (instead of being ignored with a warning).
    pub keeps_attributes: bool,
}

/// Files in import order: a file's references point only at files before it.
pub static FILES: &[FileSpec] = &[
    FileSpec {
        file: "products.csv",
        table: "products",
        key: &["product_id"],
        required: false,
        creates_customers: false,
        keeps_attributes: false,
        columns: &[
            col("product_id", true, Kind::Id),
            col("category", true, Kind::RequiredText),
            col("name", false, Kind::Text),
            col("price", false, Kind::Money),
            col("in_stock", false, Kind::Bool(true)),
            col("url", false, Kind::Url),
            col("image_url", false, Kind::Url),
        ],
    },
    FileSpec {
        file: "customers.csv",
        table: "customers",
        key: &["customer_id"],
        required: false,
        creates_customers: false,
        keeps_attributes: true,
        columns: &[
            col("customer_id", true, Kind::Id),
            col("email", false, Kind::Email),
            col("phone", false, Kind::Phone),
            col("first_name", false, Kind::Text),
            col("country", false, Kind::Text),
            col("timezone", false, Kind::Timezone),
            col("email_opt_in", false, Kind::Bool(false)),
            col("sms_opt_in", false, Kind::Bool(false)),
            col("whatsapp_opt_in", false, Kind::Bool(false)),
            col("created_at", false, Kind::Timestamp),
        ],
    },
    FileSpec {
        file: "orders.csv",
        table: "orders",
        key: &["order_id"],
        required: true,
        creates_customers: true,
        keeps_attributes: false,
        columns: &[
            col("order_id", true, Kind::Id),
            col("customer_id", true, Kind::Id),
            col("ordered_at", true, Kind::Timestamp),
            col("total_amount", false, Kind::Money),
            col("currency", false, Kind::Currency),
            col("status", false, Kind::Status),
            col("discount_amount", false, Kind::Money),
        ],
    },
    FileSpec {
        file: "order_items.csv",
        table: "order_items",
        key: &["order_id", "product_id"],
        required: false,
        creates_customers: false,
        keeps_attributes: false,
        columns: &[
            refcol("order_id", Ref::Order),
            refcol("product_id", Ref::Product),
            col("quantity", true, Kind::Count),
            col("unit_price", false, Kind::Money),
        ],
    },
    FileSpec {
        file: "sessions.csv",
        table: "sessions",
        key: &["session_id"],
        required: false,
        creates_customers: true,
        keeps_attributes: false,
        columns: &[
            col("session_id", true, Kind::Id),
            col("customer_id", true, Kind::Id),
            col("started_at", true, Kind::Timestamp),
            col("source", false, Kind::Text),
            col("device", false, Kind::Text),
        ],
    },
    FileSpec {
        file: "events.csv",
        table: "events",
        key: &["event_key"],
        required: false,
        creates_customers: true,
        keeps_attributes: false,
        columns: &[
            // Optional: without it the key is a digest of the row, so re-imports stay no-ops.
            Column {
                name: "event_id",
                db: "event_key",
                required: false,
                kind: Kind::Id,
                refers: None,
            },
            col("customer_id", true, Kind::Id),
            col("event_type", true, Kind::EventType),
            col("occurred_at", true, Kind::Timestamp),
            col("product_id", false, Kind::Text),
            col("session_id", false, Kind::Text),
        ],
    },
];

pub fn spec(file: &str) -> Option<&'static FileSpec> {
    FILES.iter().find(|s| s.file == file)
}

/// The table column holding a row's extra columns (see [`FileSpec::keeps_attributes`]).
pub const ATTRIBUTES_COLUMN: &str = "attributes";
/// An attribute name (a header) is at most this long.
pub const MAX_ATTRIBUTE_KEY_LEN: usize = 64;
/// An attribute value is at most this many characters.
pub const MAX_ATTRIBUTE_CHARS: usize = 1000;

/// A header as the contract names columns: trimmed (a UTF-8 byte order mark too), lower case,
/// and each run of spaces and hyphens one `_` (`Loyalty Tier` and `loyalty-tier` are
/// `loyalty_tier`).
pub fn normalize_header(name: &str) -> String {
    let name = name.trim_start_matches('\u{feff}').trim();
    let mut out = String::with_capacity(name.len());
    let mut gap = false;
    for c in name.chars() {
        if c.is_whitespace() || c == '-' {
            gap = true;
            continue;
        }
        if gap {
            out.push('_');
            gap = false;
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// Whether a header can name an attribute: 1 to 64 ASCII letters, digits, `_` or `-`.
pub fn is_attribute_key(name: &str) -> bool {
    (1..=MAX_ATTRIBUTE_KEY_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Appends `s` as a JSON string literal (quotes and escapes included).
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// How naive values are read.
pub struct ParseContext {
    pub tz: Tz,
    pub currency: String,
    /// Accepted timestamps, in Unix seconds: from 1970-01-01 to now plus
    /// `import.max_future_days` (an order in year 0001 moved a P(alive) from 0.01 to 0.96).
    pub earliest: i64,
    pub latest: i64,
    pub max_future_days: u32,
    /// `brand.country`: national phone numbers of customers without a usable `country` are
    /// read in it.
    pub country: Option<Country>,
}

impl ParseContext {
    /// Timestamps accepted from 1970-01-01 up to `max_future_days` days after `now`.
    pub fn new(tz: Tz, currency: String, now: i64, max_future_days: u32) -> Self {
        Self {
            tz,
            currency,
            earliest: 0,
            latest: now.saturating_add(i64::from(max_future_days) * 86_400),
            max_future_days,
            country: None,
        }
    }
}

/// Parses one non-empty-or-empty field into its value, or the reason it is invalid.
pub fn parse_field(kind: Kind, raw: &str, ctx: &ParseContext) -> Result<Val, String> {
    parse_field_in(kind, raw, ctx, None)
}

/// [`parse_field`] for a row whose `country` column holds `row_country` (phone numbers are
/// read in it).
pub fn parse_field_in(
    kind: Kind,
    raw: &str,
    ctx: &ParseContext,
    row_country: Option<&str>,
) -> Result<Val, String> {
    // SQLite would store it and PostgreSQL refuses it in text: neither is a value anyone meant.
    if raw.contains('\0') {
        return Err(NUL_BYTE.into());
    }
    let s = raw.trim();
    match kind {
        Kind::Id | Kind::RequiredText => {
            if s.is_empty() {
                Err("required value is empty".into())
            } else {
                Ok(Val::Text(Some(s.to_string())))
            }
        }
        Kind::Text => Ok(Val::Text(non_empty(s))),
        Kind::Timestamp => {
            if s.is_empty() {
                return Ok(Val::Int(None));
            }
            let t = parse_timestamp(s, ctx.tz)?;
            if t < ctx.earliest {
                Err("before 1970-01-01".into())
            } else if t > ctx.latest {
                Err(format!(
                    "more than {} day(s) in the future (import.max_future_days)",
                    ctx.max_future_days
                ))
            } else {
                Ok(Val::Int(Some(t)))
            }
        }
        Kind::Money => {
            if s.is_empty() {
                return Ok(Val::Real(None));
            }
            let v: f64 = s.parse().map_err(|_| "not a number".to_string())?;
            if !v.is_finite() {
                Err("not a finite number".into())
            } else if v < 0.0 {
                Err("must not be negative".into())
            } else if v > MAX_AMOUNT {
                Err("over the maximum amount of 1000000000".into())
            } else {
                Ok(Val::Real(Some(v)))
            }
        }
        Kind::Count => {
            let v: i64 = s.parse().map_err(|_| {
                if s.is_empty() {
                    "required value is empty".to_string()
                } else {
                    "not a whole number".to_string()
                }
            })?;
            if v < 0 {
                Err("must not be negative".into())
            } else if v > MAX_QUANTITY {
                Err(format!("over the maximum quantity of {MAX_QUANTITY}"))
            } else {
                Ok(Val::Int(Some(v)))
            }
        }
        Kind::Bool(default) => {
            let v = match s.to_ascii_lowercase().as_str() {
                "" => default,
                "true" | "1" | "yes" | "y" | "t" => true,
                "false" | "0" | "no" | "n" | "f" => false,
                _ => return Err("not a boolean (use true/false, 1/0 or yes/no)".into()),
            };
            Ok(Val::Bool(v))
        }
        Kind::Status => {
            let v = if s.is_empty() {
                "completed".to_string()
            } else {
                s.to_ascii_lowercase()
            };
            if ORDER_STATUSES.contains(&v.as_str()) {
                Ok(Val::Text(Some(v)))
            } else {
                Err(format!(
                    "unknown status (expected one of {})",
                    ORDER_STATUSES.join(", ")
                ))
            }
        }
        Kind::EventType => {
            let v = s.to_ascii_lowercase();
            if EVENT_TYPES.contains(&v.as_str()) {
                Ok(Val::Text(Some(v)))
            } else if v.is_empty() {
                Err("required value is empty".into())
            } else {
                Err(format!(
                    "unknown event type (expected one of {})",
                    EVENT_TYPES.join(", ")
                ))
            }
        }
        Kind::Currency => {
            if s.is_empty() {
                return Ok(Val::Text(Some(ctx.currency.clone())));
            }
            let v = s.to_ascii_uppercase();
            if v.len() == 3 && v.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(Val::Text(Some(v)))
            } else {
                Err("not an ISO 4217 currency code".into())
            }
        }
        Kind::Timezone => {
            if s.is_empty() {
                return Ok(Val::Text(None));
            }
            s.parse::<Tz>()
                .map(|_| Val::Text(Some(s.to_string())))
                .map_err(|_| "not an IANA time zone".to_string())
        }
        Kind::Email => {
            if s.is_empty() {
                return Ok(Val::Text(None));
            }
            let ok = match s.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !s
                            .chars()
                            .any(|c| c.is_whitespace() || c == ',' || c == '<' || c == '>')
                        && !domain.contains('@')
                }
                None => false,
            };
            if ok {
                Ok(Val::Text(Some(s.to_ascii_lowercase())))
            } else {
                Err("not an email address".into())
            }
        }
        Kind::Phone => {
            if s.is_empty() {
                return Ok(Val::Text(None));
            }
            super::phone::to_e164(s, row_country, ctx.country).map(|p| Val::Text(Some(p)))
        }
        Kind::Url => {
            if s.is_empty() {
                return Ok(Val::Text(None));
            }
            // It goes into an email's href and src as it is.
            if s.chars()
                .any(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\'' | '<' | '>' | '\\' | '`'))
            {
                return Err("not a usable URL (spaces, quotes, <>, backslashes or non-ASCII characters; percent-encode them)".into());
            }
            match url::Url::parse(s) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some_and(|h| !h.is_empty()) =>
                {
                    Ok(Val::Text(Some(s.to_string())))
                }
                Ok(_) => Err("not an absolute http(s) URL".into()),
                Err(e) => Err(format!("not an absolute http(s) URL ({e})")),
            }
        }
    }
}

/// The reason given for a field holding a NUL byte.
pub const NUL_BYTE: &str = "contains a NUL byte";

fn non_empty(s: &str) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

/// RFC 3339, `YYYY-MM-DD HH:MM:SS` (or with `T`), or `YYYY-MM-DD`; naive values are local
/// time in `tz`. Returns Unix seconds.
pub fn parse_timestamp(s: &str, tz: Tz) -> Result<i64, String> {
    const EXPECTED: &str = "not a timestamp (expected RFC 3339, YYYY-MM-DD HH:MM:SS or YYYY-MM-DD)";
    if let Some(t) = parse_utc_fast(s) {
        return Ok(t);
    }
    if s.len() > 19 {
        // Fast path for the commonest export shape, `…Z`, then general RFC 3339.
        if let Some(naive) = s
            .strip_suffix('Z')
            .and_then(|n| NaiveDateTime::parse_from_str(n, "%Y-%m-%dT%H:%M:%S").ok())
        {
            return Ok(naive.and_utc().timestamp());
        }
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Ok(dt.timestamp());
        }
    }
    let naive = if s.len() == 10 {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| EXPECTED.to_string())?
            .and_hms_opt(0, 0, 0)
            .unwrap()
    } else {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
            .map_err(|_| EXPECTED.to_string())?
    };
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => Ok(t.timestamp()),
        // Ambiguous at a DST fall-back: take the earlier instant, as most exporters did.
        chrono::LocalResult::Ambiguous(a, _) => Ok(a.timestamp()),
        chrono::LocalResult::None => Err(format!(
            "local time does not exist in {tz} (daylight-saving gap)"
        )),
    }
}

/// Exactly `YYYY-MM-DDTHH:MM:SSZ`, the shape nearly every export uses, without the format
/// interpreter (a third of the parse time). Anything else, including leap seconds, is `None`
/// and goes the general way.
fn parse_utc_fast(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if sec > 59 {
        return None;
    }
    Some(date.and_hms_opt(h, m, sec)?.and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_timestamps_agree_with_the_general_parser() {
        let tz = chrono_tz::Asia::Kolkata;
        for s in [
            "2024-01-01T00:00:00Z",
            "2023-11-01T00:01:39Z",
            "2024-02-29T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "0999-12-31T12:00:00Z",
        ] {
            let slow =
                NaiveDateTime::parse_from_str(s.strip_suffix('Z').unwrap(), "%Y-%m-%dT%H:%M:%S")
                    .unwrap()
                    .and_utc()
                    .timestamp();
            assert_eq!(parse_utc_fast(s), Some(slow), "{s}");
            assert_eq!(parse_timestamp(s, tz), Ok(slow), "{s}");
        }
        for s in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:0xZ",
            "+024-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_utc_fast(s), None, "{s}");
        }
        // Leap seconds and other shapes still take the general path.
        assert!(parse_timestamp("2016-12-31T23:59:60Z", tz).is_ok());
        assert!(parse_timestamp("2023-02-29T00:00:00Z", tz).is_err());
    }

    fn ctx() -> ParseContext {
        ParseContext::new(
            chrono_tz::Asia::Kolkata,
            "INR".into(),
            chrono::Utc::now().timestamp(),
            1,
        )
    }

    #[test]
    fn timestamps_in_all_three_forms() {
        let tz = chrono_tz::Asia::Kolkata;
        assert_eq!(parse_timestamp("2024-01-01T00:00:00Z", tz), Ok(1704067200));
        assert_eq!(
            parse_timestamp("2024-01-01T05:30:00+05:30", tz),
            Ok(1704067200)
        );
        assert_eq!(parse_timestamp("2024-01-01 05:30:00", tz), Ok(1704067200));
        assert_eq!(
            parse_timestamp("2024-01-01", chrono_tz::UTC),
            Ok(1704067200)
        );
        assert!(parse_timestamp("2024-13-01", tz).is_err());
        assert!(parse_timestamp("yesterday", tz).is_err());
        // 02:30 on 2024-03-10 does not exist in New York.
        assert!(
            parse_timestamp("2024-03-10 02:30:00", chrono_tz::America::New_York)
                .unwrap_err()
                .contains("gap")
        );
    }

    #[test]
    fn headers_are_normalized() {
        for (raw, key) in [
            (" Loyalty Tier ", "loyalty_tier"),
            ("\u{feff}Customer-ID", "customer_id"),
            ("WhatsApp Opt-In", "whatsapp_opt_in"),
            ("a -  b", "a_b"),
            ("email", "email"),
        ] {
            assert_eq!(normalize_header(raw), key, "{raw:?}");
        }
        assert!(is_attribute_key(&normalize_header("Skin Type")));
    }

    #[test]
    fn attribute_keys_and_json_strings() {
        for ok in ["loyalty_tier", "skin-type", "A1", &"k".repeat(64)] {
            assert!(is_attribute_key(ok), "{ok}");
        }
        for bad in ["", "skin type", "tier!", "größe", "a.b", &"k".repeat(65)] {
            assert!(!is_attribute_key(bad), "{bad}");
        }
        for s in [
            "",
            "gold",
            "say \"hi\"",
            "back\\slash",
            "line\nbreak\ttab\r",
            "\u{1}\u{1f}\u{7f}",
            "ünïcödé ✓ \u{2028}",
        ] {
            let mut out = String::new();
            push_json_string(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s, "{out}");
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn fields_parse_or_say_why() {
        let c = ctx();
        assert_eq!(
            parse_field(Kind::Bool(false), "Yes", &c),
            Ok(Val::Bool(true))
        );
        assert_eq!(parse_field(Kind::Bool(true), "", &c), Ok(Val::Bool(true)));
        assert!(parse_field(Kind::Bool(false), "maybe", &c).is_err());
        assert_eq!(
            parse_field(Kind::Count, "-2", &c),
            Err("must not be negative".into())
        );
        assert_eq!(
            parse_field(Kind::Money, "12.5", &c),
            Ok(Val::Real(Some(12.5)))
        );
        assert!(parse_field(Kind::Money, "NaN", &c).is_err());
        assert_eq!(
            parse_field(Kind::Status, "", &c),
            Ok(Val::Text(Some("completed".into())))
        );
        assert!(
            parse_field(Kind::Status, "shipped", &c)
                .unwrap_err()
                .contains("unknown status")
        );
        assert!(
            parse_field(Kind::EventType, "click", &c)
                .unwrap_err()
                .contains("unknown event type")
        );
        assert_eq!(
            parse_field(Kind::Currency, "", &c),
            Ok(Val::Text(Some("INR".into())))
        );
        assert_eq!(
            parse_field(Kind::Phone, "+91 98765-43210", &c),
            Ok(Val::Text(Some("+919876543210".into())))
        );
        assert!(parse_field(Kind::Email, "not-an-email", &c).is_err());
        assert!(parse_field(Kind::Timezone, "Mars/Base", &c).is_err());
        assert_eq!(
            parse_field(Kind::Url, " https://shop.example/p/ashwa-1 ", &c),
            Ok(Val::Text(Some("https://shop.example/p/ashwa-1".into())))
        );
        assert_eq!(parse_field(Kind::Url, "", &c), Ok(Val::Text(None)));
        for bad in [
            "shop.example/p/1",
            "/p/1",
            "javascript:alert(1)",
            "ftp://shop.example/p",
            "https://shop.example/a b",
            "https://x.example/\"<",
        ] {
            assert!(parse_field(Kind::Url, bad, &c).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_outside_their_bounds_are_refused() {
        let c = ctx();
        assert_eq!(
            parse_field(Kind::Money, "1000000000", &c),
            Ok(Val::Real(Some(1e9)))
        );
        for bad in ["1000000000.01", "1e308", "1e10"] {
            assert_eq!(
                parse_field(Kind::Money, bad, &c),
                Err("over the maximum amount of 1000000000".into()),
                "{bad}"
            );
        }
        assert_eq!(
            parse_field(Kind::Count, "1000000", &c),
            Ok(Val::Int(Some(1_000_000)))
        );
        assert_eq!(
            parse_field(Kind::Count, "1000001", &c),
            Err("over the maximum quantity of 1000000".into())
        );
        assert_eq!(
            parse_field(Kind::Timestamp, "1970-01-01T00:00:00Z", &c),
            Ok(Val::Int(Some(0)))
        );
        assert_eq!(
            parse_field(Kind::Timestamp, "1969-12-31T23:59:59Z", &c),
            Err("before 1970-01-01".into())
        );
        assert_eq!(
            parse_field(Kind::Timestamp, "0001-01-01", &c),
            Err("before 1970-01-01".into())
        );
        let err = parse_field(Kind::Timestamp, "9999-12-31", &c).unwrap_err();
        assert_eq!(
            err,
            "more than 1 day(s) in the future (import.max_future_days)"
        );
        let tomorrow = (chrono::Utc::now() + chrono::Duration::hours(23))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        assert!(parse_field(Kind::Timestamp, &tomorrow, &c).is_ok());
        let later = (chrono::Utc::now() + chrono::Duration::hours(25))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        assert!(parse_field(Kind::Timestamp, &later, &c).is_err());
        // A wider bound from the setting.
        let week = ParseContext::new(
            chrono_tz::UTC,
            "INR".into(),
            chrono::Utc::now().timestamp(),
            7,
        );
        assert!(parse_field(Kind::Timestamp, &later, &week).is_ok());
        for kind in [
            Kind::Id,
            Kind::Text,
            Kind::Email,
            Kind::Timestamp,
            Kind::Money,
        ] {
            assert_eq!(
                parse_field(kind, "a\0b", &c),
                Err(NUL_BYTE.into()),
                "{kind:?}"
            );
        }
    }
}
