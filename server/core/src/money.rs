//! Money as integers in types that name their unit: [`MicroCny`] (¥1 = 1_000_000) for balances,
//! holds and charges, [`MicroUsd`] for list prices, costs and plan allowances, [`CnyPerUsd`] for a
//! channel's rate. One formatter per reading: `exact` (six decimals, stored texts), `short` (two
//! decimals unless more are needed, what people read), `decimal` (JSON APIs).
//! No floating point is ever used for money.
//!
//! Rounding rule: a fraction of a micro-unit appears only where a rate or a price multiplies an
//! amount ([`crate::pricing`], [`CnyPerUsd::charge`], and in SQL the split of one settlement
//! between allowance and wallet, `cr_settle`, see `docs/billing.md`). It is rounded **half up** to
//! the nearest micro-unit, once, on the request's total — never per token kind. See
//! [`div_round_half_up`].

use serde::{Deserialize, Serialize};
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

/// At least two decimals, more only when the micro-units need them ("¥12.50", "¥0.000315").
fn format_trimmed(micros: i64, symbol: &str) -> String {
    let mut s = format_units(micros, symbol);
    while s.ends_with('0') && s.len() - s.find('.').unwrap_or(s.len()) > 3 {
        s.pop();
    }
    s
}

/// An amount of one currency in micro-units. `+` and `-` never wrap: they panic on overflow as
/// `i64` does in debug builds (amounts from outside are bounded when parsed, so an overflow is a
/// bug, never a customer's doing); `checked_add`/`checked_sub` are there where a sum is not bounded.
macro_rules! micro_amount {
    ($(#[$doc:meta])* $name:ident, $symbol:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(i64);

        impl $name {
            pub const ZERO: $name = $name(0);
            pub const MAX: $name = $name(i64::MAX);

            pub const fn from_micros(micros: i64) -> $name {
                $name(micros)
            }

            /// Whole units (¥12 or $12); for constants and small literals.
            pub const fn units(units: i64) -> $name {
                $name(units * MICROS)
            }

            pub const fn micros(self) -> i64 {
                self.0
            }

            /// A decimal like "12.50" (up to six places), without the symbol.
            pub fn parse(s: &str) -> Result<$name, MoneyError> {
                parse_decimal(s).map($name)
            }

            pub fn checked_add(self, o: $name) -> Option<$name> {
                self.0.checked_add(o.0).map($name)
            }

            pub fn checked_sub(self, o: $name) -> Option<$name> {
                self.0.checked_sub(o.0).map($name)
            }

            /// `n` times the amount (e.g. several months of an allowance).
            pub fn checked_mul(self, n: i64) -> Option<$name> {
                self.0.checked_mul(n).map($name)
            }

            pub fn is_positive(self) -> bool {
                self.0 > 0
            }

            pub fn is_negative(self) -> bool {
                self.0 < 0
            }

            pub fn is_zero(self) -> bool {
                self.0 == 0
            }

            pub fn abs(self) -> $name {
                $name(self.0.abs())
            }

            /// The exact amount with its symbol and all six decimals ("¥12.345600"), as written
            /// into ledger notes, invoices and logs.
            pub fn exact(self) -> String {
                format_units(self.0, $symbol)
            }

            /// The amount as people read it: two decimals, more only when the micro-units need
            /// them ("¥12.50", "¥0.000315").
            pub fn short(self) -> String {
                format_trimmed(self.0, $symbol)
            }

            /// Rounded to two decimals (half away from zero) for a total or a balance read at a
            /// glance ("¥12.35"); [`Self::exact`] goes beside it in a tooltip.
            pub fn glance(self) -> String {
                let cents = (self.0 as i128 + if self.0 < 0 { -5_000 } else { 5_000 }) / 10_000;
                let abs = cents.unsigned_abs();
                format!("{}{}{}.{:02}", if cents < 0 { "-" } else { "" }, $symbol, abs / 100, abs % 100)
            }

            /// Plain decimal with six places and no symbol ("12.345678"), as the JSON APIs carry it.
            pub fn decimal(self) -> String {
                format_units(self.0, "")
            }

            /// Two decimal places without symbol ("399.00") when the amount is whole cents or fen
            /// and not negative: what payment providers take.
            pub fn two_places(self) -> Option<String> {
                (self.0 >= 0 && self.0 % 10_000 == 0).then(|| format!("{}.{:02}", self.0 / MICROS, (self.0 % MICROS) / 10_000))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.short())
            }
        }

        impl std::ops::Add for $name {
            type Output = $name;
            fn add(self, o: $name) -> $name {
                self.checked_add(o).expect(concat!(stringify!($name), " overflow"))
            }
        }

        impl std::ops::Sub for $name {
            type Output = $name;
            fn sub(self, o: $name) -> $name {
                self.checked_sub(o).expect(concat!(stringify!($name), " overflow"))
            }
        }

        impl std::ops::AddAssign for $name {
            fn add_assign(&mut self, o: $name) {
                *self = *self + o;
            }
        }

        impl std::ops::SubAssign for $name {
            fn sub_assign(&mut self, o: $name) {
                *self = *self - o;
            }
        }

        impl std::ops::Neg for $name {
            type Output = $name;
            fn neg(self) -> $name {
                $name(self.0.checked_neg().expect(concat!(stringify!($name), " overflow")))
            }
        }

        impl std::iter::Sum for $name {
            fn sum<I: Iterator<Item = $name>>(iter: I) -> $name {
                iter.fold($name::ZERO, |a, b| a + b)
            }
        }
    };
}

micro_amount!(
    /// Micro-CNY (¥1 = 1,000,000): balances, holds, charges, prices of plans and top-ups.
    MicroCny,
    "¥"
);

micro_amount!(
    /// Micro-USD (\$1 = 1,000,000): Anthropic list prices and costs, plan allowances.
    MicroUsd,
    "$"
);

/// A channel's rate: micro-CNY charged per \$1 of list price (¥0.60 / \$1 is 600,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct CnyPerUsd(i64);

impl CnyPerUsd {
    pub const fn from_micros(micro_cny_per_usd: i64) -> CnyPerUsd {
        CnyPerUsd(micro_cny_per_usd)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    /// A decimal like "0.6" (yuan per dollar, up to six places).
    pub fn parse(s: &str) -> Result<CnyPerUsd, MoneyError> {
        parse_decimal(s).map(CnyPerUsd)
    }

    /// The yuan charged for $1.
    pub const fn per_dollar(self) -> MicroCny {
        MicroCny(self.0)
    }

    /// What `usd` of list price costs at this rate, rounded half up to the micro-yuan.
    pub fn charge(self, usd: MicroUsd) -> MicroCny {
        let v = div_round_half_up(usd.micros() as i128 * self.0 as i128, MICROS as i128);
        MicroCny(v.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
    }
}

impl fmt::Display for CnyPerUsd {
    /// "¥0.60 / $1"
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} / $1", self.per_dollar().short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glance_rounds_to_two_places() {
        assert_eq!(MicroCny::from_micros(12_345_678).glance(), "¥12.35");
        assert_eq!(MicroCny::from_micros(315).glance(), "¥0.00");
        assert_eq!(MicroCny::from_micros(5_000).glance(), "¥0.01");
        assert_eq!(MicroCny::from_micros(-12_345_678).glance(), "-¥12.35");
        assert_eq!(MicroUsd::from_micros(150_000_000).glance(), "$150.00");
    }

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
        assert_eq!(MicroCny::from_micros(12_345_678).exact(), "¥12.345678");
        assert_eq!(MicroCny::from_micros(-1_500_000).exact(), "-¥1.500000");
        assert_eq!(MicroCny::ZERO.exact(), "¥0.000000");
        assert_eq!(MicroUsd::from_micros(1_234).exact(), "$0.001234");
        assert_eq!(MicroCny::from_micros(i64::MIN).decimal(), "-9223372036854.775808");
        assert_eq!(MicroCny::from_micros(5).to_string(), "¥0.000005");
        assert_eq!(MicroCny::from_micros(12_500_000).short(), "¥12.50");
        assert_eq!(MicroCny::from_micros(-315).short(), "-¥0.000315");
        assert_eq!(MicroCny::ZERO.short(), "¥0.00");
        assert_eq!(MicroCny::from_micros(-1_500_000).short(), "-¥1.50");
        assert_eq!(MicroUsd::units(145).short(), "$145.00");
        assert_eq!(MicroCny::units(399).two_places().as_deref(), Some("399.00"));
        assert_eq!(MicroCny::from_micros(399_000_001).two_places(), None);
        assert_eq!(MicroCny::from_micros(-10_000).two_places(), None);
        assert_eq!(CnyPerUsd::from_micros(600_000).to_string(), "¥0.60 / $1");
    }

    #[test]
    fn arithmetic_is_checked() {
        let a = MicroCny::from_micros(i64::MAX);
        assert_eq!(a.checked_add(MicroCny::from_micros(1)), None);
        assert_eq!(MicroCny::units(2) - MicroCny::units(3), MicroCny::from_micros(-1_000_000));
        assert!(std::panic::catch_unwind(|| a + MicroCny::from_micros(1)).is_err());
        assert_eq!([MicroUsd::units(1), MicroUsd::from_micros(5)].into_iter().sum::<MicroUsd>(), MicroUsd::from_micros(1_000_005));
        // ¥5 / $1 on $0.000001 is ¥0.000005; ¥0.6 / $1 on $0.000001 rounds ¥0.0000006 up.
        assert_eq!(CnyPerUsd::from_micros(5_000_000).charge(MicroUsd::from_micros(1)), MicroCny::from_micros(5));
        assert_eq!(CnyPerUsd::from_micros(600_000).charge(MicroUsd::from_micros(1)), MicroCny::from_micros(1));
        assert_eq!(CnyPerUsd::from_micros(400_000).charge(MicroUsd::from_micros(1)), MicroCny::ZERO);
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
