//! The EC2 Query API front end: parameters in ([`params`]), a typed request
//! out of the pure [`router`], one module per resource in [`ops`], answers
//! rendered by [`xml`], and one error type ([`error::Ec2Error`]).

pub mod error;
pub mod filters;
pub mod ops;
pub mod params;
pub mod router;
pub mod xml;

use crate::ctx::Ctx;
use crate::http::auth::Caller;
use error::Ec2Error;
use ops::{snapshots, tags, volumes};
use params::Params;
use router::{route, Ec2Request};
use std::sync::Arc;

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

/// Serves one EC2 request: the XML body of the success answer, or the error.
pub async fn handle(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<String, Ec2Error> {
    let params = Params::from_pairs(request_pairs(query, body)?)?;
    let routed = route(&params, &ctx.config)?;
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
