//! What can go wrong on an NBD connection, on either side of it.

#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("nbd i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad {what} magic {found:#x}")]
    BadMagic { what: &'static str, found: u64 },
    #[error("client sent unsupported handshake flags {0:#x}")]
    BadClientFlags(u32),
    #[error("server does not speak fixed newstyle (flags {0:#x})")]
    NotFixedNewstyle(u16),
    #[error("option {option} carries {len} bytes, more than allowed")]
    OptionTooLong { option: u32, len: u32 },
    #[error("option data is malformed: {0}")]
    Malformed(&'static str),
    #[error("export name is not UTF-8")]
    NameNotUtf8,
    #[error("client asked for unknown export {0:?} with NBD_OPT_EXPORT_NAME")]
    UnknownExport(String),
    #[error("server refused option {option} with {code:#x}: {message}")]
    OptionRefused { option: u32, code: u32, message: String },
    #[error("server reply echoes option {found}, expected {expected}")]
    WrongOptionEcho { expected: u32, found: u32 },
    #[error("server acknowledged NBD_OPT_GO without sending NBD_INFO_EXPORT")]
    MissingExportInfo,
    #[error("this server requires TLS (NBD_OPT_STARTTLS) before an export is chosen")]
    TlsRequired,
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
}
