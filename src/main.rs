//! `presenced`: the command line. A thin layer: every subcommand parses its flags with clap and
//! calls into `presenced-server` (serve), `presenced-client` (push, query, with
//! `presenced-frontends` for the JSON output) or `presenced-config` (check-config).
//!
//! Errors are printed as one line on stderr (`error: ...`) with a non-zero exit code.

mod bench;
mod push;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use presenced_client::QueryClient;
use presenced_config::ClusterConfig;

/// mimalloc: the store replaces a record on every update (flurry values are immutable), so
/// allocation is on the hot path; glibc's malloc spent about 30 % of ingest time in profiles
/// (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Presence publishing cluster for IM systems.
#[derive(Parser, Debug)]
#[command(name = "presenced", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node (with no --config: one node on 127.0.0.1 with the default ports).
    Serve {
        /// Cluster file (XML); default: the embedded single-node configuration.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Which node of the cluster file this process is (required if it has several).
        #[arg(long, value_name = "ID")]
        node: Option<u16>,
        /// Shift this node's clock by N ms (skew tests and demos).
        #[arg(
            long,
            value_name = "N",
            default_value_t = 0,
            allow_negative_numbers = true
        )]
        clock_offset_ms: i64,
    },
    /// Pool simulator: read events from stdin, push them, wait for every ack.
    ///
    /// One event per line: `login <sid> <uid> <client> [key=value ...]`,
    /// `logout <sid> <uid> <client> [key=value ...]`, `permission <sid> <uid> allow|deny`,
    /// `snapshot-begin`, `snapshot-end`. client is one of pc mobile web pad sms other.
    Push {
        /// Pool port of a node; repeat to give fail-over nodes.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7400")]
        pool: Vec<SocketAddr>,
        /// This pool's id.
        #[arg(long, default_value_t = 1)]
        pool_id: u32,
        /// Token, if the cluster requires one.
        #[arg(long)]
        token: Option<String>,
        /// Events per frame.
        #[arg(long, default_value_t = 1024)]
        batch: usize,
    },
    /// Batch query over raw TCP; prints one JSON status per line.
    Query {
        /// Query port of a node.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7401")]
        server: SocketAddr,
        /// IM ids to look up.
        #[arg(required = true, value_name = "SID")]
        ids: Vec<String>,
    },
    /// Validate a cluster file without serving.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Load generator (see BENCHMARKING.md).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let msg = e.to_string();
            let first = msg
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad arguments");
            eprintln!("{} (see --help)", first.trim());
            return ExitCode::from(2);
        }
    };
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<ClusterConfig> {
    Ok(match path {
        Some(p) => ClusterConfig::load(p)?,
        None => ClusterConfig::embedded_default(),
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            node,
            clock_offset_ms,
        } => {
            let cfg = load_config(config.as_ref())?;
            let node = match (node, cfg.nodes()) {
                (Some(n), _) => n,
                (None, [only]) => only.id,
                (None, all) => anyhow::bail!(
                    "--node is required: the cluster file has {} nodes (ids {})",
                    all.len(),
                    all.iter()
                        .map(|n| n.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let opts = presenced_server::ServeOptions { clock_offset_ms };
            presenced_server::run(cfg, node, opts)
        }
        Command::Push {
            pool,
            pool_id,
            token,
            batch,
        } => push::run(
            pool,
            pool_id,
            token,
            batch,
            std::io::stdin().lock(),
            &mut std::io::stdout(),
        ),
        Command::Query { server, ids } => {
            let mut parsed = Vec::with_capacity(ids.len());
            for id in &ids {
                match id.parse::<u64>() {
                    Ok(n) if n > 0 => parsed.push(n),
                    _ => anyhow::bail!(
                        "invalid id {id:?}: expected an integer from 1 to 18446744073709551615"
                    ),
                }
            }
            let mut c = QueryClient::connect(server, Duration::from_secs(5))
                .with_context(|| format!("cannot query {server}"))?;
            let statuses = c
                .query(&parsed)
                .with_context(|| format!("query to {server} failed"))?;
            let mut line = Vec::new();
            for s in &statuses {
                line.clear();
                presenced_frontends::api::write_status(&mut line, s);
                println!("{}", String::from_utf8_lossy(&line));
            }
            Ok(())
        }
        Command::CheckConfig { file } => {
            let cfg = ClusterConfig::load(&file)?;
            println!(
                "{}: ok (cluster {:?}, {} node{})",
                file.display(),
                cfg.name(),
                cfg.nodes().len(),
                if cfg.nodes().len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
        Command::Bench(args) => bench::run(args),
    }
}
