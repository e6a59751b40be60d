//! Kubernetes resource quantities ("1Gi", "500M", "1.5e9") as whole bytes.

/// Bytes in a quantity, rounded up; `None` if it is not a quantity or is negative.
pub(crate) fn parse_quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number = number.strip_prefix('+').unwrap_or(number);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || frac.len() > 18 {
        return None;
    }
    // value = digits / 10^frac_len * num / den, kept as an exact fraction.
    let digits: u128 = format!("{int}{frac}").parse().ok()?;
    let mut num: u128 = 1;
    let mut den: u128 = 10u128.checked_pow(frac.len() as u32)?;
    let binary = |p: u32| 1024u128.checked_pow(p);
    let decimal = |p: u32| 1000u128.checked_pow(p);
    match suffix {
        "" => {}
        "Ki" => num = binary(1)?,
        "Mi" => num = binary(2)?,
        "Gi" => num = binary(3)?,
        "Ti" => num = binary(4)?,
        "Pi" => num = binary(5)?,
        "Ei" => num = binary(6)?,
        "k" => num = decimal(1)?,
        "M" => num = decimal(2)?,
        "G" => num = decimal(3)?,
        "T" => num = decimal(4)?,
        "P" => num = decimal(5)?,
        "E" => num = decimal(6)?,
        "m" => den = den.checked_mul(1000)?,
        "u" => den = den.checked_mul(1_000_000)?,
        "n" => den = den.checked_mul(1_000_000_000)?,
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().ok()?;
            let p = 10u128.checked_pow(exp.unsigned_abs())?;
            if exp >= 0 {
                num = p;
            } else {
                den = den.checked_mul(p)?;
            }
        }
        _ => return None,
    }
    let total = digits.checked_mul(num)?.div_ceil(den);
    u64::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_claims_use() {
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_quantity("500M"), Some(500_000_000));
        assert_eq!(parse_quantity("10"), Some(10));
        assert_eq!(parse_quantity("1e3"), Some(1000));
        assert_eq!(parse_quantity("1500m"), Some(2));
        assert_eq!(parse_quantity("8Ei"), Some(8 << 60));
        for bad in ["", "Gi", "-1Gi", "1GiB", "1..2", "abc", "16Ei"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }
}
