//! [`Admission`]: how many client connections each listener holds, in total and per client
//! address, against `<limits max-connections>` (per listener) and
//! `<limits max-connections-per-address>` (per listener and address).
//!
//! The acceptor counts a connection in ([`Admission::admit`]) before it hands it to a worker and
//! refuses it (closed at accept, without a byte) when its listener or its address is full; the
//! worker that owns the connection counts it out ([`Admission::release`]) when it closes it. On a
//! PROXY protocol listener a connection from a trusted balancer is counted in the listener's
//! total only (the balancer's address is not the client's) until its header names the client:
//! [`Admission::readdress`] then counts it under that address, or refuses it when that address
//! is full (the worker closes it).
//!
//! Invariants: a counted connection is released exactly once, under the address it is counted
//! under (the worker keeps it in `Conn::counted`); a listener's total never exceeds its
//! `max-connections` and an address's count never exceeds `max-connections-per-address`,
//! because every increment is checked under the listener's lock.
//!
//! Thread model: one mutex per listener, taken by the acceptor at accept and by a worker at
//! close or at a PROXY header, never across anything else (no I/O, no other lock).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::metrics::Proto;
pub use crate::metrics::Refusal;

/// The connection counts of one listener.
#[derive(Debug, Default)]
struct Counts {
    /// INVARIANT: the number of connections counted in and not released, `<= max`.
    total: usize,
    /// INVARIANT: per address, the connections counted under it, each `<= per_address`; no
    /// zero entries (an address is removed with its last connection).
    by_addr: HashMap<IpAddr, usize>,
}

/// The connection counts of the pool, query and HTTP listeners.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    per_address: usize,
    listeners: [Mutex<Counts>; 3],
}

impl Admission {
    /// Counts with `max` connections per listener and `per_address` per address and listener.
    pub fn new(max: usize, per_address: usize) -> Self {
        Self {
            max,
            per_address,
            listeners: Default::default(),
        }
    }

    /// Counts a new connection of `proto`'s listener in, under `addr` (`None`: a trusted
    /// balancer's connection, counted in the total only until [`readdress`](Self::readdress)).
    /// On `Err` nothing was counted.
    pub fn admit(&self, proto: Proto, addr: Option<IpAddr>) -> Result<(), Refusal> {
        self.with(proto, |c| {
            if c.total >= self.max {
                return Err(Refusal::MaxConnections);
            }
            if let Some(a) = addr {
                let n = c.by_addr.entry(a).or_default();
                if *n >= self.per_address {
                    if *n == 0 {
                        c.by_addr.remove(&a);
                    }
                    return Err(Refusal::PerAddress);
                }
                *n += 1;
            }
            c.total += 1;
            Ok(())
        })
        .unwrap_or(Err(Refusal::MaxConnections))
    }

    /// Moves a counted connection of `proto`'s listener from `from` to `to` (a PROXY header named
    /// its client). On `Err` (`to` is full) it stays counted under `from`, and the caller closes
    /// it and releases it under `from`.
    pub fn readdress(&self, proto: Proto, from: Option<IpAddr>, to: IpAddr) -> Result<(), Refusal> {
        if from == Some(to) {
            return Ok(());
        }
        self.with(proto, |c| {
            let n = c.by_addr.get(&to).copied().unwrap_or(0);
            if n >= self.per_address {
                return Err(Refusal::PerAddress);
            }
            c.by_addr.insert(to, n + 1);
            if let Some(f) = from {
                uncount(&mut c.by_addr, f);
            }
            Ok(())
        })
        .unwrap_or(Err(Refusal::PerAddress))
    }

    /// Counts out a connection of `proto`'s listener counted under `addr`.
    pub fn release(&self, proto: Proto, addr: Option<IpAddr>) {
        let _ = self.with(proto, |c| {
            c.total = c.total.saturating_sub(1);
            if let Some(a) = addr {
                uncount(&mut c.by_addr, a);
            }
        });
    }

    /// Connections counted on `proto`'s listener now, and under `addr` there.
    pub fn counts(&self, proto: Proto, addr: IpAddr) -> (usize, usize) {
        self.with(proto, |c| {
            (c.total, c.by_addr.get(&addr).copied().unwrap_or(0))
        })
        .unwrap_or((0, 0))
    }

    /// Runs `f` on `proto`'s counts under their lock (`None` if a panic poisoned it).
    fn with<T>(&self, proto: Proto, f: impl FnOnce(&mut Counts) -> T) -> Option<T> {
        let m = self.listeners.get(proto as usize)?;
        let mut c = m.lock().ok()?;
        Some(f(&mut c))
    }
}

/// One connection less under `addr`, removing the entry with its last one.
fn uncount(by_addr: &mut HashMap<IpAddr, usize>, addr: IpAddr) {
    if let Some(n) = by_addr.get_mut(&addr) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            by_addr.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn each_listener_has_its_own_total() {
        let a = Admission::new(2, 10);
        assert_eq!(a.admit(Proto::Pool, Some(ip(2))), Ok(()));
        assert_eq!(a.admit(Proto::Pool, Some(ip(3))), Ok(()));
        assert_eq!(
            a.admit(Proto::Pool, Some(ip(4))),
            Err(Refusal::MaxConnections)
        );
        // A full pool listener leaves HTTP (health checks) and query alone.
        assert_eq!(a.admit(Proto::Http, Some(ip(4))), Ok(()));
        assert_eq!(a.admit(Proto::Query, Some(ip(4))), Ok(()));
        a.release(Proto::Pool, Some(ip(2)));
        assert_eq!(a.admit(Proto::Pool, Some(ip(4))), Ok(()));
        assert_eq!(a.counts(Proto::Pool, ip(2)), (2, 0));
    }

    #[test]
    fn each_address_is_capped_per_listener() {
        let a = Admission::new(100, 2);
        for _ in 0..2 {
            assert_eq!(a.admit(Proto::Query, Some(ip(2))), Ok(()));
        }
        assert_eq!(a.admit(Proto::Query, Some(ip(2))), Err(Refusal::PerAddress));
        assert_eq!(a.admit(Proto::Query, Some(ip(3))), Ok(()));
        assert_eq!(a.admit(Proto::Pool, Some(ip(2))), Ok(()));
        assert_eq!(a.counts(Proto::Query, ip(2)), (3, 2));
        a.release(Proto::Query, Some(ip(2)));
        assert_eq!(a.counts(Proto::Query, ip(2)), (2, 1));
        assert_eq!(a.admit(Proto::Query, Some(ip(2))), Ok(()));
    }

    #[test]
    fn a_proxy_header_recounts_under_the_client_address() {
        let a = Admission::new(100, 2);
        // Balancer connections count in the total only.
        for _ in 0..4 {
            assert_eq!(a.admit(Proto::Http, None), Ok(()));
        }
        assert_eq!(a.readdress(Proto::Http, None, ip(9)), Ok(()));
        assert_eq!(a.readdress(Proto::Http, None, ip(9)), Ok(()));
        // The third from the same client is over its cap: it stays counted where it was.
        assert_eq!(
            a.readdress(Proto::Http, None, ip(9)),
            Err(Refusal::PerAddress)
        );
        assert_eq!(a.counts(Proto::Http, ip(9)), (4, 2));
        a.release(Proto::Http, None);
        assert_eq!(a.counts(Proto::Http, ip(9)), (3, 2));
        // Moving between two addresses frees the first.
        assert_eq!(a.admit(Proto::Pool, Some(ip(5))), Ok(()));
        assert_eq!(a.readdress(Proto::Pool, Some(ip(5)), ip(6)), Ok(()));
        assert_eq!(a.counts(Proto::Pool, ip(5)), (1, 0));
        assert_eq!(a.counts(Proto::Pool, ip(6)), (1, 1));
        // The same address again is no move.
        assert_eq!(a.readdress(Proto::Pool, Some(ip(6)), ip(6)), Ok(()));
        assert_eq!(a.counts(Proto::Pool, ip(6)), (1, 1));
    }

    #[test]
    fn refusals_count_nothing() {
        let a = Admission::new(1, 1);
        assert_eq!(a.admit(Proto::Pool, Some(ip(2))), Ok(()));
        assert!(a.admit(Proto::Pool, Some(ip(2))).is_err());
        assert!(a.admit(Proto::Pool, Some(ip(3))).is_err());
        a.release(Proto::Pool, Some(ip(2)));
        assert_eq!(a.counts(Proto::Pool, ip(2)), (0, 0));
        assert_eq!(a.admit(Proto::Pool, Some(ip(3))), Ok(()));
    }
}
