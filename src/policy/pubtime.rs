//! Reading `pubtime`, the publish time an index line carries: RFC 3339
//! (`2026-11-22T23:00:39Z`; the registry writes UTC, whole seconds). An
//! offset and fractional seconds are read too, so that a registry writing
//! them is not mistaken for one that writes no time at all.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses an RFC 3339 date-time into an instant, or says why not.
pub fn parse_pubtime(text: &str) -> Result<SystemTime, String> {
    let expected = || format!("{text:?} is not an RFC 3339 time like 2026-11-22T23:00:39Z");
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(expected());
    }
    // On bytes: an upstream's text may hold any UTF-8 at these places, and
    // slicing it there could cut a character.
    let number = |range: std::ops::Range<usize>| -> Result<u64, String> {
        b[range].iter().try_fold(0u64, |n, c| match c {
            b'0'..=b'9' => Ok(n * 10 + u64::from(c - b'0')),
            _ => Err(expected()),
        })
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // A leap second (:60) is read as the second after :59.
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(expected());
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(expected());
        }
        // Nanoseconds: the first nine digits; further ones are below them.
        let kept = &fraction[..digits.min(9)];
        nanos = kept.parse::<u32>().map_err(|_| expected())? * 10u32.pow(9 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_secs: i64 = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(expected());
            }
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if hours > 23 || minutes > 59 {
                return Err(expected());
            }
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return Err(expected()),
    };
    let days = days_from_civil(year as i64, month, day);
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset_secs;
    let at = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    at.and_then(|at| at.checked_add(Duration::from_nanos(u64::from(nanos))))
        .ok_or_else(expected)
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u64, day: u64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = month as i64;
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn reads_the_registry_form() {
        assert_eq!(parse_pubtime("1970-01-01T00:00:00Z"), Ok(at(0)));
        // `date -u -d 2026-11-22T23:00:39Z +%s`
        assert_eq!(parse_pubtime("2026-11-22T23:00:39Z"), Ok(at(1_795_388_439)));
        assert_eq!(parse_pubtime("2014-12-05T20:20:39Z"), Ok(at(1_417_810_839)));
        assert_eq!(parse_pubtime("2024-02-29T12:00:00Z"), Ok(at(1_709_208_000)));
    }

    #[test]
    fn reads_offsets_and_fractions() {
        assert_eq!(
            parse_pubtime("2026-11-23T01:00:39+02:00"),
            Ok(at(1_795_388_439))
        );
        assert_eq!(
            parse_pubtime("2026-11-22T20:30:39-02:30"),
            Ok(at(1_795_388_439))
        );
        assert_eq!(
            parse_pubtime("2026-11-22T23:00:39.25Z"),
            Ok(at(1_795_388_439) + Duration::from_millis(250))
        );
        assert_eq!(
            parse_pubtime("2026-11-22t23:00:39.1234567891z"),
            Ok(at(1_795_388_439) + Duration::from_nanos(123_456_789))
        );
        assert_eq!(
            parse_pubtime("1969-12-31T23:59:59Z"),
            Ok(UNIX_EPOCH - Duration::from_secs(1))
        );
    }

    #[test]
    fn refuses_what_is_not_rfc_3339() {
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22 23:00:39Z",
            "2026-11-22T23:00:39",
            "2026-11-22T23:00:39+0200",
            "2026-13-22T23:00:39Z",
            "2026-02-29T23:00:39Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T23:00:39.Z",
            "2026-11-22T23:00:39Zjunk",
            "+026-11-22T23:00:39Z",
            "2026-11-22T23:00:39+24:00",
            "1795388439",
            "2026-11-22T23:00:3\u{e9}Z",
            "2026-11-22T23:\u{e9}0:39Z",
        ] {
            let err = parse_pubtime(bad).unwrap_err();
            assert!(err.contains("is not an RFC 3339 time"), "{bad:?}: {err}");
        }
    }
}
