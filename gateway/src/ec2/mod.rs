//! The EC2 Query API front end: the [`endpoint`] takes parameters in
//! ([`params`]), a typed request out of the pure [`router`], runs it in one
//! module per resource in [`ops`], and answers rendered by [`xml`], with one
//! error type ([`error::Ec2Error`]).

pub mod endpoint;
pub mod error;
pub mod filters;
pub mod ops;
pub mod params;
pub mod records;
pub mod router;
pub mod xml;

use crate::ctx::Ctx;
use axum::middleware;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// The Query API's route, authenticated, to merge into the gateway's router.
pub fn routes(ctx: &Ctx) -> Router<Arc<Ctx>> {
    Router::new()
        .route("/", get(endpoint::endpoint).post(endpoint::endpoint))
        .route_layer(middleware::from_fn_with_state(ctx.auth.clone(), endpoint::require_caller))
}
