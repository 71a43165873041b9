//! The pool client library against the real binary through a fault-injecting proxy that cuts
//! the connection mid-stream: every acked event must be applied, every un-acked one re-sent, and
//! the final state must equal what the events say.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Node;
use presenced_client::{PoolClient, PoolClientOptions, QueryClient};
use presenced_core::model::{ClientType, Sid};
use presenced_core::proto::pool::Event;

/// A TCP proxy to `upstream`. The first `cuts` connections are cut after `after` bytes from the
/// client have been forwarded; later ones pass everything.
fn cutting_proxy(
    upstream: SocketAddr,
    after: usize,
    cuts: usize,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(mut client) = client else { break };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let limit = if n < cuts { after } else { usize::MAX };
            let mut server = TcpStream::connect(upstream).unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut sent = 0usize;
                while let Ok(k) = client.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    let k2 = k.min(limit - sent);
                    if server.write_all(&buf[..k2]).is_err() {
                        break;
                    }
                    sent += k2;
                    if sent >= limit {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Both);
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, count)
}

#[test]
fn cut_connections_lose_nothing_acked_and_resend_the_rest() {
    let node = Node::start();
    // Cut the first three connections after ~40 KB, mid-frame.
    let (proxy, conns) = cutting_proxy(node.pool_addr(), 40_000, 3);
    let mut opts = PoolClientOptions::new(proxy);
    opts.batch = 100;
    opts.window = 1000;
    let mut client = PoolClient::connect(opts).unwrap();

    // 20k events over 500 users; the oracle is the last event per (user, client).
    let mut oracle: HashMap<u64, [Option<bool>; 6]> = HashMap::new();
    let mut acked_before_cut = 0;
    for i in 0..20_000u64 {
        let sid = i % 500 + 1;
        let client_type = ClientType::ALL[(i / 500 % 6) as usize];
        let login = (i / 3000) % 2 == 0;
        oracle.entry(sid).or_default()[client_type.code() as usize] = Some(login);
        let sid = Sid::new(sid).unwrap();
        let e = if login {
            Event::Login {
                sid,
                uid: sid.get(),
                client: client_type,
                ext: None,
            }
        } else {
            Event::Logout {
                sid,
                uid: sid.get(),
                client: client_type,
                ext: None,
            }
        };
        client.send(e).unwrap();
        if i == 2000 {
            acked_before_cut = client.acked();
        }
    }
    client.flush().unwrap();
    assert_eq!(client.acked(), 20_000, "every event acked in the end");
    assert_eq!(client.unacked(), 0);
    assert!(
        client.reconnects() >= 3,
        "the proxy cut {} times",
        client.reconnects()
    );
    assert!(conns.load(Ordering::SeqCst) >= 4);
    assert!(acked_before_cut > 0);

    let mut q = QueryClient::connect(node.query_addr(), Duration::from_secs(5)).unwrap();
    let ids: Vec<u64> = (1..=500).collect();
    let statuses = q.query(&ids).unwrap();
    let mut lost = 0;
    for s in statuses {
        let want: Vec<ClientType> = ClientType::ALL
            .into_iter()
            .filter(|c| oracle[&s.sid.get()][c.code() as usize] == Some(true))
            .collect();
        let got: Vec<ClientType> = s.clients.iter().collect();
        if want != got {
            lost += 1;
        }
    }
    common::figure(&format!(
        "pool resume: 20000 events, {} reconnects, updates lost = {lost}",
        client.reconnects()
    ));
    assert_eq!(lost, 0, "state differs from the oracle for {lost} users");
}
