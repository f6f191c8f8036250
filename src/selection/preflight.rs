//! A dry render of every campaign, run by `check-config` and before the daemon or `campaigns`
//! use a campaign set: each campaign's message on each of its channels (the first and every
//! fallback) for a sample customer, with a category offer and a category-free one, so copy,
//! links or settings that would fail at run time fail the configuration check instead, with
//! the file, the key and a fix.

use std::collections::{HashMap, HashSet};

use super::offer::{Catalog, CatalogProduct, MessageEnv, Secrets, build_offer, render};
use super::{Customer, Pick};
use crate::campaigns::{Campaign, CampaignSet, OfferCategory};
use crate::config::{ConfigError, ConfigIssue, Settings};
use crate::messages::RenderError;

/// A category name that needs URL encoding, as real ones do ("sleep & stress").
pub(crate) const SAMPLE_CATEGORY: &str = "sleep & stress";

/// Stand-in secrets for the dry render when the real ones are not set (their absence is
/// reported on its own; here only the messages' shape matters).
const SAMPLE_SECRET: &[u8] = b"check-config-sample-secret-0123456789";

pub(crate) fn sample_customer() -> Customer {
    Customer {
        customer_id: "sample-customer".into(),
        email: Some("sample.customer@example.com".into()),
        phone: Some("+919800000000".into()),
        first_name: Some("Ananya".into()),
        country: Some("IN".into()),
        email_opt_in: true,
        sms_opt_in: true,
        whatsapp_opt_in: true,
        ..Customer::default()
    }
}

pub(crate) fn sample_catalog(category: &str) -> Catalog {
    let products = (1..=12)
        .map(|i| CatalogProduct {
            product_id: format!("sample-{i}"),
            name: format!("Sample product {i}"),
            price: Some(499.0 + f64::from(i) * 100.0),
            url: None,
            image_url: None,
        })
        .collect();
    Catalog {
        best: HashMap::from([(category.to_string(), products)]),
        categories: HashSet::from([category.to_string()]),
        in_stock: HashMap::new(),
    }
}

/// Loads the campaigns in `campaigns.dir` and dry-renders them: how every command that uses
/// campaigns loads them, so none starts with a campaign that cannot render.
pub fn load(settings: &Settings, config_file: &str) -> Result<CampaignSet, ConfigError> {
    let set = CampaignSet::load(&settings.campaigns.dir)?;
    let issues = check(&set, settings, config_file);
    if issues.is_empty() {
        Ok(set)
    } else {
        Err(ConfigError { issues })
    }
}

/// Every problem the dry render finds, keyed to the campaign file (copy, offer) or to the main
/// config file `config_file` (settings every campaign shares, such as `public_base_url`).
pub fn check(set: &CampaignSet, settings: &Settings, config_file: &str) -> Vec<ConfigIssue> {
    let real = Secrets::from_env(&settings.campaigns);
    let secrets = Secrets {
        unsubscribe: real.unsubscribe.or_else(|| Some(SAMPLE_SECRET.to_vec())),
        code: real.code.or_else(|| Some(SAMPLE_SECRET.to_vec())),
    };
    let env = MessageEnv {
        brand_name: &settings.brand.name,
        currency: &settings.brand.currency,
        settings: &settings.campaigns,
        secrets: &secrets,
        now: chrono::Utc::now().timestamp(),
    };
    let customer = sample_customer();
    let mut issues = Vec::new();
    let mut seen = HashSet::new();
    for c in &set.campaigns {
        let category = match &c.offer.category {
            OfferCategory::Fixed(k) => Some(k.clone()),
            OfferCategory::None => None,
            OfferCategory::Recommended | OfferCategory::RecommendedNew => {
                Some(SAMPLE_CATEGORY.to_string())
            }
        };
        // A recommended offer is category-free for customers without a prediction.
        let mut offers = vec![category.clone()];
        if category.is_some() && !matches!(c.offer.category, OfferCategory::Fixed(_)) {
            offers.push(None);
        }
        for category in offers {
            let catalog = sample_catalog(category.as_deref().unwrap_or(SAMPLE_CATEGORY));
            let pick = Pick {
                customer: 0,
                held_out: false,
                holdout_draw: 0.5,
                channels: c.channels.clone(),
                channel_reason: String::new(),
                not_before: 0,
                expires_at: 0,
                category: category.clone(),
            };
            let offer = build_offer(c, &customer, &pick, &catalog, None, &env);
            for &channel in &c.channels {
                if let Err(e) = render(c, &customer, channel, &offer, &env) {
                    let issue = describe(c, channel.as_str(), category.is_some(), &e, config_file);
                    // One report per key and problem, not one per channel and offer.
                    if seen.insert((issue.file.clone(), issue.key.clone(), issue.message.clone())) {
                        issues.push(issue);
                    }
                }
            }
        }
    }
    issues
}

/// Copy that renders but reads badly, as `file: key: what (fix)` lines for `check-config`:
/// SMS copy that starts with the brand, which the SMS template already puts first (the
/// renderer drops the repeat), and an `offer`-template body that lists `{products}`, which the
/// template's product cards show again.
pub fn warnings(set: &CampaignSet, settings: &Settings) -> Vec<String> {
    let brand = settings.brand.name.trim();
    let mut out = Vec::new();
    for c in &set.campaigns {
        let file = c.file.display();
        for (section, copy) in [("copy", &c.copy), ("copy_generic", &c.copy_generic)] {
            let sms_channel = c.channels.contains(&crate::campaigns::Channel::Sms);
            if let Some(sms) = copy.sms.as_deref().filter(|_| sms_channel) {
                let sms = sms.trim_start();
                let starts = sms.starts_with("{brand}")
                    || (!brand.is_empty()
                        && sms
                            .get(..brand.len())
                            .is_some_and(|h| h.eq_ignore_ascii_case(brand)));
                if starts {
                    out.push(format!(
                        "{file}: {section}.sms starts with the brand, but every SMS already begins with \"{brand}: \" (the repeat is left out; remove it from the copy)"
                    ));
                }
            }
            if c.email_family == crate::messages::EmailFamily::Offer
                && c.channels.contains(&crate::campaigns::Channel::Email)
                && copy.body.contains("{products}")
            {
                out.push(format!(
                    "{file}: {section}.body lists {{products}} and the offer template shows the picks as product cards too, so they appear twice (remove {{products}} from the body, or use email.template = \"plain\")"
                ));
            }
        }
    }
    out
}

/// The issue for one failed render: the key that causes it, where it can be told.
fn describe(
    c: &Campaign,
    channel: &str,
    with_category: bool,
    e: &anyhow::Error,
    config_file: &str,
) -> ConfigIssue {
    let file = c.file.display().to_string();
    let copy = if with_category {
        "copy"
    } else {
        "copy_generic"
    };
    let why = format!("the {channel} message does not render: {e:#}");
    let (file, key, fix) = match e.downcast_ref::<RenderError>() {
        Some(RenderError::InvalidUrl {
            field: "cta_url", ..
        }) => (
            file,
            "offer.landing_url".to_string(),
            "use an absolute http(s) URL with a host, with only {category} and {code} filled in"
                .to_string(),
        ),
        Some(RenderError::InvalidUrl {
            field: "unsubscribe_url",
            ..
        }) => (
            config_file.to_string(),
            "campaigns.public_base_url".to_string(),
            "use the daemon's public http(s) address, e.g. \"https://crm.example.com\"".to_string(),
        ),
        Some(RenderError::InvalidUrl {
            field: "unsubscribe_mailto",
            ..
        }) => (
            config_file.to_string(),
            "campaigns.unsubscribe_mailto".to_string(),
            "use an address such as \"unsubscribe@example.com\" or leave it empty".to_string(),
        ),
        Some(RenderError::Placeholders { field, .. }) if field.starts_with("whatsapp") => (
            file,
            "whatsapp.params".to_string(),
            "use only the documented placeholders in the template parameters".to_string(),
        ),
        Some(RenderError::Placeholders { field, .. }) => (
            file,
            format!("{copy}.{field}"),
            "use only the documented placeholders (write {{ and }} for literal braces)".to_string(),
        ),
        Some(RenderError::InvalidWhatsapp { .. }) => (
            file,
            "whatsapp".to_string(),
            "fix the template's name, language or parameters as approved by Meta".to_string(),
        ),
        _ => (
            file,
            format!("{copy} ({channel})"),
            format!("fix the {channel} copy so it renders for every customer"),
        ),
    };
    ConfigIssue {
        file,
        key,
        message: why,
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaigns::parse_campaign;

    fn campaign(extra: &str) -> Campaign {
        let text = format!(
            "name = \"t\"\nchannels = [\"email\", \"sms\"]\n[offer]\ncategory = \"recommended\"\nlanding_url = \"https://shop.example/c/{{category}}\"\n\
             [copy]\nsubject = \"For you\"\nheadline = \"Back to {{category}}\"\nbody = \"Hello\"\ncta = \"Shop\"\n{extra}"
        );
        let mut issues = Vec::new();
        let c = parse_campaign(&text, std::path::Path::new("t.toml"), &mut issues);
        assert!(issues.is_empty(), "{issues:?}");
        c.unwrap()
    }

    #[test]
    fn copy_that_repeats_the_brand_or_the_picks_is_warned_about() {
        let mut settings = Settings::default();
        settings.brand.name = "Veda Roots".into();
        let set = CampaignSet {
            dir: "x".into(),
            campaigns: vec![campaign("sms = \"{brand}: hi\"\n")],
        };
        let w = warnings(&set, &settings);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("copy.sms starts with the brand"), "{w:?}");
        let set = CampaignSet {
            dir: "x".into(),
            campaigns: vec![campaign("sms = \"veda roots: hi\"\n")],
        };
        assert_eq!(warnings(&set, &settings).len(), 1);
        let mut c = campaign("");
        c.copy.body = "Try {products}.".into();
        let w = warnings(
            &CampaignSet {
                dir: "x".into(),
                campaigns: vec![c],
            },
            &settings,
        );
        assert!(w.len() == 1 && w[0].contains("appear twice"), "{w:?}");
        // The shipped campaigns read well.
        settings.campaigns.dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/campaigns");
        let shipped = CampaignSet::load(&settings.campaigns.dir).unwrap();
        assert_eq!(warnings(&shipped, &settings), Vec::<String>::new());
    }

    #[test]
    fn a_sound_campaign_renders_on_every_channel() {
        let set = CampaignSet {
            dir: "x".into(),
            campaigns: vec![campaign("")],
        };
        assert_eq!(check(&set, &Settings::default(), "r.toml"), vec![]);
    }

    #[test]
    fn a_public_base_url_that_breaks_every_link_is_reported_against_the_main_config() {
        let set = CampaignSet {
            dir: "x".into(),
            campaigns: vec![campaign("")],
        };
        let mut settings = Settings::default();
        settings.campaigns.public_base_url = "https://crm example.com".into();
        let issues = check(&set, &settings, "r.toml");
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(
            (issues[0].file.as_str(), issues[0].key.as_str()),
            ("r.toml", "campaigns.public_base_url")
        );
    }
}
