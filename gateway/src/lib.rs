//! cairn-gateway: the stateless front of a Cairn region. It speaks the EC2
//! Query API over HTTP (axum on tower), orchestrates snapshot copies and
//! volume restores on the chunk nodes (it never carries bytes), and runs the
//! NBD front door.
//!
//! Start one with [`Gateway::start`], giving it already-bound listeners.
//!
//! Layout, from the top down (a module uses only modules beside or below
//! it): [`gateway`] (lifecycle) starts [`app`] (routes and tower layers),
//! the NBD door ([`nbd_door`]) and the background workers (the copy job
//! runner and volume sweep of [`jobs`], the sweeper of [`ebs`]). The
//! app serves the two AWS fronts, [`ec2`] and [`ebs`], and the operator
//! endpoints ([`admin`], and [`scrub`], which asks the chunk nodes for scrub
//! passes and their status). The fronts share [`http`] (request ids,
//! authentication, the error trait) and start [`jobs`] (copies, restores,
//! volume deletes). All of them share [`ctx`] (configuration, metadata
//! client, node channels, the job set of [`tasks`], the one
//! `cairn_worker::Workers` set), [`retry`] (one backoff), [`nodes`] (chunk
//! node calls) and [`config`].

pub mod admin;
pub mod app;
pub mod archive;
pub mod config;
pub mod console;
pub mod ctx;
pub mod ebs;
pub mod ec2;
#[cfg(test)]
mod fixtures;
pub mod gateway;
pub mod gc;
pub mod gc_state;
pub mod http;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod nbd_door;
pub mod node_admin;
pub mod nodes;
pub mod progress;
pub mod repair;
pub mod repair_state;
pub mod retry;
pub mod scrub;
pub mod tasks;

pub use config::{ConfigError, GatewayConfig};
pub use gateway::{Gateway, GatewayError};
