//! Replays every committed fuzz corpus file through its target's body under plain `cargo test`,
//! so a regression found by fuzzing stays fixed without running the fuzzer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        f(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus for {target}");
}

#[test]
fn ingest_frame_corpus() {
    replay("ingest_frame", presenced_core::fuzzing::ingest_frame);
}

#[test]
fn batch_query_corpus() {
    replay("batch_query", presenced_core::fuzzing::batch_query);
}

#[test]
fn http_request_corpus() {
    replay("http_request", presenced_frontends::fuzzing::http_request);
}

#[test]
fn soap_envelope_corpus() {
    replay("soap_envelope", presenced_frontends::fuzzing::soap_envelope);
}

#[test]
fn repl_message_corpus() {
    replay("repl_message", presenced_core::fuzzing::repl_message);
}

#[test]
fn timesync_packet_corpus() {
    replay("timesync_packet", presenced_core::fuzzing::timesync_packet);
}

#[test]
fn proxy_header_corpus() {
    replay("proxy_header", presenced_core::fuzzing::proxy_header);
}

#[test]
fn cluster_node_corpus() {
    replay("cluster_node", presenced_core::fuzzing::cluster_node);
}

#[test]
fn config_xml_corpus() {
    replay("config_xml", presenced_config::fuzzing::config_xml);
}
