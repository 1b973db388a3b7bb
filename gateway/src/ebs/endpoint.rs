//! The handler of every `/snapshots` route: authenticates the caller,
//! routes the request and runs its operation.

use super::error::EbsError;
use super::router::{route, EbsRequest};
use super::state::{authenticate, Ebs};
use super::{read, start, write};
use crate::http::auth::Presented;
use crate::http::error::AwsError;
use crate::http::request_id::request_id;
use crate::metrics::ApiCall;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use std::sync::Arc;

/// Serves one request; every failure is answered as a rest-json error.
pub async fn endpoint(
    State(ebs): State<Arc<Ebs>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    let mut operation = "other";
    match serve(&ebs, &method, &uri, &headers, body, &mut operation).await {
        Ok(r) => ApiCall::tag(r, "ebs", operation, ""),
        Err(e) => {
            let code = e.code();
            ApiCall::tag(e.respond(&rid), "ebs", operation, code)
        }
    }
}

/// Authenticates, routes and runs one operation.
async fn serve(
    ebs: &Arc<Ebs>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    operation: &mut &'static str,
) -> Result<Response, EbsError> {
    let presented = Presented { method, uri, headers, body: Some(&body) };
    let caller = authenticate(ebs, &presented).await?;
    let req = route(method, uri.path(), uri.query())?;
    *operation = req.operation();
    tracing::debug!(operation = req.operation(), "ebs request");
    match req {
        EbsRequest::StartSnapshot => start::start(ebs, &caller, &body).await,
        EbsRequest::PutSnapshotBlock { snapshot, index } => {
            write::put(ebs, &caller, &snapshot, index, headers, body).await
        }
        EbsRequest::CompleteSnapshot { snapshot } => {
            write::complete(ebs, &caller, &snapshot, headers).await
        }
        EbsRequest::GetSnapshotBlock { snapshot, index, block_token } => {
            read::get_block(ebs, &caller, &snapshot, index, &block_token).await
        }
        EbsRequest::ListSnapshotBlocks { snapshot, paging } => {
            read::list_blocks(ebs, &caller, &snapshot, &paging).await
        }
        EbsRequest::ListChangedBlocks { first, second, paging } => {
            read::list_changed(ebs, &caller, first.as_deref(), &second, &paging).await
        }
    }
}
