//! Cluster harness
