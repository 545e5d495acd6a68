//! A rate limit as configured: `requests` per `per_secs` with a bucket of
//! `burst`, every figure non-zero by construction.

use std::num::NonZeroU32;

/// Why a rate limit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A figure outside 1..=u32::MAX.
    #[error("{what} must be a whole number from 1 to {max} (got {got})", max = u32::MAX)]
    OutOfRange {
        /// `requests`, `per_secs` or `burst`.
        what: &'static str,
        /// The value given.
        got: i64,
    },
    /// The CLI form did not parse.
    #[error("rate limit {0:?} must look like 1000/60s (optionally :BURST)")]
    Syntax(String),
}

/// Nanoseconds in a second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A rate: `requests` per `per_secs`, with a bucket of `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Tokens refilled per window; the `X-RateLimit-Limit` figure.
    pub requests: NonZeroU32,
    /// The window, in seconds.
    pub per_secs: NonZeroU32,
    /// Bucket capacity.
    pub burst: NonZeroU32,
}

impl Limit {
    /// 100 requests per 60 s, burst 100.
    pub const DEFAULT: Limit = Limit {
        requests: nz(100),
        per_secs: nz(60),
        burst: nz(100),
    };

    /// Validates raw numbers from a file; `burst` defaults to `requests`.
    pub fn from_raw(requests: i64, per_secs: i64, burst: Option<i64>) -> Result<Limit, LimitError> {
        fn positive(what: &'static str, v: i64) -> Result<NonZeroU32, LimitError> {
            u32::try_from(v)
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or(LimitError::OutOfRange { what, got: v })
        }
        let requests = positive("requests", requests)?;
        let per_secs = positive("per_secs", per_secs)?;
        let burst = match burst {
            Some(b) => positive("burst", b)?,
            None => requests,
        };
        Ok(Limit {
            requests,
            per_secs,
            burst,
        })
    }

    /// Parses the CLI form `REQUESTS/WINDOW` (`1000/60s`, `10/1m`, `5/1h`), with
    /// an optional `:BURST` (`1000/60s:2000`).
    pub fn parse_cli(text: &str) -> Result<Limit, LimitError> {
        let bad = || LimitError::Syntax(text.to_string());
        let (rate, burst) = match text.split_once(':') {
            Some((r, b)) => (r, Some(b.parse::<i64>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let (req, window) = rate.split_once('/').ok_or_else(bad)?;
        let requests = req.trim().parse::<i64>().map_err(|_| bad())?;
        let window = humantime::parse_duration(window.trim()).map_err(|_| bad())?;
        if window.subsec_nanos() != 0 {
            return Err(bad());
        }
        Limit::from_raw(requests, window.as_secs() as i64, burst)
    }

    /// Nanoseconds per token, rounded up so refill is never faster than configured.
    pub fn interval(self) -> u64 {
        let window = u128::from(self.per_secs.get()) * u128::from(NANOS_PER_SEC);
        window
            .div_ceil(u128::from(self.requests.get()))
            .min(u128::from(u64::MAX / 4)) as u64
    }

    /// Nanoseconds of debt a full bucket can absorb.
    pub fn capacity(self) -> u64 {
        let c = u128::from(self.interval()) * u128::from(self.burst.get());
        c.min(u128::from(u64::MAX / 4)) as u64
    }
}

/// A compile-time non-zero constant: a zero would fail the build, not a request.
const fn nz(v: u32) -> NonZeroU32 {
    match NonZeroU32::new(v) {
        Some(n) => n,
        None => panic!("zero rate constant"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_raw_validates_and_defaults_burst() {
        let l = Limit::from_raw(1000, 60, None).unwrap();
        assert_eq!(
            (l.requests.get(), l.per_secs.get(), l.burst.get()),
            (1000, 60, 1000)
        );
        let l = Limit::from_raw(1, 1, Some(7)).unwrap();
        assert_eq!(l.burst.get(), 7);
        assert_eq!(
            Limit::from_raw(u32::MAX.into(), 1, None)
                .unwrap()
                .requests
                .get(),
            u32::MAX
        );
        let max = u32::MAX;
        for (r, p, b, msg) in [
            (
                0,
                60,
                None,
                format!("requests must be a whole number from 1 to {max} (got 0)"),
            ),
            (
                -1,
                60,
                None,
                format!("requests must be a whole number from 1 to {max} (got -1)"),
            ),
            (
                10,
                0,
                None,
                format!("per_secs must be a whole number from 1 to {max} (got 0)"),
            ),
            (
                10,
                -60,
                None,
                format!("per_secs must be a whole number from 1 to {max} (got -60)"),
            ),
            (
                10,
                60,
                Some(0),
                format!("burst must be a whole number from 1 to {max} (got 0)"),
            ),
            (
                10,
                60,
                Some(-3),
                format!("burst must be a whole number from 1 to {max} (got -3)"),
            ),
            (
                i64::from(max) + 1,
                60,
                None,
                format!("requests must be a whole number from 1 to {max} (got 4294967296)"),
            ),
        ] {
            assert_eq!(
                Limit::from_raw(r, p, b).map_err(|e| e.to_string()),
                Err(msg),
                "{r}/{p}:{b:?}"
            );
        }
    }

    #[test]
    fn default_limit_is_100_per_minute() {
        assert_eq!(Limit::DEFAULT, Limit::from_raw(100, 60, Some(100)).unwrap());
    }

    #[test]
    fn parse_cli_reads_requests_window_and_burst() {
        let cases = [
            ("1000/60s", (1000, 60, 1000)),
            ("10/1m", (10, 60, 10)),
            ("5/1h:20", (5, 3600, 20)),
            ("1000/60s:2000", (1000, 60, 2000)),
            ("7/1s", (7, 1, 7)),
            ("3/2min", (3, 120, 3)),
            ("1/1day", (1, 86400, 1)),
            (" 10 / 60s ", (10, 60, 10)),
        ];
        for (text, (r, p, b)) in cases {
            let l = Limit::parse_cli(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (l.requests.get(), l.per_secs.get(), l.burst.get()),
                (r, p, b),
                "{text}"
            );
        }
    }

    #[test]
    fn parse_cli_refuses_malformed_text() {
        for text in [
            "",
            "1000",
            "1000/",
            "/60s",
            "abc/60s",
            "10/60",
            "10/sixty",
            "10/1500ms",
            "10/60s:",
            "10/60s:x",
            "10/60s:5:6",
            "1.5/60s",
        ] {
            assert_eq!(
                Limit::parse_cli(text).map_err(|e| e.to_string()),
                Err(format!(
                    "rate limit {text:?} must look like 1000/60s (optionally :BURST)"
                )),
                "{text:?}"
            );
        }
    }

    #[test]
    fn parse_cli_refuses_zero_and_negative_numbers() {
        let max = u32::MAX;
        for (text, msg) in [
            (
                "0/60s",
                format!("requests must be a whole number from 1 to {max} (got 0)"),
            ),
            (
                "-5/60s",
                format!("requests must be a whole number from 1 to {max} (got -5)"),
            ),
            (
                "10/0s",
                format!("per_secs must be a whole number from 1 to {max} (got 0)"),
            ),
            (
                "10/60s:0",
                format!("burst must be a whole number from 1 to {max} (got 0)"),
            ),
            (
                "10/60s:-1",
                format!("burst must be a whole number from 1 to {max} (got -1)"),
            ),
        ] {
            assert_eq!(
                Limit::parse_cli(text).map_err(|e| e.to_string()),
                Err(msg),
                "{text}"
            );
        }
    }
}
