//! Numbers and times written straight into a byte buffer, for the log lines
//! keygate formats by hand.

/// `n` in decimal, zero-padded to at least `width` digits.
pub fn digits(buf: &mut Vec<u8>, n: u64, width: usize) {
    let mut text = itoa::Buffer::new();
    let text = text.format(n);
    buf.extend(std::iter::repeat_n(b'0', width.saturating_sub(text.len())));
    buf.extend_from_slice(text.as_bytes());
}

/// RFC 3339 UTC with microseconds, like `2026-11-24T15:04:35.123456Z`.
pub fn rfc3339_micros(buf: &mut Vec<u8>, unix_micros: i64) {
    let (secs, micros) = (
        unix_micros.div_euclid(1_000_000),
        unix_micros.rem_euclid(1_000_000),
    );
    let dt =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let year = u64::try_from(dt.year()).unwrap_or(0);
    digits(buf, year, 4);
    for (sep, n) in [
        (b'-', dt.month() as u8),
        (b'-', dt.day()),
        (b'T', dt.hour()),
        (b':', dt.minute()),
        (b':', dt.second()),
    ] {
        buf.push(sep);
        digits(buf, u64::from(n), 2);
    }
    buf.push(b'.');
    digits(buf, u64::try_from(micros).unwrap_or(0), 6);
    buf.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_micros() {
        let mut buf = Vec::new();
        rfc3339_micros(&mut buf, 1_795_000_000_123_456);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "2026-11-18T11:06:40.123456Z"
        );
        let mut buf = Vec::new();
        rfc3339_micros(&mut buf, 1_796_218_965_000_007);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "2026-12-02T13:42:45.000007Z"
        );
    }
}
