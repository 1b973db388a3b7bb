//! `cairn`: starts a local cluster (`cairn up`), runs one Cairn process
//! (`cairn metadata-node|chunk-node|gateway`), and gives admin verbs.

mod accounts;
mod admin;
mod ec2;
mod gc;
mod group;
mod hint;
mod http;
mod init;
mod node_http;
mod nodes;
mod process;
mod scrub;
mod snapshot;
mod status;
mod table;
mod tls;
mod up;
mod volume;
mod watch;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cairn", version, about = "Cairn: EBS-style snapshots on machines you own")]
struct Cli {
    /// Log lines as plain text, or as one JSON object per line (for log
    /// collectors). `cairn up` passes it to every member.
    #[arg(long, global = true, env = LOG_FORMAT_ENV, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

const LOG_FORMAT_ENV: &str = "CAIRN_LOG_FORMAT";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a local cluster (3 metadata nodes, 6 chunk nodes, 1 gateway) as
    /// separate processes; Ctrl-C stops them all. Running it again on the same
    /// data directory brings everything back.
    Up(Box<up::UpArgs>),
    /// Run one metadata-group member (used by `cairn up` and deploy/).
    MetadataNode(process::ProcessArgs),
    /// Run one chunk node (used by `cairn up` and deploy/).
    ChunkNode(process::ProcessArgs),
    /// Run one gateway (used by `cairn up` and deploy/).
    Gateway(process::ProcessArgs),
    /// Bootstrap a fresh metadata group (harmless when already initialized).
    InitCluster(init::InitArgs),
    /// Exit 0 when `GET URL` answers 200 within 5 s (a container health
    /// check that needs nothing but this binary), e.g.
    /// `cairn probe http://127.0.0.1:9100/readyz`.
    Probe { url: String },
    /// Volumes, through the gateway's EC2 API: create, list, delete, attach (NBD).
    Volume {
        #[command(subcommand)]
        cmd: volume::VolumeCmd,
        #[command(flatten)]
        api: ec2::ApiArgs,
    },
    /// Snapshots, through the gateway's EC2 API: create, list, delete,
    /// restore, wait (with progress).
    Snapshot {
        #[command(subcommand)]
        cmd: snapshot::SnapshotCmd,
        #[command(flatten)]
        api: ec2::ApiArgs,
    },
    /// Inspect the cluster.
    Admin {
        #[command(subcommand)]
        cmd: admin::AdminCmd,
    },
}

/// Logs to stderr; colours only for a terminal (a member of `cairn up`
/// writes to its log file, which must stay plain text) and not under
/// `NO_COLOR`. JSON lines carry the spans' fields (a request's id).
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(colour).init(),
        LogFormat::Json => fmt.json().with_current_span(false).with_span_list(true).init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    if cli.log_format == LogFormat::Json {
        // The members `cairn up` starts inherit it. No other thread runs yet.
        std::env::set_var(LOG_FORMAT_ENV, "json");
    }
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
            Cmd::Up(a) => up::run(*a).await,
            Cmd::MetadataNode(a) => process::metadata_node(a).await,
            Cmd::ChunkNode(a) => process::chunk_node(a).await,
            Cmd::Gateway(a) => process::gateway(a).await,
            Cmd::InitCluster(a) => init::run(a).await,
            Cmd::Admin { cmd } => admin::run(cmd).await,
            Cmd::Volume { cmd, api } => volume::run(cmd, api).await,
            Cmd::Snapshot { cmd, api } => snapshot::run(cmd, api).await,
            Cmd::Probe { url } => http::probe(&url).await,
        }
    })
}
