//! What the upstream and the client are told besides the request and the
//! answer themselves: the reserved headers removed from what the client sent,
//! identity and forwarding headers for the upstream, request ids, and the
//! rate-limit headers. Names are parsed once (statics), values are built on
//! the stack, and both heads are edited in their plain `http` header map
//! ([`edit_request`], [`edit_response`]).

use crate::gateway::Gateway;
use crate::model::key::Prefixes;
use crate::model::limit::Limit;
use crate::request::ctx::Ctx;
use crate::request::limiter::Outcome;
use bytes::BytesMut;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::Error;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{ErrorType, OrErr, Result};
use std::cell::RefCell;
use std::ops::Range;

/// The names of the headers keygate adds, parsed once; each static is the
/// header it is named for.
#[allow(missing_docs)]
pub mod name {
    use http::HeaderName;

    pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub static X_KEYGATE_PROBE: HeaderName = HeaderName::from_static(crate::request::PROBE_HEADER);
    pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
    pub static X_KEYGATE_SHADOW: HeaderName = HeaderName::from_static("x-keygate-shadow");
    pub static X_KEYGATE_KEY_ID: HeaderName = HeaderName::from_static("x-keygate-key-id");
    pub static X_KEYGATE_KEY_TYPE: HeaderName = HeaderName::from_static("x-keygate-key-type");
    pub static X_KEYGATE_COMPANY: HeaderName = HeaderName::from_static("x-keygate-company");
    pub static X_KEYGATE_WORKSPACE: HeaderName = HeaderName::from_static("x-keygate-workspace");
    pub static X_KEYGATE_SCOPES: HeaderName = HeaderName::from_static("x-keygate-scopes");
    pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
    pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
    pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
    pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
}

/// The most headers keygate adds to one head: room for them is made once.
const ADDED: usize = 10;

/// Runs `edit` on the header map of `req` itself, then puts the head back
/// together with its request-target and HTTP/2 end-of-stream choice intact.
///
/// Pingora's `insert_header` parses every name into a newly allocated
/// `HeaderName` and inserts it into a second map that keeps each name's case
/// as sent; editing the `http` parts takes one insert per header with names
/// parsed once. The case map goes with it: the upstream gets header names
/// lowercased (the standard ones title-cased), as it would over HTTP/2 and as
/// Envoy and HAProxy send them. Field names are case-insensitive (RFC 9110
/// §5.1).
pub fn edit_request(
    req: &mut RequestHeader,
    edit: impl FnOnce(&mut HeaderMap) -> Result<()>,
) -> Result<()> {
    // A target the URI cannot carry as sent (not UTF-8, absolute form) is
    // kept apart by Pingora and lost by the parts: it is set again.
    let raw = {
        let target = req.raw_path();
        let from_uri = req.uri.path_and_query().map(|p| p.as_str().as_bytes());
        (Some(target) != from_uri).then(|| target.to_vec())
    };
    let end_stream = req.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(req, placeholder));
    parts.headers.reserve(ADDED);
    let edited = edit(&mut parts.headers);
    let mut rebuilt = RequestHeader::from(parts);
    if let Some(raw) = raw {
        rebuilt.set_raw_path(&raw)?;
    }
    if let Some(end_stream) = end_stream {
        rebuilt.set_send_end_stream(end_stream);
    }
    *req = rebuilt;
    edited
}

/// [`edit_request`] for a response head: runs `edit` on its header map and
/// keeps the upstream's reason phrase. Names reach the client lowercased
/// (the standard ones title-cased), as over HTTP/2.
pub fn edit_response(
    resp: &mut ResponseHeader,
    edit: impl FnOnce(&mut HeaderMap) -> Result<()>,
) -> Result<()> {
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(resp, placeholder));
    parts.headers.reserve(ADDED);
    let edited = edit(&mut parts.headers);
    let mut rebuilt = ResponseHeader::from(parts);
    if reason.is_some() {
        rebuilt.set_reason_phrase(reason.as_deref())?;
    }
    *resp = rebuilt;
    edited
}

/// Headers the client may not set for the upstream: identity (`x-keygate-*`),
/// request id and forwarding headers (a backend trusting `X-Real-IP`,
/// `X-Forwarded-Host` or `Forwarded` must only ever see keygate's word), and
/// URL and method overrides (the request checked is the request served).
/// Compared after folding `_` to `-`, so `X_Keygate_Key_Id` cannot sneak
/// through a backend that treats them alike.
pub fn is_reserved(name: &str) -> bool {
    const EXACT: [&str; 13] = [
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
        "forwarded",
        // A backend that routes on these (IIS URL Rewrite, Symfony and
        // Laravel request handling) or takes the method from them
        // (method-override middleware) would act on another path or method
        // than the one keygate checked.
        "x-original-url",
        "x-rewrite-url",
        "x-override-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
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
///
/// The digits are owned by the `Bytes` inside the value: one allocation,
/// and the copies for the upstream and the client share it. A value copied
/// from a slice would allocate again when first shared.
pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    // 32 lowercase hex digits are a valid header value.
    match hex::encode_to_slice(rand::random::<u128>().to_be_bytes(), &mut buf) {
        Ok(()) => HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
            .unwrap_or_else(|_| HeaderValue::from_static("-")),
        Err(_) => HeaderValue::from_static("-"),
    }
}

/// The client's request id if sane, else a new one. An id holding a key's
/// shape is not kept: it would be echoed, sent upstream and logged, and a
/// client that pastes its key there would have it written out.
pub fn request_id(sent: Option<&HeaderValue>, prefixes: &Prefixes) -> HeaderValue {
    match sent {
        Some(v) if sane_request_id(v.as_bytes()) && !prefixes.holds_key_shape(v.as_bytes()) => {
            v.clone()
        }
        _ => new_request_id(),
    }
}

/// The header values of one head, written one after another into one
/// buffer and handed out as shared slices of it: two allocations for all of
/// them (the buffer and its shared owner) instead of one or two for each.
pub struct Values(BytesMut);

impl Values {
    /// Room for `bytes` of values before the buffer has to grow.
    pub fn with_capacity(bytes: usize) -> Self {
        Values(BytesMut::with_capacity(bytes))
    }

    /// Appends text to the value being written.
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.push_bytes(s.as_bytes())
    }

    /// Appends bytes (of another header value) to the value being written.
    pub fn push_bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// Appends a number in decimal to the value being written.
    pub fn push_u64(&mut self, n: u64) -> &mut Self {
        self.push(itoa::Buffer::new().format(n))
    }

    /// Bytes of the value being written so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing of the next value is written yet.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value written since the last one. UTF-8 passes as it is; a
    /// control character (never in what keygate writes, possible in a
    /// snapshot's company name) fails the request rather than reach a peer
    /// altered.
    pub fn take(&mut self) -> Result<HeaderValue> {
        value(self.0.split().freeze())
    }

    /// [`take`](Self::take), with values that are parts of it: `parts` are
    /// byte ranges of the value, each handed out as a value of its own that
    /// shares its bytes, with no split of the buffer for it.
    pub fn take_with_parts<const N: usize>(
        &mut self,
        parts: [Range<usize>; N],
    ) -> Result<(HeaderValue, [HeaderValue; N])> {
        let whole = self.0.split().freeze();
        if parts.iter().any(|r| r.start > r.end || r.end > whole.len()) {
            return Error::e_explain(ErrorType::InternalError, "header value part out of range");
        }
        let all = value(whole.clone())?;
        // Any part of a valid value is valid: the rule is per byte.
        let parts = parts.map(|r| value(whole.slice(r)).unwrap_or_else(|_| all.clone()));
        Ok((all, parts))
    }

    /// `s` alone as the next value.
    pub fn of(&mut self, s: &str) -> Result<HeaderValue> {
        self.push(s).take()
    }
}

fn value(bytes: bytes::Bytes) -> Result<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes)
        .or_err(ErrorType::InvalidHTTPHeader, "not a valid header value")
}

/// The RFC 7239 `Forwarded` value, saying what `x-forwarded-for` and
/// `x-forwarded-proto` say: `for=203.0.113.7;proto=https`, an IPv6 address
/// quoted and bracketed, `for=unknown` without an IP peer. With an address,
/// the `x-forwarded-for` value too: the address, a part of the first.
pub fn forwarded(
    v: &mut Values,
    client: Option<&str>,
    tls: bool,
) -> Result<(HeaderValue, Option<HeaderValue>)> {
    v.push("for=");
    let ip = match client {
        Some(ip) if ip.as_bytes().contains(&b':') => {
            v.push("\"[");
            let start = v.len();
            v.push(ip).push("]\"");
            Some(start..start + ip.len())
        }
        Some(ip) => {
            let start = v.len();
            v.push(ip);
            Some(start..start + ip.len())
        }
        None => {
            v.push("unknown");
            None
        }
    };
    v.push(if tls { ";proto=https" } else { ";proto=http" });
    match ip {
        Some(ip) => {
            let (forwarded, [for_]) = v.take_with_parts([ip])?;
            Ok((forwarded, Some(for_)))
        }
        None => Ok((v.take()?, None)),
    }
}

/// Adds the five rate-limit headers of an authorized request. The two that
/// depend on the limit alone are kept for the last limit seen on this
/// thread: most requests of a gateway share one.
pub fn rate_limit(h: &mut HeaderMap, o: &Outcome) -> Result<()> {
    thread_local! {
        static LAST: RefCell<Option<(Limit, HeaderValue, HeaderValue)>> =
            const { RefCell::new(None) };
    }
    let mut v = Values::with_capacity(96);
    let (limit, policy) = LAST.with_borrow_mut(|last| -> Result<_> {
        match last {
            Some((l, limit, policy)) if *l == o.limit => Ok((limit.clone(), policy.clone())),
            _ => {
                let mut fixed = Values::with_capacity(64);
                let requests = u64::from(o.limit.requests.get());
                let limit = fixed.push_u64(requests).take()?;
                fixed
                    .push("\"default\";q=")
                    .push_u64(requests)
                    .push(";w=")
                    .push_u64(o.limit.per_secs.get().into());
                let policy = fixed.take()?;
                *last = Some((o.limit, limit.clone(), policy.clone()));
                Ok((limit, policy))
            }
        }
    })?;
    // `"default";r=<remaining>;t=<reset>`, whose two figures are also the
    // values of their own headers.
    v.push("\"default\";r=");
    let r = v.len();
    v.push_u64(o.remaining);
    let remaining = r..v.len();
    v.push(";t=");
    let t = v.len();
    v.push_u64(o.reset_secs);
    let reset = t..v.len();
    let (ratelimit, [remaining, reset]) = v.take_with_parts([remaining, reset])?;
    h.insert(name::X_RATELIMIT_LIMIT.clone(), limit);
    h.insert(name::X_RATELIMIT_REMAINING.clone(), remaining);
    h.insert(name::X_RATELIMIT_RESET.clone(), reset);
    h.insert(name::RATELIMIT_POLICY.clone(), policy);
    h.insert(name::RATELIMIT.clone(), ratelimit);
    Ok(())
}

/// The upstream's answer for the client: the request id and, on an
/// enforced keyed route, the rate-limit headers.
pub fn for_client(resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    edit_response(resp, |h| {
        h.insert(name::X_REQUEST_ID.clone(), ctx.request_id.clone());
        match &ctx.rate {
            Some(rate) => rate_limit(h, rate),
            None => Ok(()),
        }
    })
}

/// A `Content-Length` sent as a list of one figure (`5, 5`, or two lines
/// of `5`) goes upstream as that one figure, as RFC 9110 §8.6 lets a
/// recipient do: Pingora framed the body by it, and an upstream that refuses
/// lists (Go's `net/http` does) would otherwise answer 400 to a request
/// keygate accepted. Lists that disagree never get here (Pingora answers 400).
fn one_content_length(h: &mut HeaderMap) {
    let mut values = h.get_all(CONTENT_LENGTH).iter();
    let (Some(first), second) = (values.next(), values.next()) else {
        return;
    };
    if second.is_none() && !first.as_bytes().contains(&b',') {
        return;
    }
    let figure = first
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .find(|f| !f.is_empty());
    if let Some(figure) = figure.and_then(|f| HeaderValue::from_bytes(f).ok()) {
        h.insert(CONTENT_LENGTH, figure);
    }
}

/// Cookies sent as several fields go upstream as one, joined by `; `: an
/// HTTP/2 client sends each cookie as a field of its own, and RFC 9113
/// §8.2.3 has them joined for HTTP/1.1, where a backend may read only the
/// first `Cookie` line.
fn one_cookie(h: &mut HeaderMap) -> Result<()> {
    let mut values = h.get_all(COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return Ok(());
    }
    let mut joined = Values::with_capacity(256);
    for (i, c) in h.get_all(COOKIE).iter().enumerate() {
        if i > 0 {
            joined.push("; ");
        }
        joined.push_bytes(c.as_bytes());
    }
    h.insert(COOKIE, joined.take()?);
    Ok(())
}

/// Rewrites the upstream request: client copies of reserved headers out,
/// `Authorization` out unless configured, identity and forwarding in.
pub fn for_upstream(req: &mut RequestHeader, ctx: &Ctx, gw: &Gateway) -> Result<()> {
    edit_request(req, |h| {
        if h.keys()
            .any(|n| is_reserved(n.as_str()) || n == CONTENT_LENGTH || n == COOKIE)
        {
            let reserved: Vec<HeaderName> = h
                .keys()
                .filter(|n| is_reserved(n.as_str()))
                .cloned()
                .collect();
            for name in reserved {
                h.remove(&name);
            }
            one_content_length(h);
            one_cookie(h)?;
        }
        if !gw.config.upstream_headers.forward_authorization {
            h.remove(AUTHORIZATION);
        }
        h.insert(name::X_REQUEST_ID.clone(), ctx.request_id.clone());
        let mut v = Values::with_capacity(512);
        let client = ctx.client.as_ref().map(|c| c.as_str());
        let (forwarded, forwarded_for) = forwarded(&mut v, client, ctx.tls)?;
        if let Some(ip) = forwarded_for {
            h.insert(name::X_FORWARDED_FOR.clone(), ip);
        }
        h.insert(name::FORWARDED.clone(), forwarded);
        let proto = HeaderValue::from_static(if ctx.tls { "https" } else { "http" });
        h.insert(name::X_FORWARDED_PROTO.clone(), proto);
        if let Some(reason) = ctx.shadow {
            h.insert(
                name::X_KEYGATE_SHADOW.clone(),
                HeaderValue::from_static(reason.as_str()),
            );
        }
        // `decide` names a key only on keyed routes.
        if let Some(slot) = ctx.key_slot {
            let key = gw.policy.keys.record(slot);
            h.insert(name::X_KEYGATE_KEY_ID.clone(), v.of(key.id())?);
            h.insert(
                name::X_KEYGATE_KEY_TYPE.clone(),
                HeaderValue::from_static(key.key_type.as_str()),
            );
            h.insert(name::X_KEYGATE_COMPANY.clone(), v.of(&key.company)?);
            if let Some(ws) = &ctx.workspace {
                h.insert(name::X_KEYGATE_WORKSPACE.clone(), v.of(ws)?);
            }
            h.insert(
                name::X_KEYGATE_SCOPES.clone(),
                HeaderValue::from_static(key.scopes.header_value()),
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for n in [
            "x-forwarded-host",
            "X_Real_IP",
            "Forwarded",
            "X-Original-URL",
            "x-rewrite-url",
            "X-HTTP-Method-Override",
            "x_method_override",
        ] {
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
        let mut v = Values::with_capacity(64);
        let mut f = |client, tls| forwarded(&mut v, client, tls).unwrap();
        let (fw, ip) = f(Some("10.1.2.3"), false);
        assert_eq!(fw, "for=10.1.2.3;proto=http");
        assert_eq!(ip.unwrap(), "10.1.2.3");
        let (fw, ip) = f(Some("::1"), true);
        assert_eq!(fw, "for=\"[::1]\";proto=https");
        assert_eq!(ip.unwrap(), "::1");
        assert_eq!(
            f(None, true),
            ("for=unknown;proto=https".parse().unwrap(), None)
        );
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
        let p = Prefixes::new("ord_c_", "ord_").unwrap();
        assert_eq!(
            request_id(Some(&HeaderValue::from_static("mine")), &p),
            "mine"
        );
        assert_eq!(
            request_id(Some(&HeaderValue::from_static("not mine")), &p).len(),
            32
        );
        // Key-shaped (anywhere in it): replaced. Short lookalikes: kept.
        let key = format!("ord_c_{}", "a".repeat(32));
        for sent in [
            key.clone(),
            format!("req-{key}"),
            format!("ord_{}", "B".repeat(40)),
            format!("1{key}"),
            "wordord_c_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_string(),
        ] {
            let v = HeaderValue::from_str(&sent).unwrap();
            assert_ne!(request_id(Some(&v), &p), v, "{sent}");
        }
        for kept in [
            "ord_12345",
            "order-ord_c_abc",
            "record_abcdefghijklmnopqrstuvwxyz12345",
        ] {
            let v = HeaderValue::from_static(kept);
            assert_eq!(request_id(Some(&v), &p), v, "{kept}");
        }
    }

    #[test]
    fn cookies_in_several_fields_become_one() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        one_cookie(&mut h).unwrap();
        assert_eq!(h[COOKIE], "a=1");
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        h.append(COOKIE, HeaderValue::from_static("c=3; d=4"));
        one_cookie(&mut h).unwrap();
        let all: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3; d=4"]);
    }

    #[test]
    fn a_content_length_list_of_one_figure_becomes_that_figure() {
        let cl = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
            }
            one_content_length(&mut h);
            let all: Vec<_> = h.get_all(CONTENT_LENGTH).iter().cloned().collect();
            all
        };
        assert_eq!(cl(&["5, 5"]), ["5"]);
        assert_eq!(cl(&["5", "5"]), ["5"]);
        assert_eq!(cl(&[" 7 ,7,7"]), ["7"]);
        assert_eq!(cl(&["12"]), ["12"]);
        assert!(cl(&[]).is_empty());
    }

    #[test]
    fn an_edited_request_keeps_its_target_method_and_headers() {
        let targets: [&[u8]; 4] = [
            b"/a/b?c=d",
            b"/caf\xc3\xa9/\xff?x",
            b"http://example.com/abs?q",
            b"*",
        ];
        for target in targets {
            let mut req = RequestHeader::build("POST", target, None).unwrap();
            req.insert_header("X-Client", "kept").unwrap();
            req.insert_header("x-remove", "gone").unwrap();
            req.set_version(http::Version::HTTP_10);
            edit_request(&mut req, |h| {
                h.remove("x-remove");
                h.insert(name::X_REQUEST_ID.clone(), HeaderValue::from_static("id"));
                Ok(())
            })
            .unwrap();
            assert_eq!(req.raw_path(), target, "{target:?}");
            assert_eq!(req.method, http::Method::POST);
            assert_eq!(req.version, http::Version::HTTP_10);
            assert_eq!(req.headers["x-client"], "kept");
            assert_eq!(req.headers["x-request-id"], "id");
            assert!(!req.headers.contains_key("x-remove"));
            let mut wire = Vec::new();
            req.header_to_h1_wire(&mut wire);
            let wire = String::from_utf8(wire).unwrap();
            assert!(wire.contains("x-client: kept\r\n"), "{wire}");
        }
    }

    #[test]
    fn a_failed_edit_still_leaves_the_request_whole() {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.insert_header("x-a", "1").unwrap();
        let e = edit_request(&mut req, |h| {
            h.insert(
                name::X_FORWARDED_FOR.clone(),
                Values::with_capacity(8).of("a\nb")?,
            );
            Ok(())
        });
        assert!(e.is_err());
        assert_eq!(req.raw_path(), b"/x");
        assert_eq!(req.headers["x-a"], "1");
        assert!(!req.headers.contains_key("x-forwarded-for"));
        let mut v = Values::with_capacity(4);
        assert_eq!(v.of("Müller").unwrap().as_bytes(), "Müller".as_bytes());
        assert_eq!(v.push("a").push_u64(0).push_u64(42).take().unwrap(), "a042");
        assert_eq!(v.push_u64(u64::MAX).take().unwrap(), "18446744073709551615");
    }

    #[test]
    fn an_edited_response_keeps_its_status_and_reason() {
        for (status, reason) in [
            (200, None),
            (299, Some("Custom")),
            (404, Some("Gone Fishing")),
        ] {
            let mut resp = ResponseHeader::build(status, None).unwrap();
            resp.set_reason_phrase(reason).unwrap();
            resp.insert_header("Content-Type", "text/plain").unwrap();
            edit_response(&mut resp, |h| {
                h.insert(name::X_REQUEST_ID.clone(), HeaderValue::from_static("id"));
                Ok(())
            })
            .unwrap();
            assert_eq!(resp.status.as_u16(), status);
            let expected = reason.or(resp.status.canonical_reason());
            assert_eq!(resp.get_reason_phrase(), expected);
            assert_eq!(resp.headers["content-type"], "text/plain");
            assert_eq!(resp.headers["x-request-id"], "id");
        }
    }

    #[test]
    fn values_hand_out_parts_of_a_value() {
        let mut v = Values::with_capacity(8);
        v.push("for=10.0.0.1;x");
        let (all, [ip, empty]) = v.take_with_parts([4..12, 3..3]).unwrap();
        assert_eq!(all, "for=10.0.0.1;x");
        assert_eq!(ip, "10.0.0.1");
        assert_eq!(empty, "");
        // The buffer goes on with the next value, which shares nothing.
        assert_eq!(v.of("next").unwrap(), "next");
        // A part past the value, or backwards, is an error, not a panic.
        v.push("abc");
        assert!(v.take_with_parts([0..1, 1..4]).is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = [0..1, 2..1];
        v.push("abc");
        assert!(v.take_with_parts(backwards).is_err());
    }

    #[test]
    fn rate_limit_headers_carry_the_figures() {
        let mut h = HeaderMap::new();
        let o = Outcome {
            allowed: true,
            limit: Limit::from_raw(100, 60, Some(20)).unwrap(),
            remaining: 0,
            reset_secs: 18_446_744_073_709_551_615,
            retry_after_secs: 1,
            unavailable: false,
        };
        rate_limit(&mut h, &o).unwrap();
        let get = |n: &str| h.get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(get("x-ratelimit-limit"), "100");
        assert_eq!(get("x-ratelimit-remaining"), "0");
        assert_eq!(get("x-ratelimit-reset"), "18446744073709551615");
        assert_eq!(get("ratelimit-policy"), "\"default\";q=100;w=60");
        assert_eq!(get("ratelimit"), "\"default\";r=0;t=18446744073709551615");
        // The next request under another limit, then under the first again.
        let other = Outcome {
            limit: Limit::from_raw(7, 1, None).unwrap(),
            remaining: 6,
            reset_secs: 1,
            ..o
        };
        for (o, limit, policy) in [
            (&other, "7", "\"default\";q=7;w=1"),
            (&o, "100", "\"default\";q=100;w=60"),
        ] {
            let mut h = HeaderMap::new();
            rate_limit(&mut h, o).unwrap();
            assert_eq!(h["x-ratelimit-limit"], limit);
            assert_eq!(h["ratelimit-policy"], policy);
            assert_eq!(h["x-ratelimit-remaining"], o.remaining.to_string().as_str());
        }
    }
}
