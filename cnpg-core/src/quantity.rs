//! Kubernetes resource quantities (`1Gi`, `500M`, `1.5e3`), parsed to a number of bytes.
//!
//! `storage.size` is a plain string in CloudNativePG's API; upstream's webhook rejects a
//! size that does not parse, and the operator compares sizes to refuse shrinking a volume.
//! k8s-openapi's `Quantity` is an unparsed string, so the parser lives here, pure and small.

use std::fmt;

/// A quantity that does not follow Kubernetes' `<number><suffix>` syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid quantity: {reason}")]
pub struct QuantityError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A parsed, non-negative quantity, kept as an exact fraction of bytes rounded up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    bytes: u128,
}

impl Quantity {
    /// The quantity in bytes (fractions of a byte round up, as Kubernetes does for storage).
    pub fn bytes(self) -> u128 {
        self.bytes
    }

    /// Parse a Kubernetes quantity: a decimal number with an optional binary suffix
    /// (`Ki Mi Gi Ti Pi Ei`), decimal suffix (`n u m k M G T P E`) or exponent (`e3`, `E-2`).
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let err = |reason| QuantityError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        let (negative, s) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(num_end);
        if number.is_empty() || number == "." {
            return Err(err("it must start with a number"));
        }
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => {
                if f.contains('.') {
                    return Err(err("the number has more than one decimal point"));
                }
                (i, f)
            }
            None => (number, ""),
        };
        // value = mantissa / 10^frac_digits * 2^bin_exp * 10^dec_exp
        let digits = format!("{int_part}{frac_part}");
        if digits.len() > 30 {
            return Err(err("the number has too many digits"));
        }
        let mantissa: u128 = digits.parse().map_err(|_| err("the number is malformed"))?;
        let mut dec_exp: i32 = -(frac_part.len() as i32);
        let mut bin_exp: u32 = 0;
        match suffix {
            "" => {}
            "Ki" => bin_exp = 10,
            "Mi" => bin_exp = 20,
            "Gi" => bin_exp = 30,
            "Ti" => bin_exp = 40,
            "Pi" => bin_exp = 50,
            "Ei" => bin_exp = 60,
            "n" => dec_exp -= 9,
            "u" => dec_exp -= 6,
            "m" => dec_exp -= 3,
            "k" => dec_exp += 3,
            "M" => dec_exp += 6,
            "G" => dec_exp += 9,
            "T" => dec_exp += 12,
            "P" => dec_exp += 15,
            "E" => dec_exp += 18,
            other => {
                let exp = other
                    .strip_prefix('e')
                    .or_else(|| other.strip_prefix('E'))
                    .ok_or_else(|| {
                        err("unknown suffix; use Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E or an exponent such as e3")
                    })?;
                let exp: i32 = exp
                    .parse()
                    .map_err(|_| err("the exponent is not a whole number"))?;
                if !(-30..=30).contains(&exp) {
                    return Err(err("the exponent is out of range"));
                }
                dec_exp += exp;
            }
        }
        if negative && mantissa != 0 {
            return Err(err("it must not be negative"));
        }
        let overflow = || err("it is too large");
        let mut value = mantissa
            .checked_mul(1u128 << bin_exp)
            .ok_or_else(overflow)?;
        if dec_exp >= 0 {
            value = value
                .checked_mul(10u128.checked_pow(dec_exp as u32).ok_or_else(overflow)?)
                .ok_or_else(overflow)?;
        } else {
            let div = 10u128
                .checked_pow(dec_exp.unsigned_abs())
                .ok_or_else(overflow)?;
            value = value.div_ceil(div);
        }
        Ok(Quantity { bytes: value })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &str) -> u128 {
        Quantity::parse(s).map(|q| q.bytes()).unwrap_or(u128::MAX)
    }

    #[test]
    fn parses_kubernetes_forms() {
        assert_eq!(b("1Gi"), 1 << 30);
        assert_eq!(b("512Mi"), 512 << 20);
        assert_eq!(b("1.5Gi"), 3 << 29);
        assert_eq!(b("10G"), 10_000_000_000);
        assert_eq!(b("1k"), 1000);
        assert_eq!(b("1e3"), 1000);
        assert_eq!(b("1E6"), 1_000_000);
        assert_eq!(b("100m"), 1, "fractions of a byte round up");
        assert_eq!(b("0"), 0);
        assert_eq!(b("+2Ki"), 2048);
        assert_eq!(b("  3Mi "), 3 << 20);
    }

    #[test]
    fn rejects_bad_forms_with_reasons() {
        for bad in [
            "", "Gi", "1GB", "1.2.3Gi", "-1Gi", "1e", "1ex", ".", "1 Gi", "1e99",
        ] {
            let e = Quantity::parse(bad).expect_err(bad);
            assert_eq!(e.input, bad);
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn ordering_follows_size() {
        assert!(Quantity::parse("1Gi").ok() > Quantity::parse("1G").ok());
        assert!(Quantity::parse("1Ti").ok() > Quantity::parse("999Gi").ok());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = Quantity::parse(&s);
        }

        #[test]
        fn binary_suffixes_scale(n in 0u64..1_000_000, i in 0usize..6) {
            let suffix = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i];
            let q = Quantity::parse(&format!("{n}{suffix}")).expect("valid");
            prop_assert_eq!(q.bytes(), (n as u128) << (10 * (i as u32 + 1)));
        }
    }
}
