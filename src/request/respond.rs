//! A [`Denial`] written out as the whole response: status, the JSON body,
//! `X-Request-Id`, its own headers (`WWW-Authenticate`, `Allow`,
//! `Retry-After`) and, for a keyed request, the rate-limit headers.

use crate::model::denial::Denial;
use crate::request::ctx::Ctx;
use crate::request::headers;
use http::HeaderValue;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use pingora::http::ResponseHeader;
use pingora::prelude::Result;
use pingora::proxy::Session;

/// Writes `denial` as the whole response to the request of `ctx`.
pub async fn respond(session: &mut Session, ctx: &Ctx, denial: &Denial) -> Result<()> {
    let body = denial.body();
    let mut resp = ResponseHeader::build(denial.status(), Some(8))?;
    resp.insert_header(CONTENT_TYPE, HeaderValue::from_static("application/json"))?;
    resp.insert_header(CONTENT_LENGTH, HeaderValue::from(body.len()))?;
    resp.insert_header("x-request-id", ctx.request_id.clone())?;
    if let Some(v) = denial.www_authenticate() {
        resp.insert_header("www-authenticate", HeaderValue::from_static(v))?;
    }
    match denial {
        Denial::MethodNotAllowed { allowed, .. } => {
            resp.insert_header("allow", &**allowed)?;
        }
        Denial::RateLimited { retry_after, .. } => {
            resp.insert_header("retry-after", HeaderValue::from(*retry_after))?;
        }
        Denial::LimiterUnavailable => {
            resp.insert_header("retry-after", HeaderValue::from_static("1"))?;
        }
        _ => {}
    }
    if let Some(rate) = &ctx.rate {
        headers::rate_limit(&mut resp, rate)?;
    }
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
