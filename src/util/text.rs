//! Numbers and times written straight into a byte buffer, for the log lines
//! keygate formats by hand.

use std::cell::Cell;

/// `n` in decimal, zero-padded to at least `width` digits.
pub fn digits(buf: &mut Vec<u8>, n: u64, width: usize) {
    let mut text = itoa::Buffer::new();
    let text = text.format(n);
    buf.extend(std::iter::repeat_n(b'0', width.saturating_sub(text.len())));
    buf.extend_from_slice(text.as_bytes());
}

/// RFC 3339 UTC with microseconds, like `2026-11-24T15:04:35.123456Z`:
/// fixed width, so its digits are written in place and copied once. The
/// date and time of day are worked out once a second per thread.
pub fn rfc3339_micros(buf: &mut Vec<u8>, unix_micros: i64) {
    fn put(out: &mut [u8], mut n: u32) {
        for d in out.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    thread_local! {
        /// The last second written and its text up to the fraction.
        static SECOND: Cell<(i64, [u8; 20])> = const { Cell::new((i64::MIN, [0; 20])) };
    }
    let (secs, micros) = (
        unix_micros.div_euclid(1_000_000),
        unix_micros.rem_euclid(1_000_000),
    );
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let (head, fraction) = text.split_at_mut(20);
    SECOND.with(|second| match second.get() {
        (s, cached) if s == secs => head.copy_from_slice(&cached),
        _ => {
            let dt = time::OffsetDateTime::from_unix_timestamp(secs)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            put(&mut head[0..4], u32::try_from(dt.year()).unwrap_or(0));
            put(&mut head[5..7], u32::from(dt.month() as u8));
            put(&mut head[8..10], u32::from(dt.day()));
            put(&mut head[11..13], u32::from(dt.hour()));
            put(&mut head[14..16], u32::from(dt.minute()));
            put(&mut head[17..19], u32::from(dt.second()));
            let mut cached = [0; 20];
            cached.copy_from_slice(head);
            second.set((secs, cached));
        }
    });
    put(&mut fraction[..6], u32::try_from(micros).unwrap_or(0));
    buf.extend_from_slice(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_micros() {
        let text = |micros: &[i64]| {
            let mut buf = Vec::new();
            for &m in micros {
                rfc3339_micros(&mut buf, m);
            }
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(
            text(&[1_795_000_000_123_456]),
            "2026-11-18T11:06:40.123456Z"
        );
        assert_eq!(
            text(&[1_796_218_965_000_007]),
            "2026-12-02T13:42:45.000007Z"
        );
        // The same second again, and the next: the cached part follows.
        assert_eq!(
            text(&[1_796_218_965_999_999, 1_796_218_966_000_000]),
            "2026-12-02T13:42:45.999999Z2026-12-02T13:42:46.000000Z"
        );
        assert_eq!(text(&[-1]), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            text(&[253_402_300_799_999_999]),
            "9999-12-31T23:59:59.999999Z"
        );
    }
}
