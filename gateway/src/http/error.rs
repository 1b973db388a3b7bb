//! The error trait both AWS fronts implement: EC2's XML errors and the EBS
//! direct APIs' rest-json errors each know their code and status and render
//! their own wire shape, so code that serves either front (the shared tower
//! layers) is written once against [`AwsError`].

use axum::http::StatusCode;
use axum::response::Response;

/// A failure found by the shared layers before any front's handler ran.
/// Each front names it in its own terms (`From<LayerFailure>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerFailure {
    /// Load shedding: the concurrency limit is reached.
    Overloaded(String),
    /// The request did not finish within the request timeout.
    TimedOut(String),
    /// The declared body is larger than this many bytes.
    BodyTooLarge(usize),
    /// Any other failure of a layer.
    Internal(String),
}

/// An error of one AWS front.
pub trait AwsError: std::fmt::Display + From<LayerFailure> {
    /// The AWS error code, as botocore reports it in `Error.Code`.
    fn code(&self) -> &'static str;

    /// The HTTP status of the answer.
    fn status(&self) -> StatusCode;

    /// The whole HTTP answer in the front's wire shape, carrying `request_id`.
    fn respond(self, request_id: &str) -> Response;
}
