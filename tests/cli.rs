//! Black-box tests of the command line: the README's push/query example, config checking, the
//! store engine from the config to `/metrics`, `bench store`, bad flags, a port in use, and a
//! clean stop on SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::TcpListener;

use common::{http_get, run_cli, run_cli_raw, Node, Ports};

const README_EVENTS: &str =
    "login 10086 1 pc nick=alice\nlogin 10086 1 mobile\npermission 10086 1 deny\nlogout 10086 1 pc\n";

#[test]
fn readme_push_then_query() {
    let node = Node::start();
    let summary = node.push(README_EVENTS);
    assert!(
        summary.contains("pushed 4 events") && summary.contains("4 acked"),
        "{summary}"
    );
    let out = node.query(&["10086", "10010"]);
    assert_eq!(out.len(), 2);
    let a = &out[0];
    assert_eq!(a["id"], "10086");
    assert_eq!(a["known"], true);
    assert_eq!(a["online"], true);
    assert_eq!(a["clients"], serde_json::json!(["mobile"]));
    assert_eq!(a["accepts_strangers"], false);
    assert_eq!(a["ext"], serde_json::json!({"nick": "alice"}));
    assert!(a["changed_at"].as_str().unwrap().ends_with('Z'));
    let b = &out[1];
    assert_eq!(b["id"], "10010");
    assert_eq!(b["known"], false);
    assert_eq!(b["online"], false);
    assert_eq!(b["clients"], serde_json::json!([]));
    assert_eq!(b["accepts_strangers"], false);
    assert_eq!(b["changed_at"], serde_json::Value::Null);
    assert_eq!(b["ext"], serde_json::json!({}));
}

#[test]
fn push_rejects_a_bad_line_and_sends_nothing() {
    let node = Node::start();
    let out = run_cli_raw(
        &["push", "--pool", &node.pool_addr().to_string()],
        "login 5 1 pc\nlogin 6 1 tv\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("unknown client \"tv\""),
        "{err}"
    );
    assert_eq!(node.query(&["5"])[0]["known"], false, "nothing was sent");
}

#[test]
fn check_config_accepts_the_example_and_names_errors() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples/cluster-3.xml");
    let ok = run_cli(&["check-config", example], "");
    assert!(ok.contains("ok") && ok.contains("3 nodes"), "{ok}");

    let dir = std::env::temp_dir().join(format!("presenced-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.xml");
    std::fs::write(&bad, "<cluster name=\"x\">\n  <node id=\"1\" host=\"127.0.0.1\" pool-port=\"99999\"/>\n</cluster>\n").unwrap();
    let out = run_cli_raw(&["check-config", bad.to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("bad.xml:2:") && err.contains("pool-port"),
        "{err}"
    );

    // An attribute given twice is refused with the file, line and column of its element.
    let dup = dir.join("dup.xml");
    std::fs::write(&dup, "<cluster name=\"x\">\n  <timing heartbeat-ms=\"100\" heartbeat-ms=\"200\"/>\n  <node id=\"1\" host=\"127.0.0.1\" pool-port=\"1\" query-port=\"2\" sync-port=\"3\" time-port=\"4\" http-port=\"5\"/>\n</cluster>\n").unwrap();
    let out = run_cli_raw(&["check-config", dup.to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dup.xml:2:3:") && err.contains("duplicated attribute"),
        "{err}"
    );
}

#[test]
fn check_config_names_a_bad_store_engine() {
    let dir = std::env::temp_dir().join(format!("presenced-cli-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("engine.xml");
    let node = r#"<node id="1" host="127.0.0.1" pool-port="1" query-port="2" sync-port="3" time-port="4" http-port="5"/>"#;
    std::fs::write(
        &bad,
        format!("<cluster name=\"x\">\n<store engine=\"btree\"/>\n{node}\n</cluster>\n"),
    )
    .unwrap();
    let out = run_cli_raw(&["check-config", bad.to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("engine.xml:2:8: bad `engine` \"btree\" on <store>: expected table or flurry"),
        "{err}"
    );
    let good = dir.join("flurry.xml");
    std::fs::write(
        &good,
        format!("<cluster name=\"x\">\n<store engine=\"flurry\"/>\n{node}\n</cluster>\n"),
    )
    .unwrap();
    let ok = run_cli(&["check-config", good.to_str().unwrap()], "");
    assert!(ok.contains("ok"), "{ok}");
}

/// The value of the sample line `name` in a `/metrics` text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[test]
fn store_engine_is_logged_and_reported_in_metrics() {
    for engine in ["table", "flurry"] {
        let extra = if engine == "table" {
            String::new() // the default
        } else {
            format!("<store engine=\"{engine}\"/>")
        };
        let node = Node::start_with(&extra);
        node.wait_log(&format!("store=\"{engine}\""));
        node.push(README_EVENTS);
        node.push("login 10010 2 web\nlogin 10000 3 sms\n");
        let (code, text) = http_get(node.http_addr(), "/metrics");
        assert_eq!(code, 200);
        assert!(
            text.contains(&format!(
                "presenced_store_engine{{engine=\"{engine}\"}} 1\n"
            )),
            "{text}"
        );
        assert_eq!(metric(&text, "presenced_records"), 3.0);
        let bytes = metric(&text, "presenced_store_bytes");
        let per = metric(&text, "presenced_store_bytes_per_record");
        let load = metric(&text, "presenced_store_load");
        // Three users in a store sized for `initial-users` (a million): the table engine's
        // bytes are mostly its empty index, so only the lower bound is tight.
        assert!(
            bytes > 0.0 && per >= 8.0,
            "{engine}: {bytes} bytes, {per} per record"
        );
        assert!(
            (bytes / 3.0 - per).abs() < 1.0,
            "{engine}: {bytes} / 3 vs {per}"
        );
        assert!(load > 0.0 && load <= 1.0, "{engine}: load {load}");
        assert_eq!(metric(&text, "presenced_store_largest_growth_slots"), 0.0);
    }
}

#[test]
fn bench_store_reports_fill_memory_and_reads() {
    for engine in ["table", "flurry"] {
        let out = run_cli(
            &[
                "bench",
                "store",
                "--engine",
                engine,
                "--users",
                "10000",
                "--seconds",
                "1",
                "--initial-users",
                "1024",
                "--json",
            ],
            "",
        );
        let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let num = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {v}"));
        assert_eq!(v["mode"], "store");
        assert_eq!(v["engine"], engine);
        assert_eq!(num("records"), 10_000.0, "{v}");
        assert!(num("inserts_per_s") > 0.0 && num("ids_per_s") > 0.0, "{v}");
        assert!(num("longest_apply_us") > 0.0, "{v}");
        assert!(
            num("longest_apply_us") * 1e3 >= v["apply_ns"]["p50"].as_f64().unwrap(),
            "{v}"
        );
        assert!((8.0..1024.0).contains(&num("bytes_per_record")), "{v}");
        assert!(num("load") > 0.0 && num("load") <= 1.0, "{v}");
        assert!((0.9..5.0).contains(&num("read_seconds")), "{v}");
        if cfg!(target_os = "linux") {
            assert!(v["rss_bytes_per_user"].is_number(), "{v}");
        }
        if engine == "table" {
            // 10,000 users in a store sized for 1,024: the indexes grew.
            assert!(num("largest_growth_slots") > 0.0, "{v}");
        }
    }
    let out = run_cli_raw(&["bench", "store", "--engine", "btree"], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("expected table or flurry"), "{err}");
}

/// Every file the command line reads names its OS error exactly once (an error chain printed
/// with `{e:#}` used to repeat it).
#[test]
fn file_errors_name_the_os_error_once() {
    let dir = std::env::temp_dir().join(format!("presenced-cli-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node = r#"<node id="1" host="127.0.0.1" pool-port="1" query-port="2" sync-port="3" time-port="4" http-port="5"/>"#;
    let with = |name: &str, section: &str| {
        let f = dir.join(name);
        std::fs::write(
            &f,
            format!("<cluster name=\"x\">{section}{node}</cluster>\n"),
        )
        .unwrap();
        f.to_str().unwrap().to_owned()
    };
    let missing = "/nonexistent/presenced.xml".to_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["check-config".into(), missing.clone()],
            "No such file or directory",
        ),
        (
            vec!["serve".into(), "--config".into(), missing],
            "No such file or directory",
        ),
        (
            vec!["check-config".into(), dir.to_str().unwrap().into()],
            "Is a directory",
        ),
        (
            vec![
                "serve".into(),
                "--config".into(),
                dir.to_str().unwrap().into(),
            ],
            "Is a directory",
        ),
        (
            vec![
                "check-config".into(),
                with("secret.xml", r#"<security cluster-secret-file="nope"/>"#),
            ],
            "No such file or directory",
        ),
        (
            vec![
                "serve".into(),
                "--config".into(),
                with("token.xml", r#"<security pool-token-file="nope"/>"#),
            ],
            "No such file or directory",
        ),
        (
            vec![
                "check-config".into(),
                with("key.xml", r#"<api-key name="a" file="nope"/>"#),
            ],
            "No such file or directory",
        ),
    ];
    for (args, os) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_cli_raw(&args, "");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert_eq!(err.matches(os).count(), 1, "{args:?}: {err}");
        assert_eq!(err.matches("(os error").count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn bad_flags_are_one_line_and_nonzero() {
    let out = run_cli_raw(&["serve", "--bogus"], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--bogus"), "{err}");
    let out = run_cli_raw(&["query", "--server", "127.0.0.1:1", "abc"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid id \"abc\""));
}

#[test]
fn port_in_use_is_one_clear_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ports = Ports::free(1);
    ports.http = taken.local_addr().unwrap().port();
    let cfg = common::write_config(&[ports], "");
    let out = run_cli_raw(&["serve", "--config", cfg.to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("cannot listen on http port") && last.contains("in use"),
        "{err}"
    );
}

/// Regression: signal handlers used to be installed after the listeners were bound, so a SIGTERM
/// right after the ports opened (as here, under a loaded test run) killed the process with the
/// default action instead of stopping it cleanly.
#[test]
fn sigterm_stops_cleanly() {
    let mut node = Node::start();
    let status = node.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        node.log()
    );
    // The log reader thread may still be draining the pipe after the exit.
    node.wait_log("stopped");
}

/// The node turns transparent huge pages off for itself (`THP_enabled: 0` in its
/// `/proc/PID/status`) whatever the system setting: faulting them in stalled the replication
/// path (BENCHMARKS.md, "Replication lag").
#[cfg(target_os = "linux")]
#[test]
fn serve_turns_transparent_huge_pages_off() {
    let node = Node::start();
    let pid = node.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        // Kernels before 5.0 do not report it; nothing to check there.
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{status}");
}
