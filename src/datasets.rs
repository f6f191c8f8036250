//! Converters from public reference datasets to the import contract, so real data can be
//! imported and backtested like a brand's own export (`retentiond convert-dataset`).
//!
//! - CDNOW (Fader & Hardie 1/10 sample): order history only, amounts in USD.
//! - The Complete Journey (84.51°): households, baskets and receipt lines with a product
//!   hierarchy; the category is `department` or `product_category`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dataset {
    /// `CDNOW_sample.txt` → orders.csv.
    Cdnow,
    /// Complete Journey with `department` as the category.
    CompletejourneyDepartment,
    /// Complete Journey with `product_category` as the category.
    CompletejourneyProductCategory,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConvertSummary {
    pub customers: u64,
    pub orders: u64,
    pub order_items: u64,
    pub products: u64,
}

pub fn convert(dataset: Dataset, src: &Path, out: &Path) -> anyhow::Result<ConvertSummary> {
    std::fs::create_dir_all(out).with_context(|| format!("Failed to create {}", out.display()))?;
    match dataset {
        Dataset::Cdnow => convert_cdnow(&src.join("CDNOW_sample.txt"), out),
        Dataset::CompletejourneyDepartment => convert_completejourney(src, out, "department"),
        Dataset::CompletejourneyProductCategory => {
            convert_completejourney(src, out, "product_category")
        }
    }
}

/// Each line: master id, sample id, YYYYMMDD, CDs, dollars (whitespace separated, CRLF).
/// Every line becomes one order (same-day repeats stay separate orders; models merge days).
pub fn convert_cdnow(src: &Path, out: &Path) -> anyhow::Result<ConvertSummary> {
    let reader = BufReader::new(
        File::open(src).with_context(|| format!("Failed to open {}", src.display()))?,
    );
    let mut w = BufWriter::new(File::create(out.join("orders.csv"))?);
    writeln!(
        w,
        "order_id,customer_id,ordered_at,total_amount,currency,status"
    )?;
    let mut summary = ConvertSummary::default();
    let mut customers = std::collections::HashSet::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() != 5 || f[2].len() != 8 {
            bail!(
                "{}:{}: expected 5 fields with a YYYYMMDD date, got {:?}",
                src.display(),
                i + 1,
                line.trim()
            );
        }
        let date = format!("{}-{}-{}", &f[2][..4], &f[2][4..6], &f[2][6..]);
        writeln!(w, "cd{},{},{},{},USD,completed", i + 1, f[1], date, f[4])?;
        customers.insert(f[1].to_string());
        summary.orders += 1;
    }
    w.flush()?;
    summary.customers = customers.len() as u64;
    Ok(summary)
}

fn gz_csv(path: &Path) -> anyhow::Result<csv::Reader<flate2::read::GzDecoder<File>>> {
    let f = File::open(path).with_context(|| format!("Failed to open {}", path.display()))?;
    Ok(csv::ReaderBuilder::new().from_reader(flate2::read::GzDecoder::new(f)))
}

/// Baskets become orders (timestamps are local America/New_York time: import with
/// `brand.timezone = "America/New_York"` or accept UTC), receipt lines become order items
/// (summed per basket and product), and products without a category get "(unknown)".
pub fn convert_completejourney(
    src: &Path,
    out: &Path,
    category_column: &str,
) -> anyhow::Result<ConvertSummary> {
    let mut summary = ConvertSummary::default();
    // Products and their category.
    let mut rdr = gz_csv(&src.join("products.csv.gz"))?;
    let headers = rdr.headers()?.clone();
    let pid = headers
        .iter()
        .position(|h| h == "product_id")
        .context("products: no product_id")?;
    let cat = headers
        .iter()
        .position(|h| h == category_column)
        .with_context(|| format!("products: no {category_column}"))?;
    let mut categories: HashMap<String, String> = HashMap::new();
    for rec in rdr.records() {
        let rec = rec?;
        let c = rec.get(cat).unwrap_or("").trim();
        categories.insert(
            rec[pid].to_string(),
            if c.is_empty() {
                "(unknown)".into()
            } else {
                c.to_string()
            },
        );
    }

    // Baskets: household, first timestamp, total; lines summed per (basket, product).
    struct Basket {
        household: String,
        at: String,
        total: f64,
        discount: f64,
    }
    let mut baskets: HashMap<String, Basket> = HashMap::new();
    let mut lines: HashMap<(String, String), (i64, f64)> = HashMap::new();
    let mut rdr = gz_csv(&src.join("transactions.csv.gz"))?;
    let h = rdr.headers()?.clone();
    let idx = |name: &str| {
        h.iter()
            .position(|x| x == name)
            .with_context(|| format!("transactions: no {name}"))
    };
    let (hh, bk, pr, qt, sv, rd, cd, ts) = (
        idx("household_id")?,
        idx("basket_id")?,
        idx("product_id")?,
        idx("quantity")?,
        idx("sales_value")?,
        idx("retail_disc")?,
        idx("coupon_disc")?,
        idx("transaction_timestamp")?,
    );
    let num = |s: &str| s.trim().parse::<f64>().unwrap_or(0.0);
    for rec in rdr.records() {
        let rec = rec?;
        let b = baskets
            .entry(rec[bk].to_string())
            .or_insert_with(|| Basket {
                household: rec[hh].to_string(),
                at: rec[ts].to_string(),
                total: 0.0,
                discount: 0.0,
            });
        let value = num(&rec[sv]).max(0.0);
        b.total += value;
        b.discount += num(&rec[rd]).abs() + num(&rec[cd]).abs();
        if rec[ts] < *b.at {
            b.at = rec[ts].to_string();
        }
        let q = rec[qt].trim().parse::<i64>().unwrap_or(0).max(0);
        let e = lines
            .entry((rec[bk].to_string(), rec[pr].to_string()))
            .or_insert((0, 0.0));
        e.0 += q;
        e.1 += value;
    }

    let mut w = BufWriter::new(File::create(out.join("orders.csv"))?);
    writeln!(
        w,
        "order_id,customer_id,ordered_at,total_amount,currency,status,discount_amount"
    )?;
    let mut households = std::collections::HashSet::new();
    let mut keys: Vec<&String> = baskets.keys().collect();
    keys.sort();
    for k in keys {
        let b = &baskets[k];
        writeln!(
            w,
            "{k},{},{},{:.2},USD,completed,{:.2}",
            b.household, b.at, b.total, b.discount
        )?;
        households.insert(b.household.clone());
        summary.orders += 1;
    }
    w.flush()?;

    let mut used_products = std::collections::BTreeSet::new();
    let mut w = BufWriter::new(File::create(out.join("order_items.csv"))?);
    writeln!(w, "order_id,product_id,quantity,unit_price")?;
    let mut keys: Vec<&(String, String)> = lines.keys().collect();
    keys.sort();
    for k in keys {
        let (q, value) = lines[k];
        let unit = if q > 0 { value / q as f64 } else { value };
        writeln!(w, "{},{},{q},{unit:.4}", k.0, k.1)?;
        used_products.insert(k.1.clone());
        summary.order_items += 1;
    }
    w.flush()?;

    let mut w = BufWriter::new(File::create(out.join("products.csv"))?);
    writeln!(w, "product_id,category")?;
    for p in &used_products {
        let c = categories.get(p).map(String::as_str).unwrap_or("(unknown)");
        writeln!(w, "{p},{}", csv_field(c))?;
        summary.products += 1;
    }
    w.flush()?;
    summary.customers = households.len() as u64;
    Ok(summary)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
