//! SMS encoding and segment counting (GSM 03.38 / 3GPP TS 23.038).
//!
//! One character outside the GSM-7 alphabet (a `₹`, an emoji, Devanagari) switches the whole
//! message to UCS-2 and cuts a segment from 160 to 70 characters, so the cost of a campaign
//! depends on it; dry runs show the numbers computed here.

use serde::{Deserialize, Serialize};

/// How an SMS is encoded on the wire.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmsEncoding {
    /// GSM 7-bit default alphabet (plus its extension table).
    Gsm7,
    /// UTF-16 (UCS-2 on the wire), for anything GSM-7 can't carry.
    Ucs2,
}

impl SmsEncoding {
    pub fn name(self) -> &'static str {
        match self {
            SmsEncoding::Gsm7 => "gsm7",
            SmsEncoding::Ucs2 => "ucs2",
        }
    }
}

/// Septets in a single GSM-7 SMS.
pub const GSM7_SINGLE: usize = 160;
/// Septets per part of a concatenated GSM-7 SMS (7 septets go to the UDH).
pub const GSM7_PART: usize = 153;
/// UTF-16 code units in a single UCS-2 SMS.
pub const UCS2_SINGLE: usize = 70;
/// UTF-16 code units per part of a concatenated UCS-2 SMS.
pub const UCS2_PART: usize = 67;

/// The GSM 03.38 basic character set (one septet each).
const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                     ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The extension table (escape + character: two septets each).
const EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// Septets a character costs in GSM-7, or `None` if GSM-7 cannot encode it.
pub fn gsm7_septets(c: char) -> Option<usize> {
    if BASIC.contains(c) {
        Some(1)
    } else if EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Encoding, length in that encoding's units (GSM-7 septets or UTF-16 code units) and number
/// of SMS segments for `text`.
///
/// Segments follow the usual rule (≤160 septets → 1, else 153 per part; UCS-2 ≤70 → 1, else
/// 67 per part), except that a two-unit character (an extension-table escape pair, a UTF-16
/// surrogate pair) is never split across parts, as senders keep them whole; so a long message
/// can need one part more than `ceil(units / 153)`.
pub fn measure(text: &str) -> (SmsEncoding, usize, u32) {
    let septets: Option<Vec<usize>> = text.chars().map(gsm7_septets).collect();
    let (encoding, costs, single, part) = match septets {
        Some(costs) => (SmsEncoding::Gsm7, costs, GSM7_SINGLE, GSM7_PART),
        None => (
            SmsEncoding::Ucs2,
            text.chars().map(char::len_utf16).collect(),
            UCS2_SINGLE,
            UCS2_PART,
        ),
    };
    let units: usize = costs.iter().sum();
    let segments = if units <= single {
        1
    } else {
        count_parts(&costs, part)
    };
    (encoding, units, segments)
}

/// Parts needed when each part holds `part` units and no character is split.
fn count_parts(costs: &[usize], part: usize) -> u32 {
    let mut parts = 1u32;
    let mut used = 0;
    for &cost in costs {
        if used + cost > part {
            parts += 1;
            used = 0;
        }
        used += cost;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: usize) -> String {
        "a".repeat(n)
    }

    #[test]
    fn charset_tables() {
        assert_eq!(
            BASIC.chars().count(),
            128 - 1,
            "basic table minus the ESC slot"
        );
        assert_eq!(EXTENSION.chars().count(), 10);
        for c in "^{}\\[~]|€\u{0C}".chars() {
            assert_eq!(gsm7_septets(c), Some(2), "{c:?}");
        }
        for c in "@£$¥èÇ\nΔ_ÉÑ§¿à ".chars() {
            assert_eq!(gsm7_septets(c), Some(1), "{c:?}");
        }
        for c in ['₹', 'ç', 'á', '`', '\t', 'न', '😀'] {
            assert_eq!(gsm7_septets(c), None, "{c:?}");
        }
    }

    #[test]
    fn gsm7_boundaries() {
        assert_eq!(measure(""), (SmsEncoding::Gsm7, 0, 1));
        assert_eq!(measure(&a(160)), (SmsEncoding::Gsm7, 160, 1));
        assert_eq!(measure(&a(161)), (SmsEncoding::Gsm7, 161, 2));
        assert_eq!(measure(&a(306)), (SmsEncoding::Gsm7, 306, 2));
        assert_eq!(measure(&a(307)), (SmsEncoding::Gsm7, 307, 3));
        assert_eq!(measure(&a(459)), (SmsEncoding::Gsm7, 459, 3));
        assert_eq!(measure(&a(460)), (SmsEncoding::Gsm7, 460, 4));
    }

    #[test]
    fn extension_chars_cost_two_septets() {
        // 158 + € = 160 septets: still one SMS
        assert_eq!(measure(&(a(158) + "€")), (SmsEncoding::Gsm7, 160, 1));
        // 159 + € = 161 septets: the euro sign crosses the line
        assert_eq!(measure(&(a(159) + "€")), (SmsEncoding::Gsm7, 161, 2));
        assert_eq!(measure("{}"), (SmsEncoding::Gsm7, 4, 1));
    }

    #[test]
    fn escape_pair_is_not_split_across_parts() {
        // 152 + € + 7: the € would straddle septets 153/154, so it moves to part 2
        assert_eq!(
            measure(&(a(152) + "€" + &a(7))),
            (SmsEncoding::Gsm7, 161, 2)
        );
        // 306 septets fit ceil(306/153) = 2 parts only if the € is split; kept whole, it
        // needs a third part
        assert_eq!(
            measure(&(a(152) + "€" + &a(151))),
            (SmsEncoding::Gsm7, 305, 2)
        );
        assert_eq!(
            measure(&(a(152) + "€" + &a(152))),
            (SmsEncoding::Gsm7, 306, 3)
        );
    }

    #[test]
    fn ucs2_boundaries() {
        let hi = |n: usize| "न".repeat(n);
        assert_eq!(measure(&hi(70)), (SmsEncoding::Ucs2, 70, 1));
        assert_eq!(measure(&hi(71)), (SmsEncoding::Ucs2, 71, 2));
        assert_eq!(measure(&hi(134)), (SmsEncoding::Ucs2, 134, 2));
        assert_eq!(measure(&hi(135)), (SmsEncoding::Ucs2, 135, 3));
        // one ₹ makes an otherwise GSM text UCS-2
        assert_eq!(measure(&(a(69) + "₹")), (SmsEncoding::Ucs2, 70, 1));
        assert_eq!(measure(&(a(70) + "₹")), (SmsEncoding::Ucs2, 71, 2));
    }

    #[test]
    fn emoji_forces_ucs2_and_counts_surrogates() {
        // an emoji is two UTF-16 code units
        assert_eq!(measure(&(a(68) + "😀")), (SmsEncoding::Ucs2, 70, 1));
        assert_eq!(measure(&(a(69) + "😀")), (SmsEncoding::Ucs2, 71, 2));
        // a short GSM text becomes UCS-2 but stays one segment
        assert_eq!(measure("Hi 😀"), (SmsEncoding::Ucs2, 5, 1));
        // surrogate pair at units 67/68 moves whole to part 2
        assert_eq!(
            measure(&(a(66) + "😀" + &a(66))),
            (SmsEncoding::Ucs2, 134, 3)
        );
    }
}
