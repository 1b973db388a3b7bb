//! cairn-gateway
