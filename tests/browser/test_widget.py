#!/usr/bin/env python3
"""Browser test of the web endpoints: headless Chromium (Debian's chromium + chromium-driver,
driven by selenium) on a page of another origin that embeds the widget and a badge.

Usage: .venv/bin/python tests/browser/test_widget.py path/to/presenced

Starts a 2-node cluster of the real binary with <web chat-url allowed-origins>, serves a test
page from another origin (a Python HTTP server on its own port), pushes `login` then `logout`
through the pool of the *other* node, and checks what the page shows and when. Prints one
`ok NAME` or `FAIL NAME: why` line per check, the measured delays as `figure ...` lines, and
ends with `browser: N passed, M failed`. Exit status 1 on any failure. Screenshots go to
target/screenshots/. Every process it starts is stopped before it exits.
"""

import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHOTS = os.path.join(ROOT, "target", "screenshots")
DEADLINE_S = 1.0  # the functional deadline: a change shows within 1 s

results = {"passed": 0, "failed": 0}


def check(name, cond, why=""):
    if cond:
        results["passed"] += 1
        print(f"ok {name}", flush=True)
    else:
        results["failed"] += 1
        print(f"FAIL {name}: {why}", flush=True)
    return cond


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def fetch(method, url, headers=None):
    """(status, headers dict lower-cased, body bytes); never raises on HTTP errors."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def wait_ready(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if fetch("GET", f"http://127.0.0.1:{port}/healthz/ready")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def push(binary, pool_port, line):
    subprocess.run([binary, "push", "--pool", f"127.0.0.1:{pool_port}"], input=line + "\n",
                   text=True, check=True, capture_output=True, timeout=20)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>widget test page</title>
<style>body {{ font: 16px sans-serif; margin: 24px; }} .presenced-online {{ color: green; }}</style>
<script>
  // Test instrumentation only: counts EventSources and records when each id changes state.
  window.__streams = [];
  window.__changes = [];
  var Real = window.EventSource;
  if (Real) {{
    window.EventSource = function (url, init) {{ window.__streams.push(url); return new Real(url, init); }};
    window.EventSource.prototype = Real.prototype;
  }}
  new MutationObserver(function (records) {{
    records.forEach(function (r) {{
      if (r.type === "attributes" && r.attributeName === "data-presenced") {{
        window.__changes.push([r.target.getAttribute("data-im-id"), r.target.getAttribute("data-presenced"), Date.now()]);
      }}
    }});
  }}).observe(document.documentElement, {{ subtree: true, attributes: true, attributeFilter: ["data-presenced"] }});
</script></head>
<body>
<h1>A page on another origin</h1>
<p>Alice: <span id="alice" data-im-id="10086"></span></p>
<p>Bob: <span id="bob" data-im-id="10010"></span></p>
<p>Alice again: <span id="alice2" data-im-id="10086"></span></p>
<p>Badge: <img id="badge" src="http://127.0.0.1:{http}/v1/presence/10086/badge.svg" alt="alice's status">
   <img id="badge-dark" src="http://127.0.0.1:{http}/v1/presence/10086/badge.svg?theme=dark" alt=""></p>
<script src="http://127.0.0.1:{http}/widget.js"></script>
</body></html>
"""


def main():
    if len(sys.argv) != 2:
        print("usage: test_widget.py path/to/presenced", file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    os.makedirs(SHOTS, exist_ok=True)
    ports = free_ports(11)
    n1, n2, page_port = ports[0:5], ports[5:10], ports[10]
    origin = f"http://127.0.0.1:{page_port}"
    tmp = tempfile.mkdtemp(prefix="presenced-browser-")
    nodes = "\n".join(
        f'  <node id="{i}" host="127.0.0.1" pool-port="{p[0]}" query-port="{p[1]}" sync-port="{p[2]}" '
        f'time-port="{p[3]}" http-port="{p[4]}"/>'
        for i, p in ((1, n1), (2, n2)))
    with open(os.path.join(tmp, "cluster.xml"), "w") as f:
        f.write(f"""<cluster name="browser">
  <timing heartbeat-ms="50" down-after-ms="500" time-sync-interval-ms="200" time-tolerance-us="2000" drain-ms="200"/>
  <web chat-url="https://chat.example.com/?to={{id}}" allowed-origins="{origin}"/>
{nodes}
</cluster>
""")
    http1, pool2 = n1[4], n2[0]
    procs = []
    page_server = None
    driver = None
    try:
        for i in (1, 2):
            log = open(os.path.join(tmp, f"node{i}.log"), "w")
            procs.append(subprocess.Popen(
                [binary, "serve", "--config", os.path.join(tmp, "cluster.xml"), "--node", str(i)],
                stdout=log, stderr=subprocess.STDOUT))
        if not check("cluster ready", wait_ready(n1[4]) and wait_ready(n2[4]), "nodes not ready in 20 s"):
            return 1
        push(binary, pool2, "login 10010 2 pc")
        push(binary, pool2, "logout 10010 2 pc")

        site = os.path.join(tmp, "site")
        os.makedirs(site)
        with open(os.path.join(site, "index.html"), "w") as f:
            f.write(PAGE.format(http=http1))

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=site, **k)

            def log_message(self, *a):
                pass

        page_server = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), Quiet)
        threading.Thread(target=page_server.serve_forever, daemon=True).start()

        opts = Options()
        opts.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1000,700"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        driver.set_script_timeout(10)

        # The widget page, from another origin.
        driver.get(origin + "/index.html")
        js = driver.execute_script

        def state(el_id):
            return js(f"var e = document.getElementById('{el_id}'); return e && e.getAttribute('data-presenced');")

        def wait_for(pred, timeout):
            end = time.time() + timeout
            while time.time() < end:
                if pred():
                    return True
                time.sleep(0.01)
            return pred()

        first = wait_for(lambda: state("alice") not in (None, "pending"), 5)
        check("initial status arrives over the stream", first and state("alice") == "offline",
              f"alice is {state('alice')!r} (is /v1/watch served?)")
        check("a known offline user shows offline (hide mode)", state("bob") == "offline", repr(state("bob")))

        href = js("var a = document.querySelector('#alice a.presenced-link'); return a && a.href;")
        check("link follows the chat-url template", href == "https://chat.example.com/?to=10086", repr(href))
        classes = js("var s = document.querySelector('#alice .presenced-status'); return s && s.className;")
        check("status classes", classes == "presenced-status presenced-offline", repr(classes))

        delays = {}
        for what, line, want in (("login", "login 10086 1 pc", "online"),
                                 ("logout", "logout 10086 1 pc", "offline")):
            t0 = time.time()
            push(binary, pool2, line)
            shown = wait_for(lambda: state("alice") == want and state("alice2") == want, 3)
            ts = js("var want = arguments[0];"
                    "var c = window.__changes.filter(function (c) { return c[0] === '10086' && c[1] === want; });"
                    "return c.length ? c[c.length - 1][2] : null;", want)
            delay = (ts / 1000.0 - t0) if (shown and ts) else None
            delays[what] = delay
            if delay is not None:
                print(f"figure browser {what} shown after {delay * 1000:.0f} ms (push through node 2, page on node 1)",
                      flush=True)
            check(f"{what} shown within {DEADLINE_S:.0f} s", delay is not None and delay < DEADLINE_S,
                  f"state {state('alice')!r}, delay {delay}")
        text = js("return document.getElementById('alice').textContent;")
        check("visible text", text == "offline", repr(text))

        w = js("var i = document.getElementById('badge'); return i.complete ? i.naturalWidth : -1;")
        check("badge renders", w and w > 0, f"naturalWidth {w}")
        w = js("var i = document.getElementById('badge-dark'); return i.complete ? i.naturalWidth : -1;")
        check("dark badge renders", w and w > 0, f"naturalWidth {w}")

        streams = js("return window.__streams;")
        check("exactly one EventSource for the page", len(streams) == 1
              and streams[0].startswith(f"http://127.0.0.1:{http1}/v1/watch?ids="), repr(streams))
        gets = js("return performance.getEntriesByType('resource').map(function (e) { return e.name; })"
                  ".filter(function (n) { return n.indexOf('/v1/presence?') >= 0 || n.indexOf('/v1/presence/1') >= 0 && n.indexOf('badge') < 0; });")
        check("no presence GETs besides the stream", gets == [], repr(gets))

        # CORS from the page: a JSON request needs a preflight; it only succeeds with ACAO.
        cors = driver.execute_async_script(
            "var done = arguments[arguments.length - 1];"
            f"fetch('http://127.0.0.1:{http1}/v1/presence?ids=10086', {{headers: {{'Content-Type': 'application/json'}}}})"
            ".then(function (r) { return r.json(); }).then(function (j) { done(j.statuses[0].id); })"
            ".catch(function (e) { done('error: ' + e); });")
        check("preflighted cross-origin fetch from the page", cors == "10086", repr(cors))
        st, h, _ = fetch("OPTIONS", f"http://127.0.0.1:{http1}/v1/presence",
                        {"Origin": origin, "Access-Control-Request-Method": "GET"})
        check("preflight OPTIONS from the page's origin gets ACAO",
              st == 204 and h.get("access-control-allow-origin") == origin, f"{st} {h}")
        st, h, _ = fetch("OPTIONS", f"http://127.0.0.1:{http1}/v1/presence", {"Origin": "http://evil.example"})
        check("preflight from another origin gets no ACAO", st == 204 and "access-control-allow-origin" not in h,
              f"{st} {h}")

        badge = f"http://127.0.0.1:{http1}/v1/presence/10086/badge.svg"
        st, h, body = fetch("GET", badge)
        tag = h.get("etag")
        st2, h2, body2 = fetch("GET", badge, {"If-None-Match": tag or '"none"'})
        check("badge 304 on If-None-Match", st == 200 and tag and st2 == 304 and body2 == b"",
              f"{st} {tag} {st2} {body2!r}")

        driver.save_screenshot(os.path.join(SHOTS, "widget.png"))

        # The status page of node 1.
        driver.get(f"http://127.0.0.1:{http1}/")
        ok = wait_for(lambda: js("return document.getElementById('node').textContent;") == "1"
                      and js("return document.querySelectorAll('#members tr').length;") == 2, 5)
        check("status page shows the cluster", ok,
              js("return document.body.innerText.slice(0, 300);"))
        wait_for(lambda: js("return document.getElementById('updates').textContent;") != "?", 3)
        rate = js("return document.getElementById('updates').textContent;")
        check("status page computes rates from /metrics", rate.endswith("/s"), repr(rate))
        driver.find_element("id", "ids").send_keys("10086, 10010")
        driver.find_element("css selector", "#lookup button").click()
        looked = wait_for(lambda: js("return document.querySelectorAll('#results [data-presenced=offline]').length;") == 2, 5)
        check("status page lookup uses the widget", looked,
              js("return document.getElementById('results').innerText;"))
        driver.save_screenshot(os.path.join(SHOTS, "status.png"))
    finally:
        if driver is not None:
            driver.quit()
        if page_server is not None:
            page_server.shutdown()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return 0


if __name__ == "__main__":
    code = 1
    try:
        code = main()
    except Exception as e:  # a crash counts as one failure, after the cleanup above
        check("no crash", False, f"{type(e).__name__}: {e}")
    print(f"browser: {results['passed']} passed, {results['failed']} failed", flush=True)
    sys.exit(1 if results["failed"] or code else 0)
