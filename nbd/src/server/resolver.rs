//! What a server asks of its caller during the handshake: which exports
//! exist, and what serving the chosen one needs.

use crate::structured::Session;
use crate::wire::Export;
use std::future::Future;

/// Maps export names to exports during server negotiation.
///
/// `Handle` is whatever the caller needs to serve the export once chosen (an
/// open volume, or an already negotiated upstream connection).
pub trait ExportResolver: Send {
    type Handle: Send;

    /// The export called `name`, or `None` when there is no such export.
    /// `session` is what the client negotiated so far (a proxy negotiates
    /// the same upstream).
    fn resolve(
        &mut self,
        name: &str,
        session: Session,
    ) -> impl Future<Output = Option<(Export, Self::Handle)>> + Send;

    /// Names for NBD_OPT_LIST, or `None` to refuse listing with ERR_UNSUP.
    fn list(&mut self) -> impl Future<Output = Option<Vec<String>>> + Send;
}

/// A chosen export: its name, what was advertised, the resolver's handle and
/// the reply style negotiated.
pub type Negotiated<H> = (String, Export, H, Session);
