//! The values loadgen writes: mostly as the services write them, with a
//! share of the messy forms real tables hold (currency words in any case,
//! Indian digit grouping, the `/-` suffix, padded ids, blanks, garbage).

use rand::rngs::StdRng;
use rand::Rng;

pub const ITEM_TYPES: [&str; 6] = [
    "electronics",
    "books",
    "apparel",
    "grocery",
    "toys",
    "Electronics",
];
pub const COURIERS: [&str; 5] = ["DHL", "FETCHR", "BlueDart", "Delhivery", "ekart"];

thread_local! {
    /// Messy values drawn on this thread since the last [`take_count`].
    static DRAWN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many messy values were drawn since the last call (per thread).
pub fn take_count() -> u64 {
    DRAWN.with(|c| c.replace(0))
}

/// Whether to write a messy value this time.
fn messy(rng: &mut StdRng, share: f64) -> bool {
    let yes = share > 0.0 && rng.random_bool(share.min(1.0));
    if yes {
        DRAWN.with(|c| c.set(c.get() + 1));
    }
    yes
}

/// Western (`1,234,567`) or Indian (`12,34,567`) grouping of an integer.
fn grouped(n: u64, indian: bool) -> String {
    let digits = n.to_string();
    let len = digits.len();
    if len <= 3 {
        return digits;
    }
    let (head, last3) = digits.split_at(len - 3);
    let step = if indian { 2 } else { 3 };
    let mut groups = Vec::new();
    let mut end = head.len();
    while end > 0 {
        let start = end.saturating_sub(step);
        groups.push(&head[start..end]);
        end = start;
    }
    groups.reverse();
    format!("{},{last3}", groups.join(","))
}

/// An order value: `Rs 52755` as the services write it, or a messy form.
pub fn order_value(rng: &mut StdRng, share: f64) -> Option<String> {
    let rupees: u64 = rng.random_range(99..250_000);
    let paise: u64 = rng.random_range(0..100);
    if !messy(rng, share) {
        return Some(format!("Rs {rupees}"));
    }
    Some(match rng.random_range(0..12) {
        0 => format!("rs. {rupees}.{paise:02}"),
        1 => format!("RS.{}", grouped(rupees, true)),
        2 => format!("₹{}.{paise:02}", grouped(rupees, false)),
        3 => format!("INR {rupees}"),
        4 => format!("inr {}", grouped(rupees, true)),
        5 => format!("Rs {rupees}/-"),
        6 => format!("{rupees}"),
        7 => format!("  Rs. {}/-  ", grouped(rupees, true)),
        8 => format!("{rupees} INR"),
        9 => "N/A".to_owned(),
        10 => return None,
        _ => format!("Rs {rupees},"),
    })
}

/// A shipment cost: `24.5`, or a messy form.
pub fn shipment_cost(rng: &mut StdRng, share: f64) -> Option<String> {
    let cost = rng.random_range(10..900);
    let frac = rng.random_range(0..10);
    if !messy(rng, share) {
        return Some(format!("{cost}.{frac}"));
    }
    Some(match rng.random_range(0..7) {
        0 => format!("Rs. {cost}"),
        1 => format!("rs {cost}.{frac}0/-"),
        2 => format!("₹ {cost}"),
        3 => String::new(),
        4 => "free".to_owned(),
        5 => return None,
        _ => format!("{cost}.{frac}"),
    })
}

/// An item quantity: `1`..`5`, or a messy form.
pub fn item_qty(rng: &mut StdRng, share: f64) -> Option<String> {
    let q = rng.random_range(1..6);
    if !messy(rng, share) {
        return Some(q.to_string());
    }
    Some(match rng.random_range(0..6) {
        0 => format!(" {q} "),
        1 => format!("{q}.0"),
        2 => "two".to_owned(),
        3 => "-1".to_owned(),
        4 => return None,
        _ => "1,000".to_owned(),
    })
}

/// An id as a service writes it into a reference column, sometimes padded.
pub fn id_ref(rng: &mut StdRng, share: f64, id: &str) -> String {
    if messy(rng, share) {
        match rng.random_range(0..2) {
            0 => format!(" {id}"),
            _ => format!("{id}  "),
        }
    } else {
        id.to_owned()
    }
}

/// A courier name, sometimes blank.
pub fn courier(rng: &mut StdRng, share: f64) -> String {
    if messy(rng, share / 4.0) {
        "  ".to_owned()
    } else {
        COURIERS[rng.random_range(0..COURIERS.len())].to_owned()
    }
}

pub fn item_type(rng: &mut StdRng) -> String {
    ITEM_TYPES[rng.random_range(0..ITEM_TYPES.len())].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::values::parse_money;

    #[test]
    fn grouping_matches_what_the_parser_reads() {
        assert_eq!(grouped(100_000, true), "1,00,000");
        assert_eq!(grouped(12_345_678, true), "1,23,45,678");
        assert_eq!(grouped(1_234_567, false), "1,234,567");
        assert_eq!(grouped(999, true), "999");
        for n in [1_000u64, 54_321, 100_000, 9_999_999] {
            for indian in [true, false] {
                let m = parse_money(&format!("Rs. {}", grouped(n, indian))).expect("parses");
                assert_eq!(m.amount, rust_decimal::Decimal::from(n));
            }
        }
    }
}
