//! The EC2 Query API endpoint (`GET` and `POST /`): authenticates the caller
//! for service `ec2`, collects the parameters of the query string and the
//! form body, routes them and runs the operation, answering XML either way.

use super::error::Ec2Error;
use super::ops::{copy, modify, sharing, snapshots, tags, tiers, volumes};
use super::params::Params;
use super::router::{route, Ec2Request};
use super::xml::xml_response;
use crate::ctx::Ctx;
use crate::http::auth::{Authenticator, Caller, Presented};
use crate::http::error::AwsError;
use crate::http::request_id::request_id;
use crate::metrics::ApiCall;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use axum::Extension;
use std::sync::Arc;

/// Middleware of the EC2 route: authenticates and stores the [`Caller`] in
/// the request extensions, or answers the EC2 error.
pub async fn require_caller(
    State(auth): State<Arc<Authenticator>>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    // The body-limit layer bounded it already; the signature covers it.
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            let e =
                Ec2Error::IncompleteSignature(format!("The request body could not be read: {e}"));
            let code = e.code();
            return ApiCall::tag(e.respond(&request_id(&parts.headers)), "ec2", "other", code);
        }
    };
    let presented = Presented {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: Some(&body),
    };
    match auth.authenticate(&presented, "ec2").await {
        Ok(caller) => {
            let mut req = Request::from_parts(parts, axum::body::Body::from(body));
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            tracing::debug!(error = %e, "authentication refused");
            let e = Ec2Error::from(e);
            let code = e.code();
            ApiCall::tag(e.respond(&request_id(&parts.headers)), "ec2", "other", code)
        }
    }
}

/// The handler of `/`: the XML answer of one EC2 request.
pub async fn endpoint(
    State(ctx): State<Arc<Ctx>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    let mut action = "other";
    match handle(&ctx, &caller, &rid, uri.query(), &body, &mut action).await {
        Ok(xml) => ApiCall::tag(xml_response(StatusCode::OK, xml), "ec2", action, ""),
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(code = e.code(), error = %e, "request failed");
            } else {
                tracing::debug!(code = e.code(), error = %e, "request refused");
            }
            let code = e.code();
            ApiCall::tag(e.respond(&rid), "ec2", action, code)
        }
    }
}

/// Parameters from the query string and the form body, in that order.
pub fn request_pairs(query: Option<&str>, body: &[u8]) -> Result<Vec<(String, String)>, Ec2Error> {
    let malformed = |e: serde_urlencoded::de::Error| Ec2Error::MalformedQueryString(e.to_string());
    let mut pairs: Vec<(String, String)> = match query {
        Some(q) => serde_urlencoded::from_str(q).map_err(malformed)?,
        None => Vec::new(),
    };
    if !body.is_empty() {
        pairs.extend(
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).map_err(malformed)?,
        );
    }
    Ok(pairs)
}

/// Serves one EC2 request: the XML body of the success answer, or the error;
/// `action` is set to the action's name once the request is routed.
pub async fn handle(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    query: Option<&str>,
    body: &[u8],
    action: &mut &'static str,
) -> Result<String, Ec2Error> {
    let params = Params::from_pairs(request_pairs(query, body)?)?;
    let routed = route(&params, &ctx.config)?;
    *action = routed.request.action();
    tracing::debug!(action = routed.request.action(), dry_run = routed.dry_run, "ec2 request");
    if routed.dry_run {
        return Err(Ec2Error::DryRunOperation);
    }
    match routed.request {
        Ec2Request::CreateVolume(i) => volumes::create(ctx, caller, rid, i).await,
        Ec2Request::DescribeVolumes(i) => volumes::describe(ctx, caller, rid, i).await,
        Ec2Request::DeleteVolume(id) => volumes::delete(ctx, caller, rid, id).await,
        Ec2Request::CreateSnapshot(i) => snapshots::create(ctx, caller, rid, i).await,
        Ec2Request::DescribeSnapshots(i) => snapshots::describe(ctx, caller, rid, i).await,
        Ec2Request::DeleteSnapshot(id) => snapshots::delete(ctx, caller, rid, id).await,
        Ec2Request::CreateTags(i) => tags::create(ctx, caller, rid, i).await,
        Ec2Request::DeleteTags(i) => tags::delete(ctx, caller, rid, i).await,
        Ec2Request::DescribeTags(i) => tags::describe(ctx, caller, rid, i).await,
        Ec2Request::ModifyVolume(i) => modify::modify(ctx, caller, rid, i).await,
        Ec2Request::DescribeVolumesModifications(i) => modify::describe(ctx, caller, rid, i).await,
        Ec2Request::ModifySnapshotAttribute(i) => sharing::modify(ctx, caller, rid, i).await,
        Ec2Request::DescribeSnapshotAttribute(i) => sharing::describe(ctx, caller, rid, i).await,
        Ec2Request::ResetSnapshotAttribute(id) => sharing::reset(ctx, caller, rid, id).await,
        Ec2Request::CopySnapshot(i) => copy::copy(ctx, caller, rid, i).await,
        Ec2Request::ModifySnapshotTier(id) => tiers::modify(ctx, caller, rid, id).await,
        Ec2Request::RestoreSnapshotTier(i) => tiers::restore(ctx, caller, rid, i).await,
        Ec2Request::DescribeSnapshotTierStatus(i) => tiers::describe(ctx, caller, rid, i).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_from_query_and_body() {
        let p = request_pairs(
            Some("Action=DescribeVolumes"),
            b"Version=2016-11-15&Filter.1.Name=tag%3AName",
        )
        .unwrap();
        assert_eq!(
            p,
            vec![
                ("Action".to_string(), "DescribeVolumes".to_string()),
                ("Version".to_string(), "2016-11-15".to_string()),
                ("Filter.1.Name".to_string(), "tag:Name".to_string()),
            ]
        );
        assert!(request_pairs(None, b"").unwrap().is_empty());
        // Invalid UTF-8 is replaced, never a panic.
        let p = request_pairs(None, &[0xff, b'=', b'1']).unwrap();
        assert_eq!(p[0].1, "1");
    }
}
