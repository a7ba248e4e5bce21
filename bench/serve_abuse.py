#!/usr/bin/env python3
"""Hostile clients against `flextron serve`, over loopback, every loop bounded.

Starts the server on a free port and measures:
  idle     /health latency (median, max of 20 probes) while N connections sit idle
  slow     the same while N connections send half a request header and stall
  chunked  a chunked body far over --max-body: the status, the bytes sent before the answer,
           the seconds to it, the server's RSS afterwards
  pipeline 10 GET /health in one write on one connection: how many answers come back
  numbers  {"max_tokens": 1e999}: the status (400 expected)
  sigterm  seconds from SIGTERM to exit

usage: bench/serve_abuse.py --flextron build/flextron --model DIR [--connections 200]
                            [--json serve_abuse.json]
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def connect(port, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_answer(s, deadline):
    """Reads until the status line and headers have arrived (or the deadline)."""
    data = b""
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(4096)
        except (socket.timeout, ConnectionError):
            break
        if not chunk:
            break
        data += chunk
    return data


def status_of(answer):
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def probe_health(port, probes=20):
    times, statuses = [], []
    for _ in range(probes):
        start = time.monotonic()
        try:
            s = connect(port)
            s.sendall(HEALTH)
            statuses.append(status_of(read_answer(s, start + 15)))
            s.close()
        except OSError:
            statuses.append(0)
        times.append((time.monotonic() - start) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2),
            "ok": sum(1 for x in statuses if x == 200), "probes": probes}


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flextron", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--max-body-mib", type=int, default=1)
    ap.add_argument("--json", default="serve_abuse.json")
    args = ap.parse_args()

    server = subprocess.Popen(
        [args.flextron, "serve", "--model", args.model, "--port", "0", "--quiet",
         "--max-body", str(args.max_body_mib * 1024 * 1024)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port = None
    for _ in range(600):
        line = server.stdout.readline()
        if line.startswith("listening on "):
            port = int(line.split()[-1])
            break
        if server.poll() is not None:
            sys.exit("the server did not start: " + server.stderr.read())
    if port is None:
        server.kill()
        sys.exit("the server did not report its port")
    results = {"connections": args.connections, "baseline": probe_health(port)}

    held = [connect(port) for _ in range(args.connections)]
    time.sleep(0.3)
    results["idle"] = probe_health(port)
    for s in held:
        s.close()

    held = []
    for _ in range(args.connections):
        s = connect(port)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        held.append(s)
    time.sleep(0.3)
    results["slow"] = probe_health(port)
    for s in held:
        s.close()

    # A chunked body of up to 100 MiB in 64 KiB chunks; stop at the first answer.
    s = connect(port)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"a" * 65536 + b"\r\n"
    sent, answer, start = 0, b"", time.monotonic()
    s.setblocking(False)
    while sent < 100 * 1024 * 1024 and time.monotonic() - start < 60:
        try:
            answer = s.recv(4096)
            break
        except BlockingIOError:
            pass
        except ConnectionError:
            break
        try:
            s.send(chunk)
            sent += 65536
        except BlockingIOError:
            time.sleep(0.001)
        except ConnectionError:
            break
    s.setblocking(True)
    if not answer:
        answer = read_answer(s, time.monotonic() + 5)
    results["chunked"] = {"status": status_of(answer), "mib_sent": round(sent / 2**20, 2),
                          "seconds": round(time.monotonic() - start, 3),
                          "server_rss_mib": rss_mib(server.pid)}
    s.close()

    s = connect(port)
    s.sendall(HEALTH * 10)
    data, deadline = b"", time.monotonic() + 3
    while data.count(b"HTTP/1.1 ") < 10 and time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except (socket.timeout, ConnectionError):
            break
        if not chunk:
            break
        data += chunk
    results["pipeline"] = {"sent": 10, "answered": data.count(b"HTTP/1.1 ")}
    s.close()

    s = connect(port)
    body = b'{"prompt": "x", "max_tokens": 1e999}'
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
              b"application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    results["numbers"] = {"status": status_of(read_answer(s, time.monotonic() + 10))}
    s.close()

    start = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
    results["sigterm_seconds"] = round(time.monotonic() - start, 3)

    for name in ("baseline", "idle", "slow"):
        r = results[name]
        print(f"{name:9s} /health median {r['median_ms']:8.2f} ms  max {r['max_ms']:8.2f} ms  "
              f"{r['ok']}/{r['probes']} ok")
    c = results["chunked"]
    print(f"chunked   status {c['status']} after {c['mib_sent']} MiB in {c['seconds']} s, "
          f"server RSS {c['server_rss_mib']} MiB")
    print(f"pipeline  {results['pipeline']['answered']}/10 answered")
    print(f"numbers   1e999 -> {results['numbers']['status']}")
    print(f"sigterm   exit after {results['sigterm_seconds']} s")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
