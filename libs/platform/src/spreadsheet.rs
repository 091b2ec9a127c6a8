//! CSV cells that a spreadsheet will not run.
//!
//! Excel, LibreOffice and Google Sheets treat a cell that starts with `=`,
//! `+`, `-` or `@` (and, in some, a tab or carriage return) as a formula: a
//! tenant's text exported to CSV and opened by someone else could run one
//! (CSV injection). Every CSV the platform writes passes tenant-controlled
//! text through [`cell`], which prefixes such a value with `'` — shown as
//! text, not evaluated. Numbers the platform formats itself are written as
//! they are. JSON and JSONL exports are unchanged and lossless.

use std::borrow::Cow;

/// `text` as a CSV cell no spreadsheet evaluates.
pub fn cell(text: &str) -> Cow<'_, str> {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{text}")),
        _ => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_become_text_and_everything_else_stays() {
        for formula in ["=HYPERLINK(\"x\")", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"] {
            assert_eq!(cell(formula), format!("'{formula}"));
        }
        for plain in ["", "gpt-4o", "a=b", "1.5", "'quoted", "ümlaut"] {
            assert!(matches!(cell(plain), Cow::Borrowed(_)), "{plain}");
        }
    }
}
