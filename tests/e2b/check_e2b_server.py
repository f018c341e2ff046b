#!/usr/bin/python3
"""Self-test of the E2B contract server (tests/e2b/e2b_server.py): starts real servers on free ports and
exercises every endpoint over HTTP, the control plane with http.client, the streams with a raw socket (to see
when each line arrives and how a connection ends), connection reuse with curl. Run by make check; exits 0 when
all pass, 77 never (nothing here needs more than python3), 1 otherwise."""

import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "e2b_server.py")
PYTHON = sys.executable or "/usr/bin/python3"
CURL = shutil.which("curl") or ("/usr/bin/curl" if os.path.exists("/usr/bin/curl") else None)
KEY_A, KEY_B, KEY_C = "e2b_key_a", "e2b_key_b", "e2b_key_c"
CI, ENVD = 49999, 49983


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def wait_for(cond, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class ServerProc:
    """One e2b_server.py on a free port; only this PID is ever signalled."""

    def __init__(self, tmp, name, key, extra=(), env=None):
        self.name = name
        self.port_file = os.path.join(tmp, f"{name}.port")
        self.log_path = os.path.join(tmp, f"{name}.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([PYTHON, SERVER, "--port-file", self.port_file, "--api-key", key,
                                          "--exit-with-parent", *extra],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        self.port = None
        self.terminated = False

    def wait_ready(self):
        def ready():
            if self.proc.poll() is not None:
                raise Failure(f"server {self.name} exited with {self.proc.returncode}: {self.log()}")
            try:
                with open(self.port_file) as f:
                    return int(f.read())
            except (OSError, ValueError):
                return None
        self.port = wait_for(ready, 30, f"server {self.name} to listen")
        return self

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def terminate(self):
        if self.proc.poll() is None and not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self):
        """SIGTERM; the exit status."""
        self.terminate()
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure(f"server {self.name} ignored SIGTERM")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Client:
    """Keep-alive HTTP/1.1 client of one server."""

    def __init__(self, port, key):
        self.port, self.key = port, key
        self.conn = None

    def request(self, method, path, body=None, headers=None, timeout=15):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def api(self, method, path, obj=None, key=None, headers=None, raw=None):
        h = {"X-API-Key": self.key if key is None else key}
        if key is False:
            del h["X-API-Key"]
        body = raw
        if obj is not None:
            body = json.dumps(obj).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        status, hdrs, data = self.request(method, path, body, h)
        return status, hdrs, (json.loads(data) if data and "json" in hdrs.get("content-type", "") else data)

    def create(self, **fields):
        fields.setdefault("templateID", "code-interpreter-v1")
        status, _, sb = self.api("POST", "/sandboxes", fields)
        check(status == 201, f"create answered {status}: {sb}")
        return sb

    def sandbox(self, sb, port, method, path, obj=None, headers=None, raw=None, content_type=None):
        h = {"E2b-Sandbox-Id": sb["sandboxID"], "E2b-Sandbox-Port": str(port)}
        if sb.get("envdAccessToken"):
            h["X-Access-Token"] = sb["envdAccessToken"]
        body = raw
        if obj is not None:
            body = json.dumps(obj).encode()
            h["Content-Type"] = "application/json"
        if content_type:
            h["Content-Type"] = content_type
        h.update(headers or {})
        status, hdrs, data = self.request(method, path, body, h)
        return status, hdrs, (json.loads(data) if data and "json" in hdrs.get("content-type", "") else data)

    def rpc(self, sb, method, obj, headers=None):
        h = {"Connect-Protocol-Version": "1"}
        h.update(headers or {})
        return self.sandbox(sb, ENVD, "POST", method, obj, headers=h)

    def state(self):
        status, _, st = self.api("GET", "/_test/state", key=False)
        check(status == 200, f"/_test/state answered {status}")
        return st

    def clear_violations(self):
        status, _, out = self.api("POST", "/_test/violations/clear", key=False)
        check(status == 200, "violations/clear")
        return out["violations"]

    def faults(self, *rules):
        status, _, out = self.api("POST", "/_test/faults", {"rules": list(rules)}, key=False)
        check(status == 200, f"faults answered {status}: {out}")


class RawStream:
    """A request on its own socket whose chunked answer is read piece by piece, with arrival times."""

    def __init__(self, port, method, path, headers, body=b"", timeout=15):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.sock.sendall(head.encode() + body)
        self.buf = b""
        lines = self._until(b"\r\n\r\n").decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def _until(self, sep):
        while sep not in self.buf:
            self._fill()
        out, self.buf = self.buf.split(sep, 1)
        return out

    def chunk(self):
        """The next chunk's bytes, None after the last chunk; EOFError when the connection ends before it."""
        size = int(self._until(b"\r\n").split(b";")[0], 16)
        if size == 0:
            self._until(b"\r\n")
            return None
        while len(self.buf) < size + 2:
            self._fill()
        data, self.buf = self.buf[:size], self.buf[size + 2:]
        return data

    def ndjson(self):
        """(arrival time, event) for each line, to the end of the answer."""
        pending = b""
        while True:
            data = self.chunk()
            if data is None:
                check(pending == b"", f"partial line at the end: {pending!r}")
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                yield time.monotonic(), json.loads(line)

    def envelopes(self):
        """(flags, message) for each Connect envelope, to the end of the answer."""
        pending = b""
        while True:
            data = self.chunk()
            if data is None:
                check(pending == b"", f"partial envelope at the end: {pending!r}")
                return
            pending += data
            while len(pending) >= 5 and len(pending) >= 5 + int.from_bytes(pending[1:5], "big"):
                n = int.from_bytes(pending[1:5], "big")
                yield pending[0], json.loads(pending[5:5 + n])
                pending = pending[5 + n:]

    def close(self):
        self.sock.close()


def envelope(obj, flags=0):
    data = json.dumps(obj).encode()
    return bytes([flags]) + len(data).to_bytes(4, "big") + data


def sandbox_headers(sb, port, extra=None):
    h = {"E2b-Sandbox-Id": sb["sandboxID"], "E2b-Sandbox-Port": str(port), "X-Access-Token": sb["envdAccessToken"]}
    h.update(extra or {})
    return h


def execute_stream(port, sb, code, **fields):
    body = json.dumps(dict(code=code, **fields)).encode()
    return RawStream(port, "POST", "/execute", sandbox_headers(sb, CI, {"Content-Type": "application/json"}), body)


def execute(port, sb, code, **fields):
    s = execute_stream(port, sb, code, **fields)
    check(s.status == 200, f"execute answered {s.status}")
    events = [ev for _, ev in s.ndjson()]
    s.close()
    check(events and events[-1] == {"type": "end_of_execution"}, f"stream does not end with end_of_execution: "
                                                                  f"{events}")
    return [ev for ev in events if ev["type"] != "keepalive"]


def start_process(port, sb, cmd, args, cwd=None, **fields):
    req = {"process": {"cmd": cmd, "args": args}}
    if cwd is not None:
        req["process"]["cwd"] = cwd
    req.update(fields)
    s = RawStream(port, "POST", "/process.Process/Start",
                  sandbox_headers(sb, ENVD, {"Content-Type": "application/connect+json"}), envelope(req))
    check(s.status == 200, f"Process/Start answered {s.status}")
    check(s.headers.get("content-type") == "application/connect+json", f"content type {s.headers}")
    return s


def main_result(events):
    results = [ev for ev in events if ev["type"] == "result" and ev["is_main_result"]]
    check(len(results) == 1, f"want one main result: {events}")
    return results[0]["text"]


# ---------------------------------------------------------------------------------------------------------------

def test_lifecycle(t):
    a = t.a
    sb = a.create(timeout=30, metadata={"owner": "lifecycle"}, envVars={"GREETING": "hello"})
    check(re.fullmatch(r"i[a-z0-9]{20}", sb["sandboxID"]), f"sandboxID {sb['sandboxID']}")
    for name in ("templateID", "clientID", "envdVersion", "envdAccessToken", "domain"):
        check(isinstance(sb.get(name), str), f"Sandbox.{name}: {sb}")
    check("trafficAccessToken" in sb and sb["trafficAccessToken"] is None, f"trafficAccessToken {sb}")
    status, _, detail = a.api("GET", f"/sandboxes/{sb['sandboxID']}")
    check(status == 200 and detail["state"] == "running" and detail["metadata"] == {"owner": "lifecycle"},
          f"GET answered {status} {detail}")
    for name in ("startedAt", "endAt", "cpuCount", "memoryMB", "diskSizeMB", "envdVersion", "clientID"):
        check(name in detail, f"SandboxDetail lacks {name}")
    events = execute(a.port, sb, "import os\nos.environ['GREETING']")
    check(main_result(events) == "hello", f"envVars reach the code: {events}")
    status, _, _ = a.api("DELETE", f"/sandboxes/{sb['sandboxID']}")
    check(status == 204, f"DELETE answered {status}")
    status, _, err = a.api("GET", f"/sandboxes/{sb['sandboxID']}")
    check(status == 404 and err["code"] == 404 and isinstance(err["message"], str), f"GET after DELETE {err}")
    status, _, err = a.api("DELETE", f"/sandboxes/{sb['sandboxID']}")
    check(status == 404 and err["code"] == 404, f"second DELETE answered {status}")
    status, _, _ = a.sandbox(sb, CI, "POST", "/execute", {"code": "1"})
    check(status == 404, f"execute in a deleted sandbox answered {status}")
    check(a.state()["deleted"] >= 1, "state counts the delete")


def test_ttl(t):
    a = t.a
    t0 = time.monotonic()
    short = a.create(timeout=1)
    extended = a.create(timeout=1)
    refreshed = a.create(timeout=1)
    status, _, _ = a.api("POST", f"/sandboxes/{extended['sandboxID']}/timeout", {"timeout": 5})
    check(status == 204, f"/timeout answered {status}")
    status, _, _ = a.api("POST", f"/sandboxes/{refreshed['sandboxID']}/refreshes", {"duration": 5})
    check(status == 204, f"/refreshes answered {status}")
    status, _, _ = a.api("GET", f"/sandboxes/{short['sandboxID']}")
    check(status == 200 or time.monotonic() - t0 > 0.9, "a 1 s sandbox is alive at first")
    expired_before = a.state()["expired"]
    time.sleep(max(0.0, 1.5 - (time.monotonic() - t0)))
    status, _, _ = a.api("GET", f"/sandboxes/{short['sandboxID']}")
    check(status == 404, f"a 1 s sandbox still answers {status} after 1.5 s")
    st = a.state()
    check(st["expired"] >= expired_before + 1 or expired_before >= 1, f"expired counter {st['expired']}")
    check(short["sandboxID"] not in [s["sandboxID"] for s in st["sandboxes"]], "expired sandbox still listed")
    for sb in (extended, refreshed):
        status, _, _ = a.api("GET", f"/sandboxes/{sb['sandboxID']}")
        check(status == 200, f"/timeout or /refreshes did not extend {sb['sandboxID']}: {status}")
    status, _, _ = a.api("DELETE", f"/sandboxes/{short['sandboxID']}")
    check(status == 404, f"DELETE of an expired sandbox answered {status}")
    status, _, _ = a.api("POST", f"/sandboxes/{short['sandboxID']}/timeout", {"timeout": 5})
    check(status == 404, f"/timeout of an expired sandbox answered {status}")
    for sb in (extended, refreshed):
        a.api("DELETE", f"/sandboxes/{sb['sandboxID']}")


def test_listing(t):
    a = t.a
    planted = []
    for i in range(3):
        status, _, sb = a.api("POST", "/_test/plant", {"templateID": "base", "metadata": {"suite": "paging",
                                                                                          "n": str(i)}}, key=False)
        check(status == 201 and sb["sandboxID"], f"plant answered {status}")
        planted.append(sb["sandboxID"])
        time.sleep(0.01)  # distinct start times make the order observable
    other = a.create(metadata={"suite": "other"})
    seen, token, pages = [], None, 0
    while True:
        q = {"metadata": "suite=paging", "state": "running", "limit": "1"}
        if token:
            q["nextToken"] = token
        status, hdrs, items = a.api("GET", "/v2/sandboxes?" + urllib.parse.urlencode(q))
        check(status == 200 and len(items) == 1, f"page {pages} answered {status}: {items}")
        for name in ("templateID", "sandboxID", "clientID", "startedAt", "endAt", "cpuCount", "memoryMB",
                     "diskSizeMB", "state", "envdVersion", "metadata"):
            check(name in items[0], f"ListedSandbox lacks {name}")
        seen.append(items[0]["sandboxID"])
        pages += 1
        token = hdrs.get("x-next-token")
        if not token:
            break
        check(pages < 10, "paging does not end")
    check(seen == planted[::-1], f"pages {seen} are not the planted sandboxes newest first {planted}")
    status, _, items = a.api("GET", "/v2/sandboxes?" + urllib.parse.urlencode({"metadata": "suite=paging&n=1"}))
    check(status == 200 and [s["sandboxID"] for s in items] == [planted[1]], f"two-pair filter: {items}")
    status, _, items = a.api("GET", "/v2/sandboxes?" + urllib.parse.urlencode({"metadata": "suite=other"}))
    check([s["sandboxID"] for s in items] == [other["sandboxID"]], f"filter suite=other: {items}")
    status, _, items = a.api("GET", "/v2/sandboxes?state=paused")
    check(status == 200 and items == [], "no paused sandboxes")
    for sid in planted + [other["sandboxID"]]:
        status, _, _ = a.api("DELETE", f"/sandboxes/{sid}")
        check(status == 204, f"DELETE {sid} answered {status}")


def test_violations(t):
    a = t.a
    a.clear_violations()
    sb = a.create()
    raw_json = {"X-API-Key": KEY_A, "Content-Type": "application/json"}
    cases = [
        ("method", lambda: a.api("PUT", "/sandboxes", {"templateID": "x"}), 400, "method not allowed"),
        ("path", lambda: a.api("GET", "/sandboxez"), 400, "no such path"),
        ("unsupported", lambda: a.api("POST", f"/sandboxes/{sb['sandboxID']}/pause"), 400, "does not support"),
        ("no key", lambda: a.api("POST", "/sandboxes", {"templateID": "x"}, key=False), 401, "missing X-API-Key"),
        ("bad key", lambda: a.api("POST", "/sandboxes", {"templateID": "x"}, key="nope"), 401, "wrong X-API-Key"),
        ("content type", lambda: a.api("POST", "/sandboxes", raw=b'{"templateID":"x"}',
                                       headers={"Content-Type": "text/plain"}), 400, "Content-Type"),
        ("unknown field", lambda: a.api("POST", "/sandboxes", {"templateID": "x", "bogus": 1}), 400,
         "unknown field 'bogus'"),
        ("missing field", lambda: a.api("POST", "/sandboxes", {"timeout": 5}), 400, "required field 'templateID'"),
        ("wrong type", lambda: a.api("POST", "/sandboxes", {"templateID": "x", "timeout": "15"}), 400,
         "expected integer"),
        ("metadata type", lambda: a.api("POST", "/sandboxes", {"templateID": "x", "metadata": {"a": 1}}), 400,
         "expected string"),
        ("bad json", lambda: a.api("POST", "/sandboxes", raw=b"{nope", headers=raw_json), 400, "not valid JSON"),
        ("limit", lambda: a.api("GET", "/v2/sandboxes?limit=0"), 400, "limit"),
        ("query param", lambda: a.api("GET", "/v2/sandboxes?bogus=1"), 400, "unknown query parameter 'bogus'"),
        ("unencoded metadata", lambda: a.api("GET", "/v2/sandboxes?metadata=a=b&c=d"), 400,
         "unknown query parameter 'c'"),
        ("timeout body", lambda: a.api("POST", f"/sandboxes/{sb['sandboxID']}/timeout", {}), 400,
         "required field 'timeout'"),
        ("refresh range", lambda: a.api("POST", f"/sandboxes/{sb['sandboxID']}/refreshes", {"duration": 4000}),
         400, "maximum"),
        ("access token", lambda: a.sandbox(sb, CI, "POST", "/execute", {"code": "1"},
                                           headers={"X-Access-Token": "wrong"}), 401, "wrong X-Access-Token"),
        ("execute field", lambda: a.sandbox(sb, CI, "POST", "/execute", {"cmd": "1"}), 400,
         "required field 'code'"),
        ("context and language", lambda: a.sandbox(sb, CI, "POST", "/execute",
                                                   {"code": "1", "context_id": "x", "language": "python"}),
         400, "both"),
        ("start content type", lambda: a.sandbox(sb, ENVD, "POST", "/process.Process/Start",
                                                 {"process": {"cmd": "true"}}), 415, "application/connect+json"),
        ("connect version", lambda: a.sandbox(sb, ENVD, "POST", "/process.Process/SendInput",
                                              {"process": {"pid": 1}}), 400, "Connect-Protocol-Version"),
        ("proto field", lambda: a.rpc(sb, "/process.Process/SendSignal",
                                      {"process": {"pid": 1}, "signal": "SIGNAL_SIGKILL", "force": True}), 400,
         "unknown field 'force'"),
        ("proto enum", lambda: a.rpc(sb, "/process.Process/SendSignal",
                                     {"process": {"pid": 1}, "signal": "SIGNAL_SIGHUP"}), 400, "is not a value"),
        ("proto type", lambda: a.rpc(sb, "/filesystem.Filesystem/ListDir", {"path": 7}), 400, "expected string"),
        ("sandbox port", lambda: a.sandbox(sb, 8080, "GET", "/"), 400, "neither"),
        ("envd unsupported", lambda: a.rpc(sb, "/process.Process/Connect", {"process": {"pid": 1}}), 400,
         "does not support"),
        ("files path", lambda: a.sandbox(sb, ENVD, "GET", "/files"), 400, "'path' is missing"),
    ]
    for name, call, want_status, want_text in cases:
        status, _, body = call()
        check(status == want_status, f"{name}: answered {status} (want {want_status}): {body}")
        got = a.clear_violations()
        check(len(got) == 1 and want_text in got[0], f"{name}: violations recorded {got} (want '{want_text}')")
    # A streamed RPC reports a bad request in its end-of-stream message, with HTTP 200.
    s = RawStream(a.port, "POST", "/process.Process/Start",
                  sandbox_headers(sb, ENVD, {"Content-Type": "application/connect+json"}),
                  b"\x01" + envelope({"process": {"cmd": "true"}})[1:])
    check(s.status == 200, f"bad envelope answered {s.status}")
    msgs = list(s.envelopes())
    s.close()
    check(len(msgs) == 1 and msgs[0][0] == 2 and msgs[0][1]["error"]["code"] == "invalid_argument",
          f"bad envelope: {msgs}")
    got = a.clear_violations()
    check(len(got) == 1 and "envelope flags" in got[0], f"bad envelope recorded: {got}")
    check(a.state()["violations"] == [], "violations cleared")
    a.api("DELETE", f"/sandboxes/{sb['sandboxID']}")


def test_robustness(t):
    a = t.a
    bad = [b"\x00\x01\x02 garbage\r\n\r\n",
           b"GET /sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nX-API-Key: " + KEY_A.encode() + b"\r\n\r\n",
           b"POST /sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
           b"POST /sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"templ",
           b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
           b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
           b"POST /sandboxes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]
    for data in bad:
        s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        s.close()
    st = a.state()
    check(st["internal_errors"] == [], f"internal errors: {st['internal_errors']}")
    check(len(st["violations"]) >= len(bad) - 1, f"malformed requests recorded: {st['violations']}")
    a.clear_violations()
    # still serving, keep-alive included
    sb = a.create()
    status, _, _ = a.api("DELETE", f"/sandboxes/{sb['sandboxID']}")
    check(status == 204, "serves after malformed requests")


def test_process_exit(t):
    a = t.a
    sb = t.sandbox
    s = start_process(a.port, sb, "/bin/sh", ["-c", "echo hi; echo err >&2; exit 3"])
    msgs = list(s.envelopes())
    s.close()
    check(msgs[0][0] == 0 and "pid" in msgs[0][1]["event"]["start"], f"first envelope {msgs[0]}")
    out = b"".join(base64.b64decode(m["event"]["data"]["stdout"]) for f, m in msgs
                   if f == 0 and "data" in m["event"] and "stdout" in m["event"]["data"])
    err = b"".join(base64.b64decode(m["event"]["data"]["stderr"]) for f, m in msgs
                   if f == 0 and "data" in m["event"] and "stderr" in m["event"]["data"])
    check(out == b"hi\n" and err == b"err\n", f"stdout {out!r} stderr {err!r}")
    ends = [m["event"]["end"] for f, m in msgs if f == 0 and "end" in m.get("event", {})]
    check(len(ends) == 1 and ends[0]["exitCode"] == 3 and ends[0]["exited"] is True
          and ends[0]["status"] == "exit status 3", f"end event {ends}")
    check(msgs[-2][1]["event"].get("end") is not None, "end event just before the end of stream")
    check(msgs[-1] == (2, {}), f"end of stream {msgs[-1]}")
    # cwd, envs, a missing command
    s = RawStream(a.port, "POST", "/process.Process/Start",
                  sandbox_headers(sb, ENVD, {"Content-Type": "application/connect+json"}),
                  envelope({"process": {"cmd": "/bin/sh", "args": ["-c", "pwd; echo $FOO"], "envs": {"FOO": "bar"},
                                        "cwd": "/tmp"}}))
    out = b"".join(base64.b64decode(m["event"]["data"]["stdout"]) for f, m in s.envelopes()
                   if f == 0 and "data" in m["event"])
    s.close()
    check(out.decode().splitlines()[1] == "bar" and out.decode().splitlines()[0].endswith("/tmp"), f"cwd/envs {out}")
    s = start_process(a.port, sb, "/nonexistent/cmd", [])
    msgs = list(s.envelopes())
    s.close()
    check(msgs[-1][0] == 2 and msgs[-1][1]["error"]["code"] == "invalid_argument", f"missing command {msgs}")


def test_process_stdin(t):
    a = t.a
    sb = t.sandbox
    s = start_process(a.port, sb, "/bin/cat", [], stdin=True)
    it = s.envelopes()
    pid = next(it)[1]["event"]["start"]["pid"]
    status, _, out = a.rpc(sb, "/process.Process/SendInput",
                           {"process": {"pid": pid}, "input": {"stdin": base64.b64encode(b"hello\n").decode()}})
    check(status == 200 and out == {}, f"SendInput answered {status} {out}")
    flags, msg = next(it)
    while "keepalive" in msg["event"]:
        flags, msg = next(it)
    check(base64.b64decode(msg["event"]["data"]["stdout"]) == b"hello\n", f"echoed input {msg}")
    status, _, out = a.rpc(sb, "/process.Process/CloseStdin", {"process": {"pid": pid}})
    check(status == 200 and out == {}, f"CloseStdin answered {status}")
    rest = [m for f, m in it]
    s.close()
    end = [m["event"]["end"] for m in rest if "end" in m.get("event", {})]
    check(end == [{"exited": True, "status": "exit status 0"}], f"cat's end {rest}")
    status, _, out = a.rpc(sb, "/process.Process/SendInput",
                           {"process": {"pid": pid}, "input": {"stdin": "aGk="}})
    check(status == 404 and out["code"] == "not_found", f"SendInput to an ended process: {status} {out}")


def test_process_signal(t):
    a = t.a
    sb = t.sandbox
    s = start_process(a.port, sb, "/bin/sleep", ["100"])
    it = s.envelopes()
    pid = next(it)[1]["event"]["start"]["pid"]
    t0 = time.monotonic()
    flags, msg = next(it)
    check(msg == {"event": {"keepalive": {}}} and time.monotonic() - t0 < 4, f"keepalive during silence: {msg}")
    status, _, out = a.rpc(sb, "/process.Process/SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"})
    check(status == 200 and out == {}, f"SendSignal answered {status}")
    rest = [m for f, m in it if "keepalive" not in m.get("event", {})]
    s.close()
    check(rest[0]["event"]["end"] == {"exitCode": -1, "status": "signal: killed", "error": "signal: killed"},
          f"end after SIGKILL: {rest}")
    check(time.monotonic() - t0 < 6, "sleep was killed promptly")
    # closing the stream kills the process
    kills = a.state()["process_disconnect_kills"]
    s = start_process(a.port, sb, "/bin/sleep", ["100"])
    pid = next(s.envelopes())[1]["event"]["start"]["pid"]
    s.close()

    def gone():
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[1].split()[0] == "Z"
        except OSError:
            return True
    wait_for(gone, 10, "the process of a closed stream to die")
    wait_for(lambda: a.state()["process_disconnect_kills"] == kills + 1, 5, "the disconnect kill counted")


def test_execute(t):
    a = t.a
    sb = t.sandbox
    events = execute(a.port, sb, "x = 41")
    counts = [ev["execution_count"] for ev in events if ev["type"] == "number_of_executions"]
    check(len(counts) == 1 and not [ev for ev in events if ev["type"] == "result"], f"x = 41: {events}")
    events = execute(a.port, sb, "x + 1")
    check(main_result(events) == "42", f"x + 1: {events}")
    check([ev["execution_count"] for ev in events if ev["type"] == "number_of_executions"] == [counts[0] + 1],
          f"execution count {events}")
    events = execute(a.port, sb, "1/0")
    errors = [ev for ev in events if ev["type"] == "error"]
    check(len(errors) == 1 and errors[0]["name"] == "ZeroDivisionError" and errors[0]["value"] == "division by zero"
          and "ZeroDivisionError" in errors[0]["traceback"], f"1/0: {events}")
    events = execute(a.port, sb, "print('out')\nimport sys\nprint('err', file=sys.stderr)\ndisplay(7)\n'main'")
    check([ev["text"] for ev in events if ev["type"] == "stdout"] == ["out\n"], f"stdout {events}")
    check([ev["text"] for ev in events if ev["type"] == "stderr"] == ["err\n"], f"stderr {events}")
    results = [(ev["text"], ev["is_main_result"]) for ev in events if ev["type"] == "result"]
    check(results == [("7", False), ("main", True)], f"display() and main result: {results}")
    check(all("timestamp" in ev for ev in events if ev["type"] in ("stdout", "stderr")), "timestamps")
    events = execute(a.port, sb, "import os\nos.system('echo from-a-child')\nos.environ.get('ONLY_HERE')",
                     env_vars={"ONLY_HERE": "yes"})
    check([ev["text"] for ev in events if ev["type"] == "stdout"] == ["from-a-child\n"], f"fd output {events}")
    check(main_result(events) == "yes", f"env_vars {events}")
    events = execute(a.port, sb, "import os\nos.environ.get('ONLY_HERE', 'unset')")
    check(main_result(events) == "unset", f"env_vars last one cell only {events}")
    events = execute(a.port, sb, "x;")
    check(not [ev for ev in events if ev["type"] == "result"], f"a trailing semicolon hides the result {events}")


def test_streaming(t):
    a = t.a
    sb = t.sandbox
    s = execute_stream(a.port, sb, "import time\nprint('first', flush=True)\ntime.sleep(0.5)\nprint('second')")
    arrivals = {}
    for when, ev in s.ndjson():
        if ev["type"] in ("stdout", "end_of_execution"):
            arrivals[ev.get("text", ev["type"])] = when
    s.close()
    check(set(arrivals) == {"first\n", "second\n", "end_of_execution"}, f"stream {arrivals}")
    lead = arrivals["end_of_execution"] - arrivals["first\n"]
    check(lead >= 0.4, f"the first line came only {lead:.2f} s before the end")


def test_interrupt(t):
    a = t.a
    sb = t.sandbox
    execute(a.port, sb, "caught = False")
    before = a.state()["cells_interrupted"]
    s = execute_stream(a.port, sb, "import time\ntry:\n    print('start', flush=True)\n    time.sleep(100)\n"
                                   "except KeyboardInterrupt:\n    caught = True\n    raise")
    for _, ev in s.ndjson():
        if ev["type"] == "stdout":
            break
    s.close()
    t0 = time.monotonic()
    events = execute(a.port, sb, "caught, x")
    check(main_result(events) == "(True, 41)", f"the cell got KeyboardInterrupt, the kernel kept x: {events}")
    check(time.monotonic() - t0 < 6, "the next cell was not held up")
    check(a.state()["cells_interrupted"] == before + 1, "interrupt counted")
    # bash cells are killed
    s = execute_stream(a.port, sb, "echo start; sleep 100", language="bash")
    for _, ev in s.ndjson():
        if ev["type"] == "stdout":
            break
    s.close()
    wait_for(lambda: a.state()["cells_interrupted"] == before + 2, 5, "bash interrupt counted")


def test_bash(t):
    a = t.a
    sb = t.sandbox
    events = execute(a.port, sb, "echo hi; echo err >&2; pwd; exit 3", language="bash")
    out = "".join(ev["text"] for ev in events if ev["type"] == "stdout")
    check(out.startswith("hi\n") and out.rstrip().endswith("/home/user"), f"bash stdout {out!r}")
    check("".join(ev["text"] for ev in events if ev["type"] == "stderr") == "err\n", f"bash stderr {events}")
    errors = [ev for ev in events if ev["type"] == "error"]
    check(len(errors) == 1 and errors[0]["name"] == "ExitStatus", f"bash exit 3: {events}")
    events = execute(a.port, sb, "echo ok", language="bash")
    check(not [ev for ev in events if ev["type"] == "error"], f"exit 0 has no error {events}")


def test_javascript(t):
    a = t.a
    sb = t.sandbox
    if "javascript" not in a.state()["languages"]:
        print("   (node not installed: skipped)")
        return
    execute(a.port, sb, "let x = 41", language="javascript")
    events = execute(a.port, sb, "console.log('out'); display('shown'); x + 1", language="javascript")
    check(main_result(events) == "42", f"js x + 1: {events}")
    check([ev["text"] for ev in events if ev["type"] == "stdout"] == ["out\n"], f"js stdout {events}")
    check([(ev["text"], ev["is_main_result"]) for ev in events if ev["type"] == "result"]
          == [("shown", False), ("42", True)], f"js display {events}")
    events = execute(a.port, sb, "null.x", language="js")
    errors = [ev for ev in events if ev["type"] == "error"]
    check(len(errors) == 1 and errors[0]["name"] == "TypeError", f"js error {events}")
    events = execute(a.port, sb, "require('child_process').execSync('echo raw', {stdio: 'inherit'}); 'after'",
                     language="javascript")
    check(main_result(events) == "after" and {"type": "stdout", "text": "raw\n"}.items()
          <= next(ev for ev in events if ev["type"] == "stdout").items(), f"a raw line on the events pipe {events}")
    s = execute_stream(a.port, sb, "console.log('start'); while (true) {}", language="javascript")
    for _, ev in s.ndjson():
        if ev["type"] == "stdout":
            break
    s.close()
    t0 = time.monotonic()
    events = execute(a.port, sb, "x", language="javascript")
    check(main_result(events) == "41" and time.monotonic() - t0 < 6, f"js interrupt kept the kernel {events}")


def test_contexts(t):
    a = t.a
    sb = t.sandbox
    status, _, ctx = a.sandbox(sb, CI, "POST", "/contexts", {"language": "python", "cwd": "/home/user"})
    check(status == 200 and ctx["language"] == "python" and ctx["cwd"] == "/home/user" and ctx["id"], f"{ctx}")
    execute(a.port, sb, "y = 5", context_id=ctx["id"])
    check(main_result(execute(a.port, sb, "y", context_id=ctx["id"])) == "5", "context keeps state")
    events = execute(a.port, sb, "y")
    check([ev["name"] for ev in events if ev["type"] == "error"] == ["NameError"], "contexts are separate")
    status, _, items = a.sandbox(sb, CI, "GET", "/contexts")
    check(status == 200 and ctx in items, f"GET /contexts {items}")
    status, _, _ = a.sandbox(sb, CI, "POST", f"/contexts/{ctx['id']}/restart")
    check(status == 204, f"restart answered {status}")
    events = execute(a.port, sb, "y", context_id=ctx["id"])
    check([ev["name"] for ev in events if ev["type"] == "error"] == ["NameError"], f"restart clears {events}")
    status, _, _ = a.sandbox(sb, CI, "DELETE", f"/contexts/{ctx['id']}")
    check(status == 204, f"DELETE context answered {status}")
    status, _, _ = a.sandbox(sb, CI, "POST", "/execute", {"code": "1", "context_id": ctx["id"]})
    check(status == 404, f"execute in a deleted context answered {status}")
    status, _, _ = a.sandbox(sb, CI, "POST", "/contexts/nope/restart")
    check(status == 404, f"restart of an unknown context answered {status}")
    status, _, out = a.sandbox(sb, CI, "GET", "/health")
    check(status == 200 and out == "OK", f"/health {status} {out}")


def multipart(name, data, boundary="e2bsrvboundary"):
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"blob\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_files(t):
    a = t.a
    sb = t.sandbox
    body, ctype = multipart("file", b"hello")
    status, _, out = a.sandbox(sb, ENVD, "POST", "/files?path=/home/user/dir/a.txt", raw=body, content_type=ctype)
    check(status == 200 and out == [{"name": "a.txt", "type": "file", "path": "/home/user/dir/a.txt"}], f"{out}")
    status, hdrs, data = a.sandbox(sb, ENVD, "GET", "/files?path=dir/a.txt")
    check(status == 200 and data == b"hello" and hdrs["content-type"] == "application/octet-stream",
          f"GET /files {status} {data}")
    status, _, out = a.rpc(sb, "/filesystem.Filesystem/ListDir", {"path": "/home/user/dir", "depth": 1})
    check(status == 200 and [(e["name"], e["type"], e["size"], e["path"]) for e in out["entries"]]
          == [("a.txt", "FILE_TYPE_FILE", "5", "/home/user/dir/a.txt")], f"ListDir {out}")
    for name in ("mode", "permissions", "owner", "group", "modifiedTime"):
        check(name in out["entries"][0], f"EntryInfo lacks {name}")
    events = execute(a.port, sb, "open('dir/a.txt').read()")
    check(main_result(events) == "hello", f"the kernel sees the file {events}")
    s = start_process(a.port, sb, "/bin/cat", ["dir/a.txt"])
    out = b"".join(base64.b64decode(m["event"]["data"]["stdout"]) for f, m in s.envelopes()
                   if f == 0 and "data" in m["event"])
    s.close()
    check(out == b"hello", f"a process sees the file {out}")
    if a.state()["view"]:
        # processes see the sandbox's /home and /tmp: absolute paths agree with /files
        s = start_process(a.port, sb, "/bin/sh", ["-c", "cat /home/user/dir/a.txt; echo $HOME; echo t > /tmp/t"],
                          cwd="/")
        out = b"".join(base64.b64decode(m["event"]["data"]["stdout"]) for f, m in s.envelopes()
                       if f == 0 and "data" in m["event"])
        s.close()
        check(out == b"hello/home/user\n", f"absolute paths in a process {out}")
        status, _, data = a.sandbox(sb, ENVD, "GET", "/files?path=/tmp/t")
        check(status == 200 and data == b"t\n", f"a process wrote the sandbox's /tmp: {status} {data}")
        events = execute(a.port, sb, "open('/home/user/dir/a.txt').read()")
        check(main_result(events) == "hello", f"absolute paths in a cell {events}")
    else:
        print("   (no mount namespace here: absolute paths are the host's; not checked)")
    status, _, out = a.rpc(sb, "/filesystem.Filesystem/Remove", {"path": "/home/user/dir/a.txt"})
    check(status == 200 and out == {}, f"Remove {status} {out}")
    status, _, out = a.sandbox(sb, ENVD, "GET", "/files?path=/home/user/dir/a.txt")
    check(status == 404 and out["code"] == 404, f"GET after Remove {status} {out}")
    status, _, out = a.rpc(sb, "/filesystem.Filesystem/Remove", {"path": "/home/user/dir/a.txt"})
    check(status == 404 and out["code"] == "not_found", f"Remove of a missing file {status} {out}")
    status, _, _ = a.sandbox(sb, ENVD, "GET", "/files?path=" + urllib.parse.quote("../../../../etc/hostname"))
    check(status == 404, f"'..' left the sandbox: {status}")
    # file-system refusals are error answers, not failures of the server
    body, ctype = multipart("file", b"x")
    status, _, out = a.sandbox(sb, ENVD, "POST", "/files?path=/home/user/plain", raw=body, content_type=ctype)
    check(status == 200, f"upload {status}")
    status, _, out = a.sandbox(sb, ENVD, "POST", "/files?path=/home/user/plain/inside", raw=body,
                               content_type=ctype)
    check(status == 500 and "/home/user/plain" in out["message"] and "e2bsrv" not in out["message"],
          f"upload under a file: {status} {out}")
    status, _, out = a.rpc(sb, "/filesystem.Filesystem/MakeDir", {"path": "/home/user/plain/d"})
    check(status == 500 and out["code"] == "internal", f"MakeDir under a file: {status} {out}")
    status, _, out = a.rpc(sb, "/filesystem.Filesystem/ListDir", {"path": "/home/user/a\u0000b"})
    check(status == 403 and out["code"] == "permission_denied", f"NUL in a path: {status} {out}")
    body, ctype = multipart("other", b"x")
    status, _, _ = a.sandbox(sb, ENVD, "POST", "/files?path=/home/user/b", raw=body, content_type=ctype)
    check(status == 400, f"a part not named file answered {status}")
    a.clear_violations()


def test_faults(t):
    a = t.a
    a.faults({"method": "POST", "path": "/sandboxes", "status": 429, "retry_after": 1})
    status, hdrs, out = a.api("POST", "/sandboxes", {"templateID": "t"})
    check(status == 429 and hdrs.get("retry-after") == "1" and out["code"] == 429, f"429: {status} {hdrs} {out}")
    a.faults({"method": "POST", "path": "/sandboxes", "status": 500, "body": {"code": 500, "message": "placement"}})
    status, _, out = a.api("POST", "/sandboxes", {"templateID": "t"})
    check(status == 500 and out == {"code": 500, "message": "placement"}, f"500: {status} {out}")
    sb = a.create()
    a.faults({"method": "GET", "path": "/sandboxes/", "status": 401})
    status, _, _ = a.api("GET", f"/sandboxes/{sb['sandboxID']}")
    check(status == 401, f"injected 401 answered {status}")
    check(a.state()["violations"] == [], "an injected 401 is no violation")
    a.faults({"method": "GET", "path": "/v2/sandboxes", "latency_ms": 300})
    t0 = time.monotonic()
    status, _, _ = a.api("GET", "/v2/sandboxes")
    check(status == 200 and time.monotonic() - t0 >= 0.28, f"latency: {status} {time.monotonic() - t0:.3f} s")
    a.faults({"method": "DELETE", "path": "/sandboxes/", "drop": "before_response"})
    try:
        a.api("DELETE", f"/sandboxes/{sb['sandboxID']}")
        raise Failure("a dropped request got an answer")
    except (OSError, http.client.HTTPException):
        pass
    status, _, _ = a.api("GET", f"/sandboxes/{sb['sandboxID']}")
    check(status == 200, "a request dropped before its answer was not carried out")
    a.faults({"method": "POST", "path": "/sandboxes", "drop": "after_processing"})
    try:
        a.api("POST", "/sandboxes", {"templateID": "t", "metadata": {"lost": "answer"}})
        raise Failure("a dropped request got an answer")
    except (OSError, http.client.HTTPException):
        pass
    lost = [box["sandboxID"] for box in a.state()["sandboxes"] if box["metadata"] == {"lost": "answer"}]
    check(len(lost) == 1, "after_processing: the sandbox exists although its answer was lost")
    a.api("DELETE", f"/sandboxes/{lost[0]}")
    a.faults({"method": "POST", "path": "/execute", "port": CI, "drop": "mid_stream", "after_lines": 1})
    s = execute_stream(a.port, sb, "import time\nprint(1, flush=True)\ntime.sleep(0.2)\nprint(2)")
    check(s.status == 200, "mid_stream: headers sent")
    first = s.chunk()
    check(json.loads(first)["type"] == "number_of_executions", f"first line {first}")
    try:
        s.chunk()
        raise Failure("mid_stream: more than after_lines lines")
    except EOFError:
        pass
    s.close()
    a.faults({"method": "POST", "path": "/process.Process/Start", "drop": "mid_stream", "after_lines": 1})
    s = start_process(a.port, sb, "/bin/sleep", ["100"])
    check(s.chunk()[0] == 0, "Process/Start: first envelope")
    try:
        s.chunk()
        raise Failure("mid_stream: more than after_lines envelopes")
    except EOFError:
        pass
    s.close()
    a.faults({"method": "GET", "path": "/sandboxes/", "drop": "mid_stream"})
    try:
        a.api("GET", f"/sandboxes/{sb['sandboxID']}")
        raise Failure("a body cut short was accepted")
    except (OSError, http.client.HTTPException):
        pass
    a.faults({"path": "/health", "status": 503, "count": -1})
    check(a.sandbox(sb, CI, "GET", "/health")[0] == 503 and a.sandbox(sb, CI, "GET", "/health")[0] == 503,
          "a count -1 rule stays")
    status, _, _ = a.api("POST", "/_test/faults/clear", key=False)
    check(status == 204 and a.sandbox(sb, CI, "GET", "/health")[0] == 200, "faults cleared")
    status, _, _ = a.api("POST", "/_test/faults", {"rules": [{"status": 99}]}, key=False)
    check(status == 400, "a bad rule is refused")
    a.api("DELETE", f"/sandboxes/{sb['sandboxID']}")
    check(a.state()["violations"] == [], f"faults raised violations {a.state()['violations']}")


def test_vanish(t):
    a = t.a
    sb = a.create()
    vanished = a.state()["vanished"]
    status, _, _ = a.api("POST", "/_test/vanish", {"sandboxID": sb["sandboxID"]}, key=False)
    check(status == 204, f"vanish answered {status}")
    status, _, _ = a.api("GET", f"/sandboxes/{sb['sandboxID']}")
    check(status == 404, "a vanished sandbox is gone")
    status, _, out = a.sandbox(sb, CI, "POST", "/execute", {"code": "1"})
    check(status == 404 and out["message"] == "sandbox not found", f"execute in a vanished sandbox {out}")
    status, _, out = a.rpc(sb, "/filesystem.Filesystem/ListDir", {"path": "/"})
    check(status == 404, f"envd in a vanished sandbox {status}")
    check(a.state()["vanished"] == vanished + 1, "vanish counted")


def test_curl(t):
    if CURL is None:
        print("   (curl not installed: skipped)")
        return
    a = t.a
    sb = t.sandbox
    base = f"http://127.0.0.1:{a.port}"
    ci = ["-H", f"E2b-Sandbox-Id: {sb['sandboxID']}", "-H", "E2b-Sandbox-Port: 49999",
          "-H", f"X-Access-Token: {sb['envdAccessToken']}", "-H", "Content-Type: application/json"]
    cmd = [CURL, "-sS", "-v", "-H", f"X-API-Key: {KEY_A}", f"{base}/sandboxes/{sb['sandboxID']}",
           "--next", "-X", "POST", *ci, "--data", '{"code": "6*7"}', f"{base}/execute",
           "--next", "-H", f"X-API-Key: {KEY_A}", f"{base}/v2/sandboxes"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, f"curl failed: {r.stderr[-2000:]}")
    check(r.stderr.count("Re-using existing connection") == 2, f"curl opened new connections:\n{r.stderr[-3000:]}")
    check('"text": "42"' in r.stdout and "end_of_execution" in r.stdout, f"curl output {r.stdout}")
    # a multipart upload as curl makes it, "Expect: 100-continue" included
    blob = os.urandom(200 << 10)
    path = os.path.join(t.tmp, "blob")
    with open(path, "wb") as f:
        f.write(blob)
    envd = ["-H", f"E2b-Sandbox-Id: {sb['sandboxID']}", "-H", "E2b-Sandbox-Port: 49983",
            "-H", f"X-Access-Token: {sb['envdAccessToken']}"]
    r = subprocess.run([CURL, "-sS", "-v", "-f", *envd, "-H", "Expect: 100-continue", "-F", f"file=@{path}",
                        f"{base}/files?path=up/blob"],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0 and "Expect: 100-continue" in r.stderr and "< HTTP/1.1 100 Continue" in r.stderr,
          f"curl upload: {r.stderr[-2000:]}")
    status, _, data = a.sandbox(sb, ENVD, "GET", "/files?path=/home/user/up/blob")
    check(status == 200 and data == blob, f"uploaded {len(blob)} bytes, read back {status} {len(data)}")


def test_upstream(t):
    b, c = t.b, t.c
    b_created = b.state()["created"]
    sb = c.create(metadata={"via": "proxy"})
    st = b.state()
    check(st["created"] == b_created + 1 and sb["sandboxID"] in [s["sandboxID"] for s in st["sandboxes"]],
          "the proxy created the sandbox upstream")
    events = execute(c.port, sb, "x = 41")
    events = execute(c.port, sb, "x + 1")
    check(main_result(events) == "42", f"execute through the proxy {events}")
    s = start_process(c.port, sb, "/bin/sh", ["-c", "echo via"])
    msgs = list(s.envelopes())
    s.close()
    check(msgs[-1] == (2, {}) and any("data" in m.get("event", {}) for _, m in msgs), f"Start through proxy {msgs}")
    status, _, items = c.api("GET", "/v2/sandboxes?" + urllib.parse.urlencode({"metadata": "via=proxy"}))
    check(status == 200 and [i["sandboxID"] for i in items] == [sb["sandboxID"]], f"list through proxy {items}")
    check(c.state()["live"] == 1, f"proxy state {c.state()}")
    status, _, _ = c.api("POST", "/sandboxes", {"templateID": "t"}, key="wrong")
    check(status == 401 and c.clear_violations() and b.state()["violations"] == [],
          "a bad key stops at the proxy")
    c.faults({"method": "POST", "path": "/sandboxes", "status": 429, "retry_after": 2})
    status, hdrs, _ = c.api("POST", "/sandboxes", {"templateID": "t"})
    check(status == 429 and hdrs.get("retry-after") == "2", "faults apply in upstream mode")
    status, _, _ = c.api("DELETE", f"/sandboxes/{sb['sandboxID']}")
    check(status == 204, f"DELETE through the proxy {status}")
    st = c.state()
    check(st["live"] == 0 and st["created"] == 1 and st["deleted"] == 1, f"proxy state after delete {st}")
    check(b.state()["live"] == 0, "upstream has nothing left")
    check(b.state()["violations"] == [] and c.state()["violations"] == [], "no violations through the proxy")


# test_ttl mostly waits: it runs in a thread beside these, on its own connection, and is over before test_faults
# (whose rules would catch its requests).
TESTS = [test_lifecycle, test_listing, test_violations, test_robustness, test_process_exit, test_process_stdin,
         test_process_signal, test_execute, test_streaming, test_interrupt, test_bash, test_javascript, test_contexts,
         test_files,
         test_faults, test_vanish, test_curl, test_upstream]


class T:
    pass


def run(test, t, failed):
    start = time.monotonic()
    try:
        test(t)
        print(f"ok   {test.__name__} ({time.monotonic() - start:.2f} s)", flush=True)
    except Exception:
        failed.append(test.__name__)
        print(f"FAIL {test.__name__}\n{traceback.format_exc()}", flush=True)


def main():
    signal.alarm(180)  # a hung server must not hang make check
    tmp = tempfile.mkdtemp(prefix="e2bsrv-check-")
    servers = []
    failed = []
    t0 = time.monotonic()
    try:
        a = ServerProc(tmp, "a", KEY_A)
        servers.append(a)
        b = ServerProc(tmp, "b", KEY_B)
        servers.append(b)
        b.wait_ready()
        env = dict(os.environ, E2BSRV_UPSTREAM_KEY=KEY_B)
        c = ServerProc(tmp, "c", KEY_C, ["--upstream", f"http://127.0.0.1:{b.port}",
                                         "--upstream-key-env", "E2BSRV_UPSTREAM_KEY",
                                         "--upstream-sandbox-url", f"http://127.0.0.1:{b.port}"], env)
        servers.append(c)
        a.wait_ready()
        t = T()
        t.tmp = tmp
        t.a = Client(a.port, KEY_A)
        t.sandbox = t.a.create(timeout=120)
        ttl = T()
        ttl.a = Client(a.port, KEY_A)
        ttl_thread = threading.Thread(target=run, args=(test_ttl, ttl, failed))
        ttl_thread.start()
        c.wait_ready()
        t.b, t.c = Client(b.port, KEY_B), Client(c.port, KEY_C)
        for test in TESTS:
            if test is test_faults:
                ttl_thread.join()
            run(test, t, failed)
        t.a.api("DELETE", f"/sandboxes/{t.sandbox['sandboxID']}")
        for client, name in ((t.a, "a"), (t.b, "b"), (t.c, "c")):
            st = client.state()
            if st["internal_errors"] or st["violations"]:
                failed.append(f"server {name} state")
                print(f"FAIL server {name}: violations {st['violations']} internal {st['internal_errors']}")
        if t.a.state()["live"] != 0:
            failed.append("leak")
            print(f"FAIL live sandboxes left on a: {t.a.state()['sandboxes']}")
        # exit status: 0 when clean, 1 with the violations listed when not
        t.b.api("GET", "/nope")
        for srv in (a, b, c):
            srv.terminate()
        for srv, want in ((c, 0), (a, 0), (b, 1)):
            rc = srv.stop()
            if rc != want:
                failed.append(f"exit of {srv.name}")
                print(f"FAIL server {srv.name} exited {rc}, want {want}:\n{srv.log()}")
        if "VIOLATION GET /nope" not in b.log():
            failed.append("exit listing")
            print(f"FAIL server b did not list its violation on exit:\n{b.log()}")
    except Exception:
        failed.append("setup")
        print(f"FAIL setup\n{traceback.format_exc()}")
    finally:
        for srv in servers:
            srv.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(TESTS) + 1 - len([f for f in failed if f.startswith('test_')])}/{len(TESTS) + 1} passed "
          f"in {time.monotonic() - t0:.1f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
