#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for the live S3 lane: forwards to an S3 API server and
fails a share of the requests the way S3 does under load, delaying the others.

Faults (FAULT_RATE of requests, 10% by default), none of which reaches the server:
  500 InternalError, 503 SlowDown (throttling), 429 Too Many Requests,
  a reset connection (GET and HEAD only: a client retries those as idempotent).
Every other request is forwarded after a random delay (0-40 ms); one in five GET bodies is
sent slowly, in small chunks. `GET /__proxy/stats` returns the counts as JSON, and
`POST /__proxy/reset` zeroes them.

Usage: fault_proxy.py LISTEN_HOST LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT [SEED]
"""
import http.client
import json
import os
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT_RATE = float(os.environ.get("FAULT_RATE", "0.10"))
LOCK = threading.Lock()
STATS = {"requests": 0, "forwarded": 0, "faults": {}}
RNG = random.Random()
UPSTREAM = ("127.0.0.1", 0)
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-authorization", "proxy-authenticate"}


def count_fault(kind):
    with LOCK:
        STATS["faults"][kind] = STATS["faults"].get(kind, 0) + 1


def s3_error(code, message):
    return ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>%s</Code><Message>%s</Message>"
            "</Error>" % (code, message)).encode()


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, code, data, headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def control(self):
        if self.path == "/__proxy/stats":
            with LOCK:
                data = json.dumps(STATS).encode()
            self.reply(200, data, {"Content-Type": "application/json"})
            return True
        if self.path == "/__proxy/reset":
            self.body()
            with LOCK:
                STATS.update(requests=0, forwarded=0, faults={})
            self.reply(200, b"{}")
            return True
        return False

    def handle_any(self):
        if self.path.startswith("/__proxy/"):
            self.control()
            return
        body = self.body()
        with LOCK:
            STATS["requests"] += 1
            roll, pick, delay, slow = RNG.random(), RNG.random(), RNG.random(), RNG.random()
        if roll < FAULT_RATE:
            safe = self.command in ("GET", "HEAD")
            if safe and pick < 0.25:
                count_fault("reset")
                self.close_connection = True
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               b"\x01\x00\x00\x00\x00\x00\x00\x00")
                finally:
                    self.connection.close()
                return
            kind = ("500", "503", "429")[int(pick * 3) % 3]
            count_fault(kind)
            if kind == "500":
                self.reply(500, s3_error("InternalError", "injected"), {"Content-Type": "application/xml"})
            elif kind == "503":
                self.reply(503, s3_error("SlowDown", "Please reduce your request rate."),
                           {"Content-Type": "application/xml"})
            else:
                self.reply(429, s3_error("TooManyRequests", "injected"), {"Content-Type": "application/xml"})
            return
        time.sleep(delay * 0.04)
        conn = http.client.HTTPConnection(*UPSTREAM, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, self.path, body=body if body else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        with LOCK:
            STATS["forwarded"] += 1
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "GET" and slow < 0.2 and len(data) > 0:
            count_fault("slow_body")
            step = max(1, len(data) // 8)
            for i in range(0, len(data), step):
                self.wfile.write(data[i:i + step])
                self.wfile.flush()
                time.sleep(0.01)
        else:
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


def main():
    global UPSTREAM
    host, port, up_host, up_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    RNG.seed(int(sys.argv[5]) if len(sys.argv) > 5 else 20261130)
    UPSTREAM = (up_host, up_port)
    ThreadingHTTPServer((host, port), Proxy).serve_forever()


if __name__ == "__main__":
    main()
