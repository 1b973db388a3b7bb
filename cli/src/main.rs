//! `cairn`: starts a local cluster (`cairn up`), runs one Cairn process
//! (`cairn metadata-node|chunk-node|gateway`), and gives admin verbs.

mod admin;
mod gc;
mod hint;
mod http;
mod init;
mod nodes;
mod process;
mod scrub;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cairn", version, about = "Cairn: EBS-style snapshots on machines you own")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a local cluster (3 metadata nodes, 6 chunk nodes, 1 gateway) as
    /// separate processes; Ctrl-C stops them all. Running it again on the same
    /// data directory brings everything back.
    Up(up::UpArgs),
    /// Run one metadata-group member (used by `cairn up` and deploy/).
    MetadataNode(process::ProcessArgs),
    /// Run one chunk node (used by `cairn up` and deploy/).
    ChunkNode(process::ProcessArgs),
    /// Run one gateway (used by `cairn up` and deploy/).
    Gateway(process::ProcessArgs),
    /// Bootstrap a fresh metadata group (harmless when already initialized).
    InitCluster(init::InitArgs),
    /// Inspect the cluster.
    Admin {
        #[command(subcommand)]
        cmd: admin::AdminCmd,
    },
}

/// Logs to stderr; colours only for a terminal (a member of `cairn up`
/// writes to its log file, which must stay plain text) and not under
/// `NO_COLOR`.
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            hint::report(&e);
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Up(a) => up::run(a).await,
            Cmd::MetadataNode(a) => process::metadata_node(a).await,
            Cmd::ChunkNode(a) => process::chunk_node(a).await,
            Cmd::Gateway(a) => process::gateway(a).await,
            Cmd::InitCluster(a) => init::run(a).await,
            Cmd::Admin { cmd } => admin::run(cmd).await,
        }
    })
}
