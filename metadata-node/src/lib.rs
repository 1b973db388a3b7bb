//! cairn-metadata-node
