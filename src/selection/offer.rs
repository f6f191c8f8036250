//! Offers and messages for the customers a campaign picked: the category, the discount, the
//! code (shared, or derived per customer from a secret), product picks (the category's best
//! sellers in stock that the customer has not bought, or for a restock those they bought
//! before), and the rendered message for the channel.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use super::{Customer, Pick};
use crate::campaigns::{Campaign, Channel, CodeRule, CopyFile, Discount, ProductPicks};
use crate::config::CampaignSettings;
use crate::db::Db;
use crate::messages::{
    self, Context, MessageCopy, Product, RenderedEmail, RenderedSms, RenderedWhatsapp,
    WhatsappTemplate,
};
use crate::scan::{Bind, scan_with};

/// Secrets from the environment variables the config names. Never logged.
#[derive(Clone, Default)]
pub struct Secrets {
    pub unsubscribe: Option<Vec<u8>>,
    pub code: Option<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("unsubscribe", &self.unsubscribe.is_some())
            .field("code", &self.code.is_some())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "environment variable {var} is not set: it holds the secret that {purpose}; set it to a long random value (e.g. `openssl rand -hex 32`)"
    )]
    Missing { var: String, purpose: &'static str },
    #[error(
        "the secret in environment variable {var} {why}: use a long random value (e.g. `openssl rand -hex 32`)"
    )]
    Weak { var: String, why: String },
}

impl Secrets {
    pub fn from_env(c: &CampaignSettings) -> Secrets {
        let read = |var: &str| {
            let v = std::env::var(var).ok().filter(|v| !v.is_empty())?;
            crate::redact::register(&v);
            Some(v.into_bytes())
        };
        Secrets {
            unsubscribe: read(&c.unsubscribe_secret_env),
            code: read(&c.code_secret_env),
        }
    }

    /// Checks the secrets the campaigns need are present and strong ([`crate::secrets::weakness`]:
    /// at least 16 bytes, not one character repeated).
    pub fn check(&self, c: &CampaignSettings, needs_code: bool) -> Result<(), SecretError> {
        let check = |v: &Option<Vec<u8>>, var: &str, purpose| match v {
            None => Err(SecretError::Missing {
                var: var.to_string(),
                purpose,
            }),
            Some(s) => match crate::secrets::weakness(s) {
                Some(why) => Err(SecretError::Weak {
                    var: var.to_string(),
                    why,
                }),
                None => Ok(()),
            },
        };
        check(
            &self.unsubscribe,
            &c.unsubscribe_secret_env,
            "signs unsubscribe links",
        )?;
        if needs_code {
            check(
                &self.code,
                &c.code_secret_env,
                "derives per-customer discount codes",
            )?;
        }
        Ok(())
    }
}

/// A product in a category's best-seller list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CatalogProduct {
    pub product_id: String,
    pub name: String,
    pub price: Option<f64>,
    /// Product page and image (products.csv `url`, `image_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

/// In-stock best sellers per category, best first.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub best: HashMap<String, Vec<CatalogProduct>>,
    pub categories: HashSet<String>,
    /// Every in-stock product: its category and rank there (0 = best seller), for restock picks.
    pub in_stock: HashMap<String, (String, usize, CatalogProduct)>,
}

impl Catalog {
    /// Units sold per product in [from, until), in-stock products only. Products that sold
    /// nothing in the window follow, so a quiet category still has picks. The day's scoring
    /// counted the units while reading the order lines (`product_sales`); without that, they
    /// are counted here with a join (seconds at 1 M customers).
    #[tracing::instrument(skip(db))]
    pub async fn load(db: &Db, day: &str, from: i64, until: i64) -> anyhow::Result<Catalog> {
        let mut products: HashMap<String, (String, CatalogProduct, bool)> = HashMap::new();
        let mut categories = HashSet::new();
        scan_with(db, "SELECT product_id, category, name, price, CASE WHEN in_stock THEN 1 ELSE 0 END, url, image_url FROM products", &[], |r| {
            let id = r.text(0)?.unwrap_or_default().to_owned();
            let cat = r.text(1)?.unwrap_or_default().to_owned();
            categories.insert(cat.clone());
            let p = CatalogProduct {
                product_id: id.clone(),
                name: r.text(2)?.filter(|n| !n.is_empty()).unwrap_or(&id).to_owned(),
                price: r.real(3)?,
                url: r.text(5)?.filter(|u| !u.is_empty()).map(str::to_owned),
                image_url: r.text(6)?.filter(|u| !u.is_empty()).map(str::to_owned),
            };
            products.insert(id, (cat, p, r.int(4)? == Some(1)));
            Ok(())
        })
        .await?;
        let mut units: HashMap<String, i64> = HashMap::new();
        let window = (until - from) / 86_400;
        let mut counted = false;
        scan_with(db, "SELECT product_id, units FROM product_sales WHERE as_of_date = $1 AND window_days = $2", &[Bind::Text(day), Bind::Int(window)], |r| {
            counted = true;
            units.insert(r.text(0)?.unwrap_or_default().to_owned(), r.int(1)?.unwrap_or(0));
            Ok(())
        })
        .await?;
        let sql = "SELECT i.product_id, CAST(SUM(i.quantity) AS BIGINT) FROM orders o JOIN order_items i ON i.order_id = o.order_id \
                   WHERE o.ordered_at >= $1 AND o.ordered_at < $2 AND o.status = 'completed' GROUP BY i.product_id";
        if !counted {
            scan_with(db, sql, &[Bind::Int(from), Bind::Int(until)], |r| {
                units.insert(
                    r.text(0)?.unwrap_or_default().to_owned(),
                    r.int(1)?.unwrap_or(0),
                );
                Ok(())
            })
            .await
            .context("Failed to rank best sellers")?;
        }
        let mut best: HashMap<String, Vec<(i64, CatalogProduct)>> = HashMap::new();
        for (id, (cat, p, in_stock)) in products {
            if in_stock {
                best.entry(cat)
                    .or_default()
                    .push((units.get(&id).copied().unwrap_or(0), p));
            }
        }
        let mut in_stock = HashMap::new();
        let best = best
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_by(|a, b| {
                    b.0.cmp(&a.0)
                        .then_with(|| a.1.product_id.cmp(&b.1.product_id))
                });
                for (rank, (_, p)) in v.iter().enumerate() {
                    in_stock.insert(p.product_id.clone(), (k.clone(), rank, p.clone()));
                }
                (k, v.into_iter().take(50).map(|(_, p)| p).collect())
            })
            .collect();
        Ok(Catalog {
            best,
            categories,
            in_stock,
        })
    }
}

/// Products each customer has ever bought (completed orders), for the given customers only.
pub async fn bought_products(
    db: &Db,
    customers: &[&str],
) -> anyhow::Result<HashMap<String, HashSet<String>>> {
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for chunk in customers.chunks(500) {
        let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT o.customer_id, i.product_id FROM orders o JOIN order_items i ON i.order_id = o.order_id \
             WHERE o.status = 'completed' AND o.customer_id IN ({})",
            params.join(", ")
        );
        let binds: Vec<Bind<'_>> = chunk.iter().map(|c| Bind::Text(c)).collect();
        scan_with(db, &sql, &binds, |r| {
            out.entry(r.text(0)?.unwrap_or_default().to_owned())
                .or_default()
                .insert(r.text(1)?.unwrap_or_default().to_owned());
            Ok(())
        })
        .await?;
    }
    Ok(out)
}

/// What a customer is offered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Offer {
    pub category: Option<String>,
    pub discount: Option<String>,
    pub code: Option<String>,
    pub products: Vec<CatalogProduct>,
    pub landing_url: String,
}

/// The rendered message for the pick's first channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "channel", rename_all = "lowercase")]
pub enum Rendered {
    Email {
        to: String,
        email: RenderedEmail,
    },
    Sms {
        to: String,
        sms: RenderedSms,
    },
    Whatsapp {
        to: String,
        whatsapp: RenderedWhatsapp,
    },
}

impl Rendered {
    pub fn recipient(&self) -> &str {
        match self {
            Rendered::Email { to, .. }
            | Rendered::Sms { to, .. }
            | Rendered::Whatsapp { to, .. } => to,
        }
    }
    /// One line for listings.
    pub fn summary(&self) -> String {
        match self {
            Rendered::Email { email, .. } => email.subject.clone(),
            Rendered::Sms { sms, .. } => format!(
                "{} ({} segment(s), {})",
                sms.text.replace('\n', " / "),
                sms.segments,
                sms.encoding.name()
            ),
            Rendered::Whatsapp { whatsapp, .. } => format!(
                "template {} [{}]",
                whatsapp.name,
                whatsapp.params.join(" | ")
            ),
        }
    }
}

/// What `{category}` reads in a WhatsApp template parameter when the offer has no category.
pub const GENERIC_CATEGORY: &str = "your favourites";

/// Everything messages need that is the same for every customer of a run.
pub struct MessageEnv<'a> {
    pub brand_name: &'a str,
    pub currency: &'a str,
    pub settings: &'a CampaignSettings,
    pub secrets: &'a Secrets,
    pub now: i64,
}

fn money(currency: &str, v: f64) -> String {
    let symbol = match currency {
        "INR" => "₹",
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        _ => "",
    };
    let amount = if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    };
    let amount = group_digits(&amount, currency == "INR");
    if symbol.is_empty() {
        format!("{amount} {currency}")
    } else {
        format!("{symbol}{amount}")
    }
}

/// Digit grouping of a formatted amount's whole part: thousands (`12,500.50`), or for INR the
/// Indian system, thousands then lakhs and crores (`1,39,999`, `1,00,00,000`), as Indian
/// shoppers read prices.
fn group_digits(amount: &str, indian: bool) -> String {
    let (whole, frac) = amount
        .split_once('.')
        .map_or((amount, None), |(w, f)| (w, Some(f)));
    let digits: Vec<char> = whole.chars().collect();
    let mut groups: Vec<String> = Vec::new();
    let mut end = digits.len();
    let mut size = 3;
    while end > size {
        groups.push(digits[end - size..end].iter().collect());
        end -= size;
        if indian {
            size = 2;
        }
    }
    groups.push(digits[..end].iter().collect());
    groups.reverse();
    let mut out = groups.join(",");
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// What a filled-in URL component encodes: everything but RFC 3986's unreserved characters
/// (letters, digits, `-`, `.`, `_`, `~`), so `BACK-7QK2` stays `BACK-7QK2`.
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Builds the offer for one pick.
pub fn build_offer(
    c: &Campaign,
    cust: &Customer,
    pick: &Pick,
    catalog: &Catalog,
    bought: Option<&HashSet<String>>,
    env: &MessageEnv<'_>,
) -> Offer {
    let discount = c.offer.discount.map(|d| match d {
        Discount::Percent(p) => {
            if p.fract() == 0.0 {
                format!("{p:.0}%")
            } else {
                format!("{p}%")
            }
        }
        Discount::Amount(v) => money(env.currency, v),
    });
    let code =
        match &c.offer.code {
            CodeRule::None => None,
            CodeRule::Shared(code) => Some(code.clone()),
            CodeRule::Derived(prefix) => env.secrets.code.as_deref().map(|secret| {
                messages::codes::offer_code(secret, prefix, &c.name, &cust.customer_id)
            }),
        };
    let n = c.offer.products as usize;
    let best_sellers = |k: &str, skip_bought: bool| -> Vec<CatalogProduct> {
        catalog
            .best
            .get(k)
            .map(|list| {
                list.iter()
                    .filter(|p| !(skip_bought && bought.is_some_and(|b| b.contains(&p.product_id))))
                    .take(n)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let products = match (&pick.category, c.offer.picks) {
        (Some(k), ProductPicks::NotBought) => best_sellers(k, true),
        (Some(k), ProductPicks::BoughtBefore) => {
            let mut mine: Vec<&(String, usize, CatalogProduct)> = bought
                .into_iter()
                .flatten()
                .filter_map(|id| catalog.in_stock.get(id))
                .filter(|(cat, _, _)| cat == k)
                .collect();
            mine.sort_by(|a, b| {
                a.1.cmp(&b.1)
                    .then_with(|| a.2.product_id.cmp(&b.2.product_id))
            });
            let mine: Vec<CatalogProduct> = mine
                .into_iter()
                .take(n)
                .map(|(_, _, p)| p.clone())
                .collect();
            // Nothing of this category bought yet: its best sellers stand in.
            if mine.is_empty() {
                best_sellers(k, false)
            } else {
                mine
            }
        }
        (None, _) => Vec::new(),
    };
    let enc = |s: &str| utf8_percent_encode(s, URL_COMPONENT).to_string();
    let landing_url = fill_url(
        &c.offer.landing_url,
        pick.category.as_deref().map(enc).unwrap_or_default(),
        code.as_deref().map(enc).unwrap_or_default(),
    );
    Offer {
        category: pick.category.clone(),
        discount,
        code,
        products,
        landing_url,
    }
}

/// Fills `{category}` and `{code}` (already URL-encoded) in a landing URL; an empty query
/// value left behind (`?discount=`) is harmless to shops.
fn fill_url(url: &str, category: String, code: String) -> String {
    url.replace("{category}", &category)
        .replace("{code}", &code)
}

fn to_copy(c: &CopyFile) -> MessageCopy {
    MessageCopy {
        subject: c.subject.clone(),
        headline: c.headline.clone(),
        body: c.body.clone(),
        cta: c.cta.clone(),
        sms: c.sms.clone(),
    }
}

/// Renders the message for `channel`.
pub fn render(
    c: &Campaign,
    cust: &Customer,
    channel: Channel,
    offer: &Offer,
    env: &MessageEnv<'_>,
) -> anyhow::Result<Rendered> {
    let copy = if offer.category.is_some() {
        &c.copy
    } else {
        &c.copy_generic
    };
    let products: Vec<Product> = offer
        .products
        .iter()
        .map(|p| Product {
            name: p.name.clone(),
            price: p.price.map(|v| money(env.currency, v)),
            url: p.url.clone(),
            image_url: p.image_url.clone(),
        })
        .collect();
    let secret = env.secrets.unsubscribe.as_deref().unwrap_or_default();
    let token = crate::unsubscribe::sign(
        secret,
        &crate::unsubscribe::Claims {
            customer_id: cust.customer_id.clone(),
            channel: channel.as_str().into(),
            issued_at: env.now,
        },
    );
    let unsubscribe_url = format!("{}/unsubscribe/{token}", env.settings.public_base_url);
    let mailto = (!env.settings.unsubscribe_mailto.is_empty())
        .then_some(env.settings.unsubscribe_mailto.as_str());
    // A WhatsApp template has a fixed number of parameters: a category-free offer still fills
    // the category slot with words that read naturally.
    let category = match (offer.category.as_deref(), channel) {
        (None, Channel::Whatsapp) => Some(GENERIC_CATEGORY),
        (c, _) => c,
    };
    let ctx = Context {
        brand_name: env.brand_name,
        first_name: cust.first_name.as_deref(),
        category,
        discount: offer.discount.as_deref(),
        code: offer.code.as_deref(),
        products: &products,
        cta_url: &offer.landing_url,
        unsubscribe_url: &unsubscribe_url,
        unsubscribe_mailto: mailto,
        postal_address: &env.settings.postal_address,
    };
    let to = |v: &Option<String>| v.clone().unwrap_or_default();
    Ok(match channel {
        Channel::Email => Rendered::Email {
            to: to(&cust.email),
            email: messages::render_email(c.email_family, &to_copy(copy), &ctx)?,
        },
        Channel::Sms => Rendered::Sms {
            to: to(&cust.phone),
            sms: messages::render_sms(&to_copy(copy), &ctx)?,
        },
        Channel::Whatsapp => {
            let w = c
                .whatsapp
                .as_ref()
                .context("whatsapp channel without a [whatsapp] template")?;
            let t = WhatsappTemplate {
                name: w.template.clone(),
                language: w.language.clone(),
                params: w.params.clone(),
            };
            Rendered::Whatsapp {
                to: to(&cust.phone),
                whatsapp: messages::render_whatsapp(&t, &ctx)?,
            }
        }
    })
}

/// One customer's contact, consent and suppressions, for re-rendering a message on a fallback
/// channel (the scores are not needed there).
pub async fn load_customer(
    db: &Db,
    customer_id: &str,
) -> anyhow::Result<Option<(Customer, super::Suppression)>> {
    let mut found: Option<Customer> = None;
    let sql = "SELECT customer_id, email, phone, first_name, country, timezone, CASE WHEN email_opt_in THEN 1 ELSE 0 END, \
               CASE WHEN sms_opt_in THEN 1 ELSE 0 END, CASE WHEN whatsapp_opt_in THEN 1 ELSE 0 END FROM customers WHERE customer_id = $1";
    scan_with(db, sql, &[Bind::Text(customer_id)], |r| {
        let text = |i| {
            r.text(i)
                .map(|t| t.filter(|s| !s.is_empty()).map(str::to_owned))
        };
        found = Some(Customer {
            customer_id: r.text(0)?.unwrap_or_default().to_owned(),
            email: text(1)?,
            phone: text(2)?,
            first_name: text(3)?,
            country: text(4)?,
            tz: r.text(5)?.and_then(|z| z.parse().ok()),
            email_opt_in: r.int(6)? == Some(1),
            sms_opt_in: r.int(7)? == Some(1),
            whatsapp_opt_in: r.int(8)? == Some(1),
            ..Customer::default()
        });
        Ok(())
    })
    .await?;
    let Some(c) = found else { return Ok(None) };
    let mut sup = super::Suppression::default();
    let sql = format!(
        "SELECT channel FROM ({}) e WHERE customer_id = $1",
        crate::suppressions::EFFECTIVE_SQL
    );
    scan_with(db, &sql, &[Bind::Text(customer_id)], |r| {
        sup.add(r.text(0)?);
        Ok(())
    })
    .await?;
    Ok(Some((c, sup)))
}

/// Whether the customer may be messaged on `channel`: not suppressed, consented, with a contact.
pub fn reachable_on(c: &Customer, sup: super::Suppression, channel: Channel) -> bool {
    let (consent, contact) = c.consent_and_contact(channel);
    !sup.blocks(channel) && consent && contact
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_formats_known_currencies() {
        assert_eq!(money("INR", 200.0), "₹200");
        assert_eq!(money("USD", 12.5), "$12.50");
        assert_eq!(money("CHF", 5.0), "5 CHF");
        // Grouped: Indian lakhs and crores for INR, thousands elsewhere.
        assert_eq!(money("INR", 1399.0), "₹1,399");
        assert_eq!(money("INR", 139_999.0), "₹1,39,999");
        assert_eq!(money("INR", 10_000_000.5), "₹1,00,00,000.50");
        assert_eq!(money("USD", 1_234_567.25), "$1,234,567.25");
        assert_eq!(money("EUR", 999.0), "€999");
        assert_eq!(money("CHF", 12_500.0), "12,500 CHF");
    }

    fn product(i: u32) -> CatalogProduct {
        CatalogProduct {
            product_id: format!("p{i}"),
            name: format!("Product {i}"),
            price: Some(100.0),
            url: None,
            image_url: None,
        }
    }

    #[test]
    fn restock_picks_are_products_bought_before() {
        let text = "name = \"r\"\nchannels = [\"email\"]\n[offer]\ncategory = \"hair care\"\nproducts = 2\npicks = \"bought_before\"\n\
                    landing_url = \"https://s.example/c/{category}\"\n[copy]\nsubject = \"s\"\nheadline = \"h\"\nbody = \"b\"\ncta = \"c\"\n";
        let mut issues = Vec::new();
        let mut c =
            crate::campaigns::parse_campaign(text, std::path::Path::new("r.toml"), &mut issues)
                .unwrap();
        assert_eq!(c.offer.picks, ProductPicks::BoughtBefore);
        let list: Vec<CatalogProduct> = (1..=4).map(product).collect();
        let mut in_stock: HashMap<String, (String, usize, CatalogProduct)> = list
            .iter()
            .enumerate()
            .map(|(r, p)| {
                (
                    p.product_id.clone(),
                    ("hair care".to_string(), r, p.clone()),
                )
            })
            .collect();
        in_stock.insert("q1".into(), ("skin care".into(), 0, product(9)));
        let catalog = Catalog {
            best: HashMap::from([("hair care".to_string(), list)]),
            categories: HashSet::new(),
            in_stock,
        };
        let settings = CampaignSettings::default();
        let secrets = Secrets::default();
        let env = MessageEnv {
            brand_name: "B",
            currency: "INR",
            settings: &settings,
            secrets: &secrets,
            now: 0,
        };
        let pick = Pick {
            customer: 0,
            held_out: false,
            holdout_draw: 0.5,
            channels: vec![Channel::Email],
            channel_reason: String::new(),
            not_before: 0,
            expires_at: 0,
            category: Some("hair care".into()),
        };
        let cust = Customer::default();
        let ids = |o: &Offer| {
            o.products
                .iter()
                .map(|p| p.product_id.clone())
                .collect::<Vec<_>>()
        };
        // Bought p4, p3 and a product of another category: the restock shows p3, p4 (best first).
        let bought: HashSet<String> = ["p4", "p3", "q1"].map(String::from).into();
        assert_eq!(
            ids(&build_offer(
                &c,
                &cust,
                &pick,
                &catalog,
                Some(&bought),
                &env
            )),
            ["p3", "p4"]
        );
        // Nothing of the category bought: its best sellers.
        let other: HashSet<String> = ["q1"].map(String::from).into();
        assert_eq!(
            ids(&build_offer(&c, &cust, &pick, &catalog, Some(&other), &env)),
            ["p1", "p2"]
        );
        // The default picks skip what was bought.
        c.offer.picks = ProductPicks::NotBought;
        assert_eq!(
            ids(&build_offer(
                &c,
                &cust,
                &pick,
                &catalog,
                Some(&bought),
                &env
            )),
            ["p1", "p2"]
        );
    }

    #[test]
    fn landing_urls_encode_what_they_fill() {
        let enc = |s: &str| utf8_percent_encode(s, URL_COMPONENT).to_string();
        let u = fill_url(
            "https://s.example/c/{category}?discount={code}",
            enc("sleep & stress"),
            enc("BACK-X_1.a~"),
        );
        // Unreserved characters stay as they are (`-` used to become `%2D`).
        assert_eq!(
            u,
            "https://s.example/c/sleep%20%26%20stress?discount=BACK-X_1.a~"
        );
        assert_eq!(enc("hair/care?x=1#y"), "hair%2Fcare%3Fx%3D1%23y");
    }
}
