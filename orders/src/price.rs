//! Exact decimal ↔ tick conversion. Prices are never floats.
//!
//! Every decimal that enters the system as text — a CSV field, a JSON number (engine ingress
//! frames, the risk server's JSON orders), a TOML number (the risk limits file) — is converted
//! here, by [`parse_decimal_ticks`], digit by digit: nothing goes through `f64`, nothing is
//! rounded. A value with more than four decimal places is refused ([`PriceError::TooPrecise`]),
//! even when the extra digits are zeros (`1.00000` is what a float printer writes, and we never
//! guess what was meant).

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

/// The written forms [`parse_decimal_ticks`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecimalSyntax {
    /// `[+-]digits[.digits]` (at least one digit): CSV fields and command lines.
    Plain,
    /// A JSON or TOML number literal as written in the document: [`DecimalSyntax::Plain`], plus
    /// an exponent (`e`/`E`, optional sign, digits) and `_` between two digits (TOML). The
    /// exponent is applied exactly: `1.5e2` is 150, `1e-4` is one tick, `1e-5` is refused.
    Number,
}

/// Largest exponent magnitude looked at; anything larger is out of range (or too precise).
const EXPONENT_MAX: i64 = 1_000;

/// Parses decimal text into an exact number of ticks (1 tick = 0.0001), as an `i128` so that
/// notional amounts fit too. This is the one decimal parser of the project; the `i64` price
/// entry points are [`parse_price_ticks`] and [`parse_number_price_ticks`].
///
/// The number of decimal places is counted as written, after the exponent is applied
/// (`12.3450` has 4, `1.23450e1` has 4, `1e-5` has 5): more than 4 is
/// [`PriceError::TooPrecise`].
pub fn parse_decimal_ticks(text: &str, syntax: DecimalSyntax) -> Result<i128, PriceError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(PriceError::Empty);
    }
    let not_decimal = || PriceError::NotDecimal(t.to_owned());
    let (neg, body) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exponent) = match syntax {
        DecimalSyntax::Plain => (body, 0i64),
        DecimalSyntax::Number => match body.find(['e', 'E']) {
            None => (body, 0),
            Some(at) => (
                &body[..at],
                parse_exponent(&body[at + 1..]).ok_or_else(not_decimal)?,
            ),
        },
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let underscores = syntax == DecimalSyntax::Number;
    let frac_digits = match (
        digits_of(int_part, underscores),
        digits_of(frac_part, underscores),
    ) {
        (Some(i), Some(f)) if i + f > 0 => f,
        _ => return Err(not_decimal()),
    };
    // Decimal places of the value as written, once the exponent has moved the point.
    let places = frac_digits as i64 - exponent;
    if places > PRICE_DECIMALS_MAX as i64 {
        return Err(PriceError::TooPrecise(t.to_owned()));
    }
    let out_of_range = || PriceError::OutOfRange(t.to_owned());
    let mut value: i128 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        if b == b'_' {
            continue;
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add((b - b'0') as i128))
            .ok_or_else(out_of_range)?;
    }
    // `places` ≤ 4, so the shift to ticks is ≥ 0; it is large only with a large exponent.
    let shift = PRICE_DECIMALS_MAX as i64 - places;
    if value != 0 {
        let scale = u32::try_from(shift)
            .ok()
            .and_then(|s| 10i128.checked_pow(s))
            .ok_or_else(out_of_range)?;
        value = value.checked_mul(scale).ok_or_else(out_of_range)?;
    }
    Ok(if neg { -value } else { value })
}

/// The exponent after `e`: optional sign, digits; clamped to ±[`EXPONENT_MAX`]` + 1`.
fn parse_exponent(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut e: i64 = 0;
    for b in digits.bytes() {
        e = (e * 10 + (b - b'0') as i64).min(EXPONENT_MAX + 1);
    }
    Some(if neg { -e } else { e })
}

/// The number of digits in `s` if it is digits only (or, with `underscores`, digits with single
/// `_` between two digits); `None` otherwise.
fn digits_of(s: &str, underscores: bool) -> Option<usize> {
    let b = s.as_bytes();
    let mut n = 0;
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_digit() {
            n += 1;
            continue;
        }
        let joins_digits =
            i > 0 && b[i - 1].is_ascii_digit() && b.get(i + 1).is_some_and(u8::is_ascii_digit);
        if !(underscores && c == b'_' && joins_digits) {
            return None;
        }
    }
    Some(n)
}

fn to_i64(ticks: i128, text: &str) -> Result<i64, PriceError> {
    i64::try_from(ticks).map_err(|_| PriceError::OutOfRange(text.trim().to_owned()))
}

/// Parses a decimal price such as `185.25`, `-1`, `0.0001` into ticks exactly
/// ([`DecimalSyntax::Plain`]).
///
/// Accepts an optional leading `-` or `+`, digits, and an optional `.` followed by at most four
/// digits (trailing zeros beyond the fourth place are still refused: `1.00000` is ambiguous
/// input from a float printer, and we never round silently).
pub fn parse_price_ticks(text: &str) -> Result<i64, PriceError> {
    to_i64(parse_decimal_ticks(text, DecimalSyntax::Plain)?, text)
}

/// Parses the text of a JSON or TOML number, exactly as written in the document
/// ([`DecimalSyntax::Number`]), into price ticks. Callers take the text from the document
/// itself (`serde_json::value::RawValue`, a TOML span), never from an `f64`: `1000.12345` is
/// refused, not rounded to 10001235 ticks.
pub fn parse_number_price_ticks(text: &str) -> Result<i64, PriceError> {
    to_i64(parse_decimal_ticks(text, DecimalSyntax::Number)?, text)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decimal texts with known values.
    mod testing {
        use proptest::prelude::*;

        /// `[sign]int[.frac]`; `frac` longer than 4 ends in a non-zero digit.
        #[derive(Debug, Clone)]
        pub struct Decimal {
            pub sign: &'static str,
            pub int: u64,
            pub frac: String,
        }

        impl Decimal {
            pub fn text(&self) -> String {
                if self.frac.is_empty() {
                    format!("{}{}", self.sign, self.int)
                } else {
                    format!("{}{}.{}", self.sign, self.int, self.frac)
                }
            }

            /// The exact ticks, or `None` when there are more than 4 decimals.
            pub fn expected_ticks(&self) -> Option<i64> {
                if self.frac.len() > 4 {
                    return None;
                }
                let padded = format!("{:0<4}", self.frac);
                let frac: i64 = padded.parse().expect("digits");
                let ticks = self.int as i64 * 10_000 + frac;
                Some(if self.sign == "-" { -ticks } else { ticks })
            }
        }

        pub fn decimal() -> impl Strategy<Value = Decimal> {
            let sign = prop_oneof![Just(""), Just("-"), Just("+")];
            // Up to the largest whole number of units an i64 of ticks holds.
            let int = prop_oneof![0u64..1000, 0u64..=922_337_203_685_476];
            let frac = prop_oneof!["[0-9]{0,4}", "[0-9]{4,12}[1-9]",];
            (sign, int, frac).prop_map(|(sign, int, frac)| Decimal { sign, int, frac })
        }
    }

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
    fn number_syntax_is_exact() {
        let n = parse_number_price_ticks;
        assert_eq!(n("1000.1234"), Ok(10_001_234));
        assert!(matches!(n("1000.12345"), Err(PriceError::TooPrecise(_))));
        assert_eq!(n("185.25"), Ok(1_852_500));
        assert_eq!(n("-0"), Ok(0));
        assert_eq!(n("1e2"), Ok(1_000_000));
        assert_eq!(n("1.5E+2"), Ok(1_500_000));
        assert_eq!(n("1e-4"), Ok(1));
        assert_eq!(n("1.23450e1"), Ok(123_450));
        assert_eq!(n("0e999999999999999999999"), Ok(0));
        assert_eq!(n("1_000.5"), Ok(10_005_000));
        assert!(matches!(n("1e-5"), Err(PriceError::TooPrecise(_))));
        assert!(matches!(n("0.00001"), Err(PriceError::TooPrecise(_))));
        assert!(matches!(
            n("1e-99999999999"),
            Err(PriceError::TooPrecise(_))
        ));
        assert!(matches!(n("1e15"), Err(PriceError::OutOfRange(_))));
        assert!(matches!(
            n("1e999999999999"),
            Err(PriceError::OutOfRange(_))
        ));
        // Digits that would be a different double's shortest form are still counted as written.
        assert!(matches!(
            n("922337203685.47758071"),
            Err(PriceError::TooPrecise(_))
        ));
        for bad in [
            "", "e5", "1e", "1e+", "inf", "nan", "\"1.5\"", "0x10", "1__0", "_1", "1_", "1._5",
            "1.2.3", "true", "[1]",
        ] {
            assert!(n(bad).is_err(), "{bad:?} must be refused");
        }
        // Plain (CSV) syntax has neither exponents nor underscores.
        assert!(parse_price_ticks("1e2").is_err());
        assert!(parse_price_ticks("1_000").is_err());
        // Wide amounts (notional limits) fit in i128.
        assert_eq!(
            parse_decimal_ticks("1000000000000000", DecimalSyntax::Number),
            Ok(10_000_000_000_000_000_000)
        );
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(t in (i64::MIN + 1)..=i64::MAX) {
            prop_assert_eq!(parse_price_ticks(&format_price_ticks(t)), Ok(t));
        }

        #[test]
        fn never_panics(s in "\\PC{0,30}") {
            let _ = parse_price_ticks(&s);
            let _ = parse_number_price_ticks(&s);
        }

        #[test]
        fn never_panics_on_number_like_text(s in "[-+]?[0-9_]{0,25}(\\.[0-9_]{0,25})?([eE][-+]?[0-9]{0,25})?") {
            let _ = parse_number_price_ticks(&s);
            let _ = parse_decimal_ticks(&s, DecimalSyntax::Number);
        }

        /// Up to 4 decimals: exact ticks in both syntaxes; more, with a non-zero last digit:
        /// refused in both, never rounded.
        #[test]
        fn decimals_are_exact_or_refused(d in testing::decimal()) {
            let text = d.text();
            match d.expected_ticks() {
                Some(ticks) => {
                    prop_assert_eq!(parse_price_ticks(&text), Ok(ticks), "{}", text);
                    prop_assert_eq!(parse_number_price_ticks(&text), Ok(ticks), "{}", text);
                }
                None => {
                    prop_assert!(matches!(parse_price_ticks(&text), Err(PriceError::TooPrecise(_))), "{}", text);
                    prop_assert!(matches!(parse_number_price_ticks(&text), Err(PriceError::TooPrecise(_))), "{}", text);
                }
            }
        }
    }
}
