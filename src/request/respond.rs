//! A [`Denial`] written out as the whole response: status, the JSON body,
//! `X-Request-Id`, its own headers (`WWW-Authenticate`, `Allow`,
//! `Retry-After`) and, for a keyed request, the rate-limit headers.

use crate::model::denial::Denial;
use crate::request::ctx::Ctx;
use crate::request::headers::{self, name};
use http::HeaderValue;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use pingora::http::ResponseHeader;
use pingora::prelude::{ErrorType, OrErr, Result};
use pingora::proxy::Session;

/// Writes `denial` as the whole response to the request of `ctx`.
pub async fn respond(session: &mut Session, ctx: &Ctx, denial: &Denial) -> Result<()> {
    let body = denial.body();
    // Built as plain `http` parts: one map, names parsed once (see
    // [`headers::edit_response`]).
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = http::StatusCode::from_u16(denial.status())
        .or_err(ErrorType::InternalError, "denial status")?;
    let h = &mut parts.headers;
    h.reserve(12);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(name::X_REQUEST_ID.clone(), ctx.request_id.clone());
    if let Some(v) = denial.www_authenticate() {
        h.insert(WWW_AUTHENTICATE, HeaderValue::from_static(v));
    }
    match denial {
        Denial::MethodNotAllowed { allowed, .. } => {
            let allowed = HeaderValue::from_str(allowed)
                .or_err(ErrorType::InternalError, "methods of a route")?;
            h.insert(ALLOW, allowed);
        }
        Denial::RateLimited { retry_after, .. } => {
            let v = headers::Values::with_capacity(20)
                .push_u64(*retry_after)
                .take()?;
            h.insert(RETRY_AFTER, v);
        }
        Denial::LimiterUnavailable => {
            h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    if let Some(rate) = &ctx.rate {
        headers::rate_limit(h, rate)?;
    }
    let resp = ResponseHeader::from(parts);
    // An unread request body would be drained before the connection is
    // reused; close instead so a large or slow upload cannot hold it.
    if !session.is_body_empty() {
        session.set_keepalive(None);
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
