//! What one request carries from phase to phase ([`Ctx`]), and how it ended
//! ([`Ending`], the access log's `outcome`).

use crate::gateway::Gateway;
use crate::gateway::upstream::Upstream;
use crate::model::denial::{Denial, ShadowReason};
use crate::request::InflightGuard;
use crate::request::limiter::Outcome;
use crate::telemetry::metrics::{RouteMetrics, UpstreamErrorKind};
use http::HeaderValue;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// How a request ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Still going (or ended before any phase said otherwise).
    Pending,
    /// The upstream's answer went out.
    Proxied,
    /// keygate answered with this denial's label.
    Denied(&'static str),
    /// The readiness probe (neither logged nor counted).
    Probe,
    /// The upstream failed in this way.
    UpstreamError(UpstreamErrorKind),
    /// The client stalled or went away.
    ClientError,
}

impl Ending {
    /// The access log's `outcome`; `failed` when Pingora reported an error
    /// that no phase classified.
    pub fn label(self, failed: bool) -> &'static str {
        match self {
            Ending::Pending if failed => "error",
            Ending::Pending | Ending::Proxied => "proxied",
            Ending::Denied(label) => label,
            Ending::Probe => "probe",
            Ending::UpstreamError(UpstreamErrorKind::Connect) => "upstream_connect",
            Ending::UpstreamError(UpstreamErrorKind::Timeout) => "upstream_timeout",
            Ending::UpstreamError(UpstreamErrorKind::Other) => "upstream_error",
            Ending::ClientError => "client_error",
        }
    }

    /// The ending of a request answered with `denial`.
    pub fn of(denial: &Denial) -> Ending {
        Ending::Denied(denial.label())
    }
}

/// Short ASCII text held inline: a key id (at most 128 bytes) or an IP
/// address, copied out once so that no phase needs the heap for it.
#[derive(Clone, Copy)]
pub struct Inline<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Inline<N> {
    /// `text`, cut at `N` bytes (callers only pass text known to fit), or
    /// before, at the start of the character that would be split.
    pub fn new(text: &str) -> Self {
        let mut bytes = [0u8; N];
        let mut n = text.len().min(N).min(usize::from(u8::MAX));
        while !text.is_char_boundary(n) {
            n -= 1;
        }
        bytes[..n].copy_from_slice(&text.as_bytes()[..n]);
        Inline {
            len: n as u8,
            bytes,
        }
    }

    /// The text. Read several times a request (forwarding headers, the
    /// access log), so it is not validated again each time.
    #[allow(unsafe_code)]
    pub fn as_str(&self) -> &str {
        let text = &self.bytes[..usize::from(self.len)];
        // SAFETY: `new` is the only writer of `bytes` and `len`, and it
        // copies a prefix of a `&str` ending on a character boundary, so
        // `text` is valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(text) }
    }
}

/// A key id, inline.
pub type KeyId = Inline<{ crate::snapshot::MAX_ID_LEN }>;

/// An IP address as text, inline (the longest IPv6 text is 45 bytes).
pub type IpText = Inline<46>;

impl IpText {
    /// The text of `ip`, formatted without the heap (IPv4 by hand: the
    /// formatting machinery costs more than the rest of this).
    pub fn of(ip: IpAddr) -> IpText {
        use std::io::Write;
        if let IpAddr::V4(v4) = ip {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                let mut digits = itoa::Buffer::new();
                let text = digits.format(octet).as_bytes();
                buf[n..n + text.len()].copy_from_slice(text);
                n += text.len();
            }
            return IpText::new(std::str::from_utf8(&buf[..n]).unwrap_or("-"));
        }
        let mut buf = [0u8; 46];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(cursor, "{ip}");
        let n = cursor.position() as usize;
        IpText::new(std::str::from_utf8(&buf[..n]).unwrap_or("-"))
    }
}

/// What the end of a proxied request needs once the upstream has answered:
/// enough to count and log it. The request then lets go of its gateway, so
/// a client reading a long response slowly pins a few handles, not a whole
/// generation of state (key index included) across reloads.
pub struct Settled {
    /// The route's metric handles.
    pub metrics: Arc<RouteMetrics>,
    /// Route name.
    pub route: Arc<str>,
    /// The upstream (its name and error counters).
    pub upstream: Arc<Upstream>,
    /// The key's company.
    pub company: Option<Arc<str>>,
    /// The key's id.
    pub key_id: Option<KeyId>,
}

/// Per-request state.
pub struct Ctx {
    /// When the head was handed over.
    pub started: Instant,
    /// The state the request was decided on, until the upstream answers.
    pub gateway: Option<Arc<Gateway>>,
    /// What is left of it after that.
    pub settled: Option<Settled>,
    /// Sane client value or a new one; a `HeaderValue` so the upstream and
    /// client copies share one buffer.
    pub request_id: HeaderValue,
    /// Client IP.
    pub client: Option<IpText>,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// Index of the matched route in the gateway's policy.
    pub route: Option<usize>,
    /// Slot of the authenticated key in the gateway's index.
    pub key_slot: Option<usize>,
    /// The workspace told to the upstream.
    pub workspace: Option<Arc<str>>,
    /// The limiter's figures, for the rate-limit headers (never on a shadow
    /// route: its client sees nothing of keygate's).
    pub rate: Option<Outcome>,
    /// On a shadow route: the first check that failed, told to the upstream.
    pub shadow: Option<ShadowReason>,
    /// Servers that refused a connection for this request.
    pub tried: Vec<PeerAddr>,
    /// Whether a connection attempt failed.
    pub connect_failed: bool,
    /// How it ended.
    pub outcome: Ending,
    _inflight: InflightGuard,
}

impl Ctx {
    /// A fresh request, counted in flight until dropped.
    pub fn new(inflight: InflightGuard) -> Ctx {
        Ctx {
            started: Instant::now(),
            gateway: None,
            settled: None,
            request_id: HeaderValue::from_static(""),
            client: None,
            tls: false,
            route: None,
            key_slot: None,
            workspace: None,
            rate: None,
            shadow: None,
            tried: Vec::new(),
            connect_failed: false,
            outcome: Ending::Pending,
            _inflight: inflight,
        }
    }

    /// The request id as text (it only ever holds visible ASCII).
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }

    /// Keeps what logging needs and lets go of the gateway.
    pub fn settle(&mut self) {
        if let Some(gw) = self.gateway.take()
            && let Some(route) = self.route.and_then(|r| gw.policy.routes.get(r))
        {
            let key = self.key_slot.map(|s| gw.policy.keys.record(s));
            self.settled = Some(Settled {
                metrics: Arc::clone(gw.route_metrics(self.route)),
                route: Arc::clone(&route.name),
                upstream: Arc::clone(&gw.upstreams[route.upstream]),
                company: key.map(|k| Arc::clone(&k.company)),
                key_id: key.map(|k| KeyId::new(k.id())),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_text_holds_ids_and_addresses() {
        let id = KeyId::new("key_acme_ops");
        assert_eq!(id.as_str(), "key_acme_ops");
        let long = "k".repeat(crate::snapshot::MAX_ID_LEN);
        assert_eq!(KeyId::new(&long).as_str(), long);
        let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        assert_eq!(IpText::of(v6).as_str(), v6.to_string());
        assert_eq!(IpText::of("10.0.0.1".parse().unwrap()).as_str(), "10.0.0.1");
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "192.168.0.9",
            "::1",
            "::ffff:10.0.0.1",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::of(parsed).as_str(), parsed.to_string(), "{ip}");
        }
    }

    #[test]
    fn inline_text_too_long_is_cut_before_a_split_character() {
        type Four = Inline<4>;
        assert_eq!(Four::new("abcdef").as_str(), "abcd");
        // "é" is two bytes: the cut at 4 would fall inside the second.
        assert_eq!(Four::new("aéé").as_str(), "aé");
        assert_eq!(Four::new("€€").as_str(), "€");
        assert_eq!(Four::new("").as_str(), "");
    }

    #[test]
    fn endings_name_their_outcome() {
        assert_eq!(Ending::Pending.label(true), "error");
        assert_eq!(Ending::Pending.label(false), "proxied");
        assert_eq!(Ending::of(&Denial::BadPath).label(false), "bad_path");
        assert_eq!(
            Ending::UpstreamError(UpstreamErrorKind::Connect).label(false),
            "upstream_connect"
        );
    }
}
