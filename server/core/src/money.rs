//! Money as integers. Every amount in CloudRouter is an `i64` count of micro-units:
//! micro-CNY (¥1 = 1_000_000) for balances, holds and charges, micro-USD for costs.
//! No floating point is ever used for money.
//!
//! Rounding rule (the one place where a fraction of a micro-unit can appear is pricing, see
//! [`crate::pricing`]): a non-negative exact quotient is rounded **half up** to the nearest
//! micro-unit, once, on the request's total — never per token kind. See [`div_round_half_up`].

use std::fmt;

/// Micro-units in one unit (¥1 or $1).
pub const MICROS: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount must be a decimal number like 12.50")]
    Invalid,
    #[error("amount has more than 6 decimal places")]
    TooPrecise,
    #[error("amount is too large")]
    Overflow,
}

/// `num / den` rounded half up (ties away from zero for the non-negative values we use).
/// `den` must be positive; negative numerators round symmetrically (half away from zero).
pub fn div_round_half_up(num: i128, den: i128) -> i128 {
    assert!(den > 0, "denominator must be positive");
    if num >= 0 {
        (num + den / 2) / den
    } else {
        -((-num + den / 2) / den)
    }
}

/// Parses a decimal string ("12.50", "-3", "0.000001", "+7.1") into micro-units exactly.
/// Up to 6 decimal places are accepted; more is an error rather than a silent rounding.
pub fn parse_decimal(s: &str) -> Result<i64, MoneyError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(MoneyError::Empty);
    }
    let (neg, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, frac_part) = match rest.split_once('.') {
        Some((i, f)) => (i, f),
        None => (rest, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(MoneyError::Invalid);
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit()) || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MoneyError::Invalid);
    }
    if rest.contains('.') && frac_part.is_empty() && int_part.is_empty() {
        return Err(MoneyError::Invalid);
    }
    if frac_part.len() > 6 {
        return Err(MoneyError::TooPrecise);
    }
    let mut whole: i64 = 0;
    for b in int_part.bytes() {
        whole = whole
            .checked_mul(10)
            .and_then(|w| w.checked_add((b - b'0') as i64))
            .ok_or(MoneyError::Overflow)?;
    }
    let mut frac: i64 = 0;
    for i in 0..6 {
        let d = frac_part.as_bytes().get(i).map(|b| (b - b'0') as i64).unwrap_or(0);
        frac = frac * 10 + d;
    }
    let v = whole
        .checked_mul(MICROS)
        .and_then(|w| w.checked_add(frac))
        .ok_or(MoneyError::Overflow)?;
    Ok(if neg { -v } else { v })
}

fn format_units(micros: i64, symbol: &str) -> String {
    let neg = micros < 0;
    let abs = (micros as i128).unsigned_abs();
    let whole = abs / MICROS as u128;
    let frac = abs % MICROS as u128;
    format!("{}{}{}.{:06}", if neg { "-" } else { "" }, symbol, whole, frac)
}

/// "¥12.345678" (always 6 decimals; negative as "-¥1.500000").
pub fn format_cny(micros: i64) -> String {
    format_units(micros, "¥")
}

/// "$0.001234" (always 6 decimals).
pub fn format_usd(micros: i64) -> String {
    format_units(micros, "$")
}

/// Plain decimal without symbol, "12.345678", as used by the JSON APIs.
pub fn to_decimal_string(micros: i64) -> String {
    format_units(micros, "")
}

/// Convenience wrapper that displays as CNY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cny(pub i64);

impl fmt::Display for Cny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_cny(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(parse_decimal("12.50"), Ok(12_500_000));
        assert_eq!(parse_decimal("12.345678"), Ok(12_345_678));
        assert_eq!(parse_decimal("-3"), Ok(-3_000_000));
        assert_eq!(parse_decimal("+0.000001"), Ok(1));
        assert_eq!(parse_decimal(".5"), Ok(500_000));
        assert_eq!(parse_decimal("7."), Ok(7_000_000));
        assert_eq!(parse_decimal(" 1 "), Ok(1_000_000));
        assert_eq!(parse_decimal("0.1234567"), Err(MoneyError::TooPrecise));
        assert_eq!(parse_decimal("1e3"), Err(MoneyError::Invalid));
        assert_eq!(parse_decimal(""), Err(MoneyError::Empty));
        assert_eq!(parse_decimal("."), Err(MoneyError::Invalid));
        assert_eq!(parse_decimal("-"), Err(MoneyError::Invalid));
        assert_eq!(parse_decimal("1,5"), Err(MoneyError::Invalid));
        assert_eq!(parse_decimal("99999999999999999999"), Err(MoneyError::Overflow));
    }

    #[test]
    fn formats() {
        assert_eq!(format_cny(12_345_678), "¥12.345678");
        assert_eq!(format_cny(-1_500_000), "-¥1.500000");
        assert_eq!(format_cny(0), "¥0.000000");
        assert_eq!(format_usd(1_234), "$0.001234");
        assert_eq!(to_decimal_string(i64::MIN), "-9223372036854.775808");
        assert_eq!(Cny(5).to_string(), "¥0.000005");
    }

    #[test]
    fn rounds_half_up() {
        assert_eq!(div_round_half_up(15, 10), 2);
        assert_eq!(div_round_half_up(14, 10), 1);
        assert_eq!(div_round_half_up(0, 10), 0);
        assert_eq!(div_round_half_up(-15, 10), -2);
        assert_eq!(div_round_half_up(5, 10), 1);
        assert_eq!(div_round_half_up(4, 10), 0);
    }
}
