//! The code tonic generates from `proto/*.proto` (package `cairn.v1`).

#![allow(clippy::all, clippy::pedantic)]

tonic::include_proto!("cairn.v1");
