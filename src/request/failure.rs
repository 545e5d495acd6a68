//! What a failed proxy attempt was: the upstream's fault (502/504, counted
//! per upstream), the client's (a stalled body is 408, a client that stopped
//! reading or went away gets nothing), a request Pingora could not take
//! (400), or keygate's own (500). Pure: the glue hands over where the error
//! came from and what it was.

use crate::model::denial::Denial;
use crate::request::ctx::Ending;
use crate::telemetry::metrics::UpstreamErrorKind;
use std::sync::Arc;

/// Which side an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The upstream connection.
    Upstream,
    /// The client connection.
    Downstream,
    /// Neither (keygate, Pingora, or unknown).
    Internal,
}

/// What kind of error it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Connecting took too long.
    ConnectTimedOut,
    /// A read took too long.
    ReadTimedOut,
    /// A write took too long.
    WriteTimedOut,
    /// A read failed.
    ReadError,
    /// A write failed.
    WriteError,
    /// The peer closed the connection.
    Closed,
    /// Anything else.
    Other,
}

/// The facts of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Where the error came from.
    pub side: Side,
    /// What it was.
    pub kind: Kind,
    /// Whether the client's request body had been read whole.
    pub body_done: bool,
    /// Whether a connection attempt to the upstream failed (already counted
    /// by the connect phase).
    pub connect_failed: bool,
    /// Whether the request had a route (and so an upstream).
    pub routed: bool,
}

/// What the failure was, and so what the client, the counters and the log see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The upstream's fault.
    Upstream {
        /// 504 rather than 502.
        timed_out: bool,
        /// The access log's kind.
        ending: UpstreamErrorKind,
        /// The kind to count now (`None`: counted when connecting).
        count: Option<UpstreamErrorKind>,
    },
    /// The client stopped sending its body: 408.
    ClientStalledBody,
    /// The client stopped reading the response (`send_timeout_ms`).
    ClientStoppedReading,
    /// The client went away or its connection broke.
    ClientGone,
    /// The client sent something Pingora could not take: 400.
    BadRequest,
    /// Anything else: 500.
    Internal,
}

/// Classifies a failure.
///
/// The client's doing: it stopped sending its body (`body_timeout_ms` on our
/// read, or the upstream's read timeout firing while the body it waits for
/// is still incomplete) or stopped reading the response. Such a failure is a
/// 408 or a closed connection, `client_error`, never an upstream error.
pub fn classify(f: Facts) -> Failure {
    match (f.side, f.kind) {
        (Side::Downstream, Kind::ReadTimedOut) => return Failure::ClientStalledBody,
        (Side::Downstream, Kind::WriteTimedOut) => return Failure::ClientStoppedReading,
        (Side::Upstream, Kind::ReadTimedOut) if !f.body_done => {
            return Failure::ClientStalledBody;
        }
        (Side::Downstream, Kind::ReadError | Kind::WriteError | Kind::Closed) => {
            return Failure::ClientGone;
        }
        (Side::Downstream, _) => return Failure::BadRequest,
        _ => {}
    }
    if f.routed && (f.connect_failed || f.side == Side::Upstream) {
        let timed_out = matches!(
            f.kind,
            Kind::ConnectTimedOut | Kind::ReadTimedOut | Kind::WriteTimedOut
        );
        let kind = if timed_out {
            UpstreamErrorKind::Timeout
        } else {
            UpstreamErrorKind::Other
        };
        return Failure::Upstream {
            timed_out,
            ending: if f.connect_failed && !timed_out {
                UpstreamErrorKind::Connect
            } else {
                kind
            },
            count: (!f.connect_failed).then_some(kind),
        };
    }
    Failure::Internal
}

impl Failure {
    /// The answer to write, if the client can still be told anything.
    pub fn denial(self, upstream: Option<&Arc<str>>) -> Option<Denial> {
        match self {
            Failure::Upstream { timed_out, .. } => {
                let upstream = Arc::clone(upstream?);
                Some(if timed_out {
                    Denial::UpstreamTimeout { upstream }
                } else {
                    Denial::UpstreamUnavailable { upstream }
                })
            }
            Failure::ClientStalledBody => Some(Denial::RequestTimeout),
            Failure::ClientStoppedReading | Failure::ClientGone => None,
            Failure::BadRequest => Some(Denial::InvalidRequest),
            Failure::Internal => Some(Denial::Internal),
        }
    }

    /// How the request ended (`None`: as far as it got).
    pub fn ending(self) -> Option<Ending> {
        match self {
            Failure::Upstream { ending, .. } => Some(Ending::UpstreamError(ending)),
            Failure::ClientStalledBody
            | Failure::ClientStoppedReading
            | Failure::ClientGone
            | Failure::BadRequest => Some(Ending::ClientError),
            Failure::Internal => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Kind::*;
    use Side::*;

    fn facts(side: Side, kind: Kind, body_done: bool, connect_failed: bool) -> Facts {
        Facts {
            side,
            kind,
            body_done,
            connect_failed,
            routed: true,
        }
    }

    #[test]
    fn client_stalls_are_told_from_upstream_timeouts() {
        use UpstreamErrorKind as U;
        for (f, expected) in [
            (
                facts(Downstream, ReadTimedOut, false, false),
                Failure::ClientStalledBody,
            ),
            (
                facts(Downstream, WriteTimedOut, true, false),
                Failure::ClientStoppedReading,
            ),
            (
                facts(Upstream, ReadTimedOut, false, false),
                Failure::ClientStalledBody,
            ),
            (
                facts(Upstream, ReadTimedOut, true, false),
                Failure::Upstream {
                    timed_out: true,
                    ending: U::Timeout,
                    count: Some(U::Timeout),
                },
            ),
            (
                facts(Upstream, WriteTimedOut, false, false),
                Failure::Upstream {
                    timed_out: true,
                    ending: U::Timeout,
                    count: Some(U::Timeout),
                },
            ),
            (
                facts(Upstream, ConnectTimedOut, false, true),
                Failure::Upstream {
                    timed_out: true,
                    ending: U::Timeout,
                    count: None,
                },
            ),
            (
                facts(Internal, Other, true, true),
                Failure::Upstream {
                    timed_out: false,
                    ending: U::Connect,
                    count: None,
                },
            ),
            (
                facts(Upstream, Closed, true, false),
                Failure::Upstream {
                    timed_out: false,
                    ending: U::Other,
                    count: Some(U::Other),
                },
            ),
            (
                facts(Downstream, ReadError, false, true),
                Failure::ClientGone,
            ),
            (facts(Downstream, Closed, true, false), Failure::ClientGone),
            (facts(Downstream, Other, true, false), Failure::BadRequest),
            (facts(Internal, Other, true, false), Failure::Internal),
        ] {
            assert_eq!(classify(f), expected, "{f:?}");
        }
        let unrouted = Facts {
            routed: false,
            ..facts(Upstream, Closed, true, false)
        };
        assert_eq!(classify(unrouted), Failure::Internal);
    }

    #[test]
    fn each_failure_has_its_answer_and_ending() {
        let api: Arc<str> = "api".into();
        let timeout = Failure::Upstream {
            timed_out: true,
            ending: UpstreamErrorKind::Timeout,
            count: None,
        };
        assert_eq!(
            timeout.denial(Some(&api)),
            Some(Denial::UpstreamTimeout {
                upstream: Arc::clone(&api)
            })
        );
        assert_eq!(
            Failure::ClientStalledBody.denial(None),
            Some(Denial::RequestTimeout)
        );
        assert_eq!(Failure::ClientStoppedReading.denial(None), None);
        assert_eq!(
            Failure::BadRequest.denial(None),
            Some(Denial::InvalidRequest)
        );
        assert_eq!(Failure::Internal.denial(None), Some(Denial::Internal));
        assert_eq!(Failure::ClientGone.ending(), Some(Ending::ClientError));
        assert_eq!(Failure::Internal.ending(), None);
    }
}
