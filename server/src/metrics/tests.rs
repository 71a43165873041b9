//! Rendering tests.

use super::*;

#[test]
fn renders_counters_and_summaries() {
    let m = Metrics::new(2);
    m.updates.fetch_add(3, Ordering::Relaxed);
    m.merged.store(5, Ordering::Relaxed);
    m.query(1, 0, 20, 150);
    m.query(1, 1, 20, 250);
    m.error("bad_json");
    m.opened(Proto::Http);
    let mut s = String::new();
    m.refused(Proto::Pool, Refusal::PerAddress);
    m.handshake_timeout(Proto::Query);
    m.output_cut.fetch_add(2, Ordering::Relaxed);
    m.render(&mut s, 7, 1.5, 4096);
    assert!(s.contains("presenced_updates_total 3\n"));
    assert!(s.contains("presenced_query_ids_total{frontend=\"json\"} 40\n"));
    assert!(s.contains("presenced_query_latency_seconds_count{frontend=\"json\"} 2\n"));
    assert!(s.contains("presenced_errors_total{kind=\"bad_json\"} 1\n"));
    assert!(s.contains("presenced_connections_open{protocol=\"http\"} 1\n"));
    assert!(s.contains("presenced_records 7\n"));
    assert!(s.contains("# TYPE presenced_replication_merged_total counter\n"));
    assert!(s.contains("presenced_replication_merged_total 5\n"));
    assert!(s.contains(
        "presenced_connections_refused_total{protocol=\"pool\",reason=\"per_address\"} 1\n"
    ));
    assert!(s.contains(
        "presenced_connections_refused_total{protocol=\"http\",reason=\"max_connections\"} 0\n"
    ));
    assert!(s.contains("presenced_handshake_timeouts_total{protocol=\"query\"} 1\n"));
    assert!(s.contains("presenced_output_buffered_bytes 4096\n"));
    assert!(s.contains("presenced_output_cut_total 2\n"));
}

#[test]
fn renders_credential_counters() {
    use presenced_core::auth::AuthOutcome;
    let m = Metrics::new(1).with_api_keys(["portal".to_owned(), "wiki".to_owned()]);
    m.auth.api(0, AuthOutcome::Granted(1));
    m.auth.api(1, AuthOutcome::Missing);
    m.auth.api(2, AuthOutcome::Invalid);
    m.auth.api(2, AuthOutcome::Open);
    m.auth.pool_failures.fetch_add(4, Ordering::Relaxed);
    m.auth.pool_throttled.fetch_add(2, Ordering::Relaxed);
    let mut s = String::new();
    m.render(&mut s, 0, 0.0, 0);
    assert!(s.contains("presenced_api_auth_total{frontend=\"tcp\",outcome=\"granted\"} 1\n"));
    assert!(s.contains("presenced_api_auth_total{frontend=\"json\",outcome=\"missing\"} 1\n"));
    assert!(s.contains("presenced_api_auth_total{frontend=\"soap\",outcome=\"invalid\"} 1\n"));
    assert!(s.contains("presenced_api_key_requests_total{key=\"wiki\"} 1\n"));
    assert!(s.contains("presenced_api_key_requests_total{key=\"portal\"} 0\n"));
    assert!(s.contains("presenced_pool_auth_failures_total 4\n"));
    assert!(s.contains("presenced_pool_auth_throttled_total 2\n"));
}

/// The value of the one sample line `name` (with its labels) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn renders_the_store_gauges_of_each_engine_after_updates() {
    use presenced_core::hlc::Stamp;
    use presenced_core::model::{Change, ClientType, Sid, Update};
    use presenced_core::store::{Engine, Store};

    for engine in [Engine::Table, Engine::Flurry] {
        let store = Store::new(engine, 1024);
        let mut empty = String::new();
        render_store(&mut empty, engine, &store.memory());
        assert_eq!(sample(&empty, "presenced_store_bytes_per_record"), 0.0);

        let p = store.pin();
        for sid in 1..=5000u64 {
            let u = Update {
                uid: sid,
                pool: 1,
                change: Change::Login(ClientType::Pc),
                ext: None,
            };
            p.apply(Sid::new(sid).unwrap(), Stamp::new(sid << 16, 1), &u);
        }
        drop(p);
        let mut s = String::new();
        render_store(&mut s, engine, &store.memory());
        let name = engine.name();
        assert!(s.contains(&format!("presenced_store_engine{{engine=\"{name}\"}} 1\n")));
        assert_eq!(s.matches("presenced_store_engine{").count(), 1, "{s}");
        for family in [
            "presenced_store_engine",
            "presenced_store_bytes",
            "presenced_store_bytes_per_record",
            "presenced_store_load",
            "presenced_store_largest_growth_slots",
        ] {
            assert!(s.contains(&format!("# TYPE {family} gauge\n")), "{s}");
        }
        let bytes = sample(&s, "presenced_store_bytes");
        let per = sample(&s, "presenced_store_bytes_per_record");
        let load = sample(&s, "presenced_store_load");
        let growth = sample(&s, "presenced_store_largest_growth_slots");
        // A record is at least its 8-byte index slot and far less than a KiB.
        assert!(
            (8.0..1024.0).contains(&per),
            "{name}: {per} bytes per record"
        );
        assert!(
            (bytes / 5000.0 - per).abs() < 0.01,
            "{name}: {bytes} / 5000 vs {per}"
        );
        assert!(load > 0.0 && load <= 1.0, "{name}: load {load}");
        match engine {
            // 5000 users in a store sized for 1024: at least one index grew.
            Engine::Table => assert!(growth > 0.0, "{s}"),
            Engine::Flurry => assert_eq!(growth, 0.0),
        }
    }
}
