//! Phone numbers to E.164 (`+919876543210`), the form SMS and WhatsApp providers take.
//!
//! A number written internationally (`+…` or `00…`) keeps its digits (7 to 15; exports of
//! real customers hold numbers from ranges newer than any metadata). A national number
//! (`98765 43210`, `098765 43210`) is read in the numbering plan of the row's `country` (an
//! ISO 3166 alpha-2 code), else of `brand.country`, with libphonenumber's metadata (the
//! `phonenumber` crate: trunk prefixes, lengths, valid ranges), and must be a valid number
//! there. Anything else is refused with the reason, and the import drops it from its row.

use phonenumber::Mode;

pub type Country = phonenumber::country::Id;

/// The country an ISO 3166 alpha-2 code names (any case, trimmed), if the metadata knows it.
pub fn country(code: &str) -> Option<Country> {
    let code = code.trim();
    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    code.to_ascii_uppercase().parse().ok()
}

/// `s` (trimmed, not empty) in E.164, or why not.
pub fn to_e164(
    s: &str,
    row_country: Option<&str>,
    default: Option<Country>,
) -> Result<String, String> {
    let mut digits = String::with_capacity(s.len());
    let mut plus = false;
    for (i, c) in s.chars().enumerate() {
        match c {
            '+' if i == 0 => plus = true,
            '0'..='9' => digits.push(c),
            // Separators common in exports.
            ' ' | '-' | '(' | ')' | '.' | '/' => {}
            _ => return Err("not a phone number".into()),
        }
    }
    let international = if plus {
        Some(digits.as_str())
    } else {
        digits.strip_prefix("00")
    };
    if let Some(d) = international {
        return if (7..=15).contains(&d.len()) {
            Ok(format!("+{d}"))
        } else {
            Err("not a phone number (7 to 15 digits after the `+`)".into())
        };
    }
    let Some(region) = row_country.and_then(country).or(default) else {
        return Err("a national number (no `+` and country code) and no country to read it in: set the row's `country` or `brand.country`".into());
    };
    match phonenumber::parse(Some(region), &digits) {
        Ok(n) if phonenumber::is_valid(&n) => Ok(n.format().mode(Mode::E164).to_string()),
        _ => Err(format!("not a valid phone number in {}", region.as_ref())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_numbers_take_the_rows_or_the_brands_country() {
        let india = country("in");
        assert_eq!(
            to_e164("98765 43210", Some("IN"), None),
            Ok("+919876543210".into())
        );
        assert_eq!(
            to_e164("098765-43210", None, india),
            Ok("+919876543210".into())
        );
        // The row's country wins over the brand's; an unusable one falls back to it.
        assert_eq!(
            to_e164("07400 123456", Some("gb"), india),
            Ok("+447400123456".into())
        );
        assert_eq!(
            to_e164("98765 43210", Some("India"), india),
            Ok("+919876543210".into())
        );
        assert_eq!(
            to_e164("(201) 555-0123", Some("US"), None),
            Ok("+12015550123".into())
        );
        // International forms keep their digits.
        assert_eq!(
            to_e164("+91 98765-43210", None, None),
            Ok("+919876543210".into())
        );
        assert_eq!(
            to_e164("0091 98765 43210", Some("US"), None),
            Ok("+919876543210".into())
        );
        // Refused, with the reason.
        assert!(
            to_e164("98765 43210", None, None)
                .unwrap_err()
                .contains("no country")
        );
        assert_eq!(
            to_e164("12345", Some("IN"), None),
            Err("not a valid phone number in IN".into())
        );
        assert_eq!(
            to_e164("call me", Some("IN"), None),
            Err("not a phone number".into())
        );
        assert!(to_e164("+12", None, None).is_err());
        assert_eq!(country("XX"), None);
        assert_eq!(country("IND"), None);
    }
}
