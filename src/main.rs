//! `presenced`: the command line. A thin layer: every subcommand parses its flags with clap and
//! calls into `presenced-server` (serve), `presenced-client` (push, query, with
//! `presenced-frontends` for the JSON output) or `presenced-config` (check-config).
//!
//! Errors are printed as one line on stderr (`error: ...`) with a non-zero exit code.

mod bench;
mod push;
mod secret;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use presenced_client::{QueryClient, QueryClientOptions, ServerAddr};
use presenced_config::ClusterConfig;
use presenced_core::Status;

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
    /// One event per line (blank lines and lines starting with # are skipped):
    ///
    ///   login <sid> <uid> <client> [key=value ...]
    ///   logout <sid> <uid> <client> [key=value ...]
    ///   permission <sid> <uid> allow|deny [key=value ...]
    ///   snapshot-begin
    ///   snapshot-end
    ///
    /// <sid> is the public IM id (1 to 2^64-1) that web platforms query. <uid> is the pool's own
    /// user id (0 to 2^64-1), stored with the user and printed by `presenced query` as "uid".
    /// <client> is one of pc mobile web pad sms other; allow|deny says whether strangers may
    /// start a chat with the user.
    ///
    /// key=value pairs (e.g. nick=alice) are extension data, shown as "ext": an event with pairs
    /// replaces the user's extension data, one without keeps it.
    ///
    /// snapshot-begin ... snapshot-end wrap a full snapshot: at snapshot-end, every online user
    /// last reported by this --pool-id and not listed between the two markers is logged out. A
    /// node that did not see the snapshot-begin (after a fail-over) ignores the snapshot-end.
    ///
    /// Every line is checked before anything is sent. --pool may be repeated: the addresses are
    /// tried in order at connect and after a failure, and un-acked events are re-sent.
    #[command(
        verbatim_doc_comment,
        about = "Pool simulator: read events from stdin, push them, wait for every ack"
    )]
    Push {
        /// Pool port of a node (HOST may be a name); repeat to give fail-over nodes.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7400")]
        pool: Vec<ServerAddr>,
        /// This pool's id.
        #[arg(long, default_value_t = 1)]
        pool_id: u32,
        /// Token, if the cluster requires one (visible in `ps`: prefer --token-file or the
        /// PRESENCED_POOL_TOKEN environment variable).
        #[arg(long, conflicts_with = "token_file")]
        token: Option<String>,
        /// File holding the token (its bytes, without one trailing newline). Either flag wins
        /// over PRESENCED_POOL_TOKEN.
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
        /// Events per frame.
        #[arg(long, default_value_t = 1024)]
        batch: usize,
    },
    /// Batch query over raw TCP; prints one JSON status per line.
    ///
    /// Each line is the status object of the HTTP API (docs/api.md) with one more member, `uid`:
    /// the pool's own user id from the user's last event, as a string (like `id`), or null when
    /// the id is not known. --server may be repeated: the addresses are tried in order until one
    /// answers.
    Query {
        /// Query port of a node (HOST may be a name); repeat to give fail-over nodes.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7401")]
        server: Vec<ServerAddr>,
        /// File holding the API key, if the node requires one (its bytes, without one trailing
        /// newline); wins over the PRESENCED_API_KEY environment variable. With a key the
        /// client speaks query protocol version 2, else version 1.
        #[arg(long, value_name = "PATH")]
        api_key_file: Option<PathBuf>,
        /// IM ids to look up.
        #[arg(required = true, value_name = "SID")]
        ids: Vec<String>,
    },
    /// Remove a node from the cluster for good (it disappears from every member list and is
    /// refused if it comes back, until `readmit-node`); ask any other node.
    RemoveNode {
        /// The id of the node to remove.
        #[arg(value_name = "ID")]
        id: u16,
        /// HTTP port of any other node.
        #[arg(long, value_name = "HOST:HTTP-PORT", default_value = "127.0.0.1:7480")]
        server: String,
    },
    /// Let a removed node join the cluster again; ask any other node.
    ReadmitNode {
        /// The id of the node to re-admit.
        #[arg(value_name = "ID")]
        id: u16,
        /// HTTP port of any other node.
        #[arg(long, value_name = "HOST:HTTP-PORT", default_value = "127.0.0.1:7480")]
        server: String,
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
            eprintln!("{} (see --help)", one_line(&e));
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

/// Handshake and connect timeouts of `push` and `query`: short, because an address that does
/// not answer within them is left for the next `--pool`/`--server` given.
const CLI_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// See [`CLI_CONNECT_TIMEOUT`].
const CLI_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `query` keeps trying its servers (`push` keeps the pool client's 10 s: its events
/// are worth waiting for a restarting node).
const CLI_QUERY_RETRY: Duration = Duration::from_secs(3);

/// A clap error as one line: its first paragraph, with the lines clap puts under the message
/// (e.g. the names of missing arguments) joined to it, without the usage and the tips.
fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut parts = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("Usage:") || line.starts_with("For more information")
        {
            if parts.is_empty() {
                continue;
            }
            break;
        }
        parts.push(line);
    }
    if parts.is_empty() {
        return "error: bad arguments".to_owned();
    }
    parts.join(" ")
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
            token_file,
            batch,
        } => push::run(
            push::PushArgs {
                pool,
                pool_id,
                token: secret::resolve(
                    token.as_deref(),
                    token_file.as_deref(),
                    secret::POOL_TOKEN_ENV,
                )
                .context("--token-file")?,
                batch,
                connect_timeout: CLI_CONNECT_TIMEOUT,
                handshake_timeout: CLI_HANDSHAKE_TIMEOUT,
            },
            std::io::stdin().lock(),
            &mut std::io::stdout(),
        ),
        Command::Query {
            server,
            api_key_file,
            ids,
        } => {
            let key = secret::resolve(None, api_key_file.as_deref(), secret::API_KEY_ENV)
                .context("--api-key-file")?;
            query(server, key, &ids)
        }
        Command::RemoveNode { id, server } => change_member(&server, "DELETE", id),
        Command::ReadmitNode { id, server } => change_member(&server, "POST", id),
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

/// `presenced query`: parses the ids, queries the first server that answers, prints one JSON line
/// per id.
fn query(servers: Vec<ServerAddr>, key: Option<Vec<u8>>, ids: &[String]) -> anyhow::Result<()> {
    let mut parsed = Vec::with_capacity(ids.len());
    for id in ids {
        match id.parse::<u64>() {
            Ok(n) if n > 0 => parsed.push(n),
            _ => anyhow::bail!(
                "invalid id {id:?}: expected an integer from 1 to 18446744073709551615"
            ),
        }
    }
    let list = addr_list(&servers);
    let mut opts = QueryClientOptions::new(servers.first().cloned().context("no --server")?);
    opts.addrs = servers;
    opts.connect_timeout = CLI_CONNECT_TIMEOUT;
    opts.handshake_timeout = CLI_HANDSHAKE_TIMEOUT;
    opts.retry_for = CLI_QUERY_RETRY;
    opts.api_key = key;
    let mut c = QueryClient::connect_with(opts).with_context(|| format!("cannot query {list}"))?;
    let statuses = c
        .query(&parsed)
        .with_context(|| format!("query to {list} failed"))?;
    let mut line = Vec::new();
    for s in &statuses {
        line.clear();
        write_status_line(&mut line, s);
        println!("{}", String::from_utf8_lossy(&line));
    }
    Ok(())
}

/// One status as the HTTP API writes it, plus `"uid"` (a string like `id`, or `null` when the id
/// is not known) as its last member.
fn write_status_line(out: &mut Vec<u8>, s: &Status) {
    presenced_frontends::api::write_status(out, s);
    if out.last() == Some(&b'}') {
        out.pop();
        match s.uid {
            Some(uid) => {
                out.extend_from_slice(br#","uid":""#);
                out.extend_from_slice(uid.to_string().as_bytes());
                out.extend_from_slice(br#""}"#);
            }
            None => out.extend_from_slice(br#","uid":null}"#),
        }
    }
}

/// The addresses as the user gave them, for error messages: `a, b`.
fn addr_list(addrs: &[ServerAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `DELETE` or `POST /v1/cluster/members/{id}` on `server`; prints the JSON answer.
fn change_member(server: &str, method: &str, id: u16) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let addr = server
        .to_socket_addrs()
        .with_context(|| format!("bad --server {server:?}"))?
        .next()
        .with_context(|| format!("--server {server:?} resolves to no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} /v1/cluster/members/{id} HTTP/1.1\r\nHost: {server}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .with_context(|| format!("no answer from {addr}"))?;
    let status = raw.get(9..12).unwrap_or("000");
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    if status != "200" {
        anyhow::bail!("{addr} answered {status}: {}", body.trim());
    }
    println!("{}", body.trim());
    Ok(())
}
