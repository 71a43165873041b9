//! Black-box harness: starts the real `presenced` binary as a process on free loopback ports and
//! stops it on drop. Used by every file in `tests/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test (`PRESENCED_BIN` overrides it, e.g. for long chaos runs against a
/// copy that later builds do not replace).
pub fn bin() -> String {
    std::env::var("PRESENCED_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_presenced").to_owned())
}

/// A free TCP port on 127.0.0.1 (also free for UDP in practice: tests only use it for time-sync).
///
/// The OS may hand the same ephemeral port out again once its listener is closed, so ports given
/// out by this process are remembered and never given twice.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Ports of one node.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub id: u16,
    pub pool: u16,
    pub query: u16,
    pub sync: u16,
    pub time: u16,
    pub http: u16,
}

impl Ports {
    pub fn free(id: u16) -> Self {
        Self {
            id,
            pool: free_port(),
            query: free_port(),
            sync: free_port(),
            time: free_port(),
            http: free_port(),
        }
    }

    pub fn xml(&self) -> String {
        format!(
            r#"  <node id="{}" host="127.0.0.1" pool-port="{}" query-port="{}" sync-port="{}" time-port="{}" http-port="{}"/>"#,
            self.id, self.pool, self.query, self.sync, self.time, self.http
        )
    }
}

/// Writes a cluster file holding `nodes` and `extra` (e.g. `<limits .../>`); returns its path.
pub fn write_config(nodes: &[Ports], extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "presenced-test-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cluster.xml");
    let body: Vec<String> = nodes.iter().map(Ports::xml).collect();
    let xml = format!(
        "<cluster name=\"test\">\n  <timing heartbeat-ms=\"50\" down-after-ms=\"500\" time-sync-interval-ms=\"200\" time-tolerance-us=\"2000\" drain-ms=\"200\"/>\n{extra}\n{}\n</cluster>\n",
        body.join("\n")
    );
    std::fs::write(&path, xml).unwrap();
    path
}

/// A running `presenced serve` process.
pub struct Node {
    pub ports: Ports,
    pub config: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Node {
    /// One node with default limits.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// One node with `extra` XML inside `<cluster>`.
    pub fn start_with(extra: &str) -> Self {
        let ports = Ports::free(1);
        let config = write_config(&[ports], extra);
        Self::spawn(ports, config, &[])
    }

    /// Starts node `ports.id` of an existing cluster file.
    pub fn spawn(ports: Ports, config: PathBuf, args: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--node", &ports.id.to_string()])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("PRESENCED_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn presenced");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        let mut node = Self {
            ports,
            config,
            child: Some(child),
            log,
        };
        node.wait_listening();
        node
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [self.ports.pool, self.ports.query, self.ports.http] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                let exited = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                assert!(
                    exited.is_none() && Instant::now() < deadline,
                    "node did not listen on {port} (exit: {exited:?}); log:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn pool_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.pool))
    }
    pub fn query_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.query))
    }
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.http))
    }

    /// Everything the node logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never showed {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `presenced push --pool <this node>` with `events` on stdin; returns its stdout.
    pub fn push(&self, events: &str) -> String {
        run_cli(&["push", "--pool", &self.pool_addr().to_string()], events)
    }

    /// Runs `presenced query --server <this node> ids...`; returns the JSON lines.
    pub fn query(&self, ids: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["query", "--server"];
        let addr = self.query_addr().to_string();
        args.push(&addr);
        args.extend_from_slice(ids);
        run_cli(&args, "")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGKILL and waits.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit (after a signal sent by the test) and returns its status.
    pub fn terminate_wait(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        c.wait().unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the CLI to completion with `stdin`; panics on a non-zero exit; returns stdout.
pub fn run_cli(args: &[&str], stdin: &str) -> String {
    let out = run_cli_raw(args, stdin);
    assert!(
        out.status.success(),
        "presenced {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the CLI to completion with `stdin` and returns the whole output.
pub fn run_cli_raw(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Sends raw bytes, half-closes nothing, and reads until the server closes or `wait` passes.
pub fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

/// `GET path` over a fresh connection; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_after(addr, "", path)
}

/// `GET path` over a fresh connection that first sends `prefix` (e.g. a PROXY protocol header);
/// returns (status, body).
pub fn http_get_after(addr: SocketAddr, prefix: &str, path: &str) -> (u16, String) {
    let req =
        format!("{prefix}GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let raw = exchange(addr, req.as_bytes(), Duration::from_secs(5));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

impl Node {
    /// `GET /v1/cluster` as JSON.
    pub fn cluster(&self) -> serde_json::Value {
        let (status, body) = http_get(self.http_addr(), "/v1/cluster");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until `f(cluster view)` holds; returns how long it took.
    pub fn wait_cluster(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let v = self.cluster();
            if f(&v) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "node {}: {what} not reached in {timeout:?}; last view {v}\nlog:\n{}",
                self.ports.id,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Prints a measured figure and appends it to `target/test-figures.txt`, which `.ci/run` prints
/// after the tests (cargo hides the output of passing tests).
pub fn figure(line: &str) {
    println!("{line}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-figures.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
