//! Exact decimal ↔ tick conversion. Prices are never floats.

use crate::model::{PRICE_DECIMALS_MAX, TICKS_PER_UNIT};

/// Why a price text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PriceError {
    /// Empty text.
    #[error("price is empty")]
    Empty,
    /// Not a decimal number (`[-]digits[.digits]`).
    #[error("price {0:?} is not a decimal number")]
    NotDecimal(String),
    /// More than four decimal places.
    #[error("price {0:?} has more than 4 decimal places (1 tick = 0.0001)")]
    TooPrecise(String),
    /// Outside the range of an `i64` number of ticks.
    #[error("price {0:?} is out of range")]
    OutOfRange(String),
}

/// Parses a decimal price such as `185.25`, `-1`, `0.0001` into ticks exactly.
///
/// Accepts an optional leading `-` or `+`, digits, and an optional `.` followed by at most four
/// digits (trailing zeros beyond the fourth place are still refused: `1.00000` is ambiguous
/// input from a float printer, and we never round silently).
pub fn parse_price_ticks(text: &str) -> Result<i64, PriceError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(PriceError::Empty);
    }
    let (neg, body) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !digits_ok(int_part)
        || !digits_ok(frac_part)
        || (body.contains('.') && frac_part.is_empty() && int_part.is_empty())
    {
        return Err(PriceError::NotDecimal(t.to_owned()));
    }
    if frac_part.len() > PRICE_DECIMALS_MAX as usize {
        return Err(PriceError::TooPrecise(t.to_owned()));
    }
    let out_of_range = || PriceError::OutOfRange(t.to_owned());
    let mut ticks: i64 = 0;
    for b in int_part.bytes() {
        ticks = ticks
            .checked_mul(10)
            .and_then(|v| v.checked_add((b - b'0') as i64))
            .ok_or_else(out_of_range)?;
    }
    ticks = ticks.checked_mul(TICKS_PER_UNIT).ok_or_else(out_of_range)?;
    let mut frac: i64 = 0;
    for b in frac_part.bytes() {
        frac = frac * 10 + (b - b'0') as i64;
    }
    frac *= 10i64.pow(PRICE_DECIMALS_MAX - frac_part.len() as u32);
    ticks = ticks.checked_add(frac).ok_or_else(out_of_range)?;
    Ok(if neg { -ticks } else { ticks })
}

/// Formats ticks as the shortest exact decimal (`1852500` → `185.25`, `1` → `0.0001`).
pub fn format_price_ticks(ticks: i64) -> String {
    let neg = ticks < 0;
    let abs = ticks.unsigned_abs();
    let unit = TICKS_PER_UNIT as u64;
    let (int_part, frac) = (abs / unit, abs % unit);
    let mut s = String::with_capacity(24);
    if neg {
        s.push('-');
    }
    s.push_str(&int_part.to_string());
    if frac != 0 {
        let f = format!("{frac:04}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

/// Converts a JSON/float price to ticks, refusing values that are not an exact number of ticks
/// (within 1e-6 of a tick, to absorb binary float representation) or out of range.
pub fn price_ticks_from_f64(price: f64) -> Result<i64, PriceError> {
    if !price.is_finite() {
        return Err(PriceError::NotDecimal(price.to_string()));
    }
    let scaled = price * TICKS_PER_UNIT as f64;
    if scaled.abs() >= 9.0e18 {
        return Err(PriceError::OutOfRange(price.to_string()));
    }
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 * scaled.abs().max(1.0) {
        return Err(PriceError::TooPrecise(price.to_string()));
    }
    Ok(rounded as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_at_the_edges() {
        assert_eq!(parse_price_ticks("0.0001"), Ok(1));
        assert_eq!(parse_price_ticks("185.25"), Ok(1_852_500));
        assert_eq!(parse_price_ticks("585.33"), Ok(5_853_300));
        assert_eq!(parse_price_ticks("3355.21"), Ok(33_552_100));
        assert_eq!(parse_price_ticks("-1"), Ok(-10_000));
        assert_eq!(parse_price_ticks("+2."), Ok(20_000));
        assert_eq!(parse_price_ticks(".5"), Ok(5_000));
        assert_eq!(parse_price_ticks("0"), Ok(0));
        // i64::MAX = 9223372036854775807 ticks = 922337203685477.5807
        assert_eq!(parse_price_ticks("922337203685477.5807"), Ok(i64::MAX));
        assert!(matches!(
            parse_price_ticks("922337203685477.5808"),
            Err(PriceError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_price_ticks("99999999999999999999"),
            Err(PriceError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_price_ticks("1.00001"),
            Err(PriceError::TooPrecise(_))
        ));
        assert!(matches!(
            parse_price_ticks("1.00000"),
            Err(PriceError::TooPrecise(_))
        ));
        for bad in [
            "", " ", "abc", "1.2.3", "1e5", "--1", ".", "-", "1,5", "0x10",
        ] {
            assert!(parse_price_ticks(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn formats_shortest() {
        assert_eq!(format_price_ticks(1_852_500), "185.25");
        assert_eq!(format_price_ticks(1), "0.0001");
        assert_eq!(format_price_ticks(-10_000), "-1");
        assert_eq!(format_price_ticks(0), "0");
        assert_eq!(format_price_ticks(i64::MIN), "-922337203685477.5808");
    }

    #[test]
    fn float_prices() {
        assert_eq!(price_ticks_from_f64(185.25), Ok(1_852_500));
        assert_eq!(price_ticks_from_f64(0.0001), Ok(1));
        assert!(price_ticks_from_f64(0.00015).is_err());
        assert!(price_ticks_from_f64(f64::NAN).is_err());
        assert!(price_ticks_from_f64(1e300).is_err());
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(t in (i64::MIN + 1)..=i64::MAX) {
            prop_assert_eq!(parse_price_ticks(&format_price_ticks(t)), Ok(t));
        }

        #[test]
        fn never_panics(s in "\\PC{0,30}") {
            let _ = parse_price_ticks(&s);
        }
    }
}
