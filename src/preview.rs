//! `campaigns preview`: one message of a campaign, built and rendered the way `campaigns run`
//! builds it (offer, product picks, copy, template), for a sample customer or a real one, then
//! sent as a **test** to a seed address through the channel's configured provider, or written
//! as HTML for a browser.
//!
//! A test send is never counted: it is not written to the outbox (so no attribution,
//! measurement, frequency cap or cooldown sees it) nor anywhere else in the database. It goes
//! only to the address given, its subject (email) or text (SMS) starts with `[TEST] `, providers
//! tag it `test` (see [`crate::delivery::providers::Outgoing::test`]), and its unsubscribe link
//! names no customer, so a tester clicking it suppresses nobody real.

use std::collections::HashSet;
use std::path::Path;

use crate::campaigns::{Campaign, Channel, OfferCategory};
use crate::config::Settings;
use crate::db::Db;
use crate::delivery::providers::{Accepted, Outgoing, Providers};
use crate::scan::{Bind, scan_with};
use crate::selection::offer::{
    Catalog, MessageEnv, Rendered, Secrets, bought_products, build_offer, load_customer, render,
};
use crate::selection::preflight::{SAMPLE_CATEGORY, sample_catalog, sample_customer};
use crate::selection::{Customer, Pick};
use crate::suppressions::Address;

/// What a subject or an SMS of a test send starts with.
pub const TEST_PREFIX: &str = "[TEST] ";
/// The customer id a test message's unsubscribe token names (no such customer exists).
pub const TEST_CUSTOMER: &str = "test-preview";

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no customer {0:?} in the database")]
    UnknownCustomer(String),
    #[error("{0}")]
    Usage(String),
    #[error("no provider is configured for {0} (set `delivery.{0}` in the config)")]
    NoProvider(&'static str),
    #[error("the test send failed: {0}")]
    Send(#[from] crate::delivery::providers::SendError),
}

/// Where a test goes: a normalized address and the channel for it (an email address → email;
/// a phone number → `channel`, SMS by default).
pub fn destination(to: &str, channel: Option<Channel>) -> Result<(String, Channel), PreviewError> {
    let address = Address::parse(to).map_err(|why| {
        PreviewError::Usage(format!(
            "--to {to:?} is not an email address or phone number: {why}"
        ))
    })?;
    match (address, channel) {
        (Address::Email(a), None | Some(Channel::Email)) => Ok((a, Channel::Email)),
        (Address::Email(_), Some(c)) => Err(PreviewError::Usage(format!(
            "--to is an email address but --channel is {}",
            c.as_str()
        ))),
        (Address::Phone(_), Some(Channel::Email)) => Err(PreviewError::Usage(
            "--to is a phone number but --channel is email".into(),
        )),
        (Address::Phone(p), c) => Ok((p, c.unwrap_or(Channel::Sms))),
    }
}

/// The real secrets, with throw-away ones for those not set (said on stderr): a preview's
/// unsubscribe link names no customer and a throw-away code secret only makes a sample code.
pub fn preview_secrets(settings: &Settings) -> Secrets {
    use rand::RngCore;
    let mut s = Secrets::from_env(&settings.campaigns);
    let c = &settings.campaigns;
    for (slot, var) in [
        (&mut s.unsubscribe, &c.unsubscribe_secret_env),
        (&mut s.code, &c.code_secret_env),
    ] {
        if slot.is_none() {
            let mut key = vec![0u8; 32];
            rand::rng().fill_bytes(&mut key);
            *slot = Some(key);
            eprintln!(
                "note: {var} is not set; the preview uses a throw-away secret (codes in it are samples)"
            );
        }
    }
    s
}

/// The customer the preview is for, and the offer's category for them.
async fn who(
    db: &Db,
    c: &Campaign,
    customer_id: Option<&str>,
    catalog: &Catalog,
) -> anyhow::Result<(Customer, Option<String>)> {
    // The best-stocked category stands in for a recommendation the customer does not have.
    let fallback = || {
        let mut cats: Vec<(&String, usize)> =
            catalog.best.iter().map(|(k, v)| (k, v.len())).collect();
        cats.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        cats.first()
            .map(|(k, _)| (*k).clone())
            .unwrap_or_else(|| SAMPLE_CATEGORY.to_string())
    };
    let Some(id) = customer_id else {
        let category = match &c.offer.category {
            OfferCategory::Fixed(k) => Some(k.clone()),
            OfferCategory::None => None,
            OfferCategory::Recommended | OfferCategory::RecommendedNew => Some(fallback()),
        };
        return Ok((sample_customer(), category));
    };
    let (customer, _) = load_customer(db, id)
        .await?
        .ok_or_else(|| PreviewError::UnknownCustomer(id.to_string()))?;
    // The customer's latest scores: recommended categories and what they bought.
    let mut recommended: Vec<String> = Vec::new();
    let mut bought: HashSet<String> = HashSet::new();
    let sql = "SELECT category_1, category_2, category_3, categories_bought FROM scores WHERE customer_id = $1 ORDER BY as_of_date DESC LIMIT 1";
    scan_with(db, sql, &[Bind::Text(id)], |r| {
        for i in 0..3 {
            if let Some(k) = r.text(i)?.filter(|k| !k.is_empty()) {
                recommended.push(k.to_owned());
            }
        }
        bought.extend(
            r.text(3)?
                .unwrap_or_default()
                .split('\t')
                .filter(|k| !k.is_empty())
                .map(str::to_owned),
        );
        Ok(())
    })
    .await?;
    let category = match &c.offer.category {
        OfferCategory::Fixed(k) => Some(k.clone()),
        OfferCategory::None => None,
        OfferCategory::Recommended => Some(recommended.first().cloned().unwrap_or_else(fallback)),
        OfferCategory::RecommendedNew => Some(
            recommended
                .iter()
                .find(|k| !bought.contains(*k))
                .cloned()
                .unwrap_or_else(fallback),
        ),
    };
    Ok((customer, category))
}

/// Builds the offer and renders the campaign's message on `channel` for the customer (or the
/// sample customer), as `campaigns run` would; the unsubscribe link names [`TEST_CUSTOMER`].
pub async fn render_one(
    db: &Db,
    settings: &Settings,
    c: &Campaign,
    customer_id: Option<&str>,
    channel: Channel,
    secrets: &Secrets,
) -> anyhow::Result<Rendered> {
    let today = settings.today();
    let until = settings.day_start(today);
    let cs = &settings.campaigns;
    let mut catalog = Catalog::load(
        db,
        &today.to_string(),
        until - cs.best_seller_days as i64 * 86_400,
        until,
    )
    .await?;
    let (customer, category) = who(db, c, customer_id, &catalog).await?;
    if catalog.best.is_empty() {
        // No products imported yet: sample picks, so the layout still shows.
        catalog = sample_catalog(category.as_deref().unwrap_or(SAMPLE_CATEGORY));
    }
    let bought = match customer_id {
        Some(id) => bought_products(db, &[id]).await?.remove(id),
        None => None,
    };
    let env = MessageEnv {
        brand_name: &settings.brand.name,
        currency: &settings.brand.currency,
        settings: cs,
        secrets,
        now: chrono::Utc::now().timestamp(),
    };
    let pick = Pick {
        customer: 0,
        held_out: false,
        holdout_draw: 0.5,
        channels: vec![channel],
        channel_reason: String::new(),
        not_before: 0,
        expires_at: 0,
        category,
    };
    let offer = build_offer(c, &customer, &pick, &catalog, bought.as_ref(), &env);
    let anonymous = Customer {
        customer_id: TEST_CUSTOMER.into(),
        ..customer
    };
    render(c, &anonymous, channel, &offer, &env)
}

/// The message addressed to `to` and marked as a test: `[TEST] ` before an email's subject
/// or an SMS's text (segments counted again). A WhatsApp template cannot be changed; the
/// provider's metadata marks it.
pub fn as_test(rendered: Rendered, to: &str) -> Rendered {
    match rendered {
        Rendered::Email { mut email, .. } => {
            email.subject = format!("{TEST_PREFIX}{}", email.subject);
            Rendered::Email {
                to: to.into(),
                email,
            }
        }
        Rendered::Sms { mut sms, .. } => {
            sms.text = format!("{TEST_PREFIX}{}", sms.text);
            let (encoding, units, segments) = crate::messages::gsm::measure(&sms.text);
            (sms.encoding, sms.units, sms.segments) = (encoding, units, segments);
            Rendered::Sms { to: to.into(), sms }
        }
        Rendered::Whatsapp { whatsapp, .. } => Rendered::Whatsapp {
            to: to.into(),
            whatsapp,
        },
    }
}

/// Sends a test message through the channel's provider; nothing is written to the database.
/// Returns the provider's name and its answer.
pub async fn send_test(
    providers: &Providers,
    campaign: &str,
    rendered: &Rendered,
) -> Result<(String, Accepted), PreviewError> {
    let channel = crate::delivery::providers::channel_of(rendered);
    let provider = providers
        .for_channel(channel)
        .ok_or(PreviewError::NoProvider(channel.as_str()))?;
    // A key of its own: an idempotent provider (file, webhook) must not take a second test for the first.
    let key = format!(
        "test/{campaign}/{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let msg = Outgoing {
        message_id: 0,
        idempotency_key: &key,
        campaign,
        customer_id: TEST_CUSTOMER,
        rendered,
        test: true,
    };
    let accepted = provider.send(&msg).await?;
    Ok((provider.name().to_string(), accepted))
}

/// Writes a rendered email's HTML to `path`.
pub fn write_html(rendered: &Rendered, path: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let Rendered::Email { email, .. } = rendered else {
        anyhow::bail!("only an email has HTML")
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, &email.html).with_context(|| format!("cannot write {}", path.display()))
}

/// `campaigns preview`: renders, then writes the HTML and/or sends the test. Exit 2 for bad
/// usage (unknown campaign or customer, an unusable `--to`), 1 when the send fails.
pub async fn run_cli(
    settings: &Settings,
    config: &Path,
    set: &crate::campaigns::CampaignSet,
    campaign: &str,
    to: Option<&str>,
    channel: Option<Channel>,
    customer: Option<&str>,
    html: Option<&Path>,
) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    let usage = |msg: String| -> anyhow::Result<ExitCode> {
        eprintln!("error: {msg}");
        Ok(ExitCode::from(2))
    };
    let Some(c) = set.get(campaign) else {
        let known = set
            .campaigns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return usage(format!(
            "no campaign named {campaign:?} in {} (known: {known})",
            set.dir.display()
        ));
    };
    if to.is_none() && html.is_none() {
        return usage(
            "say what to do with the preview: --to ADDRESS|PHONE (a test send) and/or --html FILE"
                .into(),
        );
    }
    let dest = match to.map(|t| destination(t, channel)).transpose() {
        Ok(d) => d,
        Err(e) => return usage(e.to_string()),
    };
    // Providers first: a missing credential is a configuration problem, found before any work.
    let providers = match dest {
        Some(_) => {
            crate::delivery::providers::install_crypto_provider();
            match settings.providers(&config.display().to_string()) {
                Ok(p) => Some(p),
                Err(e) => return Ok(crate::cli::config_failure(&e)),
            }
        }
        None => None,
    };
    let secrets = preview_secrets(settings);
    let db = crate::cli::connect(settings).await?;
    let result = async {
        if let Some(path) = html {
            let r = render_one(&db, settings, c, customer, Channel::Email, &secrets).await?;
            write_html(&r, path)?;
            println!("wrote the {} email ({}) to {}", c.name, match &r { Rendered::Email { email, .. } => email.subject.as_str(), _ => "" }, path.display());
        }
        if let (Some((address, ch)), Some(providers)) = (&dest, &providers) {
            if !c.channels.contains(ch) {
                eprintln!("note: campaign {} does not use {}; rendered for it anyway", c.name, ch.as_str());
            }
            let r = as_test(render_one(&db, settings, c, customer, *ch, &secrets).await?, address);
            let (provider, accepted) = send_test(providers, &c.name, &r).await?;
            println!(
                "sent a test {} of {} to {} through {provider}{} ({}); not recorded in the outbox or any count",
                ch.as_str(),
                c.name,
                crate::delivery::providers::mask_recipient(address),
                accepted.provider_message_id.map(|id| format!(" (id {id})")).unwrap_or_default(),
                r.summary()
            );
        }
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => match e.downcast_ref::<PreviewError>() {
            Some(
                p @ (PreviewError::UnknownCustomer(_)
                | PreviewError::Usage(_)
                | PreviewError::NoProvider(_)),
            ) => usage(p.to_string()),
            _ => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{RenderedSms, SmsEncoding};

    #[test]
    fn destinations_pick_the_channel_from_the_address() {
        assert_eq!(
            destination(" QA@Brand.example ", None).unwrap(),
            ("qa@brand.example".into(), Channel::Email)
        );
        assert_eq!(
            destination("+91 98000 00001", None).unwrap(),
            ("+919800000001".into(), Channel::Sms)
        );
        assert_eq!(
            destination("+919800000001", Some(Channel::Whatsapp))
                .unwrap()
                .1,
            Channel::Whatsapp
        );
        assert!(matches!(
            destination("qa@brand.example", Some(Channel::Sms)),
            Err(PreviewError::Usage(_))
        ));
        assert!(matches!(
            destination("nobody", None),
            Err(PreviewError::Usage(_))
        ));
    }

    #[test]
    fn test_sms_is_prefixed_and_measured_again() {
        // 155 septets fit one segment; `[` and `]` take two septets each, so the mark makes 164.
        let text = "x".repeat(155);
        let sms = RenderedSms {
            text: text.clone(),
            encoding: SmsEncoding::Gsm7,
            segments: 1,
            units: 155,
        };
        let Rendered::Sms { to, sms } = as_test(
            Rendered::Sms {
                to: "+1".into(),
                sms,
            },
            "+919800000001",
        ) else {
            panic!()
        };
        assert_eq!(to, "+919800000001");
        assert_eq!(sms.text, format!("[TEST] {text}"));
        assert_eq!((sms.units, sms.segments), (164, 2));
    }
}
