//! What both AWS fronts (EC2 and the EBS direct APIs) share at the HTTP
//! level: the request id every answer carries ([`request_id`]), who sent
//! the request ([`auth`], with the signature checked by [`sigv4`]), and the
//! error trait both fronts' errors implement ([`error::AwsError`]).

pub mod auth;
pub mod error;
pub mod keys;
pub mod request_id;
pub mod scope;
pub mod sigv4;
#[cfg(test)]
mod sigv4_tests;
