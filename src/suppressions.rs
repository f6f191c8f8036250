//! The suppression list as an operator handles it: `retentiond suppressions list | add | remove
//! | import FILE | export FILE`.
//!
//! Unsubscribes, bounces, complaints and STOP replies that arrive by link or webhook name a
//! customer (`suppressions.customer_id`). What an operator adds here names an **address**
//! instead: an email address or a phone number, normalized as the import normalizes customers'
//! contacts (email lower-cased, phone reduced to digits and a leading `+`), stored with an empty
//! `customer_id`. It suppresses every customer holding that address now or later (a brand
//! migrating from another tool imports its old unsubscribe list before or after its customers).
//! An email address suppresses the email channel; a phone number SMS and WhatsApp, or the one
//! channel named. Selection and the dispatcher read both kinds through [`EFFECTIVE_SQL`].

use std::path::Path;

use crate::campaigns::Channel;
use crate::db::{Backend, Db, Tx, Val};
use crate::scan::scan_with;

/// `customer_id` of a suppression that names an address rather than a customer.
pub const ADDRESS_LEVEL: &str = "";

/// Every suppression as (customer_id, channel) pairs: rows that name a customer, and address
/// rows matched to the customers whose email or phone is that address (`channel` NULL = every
/// channel). Wrap it to filter: `SELECT … FROM (EFFECTIVE_SQL) e WHERE e.customer_id = $1`.
pub const EFFECTIVE_SQL: &str = "SELECT customer_id, channel FROM suppressions WHERE customer_id <> '' \
     UNION ALL SELECT c.customer_id, s.channel FROM suppressions s JOIN customers c ON c.email = s.address WHERE s.customer_id = '' \
     UNION ALL SELECT c.customer_id, s.channel FROM suppressions s JOIN customers c ON c.phone = s.address WHERE s.customer_id = ''";

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Reason {
    Unsubscribe,
    HardBounce,
    Complaint,
    Stop,
    Manual,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unsubscribe => "unsubscribe",
            Reason::HardBounce => "hard_bounce",
            Reason::Complaint => "complaint",
            Reason::Stop => "stop",
            Reason::Manual => "manual",
        }
    }

    /// A reason as other tools' exports spell it (`unsubscribed`, `bounce`, `spamreport`, …).
    pub fn from_export(s: &str) -> Option<Reason> {
        let s: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c == '-' || c == ' ' { '_' } else { c })
            .collect();
        Some(match s.as_str() {
            "unsubscribe" | "unsubscribed" | "unsub" | "opt_out" | "optout" | "opted_out" => {
                Reason::Unsubscribe
            }
            "hard_bounce" | "hardbounce" | "bounce" | "bounced" | "hard_bounced" | "invalid"
            | "invalid_address" => Reason::HardBounce,
            "complaint" | "complained" | "spam" | "spamreport" | "spam_report"
            | "spam_complaint" | "abuse" => Reason::Complaint,
            "stop" | "stopped" | "sms_stop" => Reason::Stop,
            "manual" | "suppressed" | "blocked" | "blocklist" | "blacklist" | "do_not_contact" => {
                Reason::Manual
            }
            _ => return None,
        })
    }
}

/// A normalized address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Email(String),
    Phone(String),
}

impl Address {
    /// Parses an email address (anything with `@`) or a phone number, normalized as the import
    /// normalizes `customers.email` and `customers.phone`. A leading `'` (what spreadsheet-safe
    /// CSVs, ours included, put before `+91…`) is dropped first.
    pub fn parse(raw: &str) -> Result<Address, String> {
        Address::parse_as(raw, None)
    }

    /// [`Address::parse`] for a column known to hold emails (`Some(true)`) or phone numbers
    /// (`Some(false)`); `None` decides by the `@`.
    pub fn parse_as(raw: &str, email: Option<bool>) -> Result<Address, String> {
        use crate::ingest::contract::{Kind, ParseContext, parse_field};
        let s = raw.trim();
        let s = s.strip_prefix('\'').unwrap_or(s).trim();
        if s.is_empty() {
            return Err("empty".into());
        }
        let ctx = ParseContext::new(chrono_tz::UTC, String::new(), 0, 0);
        let kind = if email.unwrap_or_else(|| s.contains('@')) {
            Kind::Email
        } else {
            Kind::Phone
        };
        match parse_field(kind, s, &ctx)? {
            Val::Text(Some(v)) if kind == Kind::Email => Ok(Address::Email(v)),
            Val::Text(Some(v)) => Ok(Address::Phone(v)),
            _ => Err("empty".into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Address::Email(s) | Address::Phone(s) => s,
        }
    }

    /// The channels a suppression of this address covers: the one named, else every channel
    /// the address is used on. An email address on SMS (or a phone number on email) is an error.
    pub fn channels(&self, channel: Option<Channel>) -> Result<Vec<Channel>, String> {
        match (self, channel) {
            (Address::Email(_), None | Some(Channel::Email)) => Ok(vec![Channel::Email]),
            (Address::Email(_), Some(c)) => Err(format!(
                "an email address cannot be suppressed on {}",
                c.as_str()
            )),
            (Address::Phone(_), None) => Ok(vec![Channel::Sms, Channel::Whatsapp]),
            (Address::Phone(_), Some(Channel::Email)) => {
                Err("a phone number cannot be suppressed on email".into())
            }
            (Address::Phone(_), Some(c)) => Ok(vec![c]),
        }
    }
}

/// `--channel` values.
pub fn parse_channel(s: &str) -> Result<Channel, String> {
    Channel::parse(&s.to_ascii_lowercase())
        .ok_or_else(|| format!("unknown channel {s:?} (use email, sms or whatsapp)"))
}

#[derive(Debug, thiserror::Error)]
pub enum SuppressionError {
    #[error("{value:?} is not an email address or phone number: {why}")]
    BadAddress { value: String, why: String },
    #[error("{0}")]
    BadChannel(String),
    #[error("{file}: {why}")]
    BadFile { file: String, why: String },
    #[error("cannot write {file}: {source}")]
    Write {
        file: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Scan(#[from] anyhow::Error),
}

impl SuppressionError {
    /// Bad input on the command line or in the file (exit 2), rather than a failure (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SuppressionError::BadAddress { .. }
                | SuppressionError::BadChannel(_)
                | SuppressionError::BadFile { .. }
        )
    }
}

/// One row of `list` / `export`.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Entry {
    /// The address suppressed, or the customer's current contact for the channel.
    pub address: Option<String>,
    /// The customer a link or webhook suppression names (None for an address suppression).
    pub customer_id: Option<String>,
    /// None = every channel.
    pub channel: Option<String>,
    pub reason: String,
    pub source: String,
    pub created_at: i64,
}

/// Advisory lock shared with every other suppression write on PostgreSQL.
async fn lock(tx: &mut Tx) -> sqlx::Result<()> {
    if tx.backend() == Backend::Postgres {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[Val::Int(Some(crate::http::store::SUPPRESSION_LOCK_KEY))],
        )
        .await?;
    }
    Ok(())
}

/// Suppresses `address` on its channels (see [`Address::channels`]) inside `tx`, and marks the
/// queued messages of customers holding it on those channels `suppressed`. Returns whether a
/// row was added (false: the address was already suppressed on every one of them).
async fn add_in(
    tx: &mut Tx,
    address: &Address,
    channels: &[Channel],
    reason: Reason,
    source: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let mut added = false;
    for ch in channels {
        let a = Val::Text(Some(address.as_str().to_string()));
        let c = Val::Text(Some(ch.as_str().to_string()));
        tx.execute(
            "UPDATE outbox SET status = 'suppressed', last_error = 'suppressed', updated_at = $3 WHERE status = 'queued' AND channel = $2 \
             AND (recipient = $1 OR customer_id IN (SELECT customer_id FROM customers WHERE email = $1 OR phone = $1))",
            &[a.clone(), c.clone(), Val::Int(Some(now))],
        )
        .await?;
        added |= tx
            .execute(
                "INSERT INTO suppressions (customer_id, channel, address, reason, source, created_at) SELECT '', $2, $1, $3, $4, $5 \
                 WHERE NOT EXISTS (SELECT 1 FROM suppressions WHERE customer_id = '' AND address = $1 AND channel = $2)",
                &[a, c, Val::Text(Some(reason.as_str().into())), Val::Text(Some(source.into())), Val::Int(Some(now))],
            )
            .await?
            > 0;
    }
    Ok(added)
}

/// `suppressions add`: parses, normalizes and suppresses one address. Idempotent.
pub async fn add(
    db: &Db,
    raw: &str,
    channel: Option<Channel>,
    reason: Reason,
    now: i64,
) -> Result<(Address, bool), SuppressionError> {
    let address = Address::parse(raw).map_err(|why| SuppressionError::BadAddress {
        value: raw.to_string(),
        why,
    })?;
    let channels = address
        .channels(channel)
        .map_err(SuppressionError::BadChannel)?;
    let mut tx = db.begin().await?;
    lock(&mut tx).await?;
    let added = add_in(&mut tx, &address, &channels, reason, "cli", now).await?;
    tx.commit().await?;
    Ok((address, added))
}

/// `suppressions remove`: removes the address's suppressions (on `channel` only, if given),
/// and those that link or webhook events recorded for the customers holding it. Queued
/// messages already marked `suppressed` stay so. Returns the rows removed.
pub async fn remove(
    db: &Db,
    raw: &str,
    channel: Option<Channel>,
) -> Result<(Address, u64), SuppressionError> {
    let address = Address::parse(raw).map_err(|why| SuppressionError::BadAddress {
        value: raw.to_string(),
        why,
    })?;
    let channels = address
        .channels(channel)
        .map_err(SuppressionError::BadChannel)?;
    let column = match address {
        Address::Email(_) => "email",
        Address::Phone(_) => "phone",
    };
    let mut tx = db.begin().await?;
    lock(&mut tx).await?;
    let mut removed = 0;
    for ch in &channels {
        let vals = [
            Val::Text(Some(address.as_str().to_string())),
            Val::Text(Some(ch.as_str().to_string())),
        ];
        removed += tx
            .execute(
                "DELETE FROM suppressions WHERE customer_id = '' AND address = $1 AND channel = $2",
                &vals,
            )
            .await?;
        let sql = format!(
            "DELETE FROM suppressions WHERE customer_id <> '' AND channel = $2 AND customer_id IN (SELECT customer_id FROM customers WHERE {column} = $1)"
        );
        removed += tx.execute(&sql, &vals).await?;
    }
    if channel.is_none() {
        // Every-channel rows (a complaint): the whole address is being released.
        let sql = format!(
            "DELETE FROM suppressions WHERE customer_id <> '' AND channel IS NULL AND customer_id IN (SELECT customer_id FROM customers WHERE {column} = $1)"
        );
        removed += tx
            .execute(&sql, &[Val::Text(Some(address.as_str().to_string()))])
            .await?;
    }
    tx.commit().await?;
    Ok((address, removed))
}

/// Every suppression, oldest first.
pub async fn list(db: &Db) -> Result<Vec<Entry>, SuppressionError> {
    let mut out = Vec::new();
    let sql = "SELECT s.customer_id, s.channel, s.address, s.reason, s.source, s.created_at, c.email, c.phone \
               FROM suppressions s LEFT JOIN customers c ON c.customer_id = s.customer_id AND s.customer_id <> '' \
               ORDER BY s.created_at, s.suppression_id";
    scan_with(db, sql, &[], |r| {
        let text = |i| {
            r.text(i)
                .map(|t| t.filter(|s| !s.is_empty()).map(str::to_owned))
        };
        let channel = text(1)?;
        let contact = match channel.as_deref() {
            Some("email") => text(6)?,
            Some(_) => text(7)?,
            None => text(6)?.or(text(7)?),
        };
        out.push(Entry {
            address: text(2)?.or(contact),
            customer_id: text(0)?,
            channel,
            reason: text(3)?.unwrap_or_default(),
            source: text(4)?.unwrap_or_default(),
            created_at: r.int(5)?.unwrap_or(0),
        });
        Ok(())
    })
    .await?;
    Ok(out)
}

const EXPORT_HEADER: [&str; 6] = [
    "address",
    "channel",
    "reason",
    "source",
    "customer_id",
    "created_at",
];

/// `suppressions export FILE`: every suppression as CSV (`address, channel, reason, source,
/// customer_id, created_at`), each text cell made spreadsheet-safe ([`crate::csv_safe`]).
/// `suppressions import` reads the file back.
pub async fn export(db: &Db, path: &Path) -> Result<usize, SuppressionError> {
    let entries = list(db).await?;
    let io = |source: std::io::Error| SuppressionError::Write {
        file: path.display().to_string(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(|e| io(e.into()))?;
    w.write_record(EXPORT_HEADER).map_err(|e| io(e.into()))?;
    for e in &entries {
        let at = chrono::DateTime::from_timestamp(e.created_at, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let cells = [
            e.address.as_deref().unwrap_or(""),
            e.channel.as_deref().unwrap_or(""),
            &e.reason,
            &e.source,
            e.customer_id.as_deref().unwrap_or(""),
        ];
        let mut record: Vec<String> = cells
            .iter()
            .map(|c| crate::csv_safe::neutralize(c).into_owned())
            .collect();
        record.push(at);
        w.write_record(&record).map_err(|e| io(e.into()))?;
    }
    w.flush().map_err(io)?;
    Ok(entries.len())
}

/// A row `import` could not use.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Rejected {
    /// Line in the file (1 = the header).
    pub line: u64,
    pub column: String,
    /// The offending value, cut to 100 characters.
    pub value: String,
    pub why: String,
}

#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct ImportReport {
    /// Addresses newly suppressed.
    pub added: u64,
    /// Addresses already suppressed on their channels (also a repeat within the file).
    pub already_present: u64,
    pub rejected: Vec<Rejected>,
    /// Reasons not recognised, stored with the default reason (distinct values, first 10).
    pub unknown_reasons: Vec<String>,
}

/// Header names (normalized: lower case, `_` for spaces and dashes) taken as address columns.
const EMAIL_HEADERS: &[&str] = &["email", "email_address", "e_mail", "emailaddress", "mail"];
const PHONE_HEADERS: &[&str] = &[
    "phone",
    "phone_number",
    "phonenumber",
    "mobile",
    "mobile_number",
    "msisdn",
    "number",
    "whatsapp",
];
const ADDRESS_HEADERS: &[&str] = &["address", "recipient", "contact", "to"];
const REASON_HEADERS: &[&str] = &[
    "reason",
    "type",
    "status",
    "event",
    "suppression_reason",
    "suppression_type",
];

fn normalize_header(h: &str) -> String {
    h.trim()
        .trim_start_matches('\u{feff}')
        .trim_matches('"')
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect()
}

fn cut(s: &str) -> String {
    match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `suppressions import FILE`: a CSV from another tool (an unsubscribe, bounce or complaint
/// list). The header must name an email or phone column (`email`, `Email Address`, `phone`,
/// `mobile`, … or a generic `address`); `reason` (or `type`, `status`, `event`) and `channel`
/// columns are optional, `default_reason` / `default_channel` filling in for them. Each address
/// is normalized like the customer import's; a row without a usable address is rejected with
/// its line, column, value and reason, the rest are imported in one transaction. Re-importing
/// the same file adds nothing.
pub async fn import(
    db: &Db,
    path: &Path,
    default_reason: Reason,
    default_channel: Option<Channel>,
    now: i64,
) -> Result<ImportReport, SuppressionError> {
    let file = path.display().to_string();
    let bad = |why: String| SuppressionError::BadFile {
        file: file.clone(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    // Line numbers from the bytes themselves: the csv reader's own count is one short after
    // CRLF line ends (Excel and Windows exports).
    let newlines: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
        .collect();
    // A BOM is skipped here, so the reader's byte offsets are `bom` short of the file's.
    let bom = if bytes.starts_with(b"\xef\xbb\xbf") {
        3
    } else {
        0
    };
    // After a CRLF the reader starts the next record on its `\n`: a newline at the offset
    // itself still ends the line before.
    let line_at =
        |byte: u64| 1 + newlines.partition_point(|&i| (i as u64) <= byte + bom as u64) as u64;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(&bytes[bom..]);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| bad(format!("cannot read the header: {e}")))?
        .iter()
        .map(normalize_header)
        .collect();
    let find = |names: &[&str]| headers.iter().position(|h| names.contains(&h.as_str()));
    // Each address column with what it holds: emails, phone numbers, or either.
    let mut address_cols: Vec<(usize, Option<bool>)> = [
        find(EMAIL_HEADERS).map(|i| (i, Some(true))),
        find(PHONE_HEADERS).map(|i| (i, Some(false))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if address_cols.is_empty() {
        address_cols.extend(find(ADDRESS_HEADERS).map(|i| (i, None)));
    }
    if address_cols.is_empty() {
        return Err(bad(format!(
            "no email or phone column in the header ({}); name one `email` or `phone`",
            headers
                .iter()
                .map(|h| format!("`{h}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let reason_col = find(REASON_HEADERS);
    let channel_col = find(&["channel"]);

    let mut report = ImportReport::default();
    let mut todo: Vec<(Address, Vec<Channel>, Reason)> = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = line_at(reader.position().byte());
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, |p| line_at(p.byte()));
                report.rejected.push(Rejected {
                    line,
                    column: String::new(),
                    value: String::new(),
                    why: format!("unreadable row: {e}"),
                });
                continue;
            }
        }
        let line = record.position().map_or(line, |p| line_at(p.byte()));
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let reason = match reason_col
            .and_then(|i| record.get(i))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => default_reason,
            Some(raw) => Reason::from_export(raw).unwrap_or_else(|| {
                let v = cut(raw);
                if report.unknown_reasons.len() < 10 && !report.unknown_reasons.contains(&v) {
                    report.unknown_reasons.push(v);
                }
                default_reason
            }),
        };
        let channel = match channel_col
            .and_then(|i| record.get(i))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => default_channel,
            Some(raw) => match parse_channel(raw) {
                Ok(c) => Some(c),
                Err(why) => {
                    report.rejected.push(Rejected {
                        line,
                        column: headers[channel_col.unwrap_or(0)].clone(),
                        value: cut(raw),
                        why,
                    });
                    continue;
                }
            },
        };
        let mut found = false;
        for &(i, email) in &address_cols {
            let raw = record.get(i).unwrap_or("");
            if raw.trim().is_empty() {
                continue;
            }
            found = true;
            let parsed =
                Address::parse_as(raw, email).and_then(|a| a.channels(channel).map(|chs| (a, chs)));
            match parsed {
                Ok((a, chs)) => todo.push((a, chs, reason)),
                Err(why) => report.rejected.push(Rejected {
                    line,
                    column: headers[i].clone(),
                    value: cut(raw.trim()),
                    why,
                }),
            }
        }
        if !found {
            let columns = address_cols
                .iter()
                .map(|&(i, _)| headers[i].as_str())
                .collect::<Vec<_>>()
                .join(" / ");
            report.rejected.push(Rejected {
                line,
                column: columns,
                value: String::new(),
                why: "no email address or phone number".into(),
            });
        }
    }

    let mut tx = db.begin().await?;
    lock(&mut tx).await?;
    for (address, channels, reason) in &todo {
        if add_in(&mut tx, address, channels, *reason, "import", now).await? {
            report.added += 1;
        } else {
            report.already_present += 1;
        }
    }
    tx.commit().await?;
    Ok(report)
}

/// `retentiond suppressions …`.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Every suppression: address (or the customer's contact), channel, reason, source, when.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Suppress an email address or phone number (normalized like imported contacts).
    Add {
        /// Email address or phone number.
        address: String,
        #[arg(long, value_enum, default_value = "manual")]
        reason: Reason,
        /// Only this channel (default: email for an address, SMS and WhatsApp for a number).
        #[arg(long, value_parser = parse_channel, value_name = "CHANNEL")]
        channel: Option<Channel>,
    },
    /// Lift an address's suppressions, including link and webhook ones of customers holding it.
    Remove {
        address: String,
        #[arg(long, value_parser = parse_channel, value_name = "CHANNEL")]
        channel: Option<Channel>,
    },
    /// Import another tool's unsubscribe / bounce / complaint list (CSV with an email or phone
    /// column, optional reason and channel columns). Idempotent.
    Import {
        file: std::path::PathBuf,
        /// Reason for rows without one.
        #[arg(long, value_enum, default_value = "unsubscribe")]
        reason: Reason,
        /// Channel for rows without one (default: the address's channels).
        #[arg(long, value_parser = parse_channel, value_name = "CHANNEL")]
        channel: Option<Channel>,
    },
    /// Write every suppression to a CSV file (spreadsheet-safe; `import` reads it back).
    Export { file: std::path::PathBuf },
}

/// Runs one `suppressions` command: results on stdout, rejected rows on stderr; exit 2 for an
/// unusable address, channel or file.
pub async fn run_cli(db: &Db, action: Action) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    let now = chrono::Utc::now().timestamp();
    let result: Result<ExitCode, SuppressionError> = async {
        match action {
            Action::List { json } => {
                let entries = list(db).await?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&entries).map_err(anyhow::Error::from)?
                    );
                } else if entries.is_empty() {
                    println!("no suppressions");
                } else {
                    println!(
                        "{:<32} {:<9} {:<12} {:<10} {:<14} created",
                        "address", "channel", "reason", "source", "customer"
                    );
                    for e in &entries {
                        let at = chrono::DateTime::from_timestamp(e.created_at, 0)
                            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                            .unwrap_or_default();
                        println!(
                            "{:<32} {:<9} {:<12} {:<10} {:<14} {at}",
                            e.address.as_deref().unwrap_or("-"),
                            e.channel.as_deref().unwrap_or("all"),
                            e.reason,
                            e.source,
                            e.customer_id.as_deref().unwrap_or("-")
                        );
                    }
                    println!("{} suppression(s)", entries.len());
                }
            }
            Action::Add {
                address,
                reason,
                channel,
            } => {
                let (a, added) = add(db, &address, channel, reason, now).await?;
                let on = a
                    .channels(channel)
                    .unwrap_or_default()
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                println!(
                    "{} {} on {on}",
                    a.as_str(),
                    if added {
                        "suppressed"
                    } else {
                        "was already suppressed"
                    }
                );
            }
            Action::Remove { address, channel } => {
                let (a, n) = remove(db, &address, channel).await?;
                println!("{}: {n} suppression(s) removed", a.as_str());
            }
            Action::Import {
                file,
                reason,
                channel,
            } => {
                let r = import(db, &file, reason, channel, now).await?;
                for x in &r.rejected {
                    eprintln!(
                        "{}:{}: column `{}`, value {:?}: {}",
                        file.display(),
                        x.line,
                        x.column,
                        x.value,
                        x.why
                    );
                }
                if !r.unknown_reasons.is_empty() {
                    eprintln!(
                        "warning: reasons not recognised, stored as {}: {}",
                        reason.as_str(),
                        r.unknown_reasons.join(", ")
                    );
                }
                println!(
                    "imported {}: {} added, {} already present, {} rejected",
                    file.display(),
                    r.added,
                    r.already_present,
                    r.rejected.len()
                );
            }
            Action::Export { file } => {
                let n = export(db, &file).await?;
                println!("wrote {n} suppression(s) to {}", file.display());
            }
        }
        Ok(ExitCode::SUCCESS)
    }
    .await;
    match result {
        Ok(code) => Ok(code),
        Err(e) if e.is_usage() => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized_like_imported_contacts() {
        assert_eq!(
            Address::parse(" Asha.Rao@Example.COM "),
            Ok(Address::Email("asha.rao@example.com".into()))
        );
        assert_eq!(
            Address::parse("+91 98765-43210"),
            Ok(Address::Phone("+919876543210".into()))
        );
        // What our spreadsheet-safe export writes for a phone number reads back.
        assert_eq!(
            Address::parse("'+919876543210"),
            Ok(Address::Phone("+919876543210".into()))
        );
        assert!(Address::parse("asha@").is_err());
        assert!(Address::parse("12ab").is_err());
        assert!(Address::parse("  ").is_err());
    }

    #[test]
    fn channels_follow_the_address() {
        let e = Address::Email("a@b.co".into());
        let p = Address::Phone("+919876543210".into());
        assert_eq!(e.channels(None), Ok(vec![Channel::Email]));
        assert!(e.channels(Some(Channel::Sms)).is_err());
        assert_eq!(p.channels(None), Ok(vec![Channel::Sms, Channel::Whatsapp]));
        assert_eq!(
            p.channels(Some(Channel::Whatsapp)),
            Ok(vec![Channel::Whatsapp])
        );
        assert!(p.channels(Some(Channel::Email)).is_err());
    }

    #[test]
    fn other_tools_reasons_are_understood() {
        assert_eq!(
            Reason::from_export("Unsubscribed"),
            Some(Reason::Unsubscribe)
        );
        assert_eq!(Reason::from_export("hard bounce"), Some(Reason::HardBounce));
        assert_eq!(Reason::from_export("spamreport"), Some(Reason::Complaint));
        assert_eq!(Reason::from_export("STOP"), Some(Reason::Stop));
        assert_eq!(Reason::from_export("something else"), None);
        assert_eq!(normalize_header("\u{feff}Email Address"), "email_address");
    }
}
