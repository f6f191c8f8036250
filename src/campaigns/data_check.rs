//! Campaign files against the imported data: the product categories and customer attributes a
//! campaign names must exist, or it selects nobody (an audience filter) or fails at run time
//! (a fixed offer category). `check-config` runs this when the database is reachable; the run
//! itself uses [`suggest`] and [`known_list`] to word the same problem.

use std::collections::{BTreeMap, BTreeSet};

use crate::campaigns::{CampaignSet, OfferCategory};
use crate::config::{ConfigIssue, DatabaseSettings, redact_url};
use crate::db::Db;
use crate::scan::scan_with;

/// At most this many distinct values are kept per attribute (beyond, values are not checked).
const MAX_VALUES_PER_KEY: usize = 1000;

/// What the database holds that campaign files may name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KnownData {
    /// Distinct non-empty product categories.
    pub categories: BTreeSet<String>,
    pub products: i64,
    pub customers: i64,
    /// Attribute key → distinct values seen (`None` once there are too many to list).
    pub attributes: BTreeMap<String, Option<BTreeSet<String>>>,
}

/// The outcome of looking at the database for `check-config`.
#[derive(Debug)]
pub enum Probe {
    /// Not checked, and why, in one line.
    Skipped(String),
    Data(KnownData),
}

/// Folds case, dashes, underscores and repeated spaces: "Hair-Care" ~ "hair care".
fn fold(s: &str) -> String {
    s.trim()
        .to_lowercase()
        .replace(['-', '_'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The known name closest to `word`: the same but for case, dashes or spaces, else within a
/// small edit distance. Never `word` itself.
pub fn suggest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let known: Vec<&str> = known.into_iter().filter(|k| *k != word).collect();
    let w = fold(word);
    if let Some(k) = known.iter().find(|k| fold(k) == w) {
        return Some(*k);
    }
    let folded: Vec<String> = known.iter().map(|k| fold(k)).collect();
    let best = crate::config::closest(&w, &folded)?;
    known
        .iter()
        .zip(&folded)
        .find(|(_, f)| f.as_str() == best)
        .map(|(k, _)| *k)
}

/// `"a", "b", … (N in all)`: at most 20 names, quoted.
pub fn known_list<'a>(known: impl IntoIterator<Item = &'a str>) -> String {
    let all: Vec<&str> = known.into_iter().collect();
    let mut out: Vec<String> = all.iter().take(20).map(|k| format!("{k:?}")).collect();
    if all.len() > 20 {
        out.push(format!("… ({} in all)", all.len()));
    }
    out.join(", ")
}

/// The fix for a category name the database does not have.
pub fn category_fix<'a>(name: &str, known: impl IntoIterator<Item = &'a str> + Clone) -> String {
    match suggest(name, known.clone()) {
        Some(s) => format!(
            "did you mean {s:?}? Categories are matched exactly as in products.csv; known: {}",
            known_list(known)
        ),
        None => format!(
            "use a category as it appears in products.csv: {}",
            known_list(known)
        ),
    }
}

/// Reads the categories and, when `attributes` is set, the customer attributes; `Skipped` with
/// the reason when the database cannot be reached or holds no imported data. Never creates a
/// database or migrates one.
pub async fn probe(settings: &DatabaseSettings, attributes: bool) -> Probe {
    let shown = redact_url(&settings.url);
    if let Some(path) = crate::db::sqlite_path(&settings.url)
        && !path.exists()
    {
        return Probe::Skipped(format!("{shown} does not exist yet (nothing imported)"));
    }
    // A quick answer: check-config should not hang on an unreachable server.
    let quick = DatabaseSettings {
        url: settings.url.clone(),
        max_connections: 1,
        busy_timeout_ms: settings.busy_timeout_ms.min(5_000),
    };
    let db =
        match tokio::time::timeout(std::time::Duration::from_secs(10), Db::connect(&quick)).await {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => {
                return Probe::Skipped(format!(
                    "{shown} is unreachable ({})",
                    crate::redact::redact(&e.to_string())
                ));
            }
            Err(_) => return Probe::Skipped(format!("{shown} did not answer within 10 s")),
        };
    let known = read(&db, attributes).await;
    db.close().await;
    match known {
        Ok(k) if k.products == 0 && k.customers == 0 => {
            Probe::Skipped(format!("{shown} holds no imported data yet"))
        }
        Ok(k) => Probe::Data(k),
        Err(e) => Probe::Skipped(format!(
            "{shown} cannot be read ({e:#}); run `retentiond migrate` or an import first"
        )),
    }
}

async fn read(db: &Db, attributes: bool) -> anyhow::Result<KnownData> {
    let mut k = KnownData {
        products: db.count("products").await?,
        customers: db.count("customers").await?,
        ..KnownData::default()
    };
    scan_with(db, "SELECT DISTINCT category FROM products", &[], |r| {
        if let Some(c) = r.text(0)?.filter(|c| !c.trim().is_empty()) {
            k.categories.insert(c.to_owned());
        }
        Ok(())
    })
    .await?;
    if attributes {
        let attrs = &mut k.attributes;
        scan_with(
            db,
            "SELECT attributes FROM customers WHERE attributes IS NOT NULL",
            &[],
            |r| {
                let Some(text) = r.text(0)? else {
                    return Ok(());
                };
                let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_str::<serde_json::Value>(text)
                else {
                    return Ok(());
                };
                for (key, v) in map {
                    let value = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let slot = attrs.entry(key).or_insert_with(|| Some(BTreeSet::new()));
                    let full = match slot {
                        Some(values) => {
                            values.insert(value);
                            values.len() > MAX_VALUES_PER_KEY
                        }
                        None => false,
                    };
                    if full {
                        *slot = None;
                    }
                }
                Ok(())
            },
        )
        .await?;
    }
    Ok(k)
}

/// Problems of the campaign files against `known`: `(errors, warnings)`. Unknown categories and
/// attribute keys are errors (the campaign would fail or select nobody); an attribute value no
/// customer has is a warning (it may arrive with the next import).
pub fn check(set: &CampaignSet, known: &KnownData) -> (Vec<ConfigIssue>, Vec<ConfigIssue>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let cats = || known.categories.iter().map(String::as_str);
    for c in &set.campaigns {
        let file = c.file.display().to_string();
        let issue = |key: String, message: String, fix: String| ConfigIssue {
            file: file.clone(),
            key,
            message,
            fix,
        };
        if !known.categories.is_empty() {
            let mut named: Vec<(String, &str)> = Vec::new();
            if let OfferCategory::Fixed(k) = &c.offer.category {
                named.push(("offer.category".into(), k));
            }
            for (key, list) in [
                ("audience.categories_bought", &c.audience.categories_bought),
                (
                    "audience.categories_never_bought",
                    &c.audience.categories_never_bought,
                ),
            ] {
                named.extend(
                    list.iter()
                        .enumerate()
                        .map(|(i, k)| (format!("{key}[{i}]"), k.as_str())),
                );
            }
            for (key, name) in named {
                if !known.categories.contains(name) {
                    errors.push(issue(
                        key,
                        format!("{name:?} is not a product category in the database"),
                        category_fix(name, cats()),
                    ));
                }
            }
        }
        if known.customers == 0 {
            continue;
        }
        for (key, accepted) in &c.audience.attributes {
            let path = format!("audience.attributes.{key}");
            let Some(seen) = known.attributes.get(key) else {
                let keys = || known.attributes.keys().map(String::as_str);
                let fix = match (suggest(key, keys()), known.attributes.is_empty()) {
                    (_, true) => "no imported customer has attributes: add the column to customers.csv and import it, or remove the key".to_string(),
                    (Some(s), _) => format!("did you mean `audience.attributes.{s}`? Known attributes: {}", known_list(keys())),
                    (None, _) => format!("use an attribute imported from customers.csv: {}", known_list(keys())),
                };
                errors.push(issue(path, format!("no imported customer has the attribute {key:?}: the campaign would select nobody"), fix));
                continue;
            };
            let Some(seen) = seen else { continue };
            for (i, v) in accepted.iter().enumerate() {
                // Selection compares values case-insensitively.
                if seen.iter().any(|s| s.eq_ignore_ascii_case(v)) {
                    continue;
                }
                let values = || seen.iter().map(String::as_str);
                let fix = match suggest(v, values()) {
                    Some(s) => format!("did you mean {s:?}? Values seen: {}", known_list(values())),
                    None => format!("values seen: {}", known_list(values())),
                };
                warnings.push(issue(
                    format!("{path}[{i}]"),
                    format!("no imported customer has {key} = {v:?}"),
                    fix,
                ));
            }
        }
    }
    (errors, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_fold_case_and_separators_then_allow_small_typos() {
        let known = ["Hair Care", "skin care", "sleep & stress"];
        assert_eq!(suggest("hair-care", known), Some("Hair Care"));
        assert_eq!(suggest("HAIR_CARE", known), Some("Hair Care"));
        assert_eq!(suggest("skin cair", known), Some("skin care"));
        assert_eq!(suggest("jewellery", known), None);
        assert_eq!(
            suggest("skin care", known),
            None,
            "an exact name is not a suggestion"
        );
    }

    #[test]
    fn long_lists_are_cut() {
        let many: Vec<String> = (0..25).map(|i| format!("c{i:02}")).collect();
        let s = known_list(many.iter().map(String::as_str));
        assert!(
            s.ends_with("… (25 in all)") && s.contains("\"c19\"") && !s.contains("\"c20\""),
            "{s}"
        );
    }
}
