//! The request id: assigned by the outermost layer to every request, echoed
//! in the `x-amzn-requestid` header and in every answer's body.

use axum::http::HeaderMap;

/// The header carrying the request id, as AWS services name it.
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// The request id the request-id layer assigned (empty if none, which the
/// layer order rules out).
pub fn request_id(headers: &HeaderMap) -> String {
    headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}
