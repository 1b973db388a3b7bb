//! What both AWS fronts (EC2 and the EBS direct APIs) share at the HTTP
//! level: the request id every answer carries ([`request_id`]) and who sent
//! the request ([`auth`]).

pub mod auth;
pub mod request_id;
