//! `presenced push`: a pool simulator that reads events from text lines.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use presenced_client::{PoolClient, PoolClientOptions, ServerAddr};
use presenced_core::model::{ClientType, Ext, ExtLimits, Sid};
use presenced_core::proto::pool::Event;

/// Parses one event line; `Ok(None)` for blank lines and `#` comments.
pub(crate) fn parse_line(line: &str, limits: &ExtLimits) -> anyhow::Result<Option<Event>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or_default();
    match verb {
        "snapshot-begin" => return Ok(Some(Event::SnapshotBegin)),
        "snapshot-end" => return Ok(Some(Event::SnapshotEnd)),
        "login" | "logout" | "permission" => {}
        other => bail!("unknown event {other:?}; expected login, logout, permission, snapshot-begin or snapshot-end"),
    }
    let sid_word = words.next().context("missing <sid>")?;
    let sid = sid_word
        .parse::<u64>()
        .ok()
        .and_then(Sid::new)
        .with_context(|| {
            format!("bad sid {sid_word:?}: expected an integer from 1 to 18446744073709551615")
        })?;
    let uid_word = words.next().context("missing <uid>")?;
    let uid = uid_word
        .parse::<u64>()
        .with_context(|| format!("bad uid {uid_word:?}: expected an unsigned integer"))?;
    let arg = words.next().with_context(|| {
        if verb == "permission" {
            "missing allow|deny".to_owned()
        } else {
            "missing <client>".to_owned()
        }
    })?;
    let mut ext = Vec::new();
    for kv in words {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("bad extension {kv:?}: expected key=value"))?;
        ext.push((k.to_owned(), v.to_owned()));
    }
    let ext = if ext.is_empty() {
        None
    } else {
        Some(Arc::new(Ext::new(ext, limits)?))
    };
    Ok(Some(match verb {
        "permission" => {
            let allow = match arg {
                "allow" => true,
                "deny" => false,
                other => bail!("bad permission {other:?}: expected allow or deny"),
            };
            Event::Permission {
                sid,
                uid,
                allow,
                ext,
            }
        }
        _ => {
            let client = ClientType::parse(arg).with_context(|| {
                format!("unknown client {arg:?}: expected pc, mobile, web, pad, sms or other")
            })?;
            if verb == "login" {
                Event::Login {
                    sid,
                    uid,
                    client,
                    ext,
                }
            } else {
                Event::Logout {
                    sid,
                    uid,
                    client,
                    ext,
                }
            }
        }
    }))
}

/// What `presenced push` was given. `pool` lists the nodes to try, in order, at connect and after
/// a failure; `connect_timeout` and `handshake_timeout` bound each attempt (see
/// `PoolClientOptions`).
pub(crate) struct PushArgs {
    /// Pool addresses, in the order given.
    pub(crate) pool: Vec<ServerAddr>,
    /// This pool's id.
    pub(crate) pool_id: u32,
    /// The token, if the cluster requires one.
    pub(crate) token: Option<Vec<u8>>,
    /// Events per frame.
    pub(crate) batch: usize,
    /// Per resolved address.
    pub(crate) connect_timeout: Duration,
    /// `HELLO` to `WELCOME`, in all.
    pub(crate) handshake_timeout: Duration,
}

/// Reads every line first (so a typo sends nothing), then pushes and waits for all acks.
pub(crate) fn run(args: PushArgs, input: impl BufRead, out: &mut impl Write) -> anyhow::Result<()> {
    let limits = ExtLimits::default();
    let mut events = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.context("cannot read stdin")?;
        if let Some(e) = parse_line(&line, &limits).with_context(|| format!("line {}", i + 1))? {
            events.push(e);
        }
    }
    let started = Instant::now();
    let list = args
        .pool
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let first = args.pool.first().cloned().context("no --pool address")?;
    let mut opts = PoolClientOptions::new(first);
    opts.addrs = args.pool;
    opts.pool = args.pool_id;
    opts.token = args.token.unwrap_or_default();
    opts.batch = args.batch.clamp(1, 4096);
    opts.connect_timeout = args.connect_timeout;
    opts.handshake_timeout = args.handshake_timeout;
    let mut client =
        PoolClient::connect(opts).with_context(|| format!("cannot connect to pool port {list}"))?;
    let n = events.len();
    for e in events {
        client.send(e)?;
    }
    client.flush().context("push failed")?;
    let to = client
        .peer()
        .map_or_else(|| list.clone(), |a| a.to_string());
    writeln!(
        out,
        "pushed {n} events to {to}: {} acked, {} reconnects, {} ms",
        client.acked(),
        client.reconnects(),
        started.elapsed().as_millis()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(line: &str, expected: &str) {
        let got = match parse_line(line, &ExtLimits::default()) {
            Ok(e) => format!("{e:?}"),
            Err(e) => format!("error: {e:#}"),
        };
        assert!(
            got.contains(expected),
            "{line:?} gave {got}, expected {expected}"
        );
    }

    #[test]
    fn parses_event_lines() {
        check(
            "login 10086 1 pc nick=alice",
            "Login { sid: Sid(10086), uid: 1, client: Pc, ext: Some",
        );
        check(
            "logout 10086 1 mobile",
            "Logout { sid: Sid(10086), uid: 1, client: Mobile, ext: None",
        );
        check(
            "permission 10086 1 deny",
            "Permission { sid: Sid(10086), uid: 1, allow: false",
        );
        check("  # comment", "None");
        check("", "None");
        check("snapshot-begin", "SnapshotBegin");
        check("login 0 1 pc", "error: bad sid \"0\"");
        check("login 1 1 tv", "error: unknown client \"tv\"");
        check("permission 1 1 maybe", "error: bad permission");
        check("login 1 1 pc nick", "error: bad extension \"nick\"");
        check("jump 1", "error: unknown event \"jump\"");
        check("login 1", "error: missing <uid>");
    }
}
