//! Parsing of the source tables' loosely typed values (VARCHAR money and
//! quantities) into exact decimals and integers. Nothing here uses floats.
//!
//! Accepted money: an optional currency before or after an optionally signed
//! decimal number, with an optional `/-` suffix. Currencies are symbols
//! (`₹`, `$`, `€`, `£`) or words in any case, with or without a dot: `Rs`,
//! `Rs.`, `rs.`, `RS.`, `Re.`, `INR`, `inr` (all read as INR) or any other
//! three-letter code. Digits may be grouped with `,` the Western way
//! (`1,000,000`) or the Indian way (`10,00,000`); any other comma is refused
//! (`12,34` may mean 12.34). `Rs 52755`, `rs. 1,00,000/-`, `₹1,234.50`,
//! `INR 99`, `52755`, `24.5`.
//! Amounts are normalised (`1234.50` becomes `1234.5`) and bounded: at most
//! [`MAX_SCALE`] decimal places and an absolute value below [`MAX_AMOUNT`], so
//! that sums of many amounts stay exact in a 96-bit decimal. Anything else is
//! not a value: the caller keeps the raw text as a data-quality finding.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Most decimal places an amount may have after normalisation.
pub const MAX_SCALE: u32 = 6;
/// Amounts must be strictly smaller than this in absolute value (10^15).
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0xA4C6_8000, 0x0003_8D7E, 0, false, 0);
/// Largest accepted item quantity.
pub const MAX_QTY: u64 = 1_000_000_000;

/// An amount of money with the currency it was written in, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    #[serde(with = "decimal_compact")]
    pub amount: Decimal,
    /// ISO 4217 code when the source named one (`Rs` and `₹` read as `INR`).
    pub currency: Option<String>,
}

/// A column value after parsing: absent, a value, or text that did not parse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Parsed<T> {
    #[default]
    Null,
    Valid(T),
    /// The raw text, kept for the document's `data_quality` entry.
    Invalid(String),
}

impl<T> Parsed<T> {
    pub fn valid(&self) -> Option<&T> {
        match self {
            Parsed::Valid(v) => Some(v),
            _ => None,
        }
    }

    pub fn invalid_raw(&self) -> Option<&str> {
        match self {
            Parsed::Invalid(raw) => Some(raw),
            _ => None,
        }
    }

    /// Parses `raw` with `parse`, keeping the text when it fails.
    pub fn from_text(raw: &str, parse: impl FnOnce(&str) -> Option<T>) -> Self {
        match parse(raw) {
            Some(v) => Parsed::Valid(v),
            None => Parsed::Invalid(raw.to_owned()),
        }
    }
}

/// Serde for `Option<Decimal>` as decimal text, in a form that binary
/// formats (bincode) read back too.
pub mod decimal_str_opt {
    use std::str::FromStr;

    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| Decimal::from_str(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Serde for `Decimal`: decimal text for human-readable formats (JSON), and
/// for binary formats (the [`crate::codec`] of state and internal topics)
/// the mantissa and scale as integers, which bincode writes and reads back
/// without formatting or parsing text.
pub mod decimal_compact {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            rust_decimal::serde::str::serialize(d, s)
        } else {
            (d.mantissa(), d.scale()).serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        if d.is_human_readable() {
            rust_decimal::serde::str::deserialize(d)
        } else {
            let (mantissa, scale) = <(i128, u32)>::deserialize(d)?;
            Decimal::try_from_i128_with_scale(mantissa, scale).map_err(serde::de::Error::custom)
        }
    }
}

/// Checks the bounds every amount must respect and normalises it.
pub fn bounded_amount(d: Decimal) -> Option<Decimal> {
    let d = d.normalize();
    (d.scale() <= MAX_SCALE && d.abs() < MAX_AMOUNT).then_some(d)
}

/// Parses a plain decimal number as JSON or Java writes it (`24.5`, `-3`,
/// `1.0E10`), exactly, within the amount bounds.
pub fn parse_number(text: &str) -> Option<Decimal> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let d = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).ok()?
    } else {
        if !text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.'))
        {
            return None;
        }
        Decimal::from_str_exact(text.strip_prefix('+').unwrap_or(text)).ok()?
    };
    bounded_amount(d)
}

/// Parses a money value: `Rs 52755`, `₹1,234.50`, `INR 99`, `52755`, `24.5`.
pub fn parse_money(raw: &str) -> Option<Money> {
    let s = raw.trim();
    let s = s.strip_suffix("/-").unwrap_or(s).trim_end();
    if s.is_empty() {
        return None;
    }
    let (prefix_cur, rest) = split_currency_prefix(s);
    let (number, suffix_cur) = split_currency_suffix(rest.trim_start());
    let currency = match (prefix_cur, suffix_cur) {
        (Some(_), Some(_)) => return None,
        (c, None) | (None, c) => c,
    };
    let amount = parse_grouped_number(number.trim())?;
    Some(Money { amount, currency })
}

/// Parses an item quantity: a non-negative integer (`2`, `"2"`, `1,000`,
/// `2.0`), at most [`MAX_QTY`].
pub fn parse_qty(raw: &str) -> Option<u64> {
    let d = parse_grouped_number(raw.trim())?;
    qty_from_decimal(d)
}

/// A quantity from an exact decimal: integral, non-negative, bounded.
pub fn qty_from_decimal(d: Decimal) -> Option<u64> {
    if d.is_sign_negative() && !d.is_zero() {
        return None;
    }
    let d = d.normalize();
    if d.scale() != 0 {
        return None;
    }
    let n = u64::from_str(&d.to_string()).ok()?;
    (n <= MAX_QTY).then_some(n)
}

/// A number with optional sign, `,` separators in the integer part, and an
/// optional fraction.
fn parse_grouped_number(s: &str) -> Option<Decimal> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    if int_part.is_empty() && frac_part.is_none_or(str::is_empty) {
        return None;
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit() || b == b',') {
        return None;
    }
    if int_part.contains(',') && !well_grouped(int_part) {
        return None;
    }
    if let Some(f) = frac_part {
        if !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let mut text = String::with_capacity(s.len());
    if neg {
        text.push('-');
    }
    if int_part.is_empty() {
        text.push('0');
    }
    text.extend(int_part.chars().filter(|c| *c != ','));
    if let Some(f) = frac_part.filter(|f| !f.is_empty()) {
        text.push('.');
        text.push_str(f);
    }
    bounded_amount(Decimal::from_str_exact(&text).ok()?)
}

/// `1,234,567` (threes) or `12,34,567` (twos, then the last three): a first
/// group of one to three digits (one or two in Indian grouping), then groups
/// of one width only.
fn well_grouped(int_part: &str) -> bool {
    let groups: Vec<&str> = int_part.split(',').collect();
    let (first, rest) = match groups.split_first() {
        Some((f, r)) if !r.is_empty() => (f.len(), r),
        _ => return false,
    };
    let (last, middle) = match rest.split_last() {
        Some((l, m)) => (l.len(), m),
        None => return false,
    };
    if last != 3 || first == 0 {
        return false;
    }
    let western = first <= 3 && middle.iter().all(|g| g.len() == 3);
    let indian = first <= 2 && middle.iter().all(|g| g.len() == 2);
    western || indian
}

/// Currency symbols and their ISO codes.
const SYMBOLS: [(&str, &str); 4] = [("₹", "INR"), ("$", "USD"), ("€", "EUR"), ("£", "GBP")];

/// The ISO code of a currency word (any case): the rupee's abbreviations,
/// or any three-letter code.
fn currency_word(word: &str) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    match lower.as_str() {
        "rs" | "re" | "inr" => Some("INR".to_owned()),
        _ if word.len() == 3 => Some(word.to_ascii_uppercase()),
        _ => None,
    }
}

fn split_currency_prefix(s: &str) -> (Option<String>, &str) {
    for (sym, code) in SYMBOLS {
        if let Some(rest) = s.strip_prefix(sym) {
            return (Some(code.to_owned()), rest);
        }
    }
    let letters = s.bytes().take_while(u8::is_ascii_alphabetic).count();
    if letters == 0 {
        return (None, s);
    }
    match currency_word(&s[..letters]) {
        // `Rs.5` is five rupees: a dot right after the word belongs to it.
        Some(code) => {
            let rest = &s[letters..];
            (Some(code), rest.strip_prefix('.').unwrap_or(rest))
        }
        None => (None, s),
    }
}

fn split_currency_suffix(s: &str) -> (&str, Option<String>) {
    for (sym, code) in SYMBOLS {
        if let Some(rest) = s.strip_suffix(sym) {
            return (rest.trim_end(), Some(code.to_owned()));
        }
    }
    let body = s.strip_suffix('.').unwrap_or(s);
    let letters = body
        .bytes()
        .rev()
        .take_while(u8::is_ascii_alphabetic)
        .count();
    if letters == 0 {
        return (s, None);
    }
    let at = body.len() - letters;
    match currency_word(&body[at..]) {
        Some(code) => (body[..at].trim_end(), Some(code)),
        None => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(raw: &str) -> Option<(String, Option<String>)> {
        parse_money(raw).map(|m| (m.amount.to_string(), m.currency))
    }

    fn inr(amount: &str) -> Option<(String, Option<String>)> {
        Some((amount.to_owned(), Some("INR".to_owned())))
    }

    #[test]
    fn money_forms_of_the_source() {
        assert_eq!(money("Rs 52755"), inr("52755"));
        assert_eq!(money("Rs52755"), inr("52755"));
        assert_eq!(money("Rs. 52,755"), inr("52755"));
        assert_eq!(money("₹1,234.50"), inr("1234.5"));
        assert_eq!(money("₹ 1,23,456.75"), inr("123456.75"));
        assert_eq!(money("INR 99"), inr("99"));
        assert_eq!(money("inr 99"), inr("99"));
        assert_eq!(money("99 INR"), inr("99"));
        assert_eq!(money("Rs 500/-"), inr("500"));
        assert_eq!(money("52755"), Some(("52755".into(), None)));
        assert_eq!(money(" 24.5 "), Some(("24.5".into(), None)));
        assert_eq!(money("24.50"), Some(("24.5".into(), None)));
        assert_eq!(money(".5"), Some(("0.5".into(), None)));
        assert_eq!(money("-12"), Some(("-12".into(), None)));
        assert_eq!(money("$ 12.99"), Some(("12.99".into(), Some("USD".into()))));
        assert_eq!(money("EUR 7"), Some(("7".into(), Some("EUR".into()))));
        assert_eq!(money("0"), Some(("0".into(), None)));
    }

    #[test]
    fn currency_words_in_any_case_with_or_without_a_dot() {
        for raw in [
            "Rs 10.5",
            "Rs. 10.5",
            "rs. 10.5",
            "RS. 10.5",
            "rs 10.5",
            "rS.10.5",
            "Rs.10.5",
            "INR 10.5",
            "inr 10.5",
            "Inr. 10.5",
            "₹10.5",
            "₹ 10.5",
            "Re. 10.5",
            "10.5 Rs",
            "10.5 rs.",
            "10.5 INR",
            "10.5inr",
            "10.5 ₹",
            "Rs. 10.50/-",
            "rs 10.5 /-",
        ] {
            assert_eq!(money(raw), inr("10.5"), "{raw:?}");
        }
    }

    #[test]
    fn indian_and_western_digit_grouping() {
        assert_eq!(money("Rs. 1,00,000"), inr("100000"));
        assert_eq!(money("rs. 1,00,00,000/-"), inr("10000000"));
        assert_eq!(money("₹12,34,567.80"), inr("1234567.8"));
        assert_eq!(money("1,000,000"), Some(("1000000".into(), None)));
        assert_eq!(money("999"), Some(("999".into(), None)));
        // A comma that is no thousands separator would be misread: refuse.
        for raw in [
            "12,34",
            "1,2,3",
            "1,0000",
            "100,00,000",
            "1,00,0000",
            "1,000,00",
        ] {
            assert_eq!(parse_money(raw), None, "{raw:?} should not parse");
        }
    }

    #[test]
    fn money_rejects_what_is_not_an_amount() {
        for raw in [
            "",
            " ",
            "Rs",
            "abc",
            "Rs abc",
            "1,,000",
            ",100",
            "100,",
            "1.2.3",
            "12 34",
            "Rs 5 INR",
            "1e5x",
            "NaN",
            "-",
            ".",
            "RUPEES 10",
            "12.3456789",
            "1000000000000000",
            "Rs-",
        ] {
            assert_eq!(parse_money(raw), None, "{raw:?} should not parse");
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_qty("2"), Some(2));
        assert_eq!(parse_qty(" 2 "), Some(2));
        assert_eq!(parse_qty("0"), Some(0));
        assert_eq!(parse_qty("1,000"), Some(1000));
        assert_eq!(parse_qty("2.0"), Some(2));
        assert_eq!(parse_qty("1000000000"), Some(MAX_QTY));
        for raw in ["", "-1", "2.5", "two", "1000000001", "Rs 2", "+", "0x10"] {
            assert_eq!(parse_qty(raw), None, "{raw:?} should not parse");
        }
    }

    #[test]
    fn numbers_as_json_writes_them() {
        assert_eq!(parse_number("24.5"), Some(Decimal::new(245, 1)));
        assert_eq!(parse_number("-3"), Some(Decimal::new(-3, 0)));
        assert_eq!(parse_number("1.0E3"), Some(Decimal::new(1000, 0)));
        assert_eq!(parse_number("1.5e-2"), Some(Decimal::new(15, 3)));
        assert_eq!(parse_number("x"), None);
        assert_eq!(parse_number(""), None);
    }

    #[test]
    fn parsed_keeps_raw_text_on_failure() {
        let p = Parsed::from_text("Rs x", parse_money);
        assert_eq!(p.invalid_raw(), Some("Rs x"));
        assert_eq!(p.valid(), None);
        let p = Parsed::from_text("Rs 1", parse_money);
        assert_eq!(p.valid().map(|m| m.amount), Some(Decimal::ONE));
    }

    #[test]
    fn decimals_round_trip_in_both_forms() {
        for d in [
            Decimal::ZERO,
            Decimal::new(-12345, 2),
            Decimal::new(1, 28),
            Decimal::MAX,
            Decimal::MIN,
        ] {
            let m = Money {
                amount: d,
                currency: None,
            };
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("{{\"amount\":\"{d}\",\"currency\":null}}"));
            assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
            let bin = crate::codec::encode(&m).unwrap();
            assert_eq!(crate::codec::decode::<Money>(&bin).unwrap(), m);
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// `n` grouped by threes (`western`) or the Indian way.
        fn grouped(n: u64, western: bool) -> String {
            let d = n.to_string();
            if d.len() <= 3 {
                return d;
            }
            let (head, last) = d.split_at(d.len() - 3);
            let step = if western { 3 } else { 2 };
            let mut groups = Vec::new();
            let mut end = head.len();
            while end > 0 {
                let start = end.saturating_sub(step);
                groups.push(&head[start..end]);
                end = start;
            }
            groups.reverse();
            format!("{},{last}", groups.join(","))
        }

        fn rupee_spelling() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("Rs".to_owned()),
                Just("₹".to_owned()),
                Just("INR".to_owned()),
                Just("Re".to_owned()),
            ]
            .prop_flat_map(|word| {
                let letters: Vec<char> = word.chars().collect();
                (
                    proptest::collection::vec(any::<bool>(), letters.len()),
                    any::<bool>(),
                )
                    .prop_map(move |(upper, dot)| {
                        let mut w: String = letters
                            .iter()
                            .zip(&upper)
                            .map(|(c, u)| {
                                if *u {
                                    c.to_ascii_uppercase()
                                } else {
                                    c.to_ascii_lowercase()
                                }
                            })
                            .collect();
                        if dot && w.chars().all(|c| c.is_ascii_alphabetic()) {
                            w.push('.');
                        }
                        w
                    })
            })
        }

        proptest! {
            /// However the rupee is written, grouped and suffixed, the
            /// amount and the currency come out the same.
            #[test]
            fn every_spelling_of_a_rupee_amount_parses(
                rupees in 0u64..100_000_000_000,
                paise in proptest::option::of(0u32..100),
                currency in rupee_spelling(),
                grouping in 0u8..3,
                space in any::<bool>(),
                after in any::<bool>(),
                slash in any::<bool>(),
            ) {
                let digits = match grouping {
                    0 => rupees.to_string(),
                    1 => grouped(rupees, true),
                    _ => grouped(rupees, false),
                };
                let number = match paise {
                    Some(p) => format!("{digits}.{p:02}"),
                    None => digits,
                };
                let sep = if space { " " } else { "" };
                let mut text = if after {
                    format!("{number}{sep}{currency}")
                } else {
                    format!("{currency}{sep}{number}")
                };
                if slash && !after {
                    text.push_str("/-");
                }
                let want = Decimal::from(rupees) + Decimal::new(i64::from(paise.unwrap_or(0)), 2);
                let m = parse_money(&text);
                prop_assert_eq!(
                    m.clone().map(|m| (m.amount, m.currency)),
                    Some((want.normalize(), Some("INR".to_owned()))),
                    "{:?}", text
                );
            }

            /// Case never changes what a value means.
            #[test]
            fn case_does_not_matter(text in "[rRsSiInN₹ .,/0-9-]{0,16}") {
                prop_assert_eq!(parse_money(&text), parse_money(&text.to_ascii_uppercase()));
                prop_assert_eq!(parse_money(&text), parse_money(&text.to_ascii_lowercase()));
            }

            /// Anything at all: no panic, and what parses is bounded.
            #[test]
            fn any_text_is_a_value_or_not(text in ".{0,24}") {
                if let Some(m) = parse_money(&text) {
                    prop_assert!(m.amount.scale() <= MAX_SCALE && m.amount.abs() < MAX_AMOUNT);
                }
                let _ = parse_qty(&text);
            }

            /// Commas that are not thousands separators are refused, never
            /// silently dropped.
            #[test]
            fn misplaced_commas_are_refused(a in 1u32..1000, b in 0u32..100) {
                let text = format!("{a},{b:02}");
                prop_assert_eq!(parse_money(&text), None, "{:?}", text);
            }
        }
    }

    #[test]
    fn max_amount_is_ten_to_the_fifteen() {
        assert_eq!(MAX_AMOUNT, Decimal::from(1_000_000_000_000_000u64));
    }
}
