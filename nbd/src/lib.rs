//! cairn-nbd: the NBD protocol, fixed newstyle, as Cairn speaks it: the
//! wire format ([`wire`]), the server handshake ([`server`], one handler per
//! option), the client handshake ([`client`]), the transmission phase
//! ([`transmission`]), structured replies and `base:allocation`
//! ([`structured`]), and the accept loop every NBD listener runs
//! ([`accept`]).
//!
//! Shared by the chunk node (which serves its volumes), the gateway's front
//! door (which negotiates with a client as a server, then with the volume's
//! host as a client, and splices the two) and the tests. Everything but the
//! accept loop works on any `AsyncRead + AsyncWrite`, so tests run over an
//! in-memory duplex. The protocol is documented at
//! <https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>.

pub mod accept;
pub mod client;
mod error;
pub mod server;
pub mod structured;
pub mod tls;
pub mod transmission;
pub mod wire;

pub use accept::serve_connections;
pub use client::{client_negotiate, client_negotiate_tls, client_negotiate_with};
pub use error::NbdError;
pub use server::{server_negotiate, server_negotiate_tls, ExportResolver, Negotiated, TlsOffer};
pub use structured::Session;
pub use tls::Conn;
pub use transmission::{
    encode_simple_reply, read_request, read_simple_reply, send_simple_reply, write_all_slices,
    write_request, write_simple_reply,
};
pub use wire::*;
