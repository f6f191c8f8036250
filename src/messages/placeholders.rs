//! Placeholders in CRM-written campaign copy: `{first_name}`, `{code}`, …
//!
//! The copy is trusted to *contain* placeholders; the values are customer data and are not.
//! That is why [`fill`] makes exactly one pass over the copy and never looks inside a value:
//! a customer named `{code}` must not receive someone's offer code in their greeting.

use super::Context;

/// Every placeholder campaign copy may use. Anything else is a typo the CRM team should hear
/// about when the campaign is loaded, not a customer when the message is sent.
pub const PLACEHOLDERS: &[&str] = &[
    "first_name",
    "category",
    "discount",
    "code",
    "products",
    "brand",
];

/// Greeting used when a customer's first name is unknown ("Hi there").
pub const FALLBACK_FIRST_NAME: &str = "there";

/// The six placeholder values, already formatted for display.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values {
    pub first_name: String,
    pub category: String,
    pub discount: String,
    pub code: String,
    pub products: String,
    pub brand: String,
}

impl Values {
    /// Values for one customer. Every value is passed through [`clean_value`], because names,
    /// categories and product titles come from imported data and may carry line breaks or
    /// control characters that would split an SMS, a WhatsApp parameter or an email header.
    pub fn from_context(ctx: &Context<'_>) -> Values {
        let first_name = ctx.first_name.map(clean_value).unwrap_or_default();
        let first_name = if first_name.is_empty() {
            FALLBACK_FIRST_NAME.to_string()
        } else {
            first_name
        };
        let products = ctx
            .products
            .iter()
            .map(|p| clean_value(&p.name))
            .filter(|name| !name.is_empty())
            .collect::<Vec<_>>()
            .join(", ");
        Values {
            first_name,
            category: ctx.category.map(clean_value).unwrap_or_default(),
            discount: ctx.discount.map(clean_value).unwrap_or_default(),
            code: ctx.code.map(clean_value).unwrap_or_default(),
            products,
            brand: clean_value(ctx.brand_name),
        }
    }

    /// The value for a placeholder name, or `None` when the name is not a placeholder.
    pub fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "first_name" => &self.first_name,
            "category" => &self.category,
            "discount" => &self.discount,
            "code" => &self.code,
            "products" => &self.products,
            "brand" => &self.brand,
            _ => return None,
        })
    }
}

/// Makes an untrusted value safe to put on one line: whitespace controls (newline, tab, …)
/// become spaces, other control characters and bidi overrides (which can make a text read
/// differently from what it is) are dropped, and the result is trimmed.
pub fn clean_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control() {
            if c.is_whitespace() {
                out.push(' ');
            }
        } else if !is_bidi_control(c) {
            out.push(c);
        }
    }
    out.trim().to_string()
}

/// Unicode bidirectional embedding/override/isolate controls (the "Trojan Source" set).
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// One lexical piece of copy text.
enum Piece<'a> {
    /// Text to copy through unchanged.
    Text(&'a str),
    /// `{{` or `}}`: a literal brace.
    Brace(char),
    /// `{name}`; `raw` is the whole `{name}` so an unknown one can be kept verbatim.
    Placeholder { name: &'a str, raw: &'a str },
    /// A `{` with no `}` before the next `{` or the end of the text.
    Unclosed { at: usize, raw: &'a str },
    /// A `}` that closes nothing.
    Unmatched { at: usize },
}

/// Splits copy text into pieces, left to right, in one pass. `fill` and
/// `unknown_placeholders` share it so that what is checked is exactly what is filled.
fn scan(text: &str, mut visit: impl FnMut(Piece<'_>)) {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut text_start = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'}' => {
                if text_start < i {
                    visit(Piece::Text(&text[text_start..i]));
                }
                let brace = bytes[i];
                if bytes.get(i + 1) == Some(&brace) {
                    visit(Piece::Brace(brace as char));
                    i += 2;
                } else if brace == b'}' {
                    visit(Piece::Unmatched { at: i });
                    i += 1;
                } else {
                    // `{` and `}` are ASCII, so byte offsets found here are char boundaries.
                    let rest = &text[i + 1..];
                    match rest.find(['{', '}']) {
                        Some(end) if rest.as_bytes()[end] == b'}' => {
                            visit(Piece::Placeholder {
                                name: &rest[..end],
                                raw: &text[i..i + end + 2],
                            });
                            i += end + 2;
                        }
                        Some(end) => {
                            visit(Piece::Unclosed {
                                at: i,
                                raw: &text[i..i + 1 + end],
                            });
                            i += 1 + end;
                        }
                        None => {
                            visit(Piece::Unclosed {
                                at: i,
                                raw: &text[i..],
                            });
                            i = bytes.len();
                        }
                    }
                }
                text_start = i;
            }
            _ => i += 1,
        }
    }
    if text_start < bytes.len() {
        visit(Piece::Text(&text[text_start..]));
    }
}

/// Problems in copy text: each `{name}` that is not in [`PLACEHOLDERS`] (reported as the
/// name) and each unbalanced brace (reported as a sentence with its byte offset).
/// `{{` and `}}` are literal braces. Whitespace inside braces is not trimmed: `{ code }` is
/// reported, because [`fill`] would leave it unreplaced.
pub fn unknown_placeholders(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    scan(text, |piece| match piece {
        Piece::Placeholder { name, .. } if !PLACEHOLDERS.contains(&name) => {
            problems.push(name.to_string());
        }
        Piece::Unclosed { at, .. } => {
            problems.push(format!(
                "unclosed '{{' at byte {at} (write '{{{{' for a literal brace)"
            ));
        }
        Piece::Unmatched { at } => {
            problems.push(format!(
                "unmatched '}}' at byte {at} (write '}}}}' for a literal brace)"
            ));
        }
        _ => {}
    });
    problems
}

/// Replaces every known `{name}` in `text` by its value in one pass; `{{`/`}}` become single
/// braces. Values are inserted as they are and never scanned again. Unknown placeholders and
/// stray braces are kept verbatim: copy should have been checked with
/// [`unknown_placeholders`] first, and the renderers refuse copy that fails that check.
pub fn fill(text: &str, values: &Values) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    scan(text, |piece| match piece {
        Piece::Text(t) => out.push_str(t),
        Piece::Brace(c) => out.push(c),
        Piece::Placeholder { name, raw } => out.push_str(values.get(name).unwrap_or(raw)),
        Piece::Unclosed { raw, .. } => out.push_str(raw),
        Piece::Unmatched { .. } => out.push('}'),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        Values {
            first_name: "Priya".into(),
            category: "Hair Care".into(),
            discount: "15%".into(),
            code: "BACK-7QK2M9XA".into(),
            products: "Bhringraj Hair Oil, Neem Comb".into(),
            brand: "Veda Roots".into(),
        }
    }

    #[test]
    fn fills_every_placeholder() {
        let text =
            "{brand}: Hi {first_name}, {discount} off {category} with {code}. Try {products}.";
        assert_eq!(
            fill(text, &values()),
            "Veda Roots: Hi Priya, 15% off Hair Care with BACK-7QK2M9XA. Try Bhringraj Hair Oil, Neem Comb."
        );
        assert!(unknown_placeholders(text).is_empty());
    }

    #[test]
    fn values_are_not_rescanned() {
        let mut v = values();
        v.first_name = "{code}".into();
        v.category = "{{brand}}".into();
        assert_eq!(
            fill("Hi {first_name} / {category}", &v),
            "Hi {code} / {{brand}}"
        );
    }

    #[test]
    fn double_braces_are_literal() {
        assert_eq!(
            fill("{{literal}} and {{code}}", &values()),
            "{literal} and {code}"
        );
        assert_eq!(fill("{{{code}}}", &values()), "{BACK-7QK2M9XA}");
        assert!(unknown_placeholders("{{literal}} {{{code}}}").is_empty());
    }

    #[test]
    fn catches_unknown_names() {
        assert_eq!(unknown_placeholders("Hi {firstname}!"), vec!["firstname"]);
        assert_eq!(unknown_placeholders("{ code }"), vec![" code "]);
        assert_eq!(unknown_placeholders("{Code}{}"), vec!["Code", ""]);
        // unknown ones survive filling so they are visible, never silently dropped
        assert_eq!(fill("Hi {firstname}", &values()), "Hi {firstname}");
    }

    #[test]
    fn catches_unbalanced_braces() {
        let p = unknown_placeholders("Hi {first_name");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("unclosed '{' at byte 3"), "{p:?}");

        let p = unknown_placeholders("Hi first_name}");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("unmatched '}' at byte 13"), "{p:?}");

        // `{` followed by another `{` before any `}`: the first one is unclosed, the second
        // one still opens a valid placeholder
        let p = unknown_placeholders("{a {code}");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("unclosed"), "{p:?}");
        assert_eq!(fill("{a {code}", &values()), "{a BACK-7QK2M9XA");
    }

    #[test]
    fn multibyte_text_around_placeholders() {
        assert_eq!(fill("नमस्ते {first_name} ₹", &values()), "नमस्ते Priya ₹");
        assert_eq!(fill("}é{", &values()), "}é{");
    }

    #[test]
    fn clean_value_flattens_and_strips() {
        assert_eq!(clean_value("  Pri\nya\t\u{7}\u{202E}x "), "Pri ya x");
        assert_eq!(clean_value("👩‍🦰 Asha"), "👩‍🦰 Asha");
    }
}
