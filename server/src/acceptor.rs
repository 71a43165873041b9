//! The acceptor: [`run`] binds every socket, starts the worker, cluster and signal threads, and
//! then accepts connections on the pool, query and HTTP listeners, handing each to a worker,
//! round robin, through a crossbeam channel and the worker's `Waker`.
//!
//! Each listener has its own budget: a connection is counted in `Shared::admission` (per
//! listener, and per client address) before it is handed over, and closed at once, without a
//! byte, when its listener holds `max-connections` or its address `max-connections-per-address`
//! (counted per listener and reason, warned rate-limited). A flood of one listener therefore
//! never refuses another's clients: health checks on the HTTP port keep answering.
//!
//! We chose one acceptor over `SO_REUSEPORT` listeners per worker because `SO_REUSEPORT` lets a
//! second process started by mistake on the same ports silently take half the connections;
//! accepting is a negligible share of the work.
//!
//! Architecture Invariant: this thread only accepts and counts connections; it reads and writes
//! no byte of any of them.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mio::{Events, Interest, Poll, Token, Waker};
use presenced_config::ClusterConfig;
use tracing::{debug, info, warn};

use crate::admission::Refusal;
use crate::conn::listen;
use crate::metrics::Proto;
use crate::ratelog::RateLimited;
use crate::shared::{ServeOptions, Shared};
use crate::{cluster, repl, worker};

const LISTENERS: [(Proto, &str); 3] = [
    (Proto::Pool, "pool"),
    (Proto::Query, "query"),
    (Proto::Http, "http"),
];
const ACCEPT_WAKER: Token = Token(100);

static REFUSED: RateLimited = RateLimited::new();
static ACCEPT_FAILED: RateLimited = RateLimited::new();

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`, whatever the
/// system setting), before any thread starts. A huge page is faulted in, and zeroed, 2 MiB at a
/// time on the thread that first touches it: with them, the cluster thread of a replica at 300 k
/// updates/s spent a quarter of its time in `clear_page` and the replication lag p99 was 32–48
/// ms; without them it is 3–4 ms (BENCHMARKS.md, "Replication lag"). The price is about 10 % of
/// batch query throughput at 1 M users (more TLB misses), and the gain 20 % less memory per user.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!("cannot turn transparent huge pages off ({e}); replication lag may suffer");
    }
}

/// Runs node `node_id` of `config` until SIGINT or SIGTERM.
pub fn run(config: ClusterConfig, node_id: u16, opts: ServeOptions) -> anyhow::Result<()> {
    let me = config
        .node(node_id)
        .cloned()
        .with_context(|| format!("node {node_id} is not in the cluster file"))?;
    // Signal handlers first: a SIGTERM that arrives while the node starts must stop it cleanly,
    // not kill it with the default action.
    let signals = {
        use signal_hook::consts::{SIGINT, SIGTERM};
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .context("cannot install signal handlers")?
    };
    no_huge_pages();
    let mut listeners = Vec::new();
    for (proto, name) in LISTENERS {
        let addr = match proto {
            Proto::Pool => me.pool_addr(),
            Proto::Query => me.query_addr(),
            Proto::Http => me.http_addr(),
        };
        listeners.push((proto, name, listen(name, addr)?, addr));
    }
    let (cpoll, clistener, cudp, cwaker) = cluster::prepare(&me)?;
    let (repl, repl_rx, commands) = repl::repl_pair(cwaker);
    let shared = Arc::new(Shared::new(config, me, &opts, repl));

    let mut workers = Vec::new();
    let mut handles = Vec::new();
    for idx in 0..shared.workers {
        let (w, handle) = worker::Worker::new(idx, shared.clone())?;
        handles.push(handle);
        workers.push(
            std::thread::Builder::new()
                .name(format!("worker-{idx}"))
                .spawn(move || w.run())
                .context("cannot spawn worker thread")?,
        );
    }

    shared
        .repl
        .set_workers(handles.iter().map(|h| h.waker.clone()).collect());
    shared
        .watch
        .set_wakers(handles.iter().map(|h| h.waker.clone()).collect());
    let cluster =
        cluster::ClusterDriver::new(cpoll, clistener, cudp, repl_rx, commands, shared.clone())?;
    if shared.config.alone() {
        info!("the cluster file names no other node and no seed: a one-node cluster on purpose");
    }
    let cluster = std::thread::Builder::new()
        .name("cluster".into())
        .spawn(move || cluster.run())
        .context("cannot spawn cluster thread")?;

    let mut poll = Poll::new().context("cannot create poll")?;
    let waker = Arc::new(Waker::new(poll.registry(), ACCEPT_WAKER).context("cannot create waker")?);
    for (i, (_, _, l, _)) in listeners.iter_mut().enumerate() {
        poll.registry().register(l, Token(i), Interest::READABLE)?;
    }
    let signals = spawn_signal_thread(
        signals,
        shared.clone(),
        waker,
        handles.iter().map(|h| h.waker.clone()).collect(),
    )?;
    let sync_addr = shared.me.sync_addr();
    let time_addr = shared.me.time_addr();
    info!("listening for replication on {sync_addr} and time sync on {time_addr} (udp)");
    for (_, name, _, addr) in &listeners {
        info!("listening for {name} on {addr}");
    }
    info!(
        node = shared.me.id,
        workers = shared.workers,
        cluster = shared.config.name(),
        store = shared.store.engine().name(),
        initial_users = shared.config.limits().initial_users,
        "presenced serving (readiness: /healthz/ready)"
    );

    let mut events = Events::with_capacity(64);
    let mut next = 0usize;
    while !shared.stopping.load(Ordering::Acquire) {
        // The waker ends the wait on shutdown; the timeout is a second line of defence.
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(250))) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("acceptor poll failed");
        }
        for ev in events.iter() {
            let Some((proto, name, listener, _)) = listeners.get(ev.token().0) else {
                continue;
            };
            loop {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let counted = counted_addr(&shared, *proto, peer);
                        if let Err(why) = shared.admission.admit(*proto, counted) {
                            shared.metrics.refused(*proto, why);
                            if let Some(suppressed) = REFUSED.allow() {
                                warn!(
                                    %peer,
                                    suppressed,
                                    "refusing {name} connection: {} reached",
                                    refusal_limit(why)
                                );
                            }
                            continue;
                        }
                        let _ = stream.set_nodelay(true);
                        let Some(h) = handles.get(next % handles.len().max(1)) else {
                            break;
                        };
                        next = next.wrapping_add(1);
                        debug!(%peer, "accepted {name} connection");
                        shared.metrics.opened(*proto);
                        if h.tx.send((stream, *proto, peer, counted)).is_err() {
                            shared.metrics.closed(*proto);
                            shared.admission.release(*proto, counted);
                            continue;
                        }
                        let _ = h.waker.wake();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // EMFILE and friends: log and retry on the next readiness event.
                        if let Some(suppressed) = ACCEPT_FAILED.allow() {
                            warn!(suppressed, "accept on {name} failed: {e}");
                        }
                        std::thread::sleep(Duration::from_millis(10));
                        break;
                    }
                }
            }
        }
    }
    // Draining is over: no new connection; the workers finish what is in flight, then the
    // cluster thread flushes replication and says goodbye.
    info!("drained: closing listeners and client connections");
    drop(listeners);
    for h in &handles {
        let _ = h.waker.wake();
    }
    for w in workers {
        let _ = w.join();
    }
    shared.shutdown.store(true, Ordering::Release);
    shared.repl.wake();
    let _ = cluster.join();
    drop(signals);
    info!("stopped");
    Ok(())
}

/// The address a new connection of `proto`'s listener from `peer` is counted under: `None` for
/// a trusted balancer on a PROXY protocol listener (its header names the client, and the
/// worker counts the connection under that address then), else the peer's address.
fn counted_addr(shared: &Shared, proto: Proto, peer: SocketAddr) -> Option<IpAddr> {
    let balancer = shared
        .config
        .proxy_protocol()
        .is_some_and(|p| p.applies_to(worker::listener(proto)) && p.trusts(peer.ip()));
    (!balancer).then_some(peer.ip())
}

/// The `<limits>` attribute a refusal names.
fn refusal_limit(why: Refusal) -> &'static str {
    match why {
        Refusal::MaxConnections => "max-connections",
        Refusal::PerAddress => "max-connections-per-address",
    }
}

/// The signal thread. The first SIGTERM or SIGINT starts draining: the node reports not ready
/// at once (`/healthz/ready` 503, peers re-elect without it) but keeps serving every listener for
/// `drain-ms`; then it sets `stopping` and wakes the acceptor and the workers. A second signal
/// exits at once.
fn spawn_signal_thread(
    mut signals: signal_hook::iterator::Signals,
    shared: Arc<Shared>,
    acceptor: Arc<Waker>,
    workers: Vec<Arc<Waker>>,
) -> anyhow::Result<signal_hook::iterator::Handle> {
    let handle = signals.handle();
    let drain = Duration::from_millis(shared.config.timing().drain_ms);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Some(sig) = signals.forever().next() else {
                return;
            };
            info!(
                signal = sig,
                drain_ms = drain.as_millis() as u64,
                "signal received: draining (not ready, still serving)"
            );
            shared.draining.store(true, Ordering::Release);
            shared.repl.wake();
            let until = std::time::Instant::now() + drain;
            loop {
                if signals.pending().next().is_some() {
                    warn!("second signal: exiting at once");
                    std::process::exit(0);
                }
                let now = std::time::Instant::now();
                if now >= until && !shared.stopping.load(Ordering::Acquire) {
                    shared.stopping.store(true, Ordering::Release);
                    let _ = acceptor.wake();
                    for w in &workers {
                        let _ = w.wake();
                    }
                }
                // Keep watching for a second signal until the process exits.
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .context("cannot spawn signal thread")?;
    Ok(handle)
}
