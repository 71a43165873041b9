//! Parsing tests: the committed documents, and one `check` per error with its position.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use crate::web::Unknown;

use super::*;

#[test]
fn embedded_default_is_valid() {
    let c = ClusterConfig::parse(DEFAULT_XML, "<embedded>").unwrap();
    let n = &c.nodes()[0];
    assert_eq!(
        (
            n.id,
            n.pool_port,
            n.query_port,
            n.sync_port,
            n.time_port,
            n.http_port
        ),
        (1, 7400, 7401, 7402, 7403, 7480)
    );
    assert_eq!(n.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(c.limits().batch_limit, 1000);
}

#[test]
fn design_example_parses() {
    let c = ClusterConfig::parse(include_str!("../examples/cluster-3.xml"), "x").unwrap();
    assert_eq!(c.nodes().len(), 3);
    assert_eq!(c.timing().heartbeat_ms, 100);
}

const NODE: &str = r#"<node id="1" host="127.0.0.1" pool-port="1" query-port="2" sync-port="3" time-port="4" http-port="5"/>"#;
const NODE2: &str = r#"<node id="2" host="127.0.0.1" pool-port="11" query-port="12" sync-port="13" time-port="14" http-port="15"/>"#;
const NODE3: &str = r#"<node id="3" host="127.0.0.1" pool-port="21" query-port="22" sync-port="23" time-port="24" http-port="25"/>"#;

/// Parses `doc` and checks that it fails at `line:column` with a message containing `msg`.
fn check(doc: &str, line: usize, column: usize, msg: &str) {
    match ClusterConfig::parse(doc, "f.xml") {
        Err(ConfigError::Invalid {
            file,
            line: l,
            column: c,
            message,
        }) => {
            assert_eq!(file, "f.xml");
            assert!(message.contains(msg), "{message:?} should contain {msg:?}");
            assert_eq!((l, c), (line, column), "position of {message:?}");
        }
        other => panic!("expected an error for {doc:?}, got {other:?}"),
    }
}

#[test]
fn errors_name_line_column_and_expectation() {
    check(
        &format!("<cluster name=\"a\">\n  <nodes/>\n{NODE}</cluster>"),
        2,
        3,
        "unknown element <nodes>",
    );
    check(
        &format!("<cluster name=\"a\">\n{NODE}\n<timing beat=\"1\"/></cluster>"),
        3,
        9,
        "unknown attribute `beat`",
    );
    check(
        &format!("<cluster name=\"a\"><timing/><timing/>{NODE}</cluster>"),
        1,
        28,
        "duplicate <timing>",
    );
    check(
        &format!("<cluster name=\"a\">{NODE}{NODE}</cluster>"),
        1,
        121,
        "duplicate node id 1",
    );
    check(
        "<cluster name=\"a\"><node id=\"x\"/></cluster>",
        1,
        25,
        "bad `id` \"x\": expected an integer from 1 to 65535",
    );
    check(
        "<cluster name=\"a\"><node id=\"0\"/></cluster>",
        1,
        25,
        "from 1 to 65535",
    );
    check(
        "<cluster name=\"a\"><node id=\"1\"/></cluster>",
        1,
        19,
        "missing required attribute `host`",
    );
    check("<cluster name=\"a\"></cluster>", 1, 1, "has no <node>");
    check(
        &format!("<!DOCTYPE x [<!ENTITY a \"b\">]><cluster name=\"a\">{NODE}</cluster>"),
        1,
        1,
        "DOCTYPE",
    );
    check(
        &format!("<cluster name=\"a\">{NODE}"),
        1,
        121,
        "missing </cluster>",
    );
    check(
        "<cluster name=\"a\"><node id=\"1\" id=\"2\"/></cluster>",
        1,
        19,
        "bad attribute",
    );
    check(
        &format!("<cluster>{NODE}</cluster>"),
        1,
        1,
        "missing required attribute `name`",
    );
    check("<cluster name=\"a\"><node id=\"1\" host=\"127.0.0.1\" pool-port=\"1\" query-port=\"1\" sync-port=\"3\" time-port=\"4\" http-port=\"5\"/></cluster>", 1, 19, "TCP port 1");
    check(
        "<cluster name=\"a\"><limits batch-limit=\"70000\"/></cluster>",
        1,
        27,
        "batch-limit",
    );
    check(
        "<cluster name=\"a\">hello</cluster>",
        1,
        19,
        "unexpected text",
    );
    check(
        "<cluster name=\"a\"><node></cluster>",
        1,
        19,
        "must be an empty element",
    );
    check("<cluster", 1, 1, "malformed XML");
    check(
        &format!("<cluster name=\"a\"><replication ack=\"maybe\"/>{NODE}</cluster>"),
        1,
        32,
        "expected local, replica or replica-or-local",
    );
}

#[test]
fn every_ack_policy_parses() {
    for (text, want) in [
        ("local", AckPolicy::Local),
        ("replica", AckPolicy::Replica),
        ("replica-or-local", AckPolicy::ReplicaOrLocal),
    ] {
        let xml = format!("<cluster name=\"a\"><replication ack=\"{text}\"/>{NODE}</cluster>");
        let c = ClusterConfig::parse(&xml, "t.xml").unwrap();
        assert_eq!(c.replication().ack, want);
    }
}

#[test]
fn peer_limits_default_to_the_core_constants_and_parse() {
    let d = Limits::default();
    assert_eq!(
        (
            d.repl_max_frame_bytes,
            d.max_gossip_members,
            d.max_snapshot_users
        ),
        (64 << 20, 1024, 50_000_000)
    );
    let c = ClusterConfig::parse(
        &format!(
            "<cluster name=\"a\"><limits repl-max-frame-bytes=\"33554432\" \
             max-gossip-members=\"8\" max-snapshot-users=\"10\"/>{NODE}</cluster>"
        ),
        "f.xml",
    )
    .unwrap();
    let l = c.limits();
    assert_eq!(
        (
            l.repl_max_frame_bytes,
            l.max_gossip_members,
            l.max_snapshot_users
        ),
        (32 << 20, 8, 10)
    );
    assert_eq!(
        l.batch_limit, d.batch_limit,
        "other limits keep their defaults"
    );
}

#[test]
fn peer_limit_errors() {
    check(
        "<cluster name=\"a\"><limits repl-max-frame-bytes=\"1048576\"/></cluster>",
        1,
        27,
        "bad `repl-max-frame-bytes` \"1048576\": expected an integer from 33554432",
    );
    check(
        &format!(
            "<cluster name=\"a\"><limits max-gossip-members=\"1\"/>{NODE}{NODE2}{NODE3}</cluster>"
        ),
        1,
        19,
        "`max-gossip-members` 1 is below the 2 peers",
    );
    check(
        "<cluster name=\"a\"><limits max-snapshot-users=\"0\"/></cluster>",
        1,
        27,
        "max-snapshot-users",
    );
}

#[test]
fn nonsense_that_parses_is_refused() {
    let node = |id: u16, host: &str, base: u16| {
        format!(
            "<node id=\"{id}\" host=\"{host}\" pool-port=\"{base}\" query-port=\"{}\" sync-port=\"{}\" time-port=\"{}\" http-port=\"{}\"/>",
            base + 1,
            base + 2,
            base + 3,
            base + 4
        )
    };
    let err = ClusterConfig::parse(
        &format!(
            "<cluster name=\"a\"><timing heartbeat-ms=\"1000\" down-after-ms=\"500\"/>{}</cluster>",
            node(1, "127.0.0.1", 7400)
        ),
        "t.xml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`heartbeat-ms` 1000 must be below a third of `down-after-ms` 500"),
        "{err}"
    );
    let err = ClusterConfig::parse(
        &format!(
            "<cluster name=\"a\">{}{}</cluster>",
            node(1, "0.0.0.0", 7400),
            node(2, "127.0.0.1", 7400)
        ),
        "t.xml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("TCP port 7400 on 127.0.0.1 is already used on 0.0.0.0"),
        "{err}"
    );
    // Different specific hosts may use the same ports (one node per machine).
    ClusterConfig::parse(
        &format!(
            "<cluster name=\"a\">{}{}</cluster>",
            node(1, "10.0.0.1", 7400),
            node(2, "10.0.0.2", 7400)
        ),
        "t.xml",
    )
    .unwrap();
}

#[test]
fn proxy_protocol_parses_and_answers_trust() {
    let c =
        ClusterConfig::parse(&format!("<cluster name=\"a\">{NODE}</cluster>"), "f.xml").unwrap();
    assert_eq!(c.proxy_protocol(), None, "optional, off by default");
    let xml = format!(
        "<cluster name=\"a\"><proxy-protocol listeners=\"http, pool\" \
         trusted=\"127.0.0.1/32,10.0.0.0/8, ::1/128,2001:db8::/32\"/>{NODE}</cluster>"
    );
    let c = ClusterConfig::parse(&xml, "f.xml").unwrap();
    let p = c.proxy_protocol().unwrap();
    assert_eq!(p.listeners(), [Listener::Pool, Listener::Http]);
    assert!(p.applies_to(Listener::Pool) && p.applies_to(Listener::Http));
    assert!(!p.applies_to(Listener::Query));
    assert_eq!(p.trusted().len(), 4);
    assert_eq!(p.trusted()[1].to_string(), "10.0.0.0/8");
    for (ip, want) in [
        ("127.0.0.1", true),
        ("127.0.0.2", false),
        ("10.0.0.0", true),
        ("10.255.255.255", true),
        ("11.0.0.0", false),
        ("9.255.255.255", false),
        ("::1", true),
        ("::2", false),
        // What a dual-stack socket reports for an IPv4 peer.
        ("::ffff:10.1.2.3", true),
        ("2001:db8:ffff::1", true),
        ("2001:db9::1", false),
    ] {
        assert_eq!(p.trusts(ip.parse().unwrap()), want, "{ip}");
    }
    let any: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(any.contains("203.0.113.7".parse().unwrap()));
    assert!(!any.contains("::1".parse().unwrap()));
    let any6: Cidr = "::/0".parse().unwrap();
    assert!(any6.contains("2001:db8::1".parse().unwrap()));
    assert_eq!(
        (any6.prefix(), any6.addr().to_string()),
        (0, "::".to_owned())
    );
}

#[test]
fn proxy_protocol_errors_name_the_attribute() {
    let doc =
        |attrs: &str| format!("<cluster name=\"a\">\n<proxy-protocol {attrs}/>{NODE}</cluster>");
    check(
        &doc(r#"listeners="pool,sync" trusted="10.0.0.0/8""#),
        2,
        17,
        "bad listener \"sync\" in `listeners`: expected pool, query or http",
    );
    check(
        &doc(r#"listeners="pool,,http" trusted="10.0.0.0/8""#),
        2,
        17,
        "bad listener \"\"",
    );
    check(
        &doc(r#"listeners="pool,pool" trusted="10.0.0.0/8""#),
        2,
        17,
        "listener \"pool\" is named twice",
    );
    for (trusted, msg) in [
        ("10.0.0.0", "expected ADDRESS/PREFIX"),
        (
            "10.0.0.0/33",
            "prefix \"33\" must be an integer from 0 to 32",
        ),
        ("::1/129", "from 0 to 128"),
        ("10.0.0.0/+8", "prefix \"+8\""),
        ("ten/8", "\"ten\" is not an IP address"),
        ("10.0.0.1/8", "host bits are set; did you mean 10.0.0.0/8?"),
        ("2001:db8::1/32", "did you mean 2001:db8::/32?"),
        ("127.0.0.1/32,", "bad CIDR \"\""),
    ] {
        check(
            &doc(&format!(r#"listeners="query" trusted="{trusted}""#)),
            2,
            35,
            msg,
        );
    }
    check(
        &doc(r#"listeners="query""#),
        2,
        1,
        "<proxy-protocol> is missing required attribute `trusted`",
    );
    check(
        &doc(r#"listeners="query" trusted="::1/128" via="x""#),
        2,
        53,
        "unknown attribute `via` on <proxy-protocol>; expected listeners, trusted",
    );
    check(
        &format!(
            "<cluster name=\"a\"><proxy-protocol listeners=\"http\" trusted=\"::1/128\"/>\
             <proxy-protocol listeners=\"http\" trusted=\"::1/128\"/>{NODE}</cluster>"
        ),
        1,
        71,
        "duplicate <proxy-protocol>",
    );
}

/// A cluster file in a fresh temporary folder with credential files next to it.
#[allow(clippy::unwrap_in_result)]
fn with_files(files: &[(&str, &[u8])], body: &str) -> Result<ClusterConfig, ConfigError> {
    let dir = std::env::temp_dir().join(format!(
        "presenced-config-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let path = dir.join("cluster.xml");
    let doc = format!("<cluster name=\"t\">\n{body}\n{NODE}\n</cluster>");
    std::fs::write(&path, &doc).unwrap();
    let r = ClusterConfig::load(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    r
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn err_text(r: Result<ClusterConfig, ConfigError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn cluster_secret_is_read_relative_to_the_file_without_one_newline() {
    let secret = [b'k'; 32];
    let mut file = secret.to_vec();
    file.extend_from_slice(b"\n");
    let c = with_files(
        &[("cluster.key", &file)],
        r#"<security cluster-secret-file="cluster.key"/>"#,
    )
    .unwrap();
    assert_eq!(
        c.security().cluster_secret.as_ref().unwrap().bytes(),
        &secret
    );
    // Debug never shows the bytes.
    assert!(!format!("{:?}", c.security()).contains("kkkk"));
}

#[test]
fn short_or_missing_cluster_secret_is_refused() {
    let e = err_text(with_files(
        &[("cluster.key", &[b'k'; 31])],
        r#"<security cluster-secret-file="cluster.key"/>"#,
    ));
    assert!(e.contains("holds 31 bytes; expected at least 32"), "{e}");
    let e = err_text(with_files(
        &[],
        r#"<security cluster-secret-file="nope.key"/>"#,
    ));
    assert!(e.contains("cannot read") && e.contains("nope.key"), "{e}");
    // The OS message appears once.
    assert_eq!(e.matches("No such file").count(), 1, "{e}");
}

#[test]
fn pool_tokens_must_be_1_to_255_bytes_from_one_source() {
    let e = err_text(with_files(&[], r#"<security pool-token=""/>"#));
    assert!(e.contains("`pool-token` is empty"), "{e}");
    let long = "x".repeat(256);
    let e = err_text(with_files(
        &[],
        &format!(r#"<security pool-token="{long}"/>"#),
    ));
    assert!(e.contains("is 256 bytes; expected at most 255"), "{e}");
    let e = err_text(with_files(
        &[("pool.token", b"abc\n")],
        r#"<security pool-token="x" pool-token-file="pool.token"/>"#,
    ));
    assert!(e.contains("mutually exclusive"), "{e}");
    let e = err_text(with_files(
        &[("pool.token", b"\n")],
        r#"<security pool-token-file="pool.token"/>"#,
    ));
    assert!(e.contains("the token is empty"), "{e}");
    let c = with_files(
        &[("pool.token", b"s3cret\r\n")],
        r#"<security pool-token-file="pool.token"/>"#,
    )
    .unwrap();
    assert_eq!(c.security().pool_token.as_ref().unwrap().bytes(), b"s3cret");
}

#[test]
fn api_keys_are_named_unique_and_long_enough() {
    let key = b"0123456789abcdef0123\n";
    let c = with_files(
        &[("a.key", key), ("b.key", b"fedcba9876543210")],
        "<api-key name=\"portal\" file=\"a.key\"/>\n<api-key name=\"ops\" file=\"b.key\"/>",
    )
    .unwrap();
    let keys = &c.security().api_keys;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].name, "portal");
    assert_eq!(keys[0].key.bytes(), b"0123456789abcdef0123");
    let e = err_text(with_files(
        &[("a.key", key)],
        "<api-key name=\"p\" file=\"a.key\"/>\n<api-key name=\"p\" file=\"a.key\"/>",
    ));
    assert!(e.contains("duplicate api-key name"), "{e}");
    let e = err_text(with_files(
        &[("a.key", b"short")],
        "<api-key name=\"p\" file=\"a.key\"/>",
    ));
    assert!(e.contains("expected at least 16"), "{e}");
    let e = err_text(with_files(
        &[("a.key", b"has a space in it ok")],
        "<api-key name=\"p\" file=\"a.key\"/>",
    ));
    assert!(e.contains("printable ASCII"), "{e}");
    let e = err_text(with_files(&[], "<api-key name=\"p\"/>"));
    assert!(e.contains("missing required attribute `file`"), "{e}");
}

#[test]
fn new_limits_have_defaults_and_ranges() {
    let c = with_files(&[], "").unwrap();
    assert_eq!(c.limits().handshake_timeout_ms, 5000);
    assert_eq!(c.timing().max_clock_drift_ms, 5000);
    let c = with_files(
        &[],
        r#"<limits handshake-timeout-ms="2000" max-connections="200" max-connections-per-address="7" output-budget-bytes="1048576"/>"#,
    )
    .unwrap();
    assert_eq!(c.limits().handshake_timeout_ms, 2000);
    assert_eq!(c.limits().max_connections_per_address, 7);
    assert_eq!(c.limits().output_budget_bytes, 1 << 20);
    let e = err_text(with_files(&[], r#"<limits handshake-timeout-ms="5"/>"#));
    assert!(e.contains("expected an integer from 100"), "{e}");
}

#[test]
fn an_endless_credential_file_is_an_error_not_a_hang() {
    let e = err_text(with_files(
        &[],
        r#"<security cluster-secret-file="/dev/zero"/>"#,
    ));
    assert!(e.contains("over 4096 bytes"), "{e}");
}

#[test]
fn a_missing_config_file_names_the_os_error_once() {
    let e = ClusterConfig::load(Path::new("/nonexistent/presenced.xml")).unwrap_err();
    let chain = format!("{e}");
    assert_eq!(chain.matches("No such file").count(), 1, "{chain}");
    assert!(std::error::Error::source(&e).is_none());
}

#[test]
fn web_element_parses_and_checks_its_attributes() {
    let c = with_files(
        &[],
        r#"<web chat-url="https://chat.example.com/?to={id}" allowed-origins="https://a.example, https://B.example:8443" unknown="show" max-watchers="500"/>"#,
    )
    .unwrap();
    let w = c.web().unwrap();
    assert_eq!(
        w.chat_url.as_deref(),
        Some("https://chat.example.com/?to={id}")
    );
    assert!(w
        .allowed_origins
        .as_ref()
        .unwrap()
        .allows("https://b.example:8443"));
    assert!(!w
        .allowed_origins
        .as_ref()
        .unwrap()
        .allows("https://c.example"));
    assert_eq!(w.unknown, Unknown::Show);
    assert_eq!((w.max_watchers, w.retention_changes), (500, 10_000));
    let any = with_files(&[], r#"<web allowed-origins="*"/>"#).unwrap();
    assert!(any
        .web()
        .unwrap()
        .allowed_origins
        .as_ref()
        .unwrap()
        .allows("https://x.example"));
    assert!(with_files(&[], "").unwrap().web().is_none());
    for (bad, msg) in [
        (r#"<web chat-url="https://x/?to=1"/>"#, "`{id}` once"),
        (
            r#"<web chat-url="javascript:alert({id})"/>"#,
            "with a scheme",
        ),
        (
            r#"<web allowed-origins="https://a.example/"/>"#,
            "scheme://host",
        ),
        (r#"<web allowed-origins="*.example"/>"#, "scheme://host"),
        (r#"<web unknown="maybe"/>"#, "hide or show"),
    ] {
        let e = err_text(with_files(&[], bad));
        assert!(e.contains(msg), "{bad}: {e}");
    }
}

#[test]
fn store_engine_defaults_to_table_and_parses() {
    let plain = ClusterConfig::parse(&format!("<cluster name=\"a\">{NODE}</cluster>"), "t.xml");
    assert_eq!(plain.unwrap().store().engine, StoreEngine::Table);
    assert_eq!(
        ClusterConfig::embedded_default().store().engine,
        StoreEngine::Table
    );
    for (xml, want) in [
        ("<store/>", StoreEngine::Table),
        (r#"<store engine="table"/>"#, StoreEngine::Table),
        (r#"<store engine="flurry"/>"#, StoreEngine::Flurry),
    ] {
        let doc = format!("<cluster name=\"a\">\n  {xml}\n  {NODE}\n</cluster>");
        let c = ClusterConfig::parse(&doc, "t.xml").unwrap();
        assert_eq!(c.store().engine, want, "{xml}");
    }
    for e in StoreEngine::ALL {
        assert_eq!(StoreEngine::from_name(e.name()), Some(e));
    }
}

#[test]
fn store_errors_name_the_element_and_the_engines() {
    check(
        &format!("<cluster name=\"a\">\n  <store engine=\"btree\"/>\n{NODE}</cluster>"),
        2,
        10,
        "bad `engine` \"btree\" on <store>: expected table or flurry",
    );
    // Names are case-sensitive, like every other keyword.
    check(
        &format!("<cluster name=\"a\">\n  <store engine=\"Table\"/>\n{NODE}</cluster>"),
        2,
        10,
        "expected table or flurry",
    );
    check(
        &format!("<cluster name=\"a\">\n  <store kind=\"table\"/>\n{NODE}</cluster>"),
        2,
        10,
        "unknown attribute `kind` on <store>; expected engine",
    );
    check(
        &format!("<cluster name=\"a\">\n<store/>\n<store engine=\"flurry\"/>\n{NODE}</cluster>"),
        3,
        1,
        "duplicate <store>; expected at most one",
    );
}
