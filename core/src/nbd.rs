//! NBD protocol (fixed newstyle): written next.
