//! Rendering a personalized retention offer for email, SMS and WhatsApp.
//!
//! Campaign copy comes from the CRM team (trusted, with `{placeholders}`); customer data
//! (names, product titles) is untrusted. Copy is filled first with [`placeholders::fill`],
//! in one pass, and the result goes into askama templates as a value: HTML templates escape
//! it, so neither a customer named `<script>` nor a stray `<b>` in copy becomes markup.
//! Plain-text channels (SMS, text part, WhatsApp) get control characters stripped instead.

pub mod codes;
pub mod gsm;
pub mod placeholders;

use std::fmt;
use std::str::FromStr;

use askama::Template;
use serde::{Deserialize, Serialize};

pub use gsm::SmsEncoding;
pub use placeholders::{PLACEHOLDERS, Values, fill, unknown_placeholders};

use placeholders::{clean_value, is_bidi_control};

/// Campaign copy as written by the CRM team, with placeholders.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageCopy {
    pub subject: String,
    pub headline: String,
    /// Paragraphs separated by a blank line; a single line break stays a line break.
    pub body: String,
    /// Call-to-action text, e.g. "Shop {category}".
    pub cta: String,
    /// SMS text; when absent the SMS is the headline and the call to action.
    #[serde(default)]
    pub sms: Option<String>,
}

/// A product shown in the offer, already formatted for display.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Product {
    pub name: String,
    /// Already formatted, e.g. "₹450".
    #[serde(default)]
    pub price: Option<String>,
    /// Product page; only http(s) links are used. The HTML card links the landing page
    /// (`cta_url`) instead when there is none.
    #[serde(default)]
    pub url: Option<String>,
    /// Product image (http(s)), shown in the HTML card.
    #[serde(default)]
    pub image_url: Option<String>,
}

/// Everything about one recipient and the brand a message needs.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub brand_name: &'a str,
    pub first_name: Option<&'a str>,
    pub category: Option<&'a str>,
    /// "15%" or "₹200".
    pub discount: Option<&'a str>,
    pub code: Option<&'a str>,
    pub products: &'a [Product],
    /// Landing page (https URL).
    pub cta_url: &'a str,
    /// One-click unsubscribe (RFC 8058), https.
    pub unsubscribe_url: &'a str,
    /// Address or `mailto:` URI for the `List-Unsubscribe` header.
    pub unsubscribe_mailto: Option<&'a str>,
    /// Footer (CAN-SPAM); a line break starts a new line.
    pub postal_address: &'a str,
}

/// Email layouts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EmailFamily {
    /// Designed email: button, product list.
    Offer,
    /// Looks like a personal note: no product cards, plain link. Often lands in the primary
    /// inbox tab where a designed email goes to promotions.
    Plain,
}

/// Names accepted by [`EmailFamily::from_str`], for config validation messages.
pub const EMAIL_FAMILIES: &[&str] = &["offer", "plain"];

impl EmailFamily {
    pub fn name(self) -> &'static str {
        match self {
            EmailFamily::Offer => "offer",
            EmailFamily::Plain => "plain",
        }
    }
}

impl fmt::Display for EmailFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An email family name that is not one of [`EMAIL_FAMILIES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown email family {0:?} (expected one of: offer, plain)")]
pub struct UnknownEmailFamily(pub String);

impl FromStr for EmailFamily {
    type Err = UnknownEmailFamily;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "offer" => Ok(EmailFamily::Offer),
            "plain" => Ok(EmailFamily::Plain),
            other => Err(UnknownEmailFamily(other.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template rendering failed: {0}")]
    Template(#[from] askama::Error),
    /// Copy with a typo'd placeholder or a stray brace would reach customers as `{firstname}`.
    #[error("{field}: unknown placeholders or unbalanced braces: {}", problems.join("; "))]
    Placeholders {
        field: String,
        problems: Vec<String>,
    },
    #[error("{field} is not a usable URL ({reason}): {url:?}")]
    InvalidUrl {
        field: &'static str,
        reason: &'static str,
        url: String,
    },
    #[error("invalid WhatsApp template {what}: {value:?}")]
    InvalidWhatsapp { what: &'static str, value: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub html: String,
    pub text: String,
    /// Value of the `List-Unsubscribe` header.
    pub list_unsubscribe: String,
    /// Value of the `List-Unsubscribe-Post` header (RFC 8058).
    pub list_unsubscribe_post: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RenderedSms {
    pub text: String,
    pub encoding: SmsEncoding,
    pub segments: u32,
    /// GSM-7 septets or UTF-16 code units, depending on `encoding`.
    pub units: usize,
}

/// A pre-approved WhatsApp template and the copy for its body parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WhatsappTemplate {
    /// Template name as approved by Meta (lowercase letters, digits, underscores).
    pub name: String,
    /// Template language code, e.g. "en" or "en_US".
    pub language: String,
    /// Copy for `{{1}}`, `{{2}}`, … with placeholders.
    pub params: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RenderedWhatsapp {
    pub name: String,
    pub language: String,
    pub params: Vec<String>,
    /// Human-readable summary for dry-run listings.
    pub preview: String,
}

/// Value of `List-Unsubscribe-Post` that asks for one-click unsubscribe (RFC 8058).
pub const LIST_UNSUBSCRIBE_POST: &str = "List-Unsubscribe=One-Click";

/// Length of the hidden preheader before it is cut at a word.
const PREHEADER_MAX_CHARS: usize = 120;

/// Most consecutive spaces WhatsApp accepts in a template parameter.
const WHATSAPP_MAX_SPACES: usize = 4;

// ---------------------------------------------------------------------------------------
// Templates. One view struct feeds all four email templates so the HTML and text parts
// can't drift apart in what they say.

#[derive(Debug)]
struct EmailView<'a> {
    subject: String,
    preheader: String,
    headline: String,
    /// Paragraphs, each a list of lines (HTML joins lines with `<br>`).
    paragraphs: Vec<Vec<String>>,
    products: Vec<ProductView<'a>>,
    cta: String,
    cta_url: &'a str,
    brand: String,
    postal_lines: Vec<String>,
    unsubscribe_url: &'a str,
}

#[derive(Debug)]
struct ProductView<'a> {
    name: String,
    price: Option<String>,
    /// The product's own page (the text part lists it).
    url: Option<&'a str>,
    /// Where the HTML card links: the product's page, else the landing page.
    link: &'a str,
    image_url: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "email/offer.html")]
struct OfferHtml<'a> {
    e: &'a EmailView<'a>,
}

#[derive(Template)]
#[template(path = "email/offer.txt", escape = "none")]
struct OfferText<'a> {
    e: &'a EmailView<'a>,
}

#[derive(Template)]
#[template(path = "email/plain.html")]
struct PlainHtml<'a> {
    e: &'a EmailView<'a>,
}

#[derive(Template)]
#[template(path = "email/plain.txt", escape = "none")]
struct PlainText<'a> {
    e: &'a EmailView<'a>,
}

#[derive(Template)]
#[template(path = "sms.txt", escape = "none")]
struct SmsText<'a> {
    brand: &'a str,
    message: &'a str,
    cta_url: &'a str,
}

#[derive(Template)]
#[template(path = "whatsapp_preview.txt", escape = "none")]
struct WhatsappPreview<'a> {
    name: &'a str,
    language: &'a str,
    params: &'a [String],
}

// ---------------------------------------------------------------------------------------
// Rendering

/// Renders the email in `family`: HTML and text parts, subject and unsubscribe headers.
pub fn render_email(
    family: EmailFamily,
    copy: &MessageCopy,
    ctx: &Context,
) -> Result<RenderedEmail, RenderError> {
    check_copy("subject", &copy.subject)?;
    check_copy("headline", &copy.headline)?;
    check_copy("body", &copy.body)?;
    check_copy("cta", &copy.cta)?;
    check_url("cta_url", ctx.cta_url, WEB_SCHEMES)?;
    check_url("unsubscribe_url", ctx.unsubscribe_url, WEB_SCHEMES)?;
    let mailto = ctx.unsubscribe_mailto.map(mailto_uri).transpose()?;

    let values = Values::from_context(ctx);
    // Header injection: a subject must be one line whatever the copy or the values hold.
    let subject = one_line(&fill(&copy.subject, &values));
    let paragraphs = paragraphs(&fill(&copy.body, &values));
    let preheader = preheader(paragraphs.first().map(|p| p.join(" ")).unwrap_or_default());
    let products = ctx
        .products
        .iter()
        .filter_map(|p| {
            let name = clean_value(&p.name);
            let url = p
                .url
                .as_deref()
                .filter(|u| check_url("product url", u, WEB_SCHEMES).is_ok());
            (!name.is_empty()).then(|| ProductView {
                name,
                price: p
                    .price
                    .as_deref()
                    .map(clean_value)
                    .filter(|s| !s.is_empty()),
                url,
                link: url.unwrap_or(ctx.cta_url),
                image_url: p
                    .image_url
                    .as_deref()
                    .filter(|u| check_url("product image", u, WEB_SCHEMES).is_ok()),
            })
        })
        .collect();
    let view = EmailView {
        subject: subject.clone(),
        preheader,
        headline: one_line(&fill(&copy.headline, &values)),
        paragraphs,
        products,
        cta: one_line(&fill(&copy.cta, &values)),
        cta_url: ctx.cta_url,
        brand: values.brand.clone(),
        postal_lines: ctx
            .postal_address
            .lines()
            .map(clean_value)
            .filter(|l| !l.is_empty())
            .collect(),
        unsubscribe_url: ctx.unsubscribe_url,
    };
    let (html, text) = match family {
        EmailFamily::Offer => (
            OfferHtml { e: &view }.render()?,
            OfferText { e: &view }.render()?,
        ),
        EmailFamily::Plain => (
            PlainHtml { e: &view }.render()?,
            PlainText { e: &view }.render()?,
        ),
    };

    let mut list_unsubscribe = format!("<{}>", ctx.unsubscribe_url);
    if let Some(mailto) = mailto {
        list_unsubscribe.push_str(&format!(", <{mailto}>"));
    }
    Ok(RenderedEmail {
        subject,
        html,
        text,
        list_unsubscribe,
        list_unsubscribe_post: LIST_UNSUBSCRIBE_POST.to_string(),
    })
}

/// Renders the SMS: `Brand: message link` and the opt-out line, with its encoding and
/// segment count.
pub fn render_sms(copy: &MessageCopy, ctx: &Context) -> Result<RenderedSms, RenderError> {
    let values = Values::from_context(ctx);
    let message = match &copy.sms {
        Some(sms) => {
            check_copy("sms", sms)?;
            fill(sms, &values)
        }
        None => {
            check_copy("headline", &copy.headline)?;
            check_copy("cta", &copy.cta)?;
            format!(
                "{} {}",
                fill(&copy.headline, &values),
                fill(&copy.cta, &values)
            )
        }
    };
    check_url("cta_url", ctx.cta_url, WEB_SCHEMES)?;
    let message = clean_sms(&message);
    // The template starts every SMS with `Brand: `; copy that starts with the brand too would
    // say it twice ("Veda Roots: Veda Roots: …") and often cost a second segment.
    let message = strip_brand(&message, &values.brand);
    let text = SmsText {
        brand: &values.brand,
        message: &message,
        cta_url: ctx.cta_url,
    }
    .render()?;
    let (encoding, units, segments) = gsm::measure(&text);
    Ok(RenderedSms {
        text,
        encoding,
        segments,
        units,
    })
}

/// Fills and sanitizes the body parameters of a WhatsApp template message.
pub fn render_whatsapp(
    t: &WhatsappTemplate,
    ctx: &Context,
) -> Result<RenderedWhatsapp, RenderError> {
    check_whatsapp_name(&t.name)?;
    check_whatsapp_language(&t.language)?;
    let values = Values::from_context(ctx);
    let params = t
        .params
        .iter()
        .enumerate()
        .map(|(i, param)| {
            check_copy(&format!("whatsapp param {}", i + 1), param)?;
            Ok(whatsapp_param(&fill(param, &values)))
        })
        .collect::<Result<Vec<_>, RenderError>>()?;
    let preview = WhatsappPreview {
        name: &t.name,
        language: &t.language,
        params: &params,
    }
    .render()?;
    Ok(RenderedWhatsapp {
        name: t.name.clone(),
        language: t.language.clone(),
        params,
        preview,
    })
}

// ---------------------------------------------------------------------------------------
// Helpers

fn check_copy(field: &str, text: &str) -> Result<(), RenderError> {
    let problems = unknown_placeholders(text);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RenderError::Placeholders {
            field: field.to_string(),
            problems,
        })
    }
}

/// Links may be plain http for local demos (`campaigns.public_base_url` defaults to the
/// daemon on 127.0.0.1); production configs use https.
const WEB_SCHEMES: &[&str] = &["https://", "http://"];

/// A URL fit for an `href` and a header: one of `schemes`, printable ASCII, nothing that
/// ends an angle-bracketed header value or an attribute.
fn check_url(field: &'static str, url: &str, schemes: &[&str]) -> Result<(), RenderError> {
    let invalid = |reason| RenderError::InvalidUrl {
        field,
        reason,
        url: url.to_string(),
    };
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let Some(scheme) = schemes.iter().find(|s| lower.starts_with(**s)) else {
        return Err(invalid(if schemes.len() == 1 {
            "must be https"
        } else {
            "must be http(s)"
        }));
    };
    if url.len() == scheme.len() {
        return Err(invalid("no host"));
    }
    if !url
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\'))
    {
        return Err(invalid(
            "contains spaces, control, non-ASCII or <>\"\\ characters",
        ));
    }
    Ok(())
}

/// `mailto:` URI for `List-Unsubscribe` from an address or an existing `mailto:` URI.
fn mailto_uri(value: &str) -> Result<String, RenderError> {
    let value = value.trim();
    let address = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("mailto:") => &value[7..],
        _ => value,
    };
    let ok = address.contains('@')
        && address
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\' | b','));
    if ok {
        Ok(format!("mailto:{address}"))
    } else {
        Err(RenderError::InvalidUrl {
            field: "unsubscribe_mailto",
            reason: "not an email address or mailto: URI",
            url: value.to_string(),
        })
    }
}

/// Collapses a value to one line: every run of whitespace (including CR/LF) becomes a space
/// and other control characters go.
fn one_line(text: &str) -> String {
    clean_value(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits body text into paragraphs at blank lines; each paragraph keeps its lines.
fn paragraphs(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = clean_value(line);
        if line.is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Preview text shown by mail clients after the subject, cut at a word boundary.
fn preheader(text: String) -> String {
    if text.chars().count() <= PREHEADER_MAX_CHARS {
        return text;
    }
    let cut: String = text.chars().take(PREHEADER_MAX_CHARS).collect();
    let cut = match cut.rfind(' ') {
        Some(space) if space > 0 => &cut[..space],
        _ => &cut[..],
    };
    format!("{}…", cut.trim_end_matches([',', '.', ';', ':', ' ']))
}

/// `text` without a leading `brand` (any case) and the `:`, `-` or `|` and spaces after it.
pub fn strip_brand<'t>(text: &'t str, brand: &str) -> &'t str {
    let brand = brand.trim();
    if brand.is_empty() {
        return text;
    }
    match text.get(..brand.len()) {
        Some(head) if head.eq_ignore_ascii_case(brand) => {
            let rest = &text[brand.len()..];
            // Only the whole name: "Veda Rootsy" is not "Veda Roots".
            if rest.chars().next().is_some_and(char::is_alphanumeric) {
                return text;
            }
            let rest = rest
                .trim_start()
                .trim_start_matches([':', '-', '|', '–', '—'])
                .trim_start();
            if rest.is_empty() { text } else { rest }
        }
        _ => text,
    }
}

/// SMS text: line breaks kept (they're in the GSM alphabet), other control characters
/// and bidi overrides dropped, tabs and CRs turned into spaces.
fn clean_sms(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let cleaned: String = text
        .chars()
        .filter_map(|c| match c {
            '\n' => Some('\n'),
            c if c.is_control() => c.is_whitespace().then_some(' '),
            c if is_bidi_control(c) => None,
            c => Some(c),
        })
        .collect();
    cleaned.trim().to_string()
}

/// A body parameter WhatsApp accepts: no newlines or tabs, at most 4 consecutive spaces,
/// not empty.
fn whatsapp_param(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut spaces = 0;
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if is_bidi_control(c) {
            continue;
        }
        if c == ' ' {
            spaces += 1;
            if spaces > WHATSAPP_MAX_SPACES {
                continue;
            }
        } else {
            spaces = 0;
        }
        out.push(c);
    }
    let out = out.trim();
    if out.is_empty() {
        "-".to_string()
    } else {
        out.to_string()
    }
}

fn check_whatsapp_name(name: &str) -> Result<(), RenderError> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(RenderError::InvalidWhatsapp {
            what: "name",
            value: name.to_string(),
        })
    }
}

/// Language codes as WhatsApp lists them: `en`, `fil`, `en_US`, `zh_HK`.
fn check_whatsapp_language(language: &str) -> Result<(), RenderError> {
    let (lang, region) = match language.split_once('_') {
        Some((lang, region)) => (lang, Some(region)),
        None => (language, None),
    };
    let ok = (2..=3).contains(&lang.len())
        && lang.bytes().all(|b| b.is_ascii_lowercase())
        && region.is_none_or(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()));
    if ok {
        Ok(())
    } else {
        Err(RenderError::InvalidWhatsapp {
            what: "language",
            value: language.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unsubscribe::{Claims, sign};

    const CODE_SECRET: &[u8] = b"fixture offer-code secret, not for production";
    const UNSUBSCRIBE_SECRET: &[u8] = b"fixture unsubscribe secret, not for production";

    /// A realistic recipient: a lapsed Hair Care customer of an Ayurveda brand.
    struct Fixture {
        products: Vec<Product>,
        code: String,
        unsubscribe_url: String,
    }

    fn fixture() -> Fixture {
        let products = vec![
            Product {
                name: "Bhringraj Hair Oil (100 ml)".into(),
                price: Some("₹450".into()),
                url: Some("https://vedaroots.example/p/bhringraj-hair-oil?utm_source=email&utm_campaign=winback".into()),
                image_url: Some("https://cdn.vedaroots.example/img/bhringraj-hair-oil.jpg".into()),
            },
            Product {
                name: "Amla & Shikakai Shampoo".into(),
                price: Some("₹380".into()),
                url: Some("https://vedaroots.example/p/amla-shikakai-shampoo".into()),
                image_url: None,
            },
            Product { name: "Neem Wood Comb".into(), price: Some("₹199".into()), url: None, image_url: None },
        ];
        let token = sign(
            UNSUBSCRIBE_SECRET,
            &Claims {
                customer_id: "cust-1042".into(),
                channel: "email".into(),
                issued_at: 1_750_000_000,
            },
        );
        Fixture {
            products,
            code: codes::offer_code(CODE_SECRET, "BACK", "winback-hair-care", "cust-1042"),
            unsubscribe_url: format!("https://vedaroots.example/u/{token}"),
        }
    }

    fn ctx(f: &Fixture) -> Context<'_> {
        Context {
            brand_name: "Veda Roots",
            first_name: Some("Priya"),
            category: Some("Hair Care"),
            discount: Some("15%"),
            code: Some(&f.code),
            products: &f.products,
            cta_url: "https://vedaroots.example/c/hair-care?utm_source=email&utm_campaign=winback",
            unsubscribe_url: &f.unsubscribe_url,
            unsubscribe_mailto: Some("unsubscribe@vedaroots.example"),
            postal_address: "Veda Roots Wellness Pvt. Ltd.\n14 Lavelle Road, Bengaluru 560001, India",
        }
    }

    fn copy() -> MessageCopy {
        MessageCopy {
            subject: "{first_name}, we miss you: {discount} off {category}".into(),
            headline: "We miss you, {first_name}!".into(),
            body: "It has been a while since your last {category} order, and your hair \
                   routine deserves a little care.\n\n\
                   Here is {discount} off everything in {category} with code {code}.\n\
                   Valid for 7 days on orders above ₹499."
                .into(),
            cta: "Shop {category}".into(),
            sms: Some(
                "Hi {first_name}, we miss you! Get {discount} off {category} with code {code}."
                    .into(),
            ),
        }
    }

    /// SMS links are short links: a full UTM URL alone would eat half a segment.
    const SMS_LINK: &str = "https://vedaroots.example/s/h7Kq2";

    fn sms_summary(sms: &RenderedSms) -> String {
        format!(
            "encoding: {}\nunits: {}\nsegments: {}\n---\n{}",
            sms.encoding.name(),
            sms.units,
            sms.segments,
            sms.text
        )
    }

    #[test]
    fn fixture_code_is_derived() {
        let f = fixture();
        assert!(
            f.code.starts_with("BACK-") && f.code.len() == 13,
            "{}",
            f.code
        );
    }

    #[test]
    fn offer_email_snapshots() {
        let f = fixture();
        let email = render_email(EmailFamily::Offer, &copy(), &ctx(&f)).unwrap();
        assert_eq!(email.subject, "Priya, we miss you: 15% off Hair Care");
        assert_eq!(
            email.list_unsubscribe,
            format!(
                "<{}>, <mailto:unsubscribe@vedaroots.example>",
                f.unsubscribe_url
            )
        );
        assert_eq!(email.list_unsubscribe_post, "List-Unsubscribe=One-Click");
        insta::assert_snapshot!("offer_html", email.html);
        insta::assert_snapshot!("offer_text", email.text);
    }

    #[test]
    fn plain_email_snapshots() {
        let f = fixture();
        let email = render_email(EmailFamily::Plain, &copy(), &ctx(&f)).unwrap();
        assert!(
            !email.html.contains("Bhringraj"),
            "plain family shows no product cards"
        );
        insta::assert_snapshot!("plain_html", email.html);
        insta::assert_snapshot!("plain_text", email.text);
    }

    #[test]
    fn sms_gsm_snapshot() {
        let f = fixture();
        let sms = render_sms(
            &copy(),
            &Context {
                cta_url: SMS_LINK,
                ..ctx(&f)
            },
        )
        .unwrap();
        assert_eq!(sms.encoding, SmsEncoding::Gsm7);
        assert_eq!(sms.segments, 1);
        insta::assert_snapshot!("sms_gsm", sms_summary(&sms));
    }

    #[test]
    fn sms_ucs2_snapshot() {
        let f = fixture();
        let copy = MessageCopy {
            sms: Some(
                "नमस्ते {first_name}, आपकी याद आई! {category} पर {discount} की छूट, कोड {code}".into(),
            ),
            ..copy()
        };
        let sms = render_sms(
            &copy,
            &Context {
                cta_url: SMS_LINK,
                ..ctx(&f)
            },
        )
        .unwrap();
        assert_eq!(sms.encoding, SmsEncoding::Ucs2);
        assert!(sms.segments > 1);
        insta::assert_snapshot!("sms_ucs2", sms_summary(&sms));
    }

    #[test]
    fn sms_copy_starting_with_the_brand_gets_one_prefix() {
        let f = fixture();
        for sms in [
            "{brand}: Hi {first_name}, {discount} off.",
            "VEDA ROOTS - Hi {first_name}, {discount} off.",
            "Hi {first_name}, {discount} off.",
        ] {
            let copy = MessageCopy {
                sms: Some(sms.into()),
                ..copy()
            };
            let r = render_sms(
                &copy,
                &Context {
                    cta_url: SMS_LINK,
                    ..ctx(&f)
                },
            )
            .unwrap();
            assert_eq!(
                r.text,
                format!("Veda Roots: Hi Priya, 15% off. {SMS_LINK}\nReply STOP to opt out"),
                "{sms}"
            );
            assert_eq!(r.segments, 1, "{sms}");
        }
        assert_eq!(
            strip_brand("Veda Rootsy sale", "Veda Roots"),
            "Veda Rootsy sale"
        );
        assert_eq!(strip_brand("Veda Roots", "Veda Roots"), "Veda Roots");
    }

    #[test]
    fn sms_without_sms_copy_uses_headline_and_cta() {
        let f = fixture();
        let copy = MessageCopy {
            sms: None,
            ..copy()
        };
        let sms = render_sms(&copy, &ctx(&f)).unwrap();
        assert_eq!(
            sms.text,
            "Veda Roots: We miss you, Priya! Shop Hair Care \
             https://vedaroots.example/c/hair-care?utm_source=email&utm_campaign=winback\n\
             Reply STOP to opt out"
        );
    }

    #[test]
    fn whatsapp_preview_snapshot() {
        let f = fixture();
        let t = WhatsappTemplate {
            name: "winback_offer_v2".into(),
            language: "en".into(),
            params: vec![
                "{first_name}".into(),
                "{discount}".into(),
                "{category}".into(),
                "{code}".into(),
                "{products}".into(),
            ],
        };
        let wa = render_whatsapp(&t, &ctx(&f)).unwrap();
        assert_eq!(wa.params[0], "Priya");
        assert_eq!(wa.params[3], f.code);
        insta::assert_snapshot!("whatsapp_preview", wa.preview);
    }

    /// A first name that is both markup and a placeholder must come out as literal text.
    const HOSTILE_NAME: &str = "<script>alert(1)</script>{code}";
    const SECRET_CODE: &str = "BACK-SECRET00";

    fn hostile_ctx(f: &Fixture) -> Context<'_> {
        Context {
            first_name: Some(HOSTILE_NAME),
            code: Some(SECRET_CODE),
            ..ctx(f)
        }
    }

    /// Copy that greets the customer but never mentions the code.
    fn greeting_copy() -> MessageCopy {
        MessageCopy {
            subject: "Hi {first_name}".into(),
            headline: "Hi {first_name}".into(),
            body: "Hi {first_name}, we miss you.".into(),
            cta: "Come back, {first_name}".into(),
            sms: Some("Hi {first_name}".into()),
        }
    }

    #[test]
    fn hostile_first_name_in_email() {
        let f = fixture();
        for family in [EmailFamily::Offer, EmailFamily::Plain] {
            let email = render_email(family, &greeting_copy(), &hostile_ctx(&f)).unwrap();
            assert!(!email.html.contains("<script"), "{family}: {}", email.html);
            assert!(
                email
                    .html
                    .contains("&#60;script&#62;alert(1)&#60;/script&#62;{code}"),
                "{family}"
            );
            assert!(
                !email.html.contains(SECRET_CODE),
                "{family}: value was re-scanned"
            );
            assert!(
                !email.text.contains(SECRET_CODE),
                "{family}: value was re-scanned"
            );
            assert!(
                email.text.contains(HOSTILE_NAME),
                "{family}: text part shows the name as is"
            );
            assert_eq!(email.subject, format!("Hi {HOSTILE_NAME}"));
        }
    }

    #[test]
    fn hostile_first_name_in_sms_and_whatsapp() {
        let f = fixture();
        let sms = render_sms(&greeting_copy(), &hostile_ctx(&f)).unwrap();
        assert!(
            sms.text
                .starts_with(&format!("Veda Roots: Hi {HOSTILE_NAME} ")),
            "{}",
            sms.text
        );
        assert!(!sms.text.contains(SECRET_CODE));

        let t = WhatsappTemplate {
            name: "greeting".into(),
            language: "en".into(),
            params: vec!["{first_name}".into()],
        };
        let wa = render_whatsapp(&t, &hostile_ctx(&f)).unwrap();
        assert_eq!(wa.params, vec![HOSTILE_NAME.to_string()]);
        assert!(!wa.preview.contains(SECRET_CODE));
    }

    #[test]
    fn crm_markup_is_escaped_in_html() {
        let f = fixture();
        let copy = MessageCopy {
            subject: "Tom & Jerry <b>love</b> {category}".into(),
            headline: "Fish & <b>chips</b>".into(),
            body: "Salt & pepper <b>bold</b> <img src=x onerror=alert(1)>".into(),
            cta: "Shop <i>now</i> & save".into(),
            sms: None,
        };
        for family in [EmailFamily::Offer, EmailFamily::Plain] {
            let email = render_email(family, &copy, &ctx(&f)).unwrap();
            // (`<img` alone is the product cards' own picture.)
            for tag in ["<b>", "<i>", "<img src=x"] {
                assert!(
                    !email.html.contains(tag),
                    "{family}: {tag} reached the HTML"
                );
            }
            assert!(
                email
                    .html
                    .contains("Salt &#38; pepper &#60;b&#62;bold&#60;/b&#62;"),
                "{family}"
            );
            assert!(
                email
                    .html
                    .contains("Shop &#60;i&#62;now&#60;/i&#62; &#38; save"),
                "{family}"
            );
            assert!(
                email.html.contains(
                    "<title>Tom &#38; Jerry &#60;b&#62;love&#60;/b&#62; Hair Care</title>"
                )
            );
            // the text part is not HTML: no entities there
            assert!(email.text.contains("Salt & pepper <b>bold</b>"), "{family}");
            // the subject header is raw text too
            assert_eq!(email.subject, "Tom & Jerry <b>love</b> Hair Care");
        }
    }

    #[test]
    fn urls_are_escaped_and_checked() {
        let f = fixture();
        let email = render_email(EmailFamily::Offer, &copy(), &ctx(&f)).unwrap();
        assert!(email.html.contains(
            r#"href="https://vedaroots.example/c/hair-care?utm_source=email&#38;utm_campaign=winback""#
        ));

        let products = vec![
            Product {
                name: "Evil".into(),
                price: None,
                url: Some("javascript:alert(1)".into()),
                image_url: Some("javascript:alert(2)".into()),
            },
            Product {
                name: "Quote".into(),
                price: None,
                url: Some("https://x.example/\" onclick=\"x".into()),
                image_url: Some("https://x.example/i.png\" onerror=\"x".into()),
            },
        ];
        let c = Context {
            products: &products,
            ..ctx(&f)
        };
        let email = render_email(EmailFamily::Offer, &copy(), &c).unwrap();
        assert!(!email.html.contains("javascript:"));
        assert!(!email.html.contains("onclick"));
        assert!(!email.html.contains("onerror") && !email.html.contains("<img"));
        // An unusable product link falls back to the landing page.
        assert!(email.html.contains(r#"href="https://vedaroots.example/c/hair-care?utm_source=email&#38;utm_campaign=winback" style="color:#1f2a1c;text-decoration:none;font-weight:bold;">Evil</a>"#), "{}", email.html);

        for bad in [
            "ftp://vedaroots.example/c",
            "javascript:alert(1)",
            "https://",
            "https://a b",
            "https://a>b",
        ] {
            let c = Context {
                cta_url: bad,
                ..ctx(&f)
            };
            assert!(
                matches!(
                    render_email(EmailFamily::Offer, &copy(), &c),
                    Err(RenderError::InvalidUrl {
                        field: "cta_url",
                        ..
                    })
                ),
                "{bad}"
            );
            let c = Context {
                unsubscribe_url: bad,
                ..ctx(&f)
            };
            assert!(
                matches!(
                    render_email(EmailFamily::Plain, &copy(), &c),
                    Err(RenderError::InvalidUrl { .. })
                ),
                "{bad}"
            );
            let c = Context {
                cta_url: bad,
                ..ctx(&f)
            };
            assert!(render_sms(&copy(), &c).is_err(), "{bad}");
        }
        assert!(
            render_email(
                EmailFamily::Offer,
                &copy(),
                &Context {
                    cta_url: "HTTPS://X.EXAMPLE/",
                    ..ctx(&f)
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn list_unsubscribe_variants() {
        let f = fixture();
        let c = Context {
            unsubscribe_mailto: None,
            ..ctx(&f)
        };
        let email = render_email(EmailFamily::Offer, &copy(), &c).unwrap();
        assert_eq!(email.list_unsubscribe, format!("<{}>", f.unsubscribe_url));

        let c = Context {
            unsubscribe_mailto: Some("mailto:u@x.example?subject=unsubscribe"),
            ..ctx(&f)
        };
        let email = render_email(EmailFamily::Offer, &copy(), &c).unwrap();
        assert!(
            email
                .list_unsubscribe
                .ends_with(", <mailto:u@x.example?subject=unsubscribe>")
        );

        for bad in ["not an address", "a@b>\r\nBcc: x@y", ""] {
            let c = Context {
                unsubscribe_mailto: Some(bad),
                ..ctx(&f)
            };
            assert!(
                render_email(EmailFamily::Offer, &copy(), &c).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn subject_cannot_inject_headers() {
        let f = fixture();
        let c = Context {
            first_name: Some("Priya\r\nBcc: victim@x.example"),
            ..ctx(&f)
        };
        let copy = MessageCopy {
            subject: "Hi {first_name}\r\nX-Evil: 1".into(),
            ..copy()
        };
        let email = render_email(EmailFamily::Offer, &copy, &c).unwrap();
        assert!(!email.subject.contains(['\r', '\n']), "{:?}", email.subject);
        assert_eq!(email.subject, "Hi Priya Bcc: victim@x.example X-Evil: 1");
    }

    #[test]
    fn missing_category_and_no_products() {
        let f = fixture();
        let c = Context {
            category: None,
            products: &[],
            first_name: None,
            ..ctx(&f)
        };
        let copy = MessageCopy {
            subject: "{first_name}, we miss you".into(),
            headline: "Hi {first_name}{category}".into(),
            body: "Come back for {discount} off.".into(),
            cta: "Shop now".into(),
            sms: None,
        };
        let email = render_email(EmailFamily::Offer, &copy, &c).unwrap();
        assert_eq!(email.subject, "there, we miss you");
        assert!(email.html.contains(">Hi there</h1>"));
        assert!(
            !email.html.contains("class=\"products\""),
            "empty product section rendered"
        );
        assert!(!email.html.contains("Picked for you"));
        assert!(!email.text.contains("Picked for you"));
        assert!(
            email
                .text
                .starts_with("Hi there\n\nCome back for 15% off.\n\nShop now: https://"),
            "{}",
            email.text
        );
    }

    #[test]
    fn paragraphs_and_line_breaks() {
        assert_eq!(
            paragraphs("one\ntwo\n\n\n  \nthree\r\n\r\nfour\n"),
            vec![
                vec!["one".to_string(), "two".into()],
                vec!["three".into()],
                vec!["four".into()]
            ]
        );
        let f = fixture();
        let email = render_email(EmailFamily::Offer, &copy(), &ctx(&f)).unwrap();
        assert!(
            email
                .html
                .contains(&format!("with code {}.<br>Valid for 7 days", f.code))
        );
    }

    #[test]
    fn preheader_is_cut_at_a_word() {
        let long = "word ".repeat(40);
        let p = preheader(long.trim().to_string());
        assert!(p.ends_with("word…"), "{p}");
        assert!(p.chars().count() <= PREHEADER_MAX_CHARS + 1);
        assert_eq!(preheader("short".into()), "short");
    }

    #[test]
    fn unknown_placeholders_are_refused() {
        let f = fixture();
        let bad = MessageCopy {
            headline: "Hi {firstname}".into(),
            ..copy()
        };
        let err = render_email(EmailFamily::Offer, &bad, &ctx(&f)).unwrap_err();
        assert!(
            matches!(&err, RenderError::Placeholders { field, problems } if field == "headline" && problems == &["firstname"])
        );
        assert!(err.to_string().contains("firstname"), "{err}");

        let bad = MessageCopy {
            sms: Some("Code { code }".into()),
            ..copy()
        };
        assert!(matches!(
            render_sms(&bad, &ctx(&f)),
            Err(RenderError::Placeholders { .. })
        ));

        let t = WhatsappTemplate {
            name: "x".into(),
            language: "en".into(),
            params: vec!["ok".into(), "{oops".into()],
        };
        let err = render_whatsapp(&t, &ctx(&f)).unwrap_err();
        assert!(
            matches!(&err, RenderError::Placeholders { field, .. } if field == "whatsapp param 2"),
            "{err}"
        );
    }

    #[test]
    fn sms_strips_control_characters() {
        let f = fixture();
        let c = Context {
            first_name: Some("Pri\u{0}ya\u{1b}[31m\n"),
            brand_name: "Veda\tRoots",
            ..ctx(&f)
        };
        let copy = MessageCopy {
            sms: Some("Hi {first_name}!\r\nLine two\u{7}".into()),
            ..copy()
        };
        let sms = render_sms(&copy, &c).unwrap();
        assert_eq!(
            sms.text,
            "Veda Roots: Hi Priya[31m!\nLine two \
             https://vedaroots.example/c/hair-care?utm_source=email&utm_campaign=winback\nReply STOP to opt out"
        );
        assert!(!sms.text.chars().any(|c| c.is_control() && c != '\n'));
    }

    #[test]
    fn whatsapp_params_are_sanitized() {
        assert_eq!(whatsapp_param("a\nb\tc\r\nd"), "a b c  d");
        assert_eq!(whatsapp_param("a      b"), "a    b");
        assert_eq!(whatsapp_param("  \n\t "), "-");
        assert_eq!(whatsapp_param(""), "-");
        assert_eq!(whatsapp_param(" x "), "x");

        let f = fixture();
        let c = Context {
            category: None,
            ..ctx(&f)
        };
        let t = WhatsappTemplate {
            name: "winback".into(),
            language: "en_US".into(),
            params: vec!["{category}".into(), "Line 1\n\nLine 2\t\tend".into()],
        };
        let wa = render_whatsapp(&t, &c).unwrap();
        assert_eq!(
            wa.params,
            vec!["-".to_string(), "Line 1  Line 2  end".into()]
        );
        for p in &wa.params {
            assert!(
                !p.contains(['\n', '\t']) && !p.contains("     ") && !p.is_empty() && p.trim() == p
            );
        }
    }

    #[test]
    fn whatsapp_name_and_language_are_checked() {
        let f = fixture();
        let t = |name: &str, language: &str| WhatsappTemplate {
            name: name.into(),
            language: language.into(),
            params: vec![],
        };
        assert!(render_whatsapp(&t("winback_2", "en"), &ctx(&f)).is_ok());
        assert!(render_whatsapp(&t("winback_2", "fil"), &ctx(&f)).is_ok());
        assert!(render_whatsapp(&t("winback_2", "zh_HK"), &ctx(&f)).is_ok());
        for (name, language) in [
            ("Winback", "en"),
            ("", "en"),
            ("a b", "en"),
            ("ok", "EN"),
            ("ok", "en-US"),
            ("ok", ""),
            ("ok", "en_us"),
        ] {
            assert!(
                matches!(
                    render_whatsapp(&t(name, language), &ctx(&f)),
                    Err(RenderError::InvalidWhatsapp { .. })
                ),
                "{name:?} {language:?}"
            );
        }
    }

    #[test]
    fn email_family_names() {
        for name in EMAIL_FAMILIES {
            let family: EmailFamily = name.parse().unwrap();
            assert_eq!(family.name(), *name);
        }
        assert_eq!("plain".parse::<EmailFamily>(), Ok(EmailFamily::Plain));
        assert!("Offer".parse::<EmailFamily>().is_err());
    }

    #[test]
    fn rendered_structs_serialize() {
        let f = fixture();
        let sms = render_sms(&copy(), &ctx(&f)).unwrap();
        let json = serde_json::to_string(&sms).unwrap();
        assert!(json.contains("\"encoding\":\"gsm7\""), "{json}");
        assert_eq!(serde_json::from_str::<RenderedSms>(&json).unwrap(), sms);
    }
}
