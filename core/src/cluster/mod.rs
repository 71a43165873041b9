//! The multi-server system of the patent, as sans-IO code: replication messages and their codec
//! ([`repl`]), time-sync datagrams and the NTP-style estimator ([`timesync`]), and the
//! [`node::ClusterNode`] state machine that ties membership, elections, replication, joining and
//! time sync together.
//!
//! Architecture Invariant: nothing here owns a socket or reads a clock. The driver in
//! `presenced-frontends` (`server::cluster`) turns [`node::ClusterNode`]'s outputs into TCP
//! frames and UDP datagrams, and its inputs come from them; the deterministic simulation in
//! `node::tests` drives the same state machine over a simulated network and clock.

pub mod auth;
pub mod node;
pub mod repl;
pub mod timesync;
