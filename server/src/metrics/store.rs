//! The store's gauges: which engine holds the records and what it holds in memory
//! ([`Memory`], read from the store when `/metrics` is rendered).
//!
//! Everything here is a report taken while workers write: the figures of one scrape may be a few
//! updates apart from each other, and nothing decides anything from them.

use std::fmt::Write as _;

use presenced_core::store::{Engine, Memory};

use super::family;

/// Renders the store gauges of `engine` with its memory report `m`.
pub fn render_store(out: &mut String, engine: Engine, m: &Memory) {
    family(
        out,
        "presenced_store_engine",
        "gauge",
        "The store engine of this node (<store engine>): one series, always 1.",
    );
    let _ = writeln!(
        out,
        "presenced_store_engine{{engine=\"{}\"}} 1",
        engine.name()
    );
    family(
        out,
        "presenced_store_bytes",
        "gauge",
        "Bytes the store engine holds for its records (index, arenas or boxed records; \
         extension data and allocator rounding not counted; an estimate for flurry).",
    );
    let _ = writeln!(out, "presenced_store_bytes {}", m.bytes);
    family(
        out,
        "presenced_store_bytes_per_record",
        "gauge",
        "presenced_store_bytes divided by the records held (0 when empty).",
    );
    let _ = writeln!(
        out,
        "presenced_store_bytes_per_record {}",
        m.bytes_per_record()
    );
    family(
        out,
        "presenced_store_load",
        "gauge",
        "Records per index slot (the table engine's load factor; 1 for flurry).",
    );
    let _ = writeln!(out, "presenced_store_load {}", m.load());
    family(
        out,
        "presenced_store_largest_growth_slots",
        "gauge",
        "Slots rehashed by the largest single index growth so far: what one shard's writers \
         waited for at most (0 for flurry, which grows incrementally).",
    );
    let _ = writeln!(
        out,
        "presenced_store_largest_growth_slots {}",
        m.largest_growth
    );
}
