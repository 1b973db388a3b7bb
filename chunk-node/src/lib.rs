//! cairn-chunk-node
