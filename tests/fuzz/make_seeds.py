#!/usr/bin/python3
"""Writes the seed corpora in tests/fuzz/corpus/ (frame, agent, config).

Seeds are small valid and nearly valid inputs that start the fuzzers deep
in the decoders. Run it again after changing it; the files are committed.
Files named regress-* are inputs that once crashed a target; they are kept
by hand, not written here. Python's standard library has no msgpack, so a
minimal packer is here.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def pack(o):
    if o is None:
        return b"\xc0"
    if o is True:
        return b"\xc3"
    if o is False:
        return b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 128:
            return bytes([o])
        if -32 <= o < 0:
            return struct.pack("b", o)
        if 0 <= o < 2**32:
            return b"\xce" + struct.pack(">I", o)
        if 0 <= o < 2**64:
            return b"\xcf" + struct.pack(">Q", o)
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, float):
        return b"\xcb" + struct.pack(">d", o)
    if isinstance(o, str):
        b = o.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        return b"\xd9" + bytes([len(b)]) + b if len(b) < 256 else b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(o, bytes):
        return b"\xc4" + bytes([len(o)]) + o if len(o) < 256 else b"\xc5" + struct.pack(">H", len(o)) + o
    if isinstance(o, (list, tuple)):
        head = bytes([0x90 | len(o)]) if len(o) < 16 else b"\xdc" + struct.pack(">H", len(o))
        return head + b"".join(pack(x) for x in o)
    if isinstance(o, dict):
        head = bytes([0x80 | len(o)]) if len(o) < 16 else b"\xde" + struct.pack(">H", len(o))
        return head + b"".join(pack(k) + pack(v) for k, v in o.items())
    raise TypeError(o)


def req(msgid, method, params):
    return pack([0, msgid, method, [params]])


def write(kind, name, data):
    d = os.path.join(HERE, "corpus", kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


LEASE = "ls-0123456789abcdef"

# --- the daemon's wire protocol (docs/PROTOCOL.md) -------------------------
frames = {
    "hello": req(1, "hello", {"client": "seed"}),
    "templates": req(2, "templates.list", {}),
    "stats": req(3, "pool.stats", {}),
    "lease": req(4, "sandbox.lease", {"template": "python", "wait_ms": 100, "detached": False}),
    "lease-session": req(5, "sandbox.lease", {"template": "python", "session": "s-1@x:y", "wait_ms": 0}),
    "release": req(6, "sandbox.release", {"lease_id": LEASE}),
    "renew": req(7, "sandbox.renew", {"lease_id": LEASE}),
    "session-end": req(8, "session.end", {"session": "s-1"}),
    "exec-argv": req(9, "sandbox.exec", {"lease_id": LEASE, "argv": ["python3", "-c", "print(1)"],
                                         "env": {"A": "1", "B": "x=y"}, "cwd": "/workspace",
                                         "stdin": b"input\n", "timeout_ms": 5000, "stream": True}),
    "exec-cmd": req(10, "sandbox.exec", {"lease_id": LEASE, "cmd": "echo hi; exit 3"}),
    "run": req(11, "run", {"template": "shell", "argv": ["true"], "wait_ms": 10, "session": "a"}),
    "params-nil": pack([0, 12, "hello", None]),
    "params-empty-array": pack([0, 13, "hello", []]),
    "params-bare-map": pack([0, 14, "pool.stats", {"x": 1}]),
    "params-array-nil": pack([0, 15, "hello", [None]]),
    "notify": pack([2, "exec.output", [{"exec_id": 3, "request": 9, "stream": "stdout", "data": b"hi\n"}]]),
    "response-ok": pack([1, 9, None, {"exec_id": 1, "exit_code": 0, "signal": None, "stdout": b"1\n",
                                      "stderr": b"", "truncated": False, "limit": None,
                                      "duration_us": 1234}]),
    "response-error": pack([1, 0, {"code": "limit_exceeded", "message": "message exceeds max_frame"}, None]),
    "pipelined": req(1, "hello", {}) + req(2, "pool.stats", {}) + req(3, "sandbox.lease", {"template": "t"}),
    "msgid-max": req(2**32 - 1, "hello", {}),
    "msgid-too-big": pack([0, 2**32, "hello", [{}]]),
    "negative-ints": req(16, "sandbox.lease", {"template": "t", "wait_ms": -1, "timeout_ms": -2**40}),
    "wrong-types": req(17, "sandbox.exec", {"lease_id": 5, "argv": "true", "env": ["A=1"], "stream": 1}),
    "unknown-method": req(18, "no.such.method", {"a": [1, 2, {"b": None}]}),
    "bad-type": pack([3, 1, "x", []]),
    "short-request": pack([0, 1, "hello"]),
    "empty-method": pack([0, 1, "", [{}]]),
    "not-array": pack({"type": 0}),
    "truncated": req(19, "sandbox.exec", {"lease_id": LEASE, "argv": ["a", "b"]})[:-3],
    "float-and-ext": pack([0, 20, "hello", [{"x": 1.5}]]) + b"\xd4\x01\x02",
    "big-str": req(21, "sandbox.exec", {"lease_id": LEASE, "cmd": "x" * 300, "stdin": b"\0" * 300}),
    "empty-strings": req(22, "sandbox.exec", {"lease_id": "", "argv": [""], "cmd": "", "stdin": b"", "": ""}),
}
for name, data in frames.items():
    # First byte: bit 7 picks the small max_frame, the rest the read size.
    write("frame", name, b"\x3f" + data)
write("frame", "byte-by-byte", b"\x00" + frames["exec-argv"])
write("frame", "small-max-frame", b"\xff" + frames["big-str"] * 4)

# --- the agent's control channel (docs/AGENT.md, sandbox/local.c) ----------
BASE_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/workspace", "LANG=C.UTF-8"]


def exec_req(msgid, **kw):
    p = {"id": msgid, "argv": ["true"], "env": BASE_ENV, "cwd": "/workspace",
         "timeout_ms": 30000, "max_output": 1 << 20}
    p.update(kw)
    for k in [k for k, v in p.items() if v is Ellipsis]:
        del p[k]
    return req(msgid, "exec", p)


agent = {
    "exec": exec_req(1),
    "exec-stdin": exec_req(2, stdin=b"data\n", argv=["cat"]),
    "exec-bin-argv": exec_req(3, argv=[b"/bin/sh", b"-c", b"echo $A"], env=BASE_ENV + [b"A=1"]),
    "exec-many-args": exec_req(4, argv=["echo"] + [str(i) for i in range(40)]),
    "exec-no-id": exec_req(5, id=...),
    "exec-empty-argv": exec_req(6, argv=[]),
    "exec-nul-argv": exec_req(7, argv=["a\0b"]),
    "exec-env-no-eq": exec_req(8, env=["NOEQUALS"]),
    "exec-empty-cwd": exec_req(9, cwd=""),
    "exec-zero-timeout": exec_req(10, timeout_ms=0),
    "exec-huge-timeout": exec_req(11, timeout_ms=2**33),
    "exec-stdin-wrong": exec_req(12, stdin=7),
    "exec-no-max-output": exec_req(13, max_output=...),
    "kill": req(14, "kill", {"id": 1}),
    "kill-bad": req(15, "kill", {"id": "one"}),
    "ping": req(16, "ping", {}),
    "unknown": req(17, "reboot", {}),
    "notify": pack([2, "exec", [{"id": 1}]]),
    "response": pack([1, 3, None, {}]),
    "sequence": exec_req(1) + req(2, "ping", {}) + req(3, "kill", {"id": 1}) + exec_req(4, argv=["sleep", "1"]),
    "truncated": exec_req(18)[:-5],
    "empty-strings": exec_req(19, argv=["", ""], cwd="/w", env=[], stdin=b""),
    "exec-bin-cwd-env": exec_req(20, cwd=b"/tmp", env=[b"A=", b"=B"]),
    "exec-id-zero": exec_req(0),
    "exec-id-max": exec_req(21, id=2**64 - 1),
    "exec-max-output-zero": exec_req(22, max_output=0),
    "exec-argv-int": exec_req(23, argv=["echo", 5]),
    "exec-env-map": exec_req(24, env={"A": "1"}),
    "exec-params-nil": pack([0, 25, "exec", None]),
    "kill-no-params": pack([0, 26, "kill", []]),
    "exec-long-env": exec_req(27, env=["V%d=%s" % (i, "x" * i) for i in range(40)]),
}
for name, data in agent.items():
    write("agent", name, data)

# --- configuration files (docs/CONFIG.md) -----------------------------------
configs = {
    "embedded-default": "# sandpoold's built-in configuration\n[daemon]\n\n[template python]\n"
                        "language = python\nmin_warm = 2\n\n[template shell]\nlanguage = shell\nmin_warm = 2\n",
    "readme": "[daemon]\nsocket = /run/sandpool/sandpool.sock\nsocket_mode = 0660\nmax_connections = 1024\n"
              "max_frame = 4M\n\n[template python]\nlanguage = python\nmin_warm = 2          # kept warm\n"
              "max_total = 8\ntimeout = 30s\nmax_output = 1M\nworkspace_size = 64M\nnetwork = none\n"
              "bind_ro = /srv/models:/models\nenv = PYTHONDONTWRITEBYTECODE=1\n\n[template shell]\nlanguage = shell\n",
    "syntax": "# A comment.\n; another\n[daemon]\nsocket = /run/sandpool/sandpool.sock    # trailing\n"
              "max_frame = 8M\n\n[template python]\nlanguage = python\nenv = PYTHONDONTWRITEBYTECODE=1\n"
              "env = \"BANNER=  # kept  \"               # quotes keep the spaces\nenv = A=\"x\"\n",
    "all-daemon-keys": "[daemon]\nsocket = /tmp/s.sock\nsocket_mode = 0600\nsocket_group = \nstate_dir = /tmp/st\n"
                       "log_level = debug\nmax_connections = 10\nmax_inflight = 4\nmax_leases_per_conn = 2\n"
                       "max_frame = 1K\nmax_timeout = 2h\ndrain_timeout = 0\nhealth_interval = 100ms\n"
                       "max_sandboxes = 8\ncreate_concurrency = 1\nagent_path = /usr/libexec/a\n"
                       "sandbox_uid = 1000\nsandbox_gid = 1000\nhost_uid_base = 65536\ncgroup_root = my/root\n"
                       "[template t]\n",
    "all-template-keys": "[daemon]\n[template t-1.x]\nenabled = yes\nbackend = local\nlanguage = bash\n"
                         "min_warm = 1\nmax_creating = 2\nmax_warm = 3\nmax_total = 4\ntimeout = 1500ms\n"
                         "lease_ttl = 1d\nmax_warm_age = 90m\nsession_idle_ttl = 10\nsession_max_age = 365d\n"
                         "max_output = 1536K\nworkspace_size = 1GiB\nmemory = 16MiB\npids = 8\ncpus = 0.125\n"
                         "network = host\nrootfs = /srv/root\nbind_ro = /a:/b\nbind_rw = /c:/d/e\nenv = K=V\n",
    "disabled": "[template off]\nenabled = no\n[template on]\nenabled = TRUE\n",
    "sizes": "[template t]\nmax_output = 1k\nworkspace_size = 2M\nmemory = 3g\n[template u]\nmax_output = 1024B\n"
             "workspace_size = 1Mib\nmemory = 1T\n",
    "durations": "[daemon]\nmax_timeout = 7d\n[template t]\ntimeout = 1\nlease_ttl = 1s\nmax_warm_age = 1m\n"
                 "session_idle_ttl = 1ms\nsession_max_age = 1h\n",
    "decimals": "[template a]\ncpus = 2\n[template b]\ncpus = 0.01\n[template c]\ncpus = 1024\n[template d]\ncpus = 1.5\n",
    "many-templates": "".join("[template t%d]\nmin_warm = 0\n" % i for i in range(20)),
    "overflow": "[template t]\nmax_output = 99999999999999999999999\n",
    "unknown-key": "[daemon]\nsocket_path = /x\n[template t]\n",
    "wrong-section-key": "[daemon]\nmin_warm = 2\n[template t]\nmax_frame = 1M\n",
    "unknown-section": "[deamon]\n[template t]\n",
    "no-template-name": "[template]\n",
    "bad-template-name": "[template a/b]\n",
    "duplicate": "[template t]\n[template t]\n",
    "twice": "[template t]\nmin_warm = 1\nmin_warm = 2\n",
    "unterminated-quote": "[template t]\nenv = \"A=1\n",
    "text-after-quote": "[template t]\nenv = \"A=1\" x\n",
    "escapes": "[template t]\nenv = \"A=\\\"q\\\" \\\\ \\n\"  # c\n",
    "relative-path": "[daemon]\nstate_dir = run/sp\n[template t]\n",
    "dotdot-bind": "[template t]\nbind_ro = /a/../etc:/etc2\n",
    "bind-root": "[template t]\nbind_rw = /a:/\n",
    "bind-no-colon": "[template t]\nbind_ro = /a\n",
    "env-bad-name": "[template t]\nenv = 1A=2\n",
    "env-twice": "[template t]\nenv = A=1\nenv = A=2\n",
    "min-over-max": "[template t]\nmin_warm = 5\nmax_total = 4\n",
    "warm-over-sandboxes": "[daemon]\nmax_sandboxes = 1\n[template t]\nmin_warm = 2\n",
    "timeout-over-max": "[daemon]\nmax_timeout = 1s\n[template t]\ntimeout = 2s\n",
    "key-before-section": "min_warm = 1\n[template t]\n",
    "no-equals": "[template t]\nmin_warm\n",
    "empty-value": "[template t]\nlanguage =\n",
    "section-no-bracket": "[template t\n",
    "crlf": "[daemon]\r\nlog_level = warn\r\n[template t]\r\nmin_warm = 1\r\n",
    "long-line": "[template t]\nenv = A=" + "x" * 4200 + "\n",
    "no-trailing-newline": "[template t]\nmin_warm = 1",
    "empty": "",
}
for name, text in configs.items():
    write("config", name, text)
