//! The checks before row 1, on the shape of the head alone: framing that two
//! parsers could read differently, and a head over the configured limits.
//! Pure: the glue hands over the facts of the head.

use crate::model::denial::Denial;

/// What the checks need to know of a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadFacts {
    /// Header fields.
    pub fields: usize,
    /// Bytes of the request line and the fields, as on the wire (about).
    pub bytes: usize,
    /// A `Transfer-Encoding` field is present.
    pub transfer_encoding: bool,
    /// A `Content-Length` field was sent (Pingora drops it when a
    /// `Transfer-Encoding` is present, so the raw head tells).
    pub content_length: bool,
}

/// The limits of `[server]` the head must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// `max_header_bytes`.
    pub max_bytes: usize,
    /// `max_headers`.
    pub max_fields: usize,
}

/// `Some(denial)` when the head goes no further.
///
/// `Content-Length` together with `Transfer-Encoding`: Pingora follows RFC
/// 9112 (the length is dropped, the body read as chunked, the connection
/// closed), but a backend or a proxy behind us might read the length
/// instead: refuse, as nginx does. A head over the limits gets 431 whatever
/// its key.
pub fn precheck(head: &HeadFacts, limits: HeadLimits) -> Option<Denial> {
    if head.transfer_encoding && head.content_length {
        return Some(Denial::InvalidRequest);
    }
    if head.fields > limits.max_fields || head.bytes > limits.max_bytes {
        return Some(Denial::HeadersTooLarge);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1000,
        max_fields: 10,
    };

    fn head(fields: usize, bytes: usize, te: bool, cl: bool) -> HeadFacts {
        HeadFacts {
            fields,
            bytes,
            transfer_encoding: te,
            content_length: cl,
        }
    }

    #[test]
    fn framing_and_size_are_checked_in_that_order() {
        for (h, expected) in [
            (head(3, 200, false, false), None),
            (head(3, 200, true, false), None),
            (head(3, 200, false, true), None),
            (head(3, 200, true, true), Some(Denial::InvalidRequest)),
            (head(11, 200, true, true), Some(Denial::InvalidRequest)),
            (head(10, 1000, false, false), None),
            (head(11, 200, false, false), Some(Denial::HeadersTooLarge)),
            (head(3, 1001, false, true), Some(Denial::HeadersTooLarge)),
        ] {
            assert_eq!(precheck(&h, LIMITS), expected, "{h:?}");
        }
    }
}
