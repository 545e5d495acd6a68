//! What the upstream and the client are told besides the request and the
//! answer themselves: the reserved headers removed from what the client sent,
//! identity and forwarding headers for the upstream, request ids, and the
//! rate-limit headers. Names are `'static`, values are built on the stack.

use crate::gateway::Gateway;
use crate::request::ctx::Ctx;
use crate::request::limiter::Outcome;
use http::HeaderValue;
use http::header::AUTHORIZATION;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::Result;

/// Headers the client may not set for the upstream: identity (`x-keygate-*`),
/// request id and forwarding headers (a backend trusting `X-Real-IP`,
/// `X-Forwarded-Host` or `Forwarded` must only ever see keygate's word).
/// Compared after folding `_` to `-`, so `X_Keygate_Key_Id` cannot sneak
/// through a backend that treats them alike.
pub fn is_reserved(name: &str) -> bool {
    const EXACT: [&str; 6] = [
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "forwarded",
    ];
    const PREFIX: &str = "x-keygate-";
    let folded_eq = |a: &str, b: &str| {
        a.len() == b.len()
            && a.bytes().zip(b.bytes()).all(|(x, y)| {
                let x = if x == b'_' {
                    b'-'
                } else {
                    x.to_ascii_lowercase()
                };
                x == y
            })
    };
    (name.len() >= PREFIX.len() && folded_eq(&name[..PREFIX.len()], PREFIX))
        || EXACT.iter().any(|e| folded_eq(name, e))
}

/// A client-supplied request id is kept only if it is short and plain.
pub fn sane_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
}

/// A fresh request id: 32 random lowercase hex digits.
pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    // 32 lowercase hex digits are a valid header value.
    hex::encode_to_slice(rand::random::<u128>().to_be_bytes(), &mut buf).map_or_else(
        |_| HeaderValue::from_static("-"),
        |()| HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("-")),
    )
}

/// The client's request id if sane, else a new one.
pub fn request_id(sent: Option<&HeaderValue>) -> HeaderValue {
    match sent {
        Some(v) if sane_request_id(v.as_bytes()) => v.clone(),
        _ => new_request_id(),
    }
}

/// A small header value assembled on the stack.
struct ValueBuf {
    buf: [u8; 96],
    len: usize,
}

impl ValueBuf {
    fn new() -> Self {
        ValueBuf {
            buf: [0; 96],
            len: 0,
        }
    }

    fn push(&mut self, s: &str) -> &mut Self {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        self
    }

    fn push_u64(&mut self, mut n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // Digits are ASCII.
        self.push(std::str::from_utf8(&digits[i..]).unwrap_or("0"))
    }

    fn value(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.buf[..self.len])
            .unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// The RFC 7239 `Forwarded` value, saying what `x-forwarded-for` and
/// `x-forwarded-proto` say: `for=203.0.113.7;proto=https`, an IPv6 address
/// quoted and bracketed, `for=unknown` without an IP peer.
pub fn forwarded(client: Option<&str>, tls: bool) -> HeaderValue {
    let mut v = ValueBuf::new();
    v.push("for=");
    match client {
        Some(ip) if ip.as_bytes().contains(&b':') => v.push("\"[").push(ip).push("]\""),
        Some(ip) => v.push(ip),
        None => v.push("unknown"),
    };
    v.push(if tls { ";proto=https" } else { ";proto=http" });
    v.value()
}

/// Adds the five rate-limit headers of an authorized request.
pub fn rate_limit(h: &mut ResponseHeader, o: &Outcome) -> Result<()> {
    h.insert_header(
        "x-ratelimit-limit",
        HeaderValue::from(o.limit.requests.get()),
    )?;
    h.insert_header("x-ratelimit-remaining", HeaderValue::from(o.remaining))?;
    h.insert_header("x-ratelimit-reset", HeaderValue::from(o.reset_secs))?;
    let mut policy = ValueBuf::new();
    policy
        .push("\"default\";q=")
        .push_u64(o.limit.requests.get().into())
        .push(";w=")
        .push_u64(o.limit.per_secs.get().into());
    h.insert_header("ratelimit-policy", policy.value())?;
    let mut now = ValueBuf::new();
    now.push("\"default\";r=")
        .push_u64(o.remaining)
        .push(";t=")
        .push_u64(o.reset_secs);
    h.insert_header("ratelimit", now.value())?;
    Ok(())
}

/// Rewrites the upstream request: client copies of reserved headers out,
/// `Authorization` out unless configured, identity and forwarding in.
pub fn for_upstream(req: &mut RequestHeader, ctx: &Ctx, gw: &Gateway) -> Result<()> {
    if req.headers.keys().any(|n| is_reserved(n.as_str())) {
        let reserved: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|n| is_reserved(n.as_str()))
            .cloned()
            .collect();
        for name in reserved {
            req.remove_header(&name);
        }
    }
    if !gw.config.upstream_headers.forward_authorization {
        req.remove_header(&AUTHORIZATION);
    }
    req.insert_header("x-request-id", ctx.request_id.clone())?;
    let client = ctx.client.as_ref().map(|c| c.as_str());
    if let Some(ip) = client {
        req.insert_header("x-forwarded-for", ip)?;
    }
    req.insert_header("forwarded", forwarded(client, ctx.tls))?;
    let proto = HeaderValue::from_static(if ctx.tls { "https" } else { "http" });
    req.insert_header("x-forwarded-proto", proto)?;
    if let Some(reason) = ctx.shadow {
        req.insert_header(
            "x-keygate-shadow",
            HeaderValue::from_static(reason.as_str()),
        )?;
    }
    // `decide` names a key only on keyed routes.
    if let Some(slot) = ctx.key_slot {
        let key = gw.policy.keys.record(slot);
        req.insert_header("x-keygate-key-id", key.id())?;
        req.insert_header(
            "x-keygate-key-type",
            HeaderValue::from_static(key.key_type.as_str()),
        )?;
        req.insert_header("x-keygate-company", &*key.company)?;
        if let Some(ws) = &ctx.workspace {
            req.insert_header("x-keygate-workspace", &**ws)?;
        }
        req.insert_header(
            "x-keygate-scopes",
            HeaderValue::from_static(key.scopes.header_value()),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::limit::Limit;

    #[test]
    fn reserved_headers_fold_case_and_underscores() {
        for n in [
            "x-keygate-key-id",
            "x_keygate_key_id",
            "X-KEYGATE-COMPANY",
            "x-keygate-anything",
            "x-request-id",
            "x_forwarded_for",
            "x-forwarded-proto",
        ] {
            assert!(is_reserved(n), "{n}");
        }
        for n in ["x-forwarded-host", "X_Real_IP", "Forwarded"] {
            assert!(is_reserved(n), "{n}");
        }
        for n in [
            "x-keygate",
            "authorization",
            "x-forwarded-port-x",
            "forwarded-for",
            "x-requestid",
        ] {
            assert!(!is_reserved(n), "{n}");
        }
    }

    #[test]
    fn forwarded_says_what_x_forwarded_says() {
        assert_eq!(
            forwarded(Some("10.1.2.3"), false),
            "for=10.1.2.3;proto=http"
        );
        assert_eq!(forwarded(Some("::1"), true), "for=\"[::1]\";proto=https");
        assert_eq!(forwarded(None, true), "for=unknown;proto=https");
    }

    #[test]
    fn request_ids_are_checked() {
        assert!(sane_request_id(b"abc-123"));
        assert!(!sane_request_id(b""));
        assert!(!sane_request_id(b"a b"));
        assert!(!sane_request_id(&[b'a'; 129]));
        assert!(!sane_request_id("é".as_bytes()));
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(id, new_request_id());
        assert_eq!(request_id(Some(&HeaderValue::from_static("mine"))), "mine");
        assert_eq!(
            request_id(Some(&HeaderValue::from_static("not mine"))).len(),
            32
        );
    }

    #[test]
    fn rate_limit_headers_carry_the_figures() {
        let mut h = ResponseHeader::build(200, None).unwrap();
        let o = Outcome {
            allowed: true,
            limit: Limit::from_raw(100, 60, Some(20)).unwrap(),
            remaining: 0,
            reset_secs: 18_446_744_073_709_551_615,
            retry_after_secs: 1,
            unavailable: false,
        };
        rate_limit(&mut h, &o).unwrap();
        let get = |n: &str| h.headers.get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(get("x-ratelimit-limit"), "100");
        assert_eq!(get("x-ratelimit-remaining"), "0");
        assert_eq!(get("x-ratelimit-reset"), "18446744073709551615");
        assert_eq!(get("ratelimit-policy"), "\"default\";q=100;w=60");
        assert_eq!(get("ratelimit"), "\"default\";r=0;t=18446744073709551615");
    }
}
