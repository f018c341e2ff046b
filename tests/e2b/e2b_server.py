#!/usr/bin/python3
"""E2B contract server: a local stand-in for E2B's API that the e2b backend is tested against.

It serves the subset of E2B's control plane (openapi.yml), of the code interpreter (port 49999) and of envd
(port 49983, Connect with the JSON codec) that sandpoold uses, checks every request against the spec and records
each deviation (a "contract violation"), runs the sandboxes' code for real (a python kernel process per context,
/bin/bash, envd processes as subprocesses, files under a per-sandbox directory), and injects faults on demand.
With --upstream it validates the same way and forwards to a real E2B instead. See README.md beside this file.

Python 3 standard library only; run by /usr/bin/python3.
"""

import argparse
import base64
import binascii
import codecs
import datetime
import grp
import http.client
import json
import os
import pwd
import queue
import re
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
NODE = shutil.which("node") or ("/usr/bin/node" if os.access("/usr/bin/node", os.X_OK) else None)
CODE_INTERPRETER_PORT = 49999
ENVD_PORT = 49983
DEFAULT_TIMEOUT_S = 15  # NewSandbox.timeout default
SANDBOX_HOME = "/home/user"  # E2B's default user and working directory
CLIENT_ID = "6532622b"  # Sandbox.clientID is deprecated; E2B still sends a constant
ENVD_VERSION = "0.2.0"
CPU_COUNT = 2
MEMORY_MB = 512
DISK_SIZE_MB = 20480

MAX_JSON_BODY = 1 << 20
MAX_FILE_BODY = 64 << 20
MAX_VIOLATIONS = 1000
MAX_REQUEST_KEYS = 256
MAX_CONNECTIONS = 256
KEEPALIVE_S = 1.0  # silence after which a stream carries a keepalive event
INTERRUPT_GRACE_S = 5.0  # an interrupted cell gets this long to stop before its kernel is killed
IDLE_CONNECTION_S = 120  # keep-alive connections idle this long are closed, as E2B's proxy does

# Connect error codes and the HTTP status each maps to (connectrpc.com/docs/protocol, "Error Codes").
CONNECT_STATUS = {
    "canceled": 499, "unknown": 500, "invalid_argument": 400, "deadline_exceeded": 504, "not_found": 404,
    "already_exists": 409, "permission_denied": 403, "resource_exhausted": 429, "failed_precondition": 400,
    "aborted": 409, "out_of_range": 400, "unimplemented": 501, "internal": 500, "unavailable": 503,
    "data_loss": 500, "unauthenticated": 401,
}

# Go's syscall.Signal.String(), as envd puts it in EndEvent.status ("signal: killed").
GO_SIGNAL_NAMES = {
    signal.SIGHUP: "hangup", signal.SIGINT: "interrupt", signal.SIGQUIT: "quit", signal.SIGILL: "illegal instruction",
    signal.SIGABRT: "aborted", signal.SIGBUS: "bus error", signal.SIGFPE: "floating point exception",
    signal.SIGKILL: "killed", signal.SIGUSR1: "user defined signal 1", signal.SIGSEGV: "segmentation fault",
    signal.SIGUSR2: "user defined signal 2", signal.SIGPIPE: "broken pipe", signal.SIGALRM: "alarm clock",
    signal.SIGTERM: "terminated",
}


# ---------------------------------------------------------------------------------------------------------------
# Schema tables, hand-written from ../shared/e2b/openapi.yml (components/schemas/<name>) and from the code
# interpreter's request models (CODE-INTERPRETER.md). Objects that declare properties reject unknown fields:
# E2B's Go server would ignore them, but a field it ignores is a field the backend believes has an effect.

def _int32(minimum=None, maximum=None):
    return {"type": "integer", "format": "int32", "minimum": minimum, "maximum": maximum}


_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_STR_LIST = {"type": "array", "items": _STR}
_STR_MAP = {"type": "object", "additionalProperties": _STR}

SCHEMAS = {
    # components/schemas/SandboxMetadata
    "SandboxMetadata": _STR_MAP,
    # components/schemas/EnvVars
    "EnvVars": _STR_MAP,
    # components/schemas/Mcp
    "Mcp": {"type": "object", "nullable": True, "additionalProperties": True},
    # components/schemas/SandboxAutoResumeConfig
    "SandboxAutoResumeConfig": {"type": "object", "required": ["enabled"], "properties": {"enabled": _BOOL}},
    # components/schemas/SandboxEgressProxyConfig
    "SandboxEgressProxyConfig": {
        "type": "object", "nullable": True, "required": ["address"],
        "properties": {"address": _STR, "username": {"type": "string", "maxLength": 255},
                       "password": {"type": "string", "maxLength": 255}}},
    # components/schemas/SandboxNetworkTransform
    "SandboxNetworkTransform": {"type": "object", "properties": {"headers": _STR_MAP}},
    # components/schemas/SandboxNetworkRule
    "SandboxNetworkRule": {"type": "object", "properties": {"transform": {"$ref": "SandboxNetworkTransform"}}},
    # components/schemas/SandboxNetworkConfig
    "SandboxNetworkConfig": {
        "type": "object",
        "properties": {
            "allowPublicTraffic": _BOOL, "allowOut": _STR_LIST, "denyOut": _STR_LIST,
            "egressProxy": {"$ref": "SandboxEgressProxyConfig"}, "maskRequestHost": _STR,
            "rules": {"type": "object",
                      "additionalProperties": {"type": "array", "items": {"$ref": "SandboxNetworkRule"}}}}},
    # components/schemas/SandboxIamToken
    "SandboxIamToken": {"type": "object", "required": ["audience", "tokenType"],
                        "properties": {"audience": _STR, "tokenType": _STR}},
    # components/schemas/SandboxIamTokens
    "SandboxIamTokens": {"type": "object", "additionalProperties": {"$ref": "SandboxIamToken"}},
    # components/schemas/SandboxIam
    "SandboxIam": {"type": "object", "properties": {"tokens": {"$ref": "SandboxIamTokens"}}},
    # components/schemas/SandboxVolumeMount
    "SandboxVolumeMount": {"type": "object", "required": ["name", "path"], "properties": {"name": _STR, "path": _STR}},
    # components/schemas/NewSandbox
    "NewSandbox": {
        "type": "object", "required": ["templateID"],
        "properties": {
            "templateID": _STR, "timeout": _int32(0), "autoPause": _BOOL, "autoPauseMemory": _BOOL,
            "autoResume": {"$ref": "SandboxAutoResumeConfig"}, "secure": _BOOL, "allow_internet_access": _BOOL,
            "network": {"$ref": "SandboxNetworkConfig"}, "metadata": {"$ref": "SandboxMetadata"},
            "envVars": {"$ref": "EnvVars"}, "mcp": {"$ref": "Mcp"}, "iam": {"$ref": "SandboxIam"},
            "volumeMounts": {"type": "array", "items": {"$ref": "SandboxVolumeMount"}}}},
    # components/schemas/SandboxTimeoutRequest
    "SandboxTimeoutRequest": {"type": "object", "required": ["timeout"], "properties": {"timeout": _int32(0)}},
    # components/schemas/SandboxRefreshRequest
    "SandboxRefreshRequest": {"type": "object",
                              "properties": {"duration": {"type": "integer", "minimum": 0, "maximum": 3600}}},
    # components/schemas/ConnectSandbox
    "ConnectSandbox": {"type": "object", "required": ["timeout"],
                       "properties": {"timeout": _int32(0), "memory": _BOOL}},
    # code interpreter: ExecutionRequest (POST /execute; pydantic Optional fields accept null)
    "ExecutionRequest": {
        "type": "object", "required": ["code"],
        "properties": {"code": _STR, "context_id": {"type": "string", "nullable": True},
                       "language": {"type": "string", "nullable": True},
                       "env_vars": {"type": "object", "nullable": True, "additionalProperties": _STR}}},
    # code interpreter: CreateContext (POST /contexts)
    "CreateContext": {"type": "object", "properties": {"cwd": {"type": "string", "nullable": True},
                                                       "language": {"type": "string", "nullable": True}}},
}

# Every path of openapi.yml's `paths`, so that a request on a real but unimplemented endpoint says so.
OPENAPI_PATHS = [
    "/health", "/teams", "/teams/{teamID}/metrics", "/teams/{teamID}/metrics/max", "/sandboxes", "/v2/sandboxes",
    "/sandboxes/metrics", "/sandboxes/{sandboxID}/logs", "/v2/sandboxes/{sandboxID}/logs", "/sandboxes/{sandboxID}",
    "/sandboxes/{sandboxID}/metrics", "/sandboxes/{sandboxID}/pause", "/sandboxes/{sandboxID}/resume",
    "/sandboxes/{sandboxID}/fork", "/sandboxes/{sandboxID}/connect", "/sandboxes/{sandboxID}/timeout",
    "/sandboxes/{sandboxID}/network", "/sandboxes/{sandboxID}/refreshes", "/sandboxes/{sandboxID}/snapshots",
    "/snapshots", "/v3/templates", "/v2/templates", "/templates/{templateID}/files/{hash}", "/templates",
    "/templates/{templateID}", "/templates/{templateID}/builds/{buildID}",
    "/v2/templates/{templateID}/builds/{buildID}", "/v2/templates/{templateID}",
    "/templates/{templateID}/builds/{buildID}/status", "/templates/{templateID}/builds/{buildID}/logs",
    "/templates/tags", "/templates/{templateID}/tags", "/templates/aliases/{alias}", "/nodes", "/nodes/{nodeID}",
    "/admin/teams/{teamID}/sandboxes/kill", "/admin/sandboxes/running-counts", "/admin/teams/{teamID}/builds/cancel",
    "/admin/teams/{teamID}/api-keys", "/admin/teams/{teamID}/api-keys/{apiKeyID}", "/access-tokens",
    "/access-tokens/{accessTokenID}", "/api-keys", "/api-keys/{apiKeyID}", "/volumes", "/volumes/{volumeID}",
    "/secrets", "/secrets/{secretID}",
]

# Query parameters each listing accepts (paths./v2/sandboxes.get.parameters, paths./sandboxes.get.parameters).
V2_LIST_PARAMS = {"metadata", "state", "order", "startedAfter", "template", "nextToken", "limit"}
V1_LIST_PARAMS = {"metadata"}

# Proto messages of envd-process.proto and envd-filesystem.proto as the Connect JSON codec sees them:
# field (proto name) -> (kind, argument). The JSON name is the lowerCamelCase form; protojson accepts both.
PROTO = {
    "process.PTY.Size": {"cols": ("uint32", None), "rows": ("uint32", None)},
    "process.PTY": {"size": ("message", "process.PTY.Size")},
    "process.ProcessConfig": {"cmd": ("string", None), "args": ("repeated", "string"), "envs": ("map", "string"),
                              "cwd": ("string", None)},
    "process.StartRequest": {"process": ("message", "process.ProcessConfig"), "pty": ("message", "process.PTY"),
                             "tag": ("string", None), "stdin": ("bool", None)},
    "process.ProcessSelector": {"pid": ("uint32", None), "tag": ("string", None)},
    "process.ProcessInput": {"stdin": ("bytes", None), "pty": ("bytes", None)},
    "process.SendInputRequest": {"process": ("message", "process.ProcessSelector"),
                                 "input": ("message", "process.ProcessInput")},
    "process.SendSignalRequest": {"process": ("message", "process.ProcessSelector"),
                                  "signal": ("enum", "process.Signal")},
    "process.CloseStdinRequest": {"process": ("message", "process.ProcessSelector")},
    "process.ListRequest": {},
    "filesystem.StatRequest": {"path": ("string", None)},
    "filesystem.MakeDirRequest": {"path": ("string", None)},
    "filesystem.MoveRequest": {"source": ("string", None), "destination": ("string", None)},
    "filesystem.ListDirRequest": {"path": ("string", None), "depth": ("uint32", None)},
    "filesystem.RemoveRequest": {"path": ("string", None)},
}
PROTO_ONEOFS = {"process.ProcessSelector": ("pid", "tag"), "process.ProcessInput": ("stdin", "pty")}
PROTO_ENUMS = {"process.Signal": {"SIGNAL_UNSPECIFIED": 0, "SIGNAL_SIGTERM": 15, "SIGNAL_SIGKILL": 9}}


class Violation(Exception):
    """A request deviates from the spec: answered 400 and recorded."""


class ClientGone(Exception):
    """The client closed the connection, or a fault dropped it."""


def _camel(name):
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _type_name(value):
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__)


def check_schema(value, schema, where):
    """Raises Violation unless value conforms to schema (a SCHEMAS node)."""
    if "$ref" in schema:
        schema = SCHEMAS[schema["$ref"]]
    if value is None:
        if schema.get("nullable"):
            return
        raise Violation(f"{where}: null is not allowed")
    kind = schema.get("type", "object")
    if kind == "string":
        if not isinstance(value, str):
            raise Violation(f"{where}: expected string, got {_type_name(value)}")
        if schema.get("maxLength") is not None and len(value) > schema["maxLength"]:
            raise Violation(f"{where}: longer than {schema['maxLength']}")
        if "enum" in schema and value not in schema["enum"]:
            raise Violation(f"{where}: {value!r} is not one of {schema['enum']}")
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise Violation(f"{where}: expected integer, got {_type_name(value)}")
        if schema.get("format") == "int32" and not -(1 << 31) <= value < (1 << 31):
            raise Violation(f"{where}: {value} does not fit int32")
        if schema.get("minimum") is not None and value < schema["minimum"]:
            raise Violation(f"{where}: {value} is below the minimum {schema['minimum']}")
        if schema.get("maximum") is not None and value > schema["maximum"]:
            raise Violation(f"{where}: {value} is above the maximum {schema['maximum']}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise Violation(f"{where}: expected boolean, got {_type_name(value)}")
    elif kind == "array":
        if not isinstance(value, list):
            raise Violation(f"{where}: expected array, got {_type_name(value)}")
        for i, item in enumerate(value):
            check_schema(item, schema["items"], f"{where}[{i}]")
    elif kind == "object":
        if not isinstance(value, dict):
            raise Violation(f"{where}: expected object, got {_type_name(value)}")
        for name in schema.get("required", []):
            if name not in value:
                raise Violation(f"{where}: required field '{name}' is missing")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in props:
                check_schema(item, props[name], f"{where}.{name}")
            elif extra is True:
                continue
            elif isinstance(extra, dict):
                check_schema(item, extra, f"{where}.{name}")
            else:
                raise Violation(f"{where}: unknown field '{name}'")
    else:
        raise AssertionError(f"schema kind {kind}")


_B64 = re.compile(r"^[A-Za-z0-9+/\-_]*={0,2}$")


def _proto_scalar(kind, arg, value, where):
    if kind == "string":
        if not isinstance(value, str):
            raise Violation(f"{where}: expected string, got {_type_name(value)}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise Violation(f"{where}: expected boolean, got {_type_name(value)}")
        return value
    if kind == "uint32":
        # protojson takes a 32-bit integer as a JSON number or a decimal string.
        if isinstance(value, str) and re.fullmatch(r"[0-9]{1,10}", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << 32):
            raise Violation(f"{where}: expected uint32, got {json.dumps(value)}")
        return value
    if kind == "bytes":
        if not isinstance(value, str) or not _B64.match(value):
            raise Violation(f"{where}: expected base64 bytes, got {_type_name(value)}")
        # protojson takes standard or URL-safe base64, padded or not.
        text = value.rstrip("=").replace("-", "+").replace("_", "/")
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise Violation(f"{where}: invalid base64") from None
    if kind == "enum":
        names = PROTO_ENUMS[arg]
        if isinstance(value, str) and value in names:
            return names[value]
        if isinstance(value, int) and not isinstance(value, bool) and value in names.values():
            return value
        raise Violation(f"{where}: {json.dumps(value)} is not a value of {arg}")
    if kind == "message":
        return proto_decode(value, arg, where)
    raise AssertionError(kind)


def proto_decode(value, message, where):
    """Checks a JSON value against a PROTO message; returns {proto field name: value} for the fields present."""
    if not isinstance(value, dict):
        raise Violation(f"{where}: expected {message} object, got {_type_name(value)}")
    fields = PROTO[message]
    by_json = {}
    for name in fields:
        by_json[name] = name
        by_json[_camel(name)] = name
    out = {}
    for key, item in value.items():
        name = by_json.get(key)
        if name is None:
            raise Violation(f"{where}: unknown field '{key}' for {message}")
        if name in out:
            raise Violation(f"{where}: field '{name}' given twice")
        if item is None:  # protojson: null means the default value
            continue
        kind, arg = fields[name]
        sub = f"{where}.{key}"
        if kind == "repeated":
            if not isinstance(item, list):
                raise Violation(f"{sub}: expected array, got {_type_name(item)}")
            out[name] = [_proto_scalar(arg, None, x, f"{sub}[{i}]") for i, x in enumerate(item)]
        elif kind == "map":
            if not isinstance(item, dict):
                raise Violation(f"{sub}: expected object, got {_type_name(item)}")
            out[name] = {k: _proto_scalar(arg, None, v, f"{sub}.{k}") for k, v in item.items()}
        else:
            out[name] = _proto_scalar(kind, arg, item, sub)
    oneof = PROTO_ONEOFS.get(message)
    if oneof and sum(1 for f in oneof if f in out) > 1:
        raise Violation(f"{where}: more than one of {'/'.join(oneof)} set")
    return out


def parse_json(body):
    if not body:
        raise Violation("empty body where a JSON object is required")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Violation("body is not UTF-8") from None

    def no_constant(name):
        raise ValueError(f"{name} is not JSON")
    try:
        return json.loads(text, parse_constant=no_constant)
    except ValueError as e:
        raise Violation(f"body is not valid JSON ({e})") from None


# ---------------------------------------------------------------------------------------------------------------
# Small helpers

def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text):
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def proto_timestamp(ns):
    """google.protobuf.Timestamp in protojson: RFC 3339 with 0, 3, 6 or 9 fractional digits."""
    secs, nanos = divmod(ns, 1_000_000_000)
    base = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos == 0:
        return base + "Z"
    if nanos % 1_000_000 == 0:
        return f"{base}.{nanos // 1_000_000:03d}Z"
    if nanos % 1000 == 0:
        return f"{base}.{nanos // 1000:06d}Z"
    return f"{base}.{nanos:09d}Z"


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def new_sandbox_id():
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "i" + "".join(secrets.choice(alphabet) for _ in range(20))


def go_file_mode_string(mode):
    """Go's fs.FileMode.String() as envd reports it in EntryInfo.permissions."""
    kind = "d" if stat.S_ISDIR(mode) else "L" if stat.S_ISLNK(mode) else "p" if stat.S_ISFIFO(mode) else \
        "S" if stat.S_ISSOCK(mode) else "-"
    bits = "".join(c if mode & (1 << (8 - i)) else "-" for i, c in enumerate("rwxrwxrwx"))
    return kind + bits


def exit_fields(returncode):
    """envd's EndEvent for a subprocess return code, zero values left out as protojson does."""
    end = {}
    if returncode >= 0:
        if returncode:
            end["exitCode"] = returncode
            end["error"] = f"exit status {returncode}"
        end["exited"] = True
        end["status"] = f"exit status {returncode}"
    else:
        name = GO_SIGNAL_NAMES.get(-returncode, f"signal {-returncode}")
        end["exitCode"] = -1
        end["status"] = f"signal: {name}"
        end["error"] = f"signal: {name}"
    return end


def kill_group(popen, sig=signal.SIGKILL):
    """Signals a child started with start_new_session, and everything it started."""
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def pidfd_for(pid):
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# Sandboxes and what runs in them

# The kernel of each language, given its source on the command line: in the process's view (below) /tmp is the
# sandbox's, and the source tree may be under the host's /tmp.
def _read(name):
    with open(os.path.join(HERE, name)) as f:
        return f.read()


KERNELS = {"python": [sys.executable, "-c", _read("e2b_kernel.py")]}
if NODE:
    KERNELS["javascript"] = [NODE, "-e", _read("e2b_kernel.js")]
LANGUAGES = sorted(set(KERNELS) | {"bash"})

# What a sandbox's processes (envd's, kernels, bash cells) see: its /home and /tmp mounted over the host's in a
# mount namespace of their own, so that absolute paths agree with what /files wrote. unshare(1) execs in place:
# the pid, exit status and signals are the command's own.
VIEW_SCRIPT = 'mount --bind "$1" /home && mount --bind "$2" /tmp && cd "$3" && shift 3 && exec "$@"'
VIEW_PREFIXES = (["unshare", "--mount", "--propagation", "private"],
                 ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"])


def probe_view(workdir):
    """The unshare prefix that gives processes the sandbox's view here, or None (then paths are only mapped)."""
    home, tmp = os.path.join(workdir, "probe-home"), os.path.join(workdir, "probe-tmp")
    os.makedirs(home, exist_ok=True)
    os.makedirs(tmp, exist_ok=True)
    try:
        for prefix in VIEW_PREFIXES:
            try:
                r = subprocess.run(prefix + ["/bin/sh", "-c", VIEW_SCRIPT, "sh", home, tmp, "/tmp", "/bin/true"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if r.returncode == 0:
                return prefix
        return None
    finally:
        os.rmdir(home)
        os.rmdir(tmp)


class SpawnError(Exception):
    """A process of a sandbox cannot start (missing command or working directory)."""

class KernelProc:
    """The server's side of one python kernel."""

    def __init__(self, popen):
        self.popen, self.buf = popen, b""

    def alive(self):
        return self.popen.poll() is None

    def kill(self):
        kill_group(self.popen)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.popen.stdin, self.popen.stdout):
            try:
                f.close()
            except OSError:
                pass

    def read_events(self, timeout):
        """Events available within timeout: (list of dicts, eof). A line that is not an event (a subprocess of
        the cell wrote to the kernel's stdout) is output of the cell."""
        events = []
        fd = self.popen.stdout.fileno()
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable:
            return events, False
        data = os.read(fd, 65536)
        if not data:
            return events, True
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if line:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                    event = {"type": "stdout", "text": line.decode("utf-8", "replace") + "\n",
                             "timestamp": now_iso()}
                events.append(event)
        return events, False


class Context:
    def __init__(self, language, cwd):
        self.id = str(uuid.uuid4())
        self.language, self.cwd = language, cwd
        self.lock = threading.Lock()  # one cell at a time, as one Jupyter kernel runs them
        self.kernel = None
        self.bash = None  # the running bash cell
        self.count = 0  # bash cells

    def describe(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def stop(self):
        """Ends a running cell at once, as a kernel restart would."""
        kernel, bash = self.kernel, self.bash
        if kernel is not None:
            kernel.kill()
        if bash is not None:
            kill_group(bash)

    def reset(self):
        """Clears the context's state; the caller holds self.lock."""
        self.stop()
        self.kernel = None
        self.count = 0


class Proc:
    """A process started by envd's Process/Start."""

    def __init__(self, popen, config, tag, stdin_open):
        self.popen, self.config, self.tag = popen, config, tag
        self.stdin_lock = threading.Lock()
        self.stdin_open = stdin_open


class Sandbox:
    def __init__(self, app, template_id, metadata, env_vars, timeout, secure):
        self.app = app
        self.id = new_sandbox_id()
        self.template_id = template_id
        self.metadata = dict(metadata)
        self.env_vars = dict(env_vars)
        self.timeout = timeout
        self.started_at = time.time()
        self.end_at = self.started_at + timeout
        self.secure = secure
        self.token = secrets.token_hex(16) if secure else None
        self.root = tempfile.mkdtemp(prefix=f"e2bsrv-{self.id}-", dir=app.workdir)
        os.makedirs(os.path.join(self.root, SANDBOX_HOME.lstrip("/")))
        os.makedirs(os.path.join(self.root, "tmp"))
        self.lock = threading.Lock()
        self.contexts = {}
        self.default_contexts = {}  # language -> context id, created lazily
        self.procs = {}  # pid -> Proc
        self.requests = 0
        self.last_activity = None
        self.dead = False
        self.domain = app.args.domain

    def sandbox_json(self):
        # components/schemas/Sandbox
        out = {"templateID": self.template_id, "sandboxID": self.id, "alias": self.template_id,
               "clientID": CLIENT_ID, "envdVersion": ENVD_VERSION}
        if self.token is not None:
            out["envdAccessToken"] = self.token
        out["trafficAccessToken"] = None
        out["domain"] = self.domain
        return out

    def listed_json(self):
        # components/schemas/ListedSandbox
        return {"templateID": self.template_id, "alias": self.template_id, "sandboxID": self.id,
                "clientID": CLIENT_ID, "startedAt": rfc3339(self.started_at), "endAt": rfc3339(self.end_at),
                "cpuCount": CPU_COUNT, "memoryMB": MEMORY_MB, "diskSizeMB": DISK_SIZE_MB,
                "metadata": dict(self.metadata), "state": "running", "envdVersion": ENVD_VERSION}

    def detail_json(self):
        # components/schemas/SandboxDetail
        out = self.listed_json()
        if self.token is not None:
            out["envdAccessToken"] = self.token
        out["domain"] = self.domain
        return out

    def map_path(self, path, base=SANDBOX_HOME):
        """A sandbox path to the host path under root; '..' and symlinks cannot leave the root."""
        if "\0" in path:
            raise PermissionError(f"path {path!r} contains a NUL byte")
        if not path.startswith("/"):
            path = base.rstrip("/") + "/" + path
        norm = os.path.normpath("/" + path.lstrip("/"))
        if norm.startswith("//"):
            norm = "/" + norm.lstrip("/")
        host = os.path.join(self.root, norm.lstrip("/")) if norm != "/" else self.root
        real_root, real = os.path.realpath(self.root), os.path.realpath(host)
        if real != real_root and not real.startswith(real_root + "/"):
            raise PermissionError(f"path {path!r} leaves the sandbox")
        return host

    def sandbox_path(self, host):
        rel = os.path.relpath(host, self.root)
        return "/" if rel == "." else "/" + rel

    def env(self, extra=None):
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
               "HOME": SANDBOX_HOME if self.app.view else self.map_path(SANDBOX_HOME),
               "USER": "user", "LOGNAME": "user", "LANG": "C.UTF-8"}
        env.update(self.env_vars)
        env.update(extra or {})
        return env

    def spawn(self, argv, cwd, env, **popen_args):
        """Starts argv in the sandbox (in its own session); SpawnError when it cannot, as envd says it."""
        try:
            host = self.map_path(cwd)
        except PermissionError as e:
            raise SpawnError(str(e)) from None
        inside = self.sandbox_path(host)
        if self.app.view and inside.split("/")[1] not in ("home", "tmp"):
            host = inside  # outside the sandbox's two mounts the process sees the host
        if not os.path.isdir(host):
            raise SpawnError(f"cwd '{cwd}' does not exist")
        cmd = argv[0]
        if "/" in cmd:
            seen = cmd if cmd.startswith("/") else os.path.join(inside if self.app.view else host, cmd)
            try:
                path = self.map_path(seen) if self.app.view and seen.split("/")[1] in ("home", "tmp") else seen
            except PermissionError:
                path = None
            found = path is not None and os.path.isfile(path) and os.access(path, os.X_OK)
        else:
            found = shutil.which(cmd, path=env.get("PATH")) is not None
        if not found:
            # envd's words (Go's exec) for a command that cannot start
            why = "no such file or directory" if "/" in cmd else "executable file not found in $PATH"
            raise SpawnError(f"error starting process '{' '.join(argv)}': exec: \"{cmd}\": {why}")
        if self.app.view:
            argv = self.app.view + ["/bin/sh", "-c", VIEW_SCRIPT, "sh", os.path.join(self.root, "home"),
                                    os.path.join(self.root, "tmp"), inside, *argv]
        try:
            return subprocess.Popen(argv, cwd=host, env=env, start_new_session=True, **popen_args)
        except OSError as e:
            raise SpawnError(f"error starting process '{cmd}': {e.strerror or e}") from None

    def destroy(self):
        with self.lock:
            self.dead = True
            contexts, procs = list(self.contexts.values()), list(self.procs.values())
            self.contexts.clear()
            self.procs.clear()
        for ctx in contexts:
            ctx.stop()
        for proc in procs:
            kill_group(proc.popen)
        shutil.rmtree(self.root, ignore_errors=True)


class FaultRule:
    FIELDS = {"method", "path", "port", "status", "retry_after", "latency_ms", "drop", "after_lines", "count", "body"}
    DROPS = ("before_response", "after_processing", "mid_stream")

    def __init__(self, spec):
        if not isinstance(spec, dict):
            raise ValueError("a rule is a JSON object")
        unknown = set(spec) - self.FIELDS
        if unknown:
            raise ValueError(f"unknown rule field(s): {', '.join(sorted(unknown))}")
        self.method = spec.get("method")
        self.path = spec.get("path", "/")
        self.port = spec.get("port")
        self.status = spec.get("status")
        self.retry_after = spec.get("retry_after")
        self.latency_ms = spec.get("latency_ms", 0)
        self.drop = spec.get("drop")
        self.after_lines = spec.get("after_lines", 1)
        self.count = spec.get("count", 1)
        self.body = spec.get("body")
        if self.method is not None and not isinstance(self.method, str):
            raise ValueError("method: a string")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError("path: a string starting with /")
        if self.port is not None and self.port not in (CODE_INTERPRETER_PORT, ENVD_PORT):
            raise ValueError(f"port: {CODE_INTERPRETER_PORT} or {ENVD_PORT}")
        if self.status is not None and (not isinstance(self.status, int) or not 200 <= self.status <= 599):
            raise ValueError("status: an integer 200..599")
        for name in ("retry_after", "latency_ms", "after_lines"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ValueError(f"{name}: a non-negative integer")
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count == 0 or self.count < -1:
            raise ValueError("count: a positive integer, or -1 for forever")
        if self.drop is not None and self.drop not in self.DROPS:
            raise ValueError(f"drop: one of {', '.join(self.DROPS)}")
        if self.drop is None and self.status is None and not self.latency_ms:
            raise ValueError("a rule needs status, drop or latency_ms")
        if self.drop is not None and self.status is not None:
            raise ValueError("drop and status exclude each other")
        if self.body is not None and not isinstance(self.body, (dict, list)):
            raise ValueError("body: a JSON object")
        self.spec = dict(spec)

    def matches(self, method, path, port):
        return (self.count != 0 and (self.method is None or self.method.upper() == method)
                and path.startswith(self.path) and (self.port is None or self.port == port))

    def describe(self):
        return dict(self.spec, count=self.count)


class App:
    """Everything the server knows, behind one lock."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.sandboxes = {}
        self.counters = {"created": 0, "planted": 0, "deleted": 0, "expired": 0, "vanished": 0,
                         "cells_interrupted": 0, "process_disconnect_kills": 0}
        self.requests = {}
        self.violations = []
        self.violations_dropped = 0
        self.internal_errors = []
        self.faults = []
        self.templates = set(args.templates.split(",")) if args.templates else None
        self.workdir = tempfile.mkdtemp(prefix=f"e2bsrv-{os.getpid()}-")  # the pid tells whose a leftover is
        self.view = probe_view(self.workdir)
        self.stop = threading.Event()
        # upstream mode: what this proxy saw of the upstream's sandboxes
        self.known = {}  # sandbox id -> {"token", "domain", "templateID"}
        self.gone = set()

    def violation(self, text):
        with self.lock:
            if len(self.violations) < MAX_VIOLATIONS:
                self.violations.append(text)
            else:
                self.violations_dropped += 1
        print(f"e2b_server: contract violation: {text}", file=sys.stderr, flush=True)

    def internal_error(self, text):
        with self.lock:
            if len(self.internal_errors) < MAX_VIOLATIONS:
                self.internal_errors.append(text)
        print(f"e2b_server: internal error: {text}", file=sys.stderr, flush=True)

    def count_request(self, key):
        with self.lock:
            if key not in self.requests and len(self.requests) >= MAX_REQUEST_KEYS:
                key = "(other)"
            self.requests[key] = self.requests.get(key, 0) + 1

    def take_fault(self, method, path, port):
        with self.lock:
            for rule in self.faults:
                if rule.matches(method, path, port):
                    if rule.count > 0:
                        rule.count -= 1
                    return rule
        return None

    def add(self, sb, counter):
        with self.lock:
            self.sandboxes[sb.id] = sb
            self.counters[counter] += 1

    def lookup(self, sid):
        # E2B accepts "sandboxID-clientID" too and uses the part before the dash.
        sid = sid.split("-", 1)[0]
        with self.lock:
            sb = self.sandboxes.get(sid)
        if sb is not None and sb.end_at <= time.time():
            self.remove(sb.id, "expired")
            return None
        return sb

    def remove(self, sid, counter):
        with self.lock:
            sb = self.sandboxes.pop(sid, None)
            if sb is not None:
                self.counters[counter] += 1
        if sb is not None:
            sb.destroy()
        return sb

    def reaper(self):
        while not self.stop.wait(0.05):
            now = time.time()
            with self.lock:
                expired = [sb.id for sb in self.sandboxes.values() if sb.end_at <= now]
            for sid in expired:
                self.remove(sid, "expired")

    def create(self, template_id, metadata, env_vars, timeout, secure, counter):
        sb = Sandbox(self, template_id, metadata, env_vars, timeout, secure)
        self.add(sb, counter)
        return sb

    def shutdown(self):
        self.stop.set()
        with self.lock:
            ids = list(self.sandboxes)
        for sid in ids:
            with self.lock:
                sb = self.sandboxes.pop(sid, None)
            if sb is not None:
                sb.destroy()
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# HTTP

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "content-length", "host"}


class Stream:
    """A chunked response whose units (an NDJSON line, a Connect envelope) each go out as their own chunk."""

    def __init__(self, handler, content_type):
        self.handler = handler
        rule = handler.fault
        self.drop_after = rule.after_lines if rule is not None and rule.drop == "mid_stream" else None
        self.units = 0
        if handler.drop_response:
            handler.drop_connection()
            raise ClientGone()
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        if self.drop_after == 0:
            handler.drop_connection()
            raise ClientGone()

    def unit(self, data):
        try:
            self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError:
            raise ClientGone() from None
        self.units += 1
        if self.drop_after is not None and self.units >= self.drop_after:
            self.handler.drop_connection()
            raise ClientGone()

    def finish(self):
        try:
            self.handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            raise ClientGone() from None


def envelope(obj, flags=0):
    data = json.dumps(obj, separators=(",", ":")).encode()
    return bytes([flags]) + len(data).to_bytes(4, "big") + data


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "e2b-contract-server/1"
    timeout = IDLE_CONNECTION_S
    # per request, set again by dispatch(); here for the answers http.server gives before dispatch()
    fault = None
    drop_response = False
    peer_talking = False
    response_started = False

    # --- plumbing ------------------------------------------------------------------------------------------

    def setup(self):
        super().setup()
        # Headers and body, or stream chunks, go out in separate writes: without this each small write after the
        # first waits for the client's delayed ACK (40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def app(self):
        return self.server.app

    def log_message(self, fmt, *args):
        if self.app.args.verbose:
            sys.stderr.write("e2b_server: %s %s\n" % (self.address_string(), fmt % args))

    def send_error(self, code, message=None, explain=None):
        # http.server calls this for requests it cannot parse and for unknown methods.
        self.app.violation(f"malformed HTTP request ({code}): {message or explain or ''} "
                           f"[{(self.requestline or '')[:200]!r}]")
        self.close_connection = True
        try:
            self.send_json(code, {"code": code, "message": f"contract violation: {message or 'malformed request'}"})
        except OSError:
            pass

    def send_response(self, code, message=None):
        self.response_started = True
        super().send_response(code, message)

    def drop_connection(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def client_gone(self):
        """True once the peer has closed its end; never blocks."""
        if self.peer_talking:
            return False
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            if self.connection.recv(1, socket.MSG_PEEK) == b"":
                return True
            self.peer_talking = True  # a pipelined request: nothing to learn from the socket any more
            return False
        except (OSError, ValueError):
            return True

    def client_fd(self):
        return None if self.peer_talking else self.connection.fileno()

    def _send_raw(self, status, body, content_type, headers):
        if self.drop_response:
            self.drop_connection()
            return
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status in (204, 304) or status < 200:
            body = b""
        else:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.fault is not None and self.fault.drop == "mid_stream":
            self.wfile.write(body[: len(body) // 2])
            self.drop_connection()
            return
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, obj, headers=()):
        self._send_raw(status, json.dumps(obj).encode(), "application/json", headers)

    def send_empty(self, status=204):
        self._send_raw(status, b"", "", ())

    def send_bytes(self, status, body, content_type):
        self._send_raw(status, body, content_type, ())

    def error_json(self, status, message):
        self.send_json(status, {"code": status, "message": message})

    def connect_error(self, code, message):
        self.send_json(CONNECT_STATUS[code], {"code": code, "message": message})

    def read_body(self, limit):
        """The request body, de-chunked; raises Violation for framing errors (the connection then closes)."""
        te = self.headers.get("Transfer-Encoding")
        if te is not None:
            if te.strip().lower() != "chunked":
                self.close_connection = True
                raise Violation(f"unsupported Transfer-Encoding {te!r}")
            out = b""
            while True:
                line = self.rfile.readline(1024)
                if not line.endswith(b"\n"):
                    self.close_connection = True
                    raise ClientGone() if not line else Violation("bad chunk size line")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise Violation("bad chunk size line") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return out
                if len(out) + size > limit:
                    self.close_connection = True
                    raise Violation(f"body larger than {limit} bytes")
                chunk = self.rfile.read(size + 2)
                if len(chunk) < size + 2:
                    self.close_connection = True
                    raise ClientGone()
                out += chunk[:size]
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        if not cl.strip().isdigit():
            self.close_connection = True
            raise Violation(f"bad Content-Length {cl!r}")
        n = int(cl)
        if n > limit:
            self.close_connection = True
            raise Violation(f"body of {n} bytes is larger than {limit}")
        body = self.rfile.read(n)
        if len(body) < n:
            self.close_connection = True
            raise ClientGone()
        return body

    def require_json_type(self):
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise Violation(f"Content-Type must be application/json, got {ctype or 'none'!r}")

    # --- dispatch ------------------------------------------------------------------------------------------

    def do_GET(self):
        self.dispatch()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def dispatch(self):
        self.fault = None
        self.drop_response = False
        self.peer_talking = False
        self.response_started = False
        url = urllib.parse.urlsplit(self.path)
        self.url_path, self.query = url.path, url.query
        try:
            if self.url_path.startswith("/_test/"):
                self.test_control()
                return
            target = self.sandbox_target()
            if target is not None:
                self.sandbox_request(*target)
            else:
                self.control_request()
        except Violation as v:
            self.app.violation(f"{self.command} {self.url_path}: {v}")
            try:
                self.send_json(400, {"code": 400, "message": f"contract violation: {v}"})
            except OSError:
                self.close_connection = True
        except ClientGone:
            self.close_connection = True
        except (ConnectionError, TimeoutError):  # the client left, or stalled past the idle timeout
            self.close_connection = True
        except Exception:
            self.app.internal_error(f"{self.command} {self.path}: {traceback.format_exc()}")
            self.close_connection = True
            try:
                self.send_json(500, {"code": 500, "message": "internal error of the contract server"})
            except OSError:
                pass

    def sandbox_target(self):
        """(sandbox id, port) for in-sandbox traffic: the E2B_SANDBOX_URL headers or a {port}-{id}.{domain} host."""
        sid = self.headers.get("E2b-Sandbox-Id")
        if sid is not None:
            port = self.headers.get("E2b-Sandbox-Port", "")
            if not port.isdigit():
                raise Violation(f"E2b-Sandbox-Port {port!r} is not a port number")
            return sid, int(port)
        m = re.match(r"^(\d+)-([A-Za-z0-9]+)\.", self.headers.get("Host", ""))
        if m:
            return m.group(2), int(m.group(1))
        return None

    def apply_fault(self, port=None):
        """Delays or fails the request as a matching /_test/faults rule says; True when the request is answered."""
        rule = self.app.take_fault(self.command, self.url_path, port)
        if rule is None:
            return False
        if rule.latency_ms:
            time.sleep(rule.latency_ms / 1000)
        self.fault = rule
        if rule.drop == "before_response":
            self.drop_connection()
            return True
        if rule.drop == "after_processing":
            self.drop_response = True
        if rule.status is not None:
            headers = [("Retry-After", str(rule.retry_after))] if rule.retry_after is not None else []
            body = rule.body if rule.body is not None else {"code": rule.status,
                                                           "message": f"injected fault: status {rule.status}"}
            self.send_json(rule.status, body, headers)
            return True
        return False

    # --- control plane ---------------------------------------------------------------------------------------

    CONTROL_ROUTES = [
        ("POST", re.compile(r"^/sandboxes$"), "POST /sandboxes", "create_sandbox"),
        ("GET", re.compile(r"^/sandboxes$"), "GET /sandboxes", "list_v1"),
        ("GET", re.compile(r"^/v2/sandboxes$"), "GET /v2/sandboxes", "list_v2"),
        ("GET", re.compile(r"^/sandboxes/([^/]+)$"), "GET /sandboxes/{id}", "get_sandbox"),
        ("DELETE", re.compile(r"^/sandboxes/([^/]+)$"), "DELETE /sandboxes/{id}", "delete_sandbox"),
        ("POST", re.compile(r"^/sandboxes/([^/]+)/timeout$"), "POST /sandboxes/{id}/timeout", "set_timeout"),
        ("POST", re.compile(r"^/sandboxes/([^/]+)/refreshes$"), "POST /sandboxes/{id}/refreshes", "refresh"),
        ("POST", re.compile(r"^/sandboxes/([^/]+)/connect$"), "POST /sandboxes/{id}/connect", "connect_sandbox"),
        ("GET", re.compile(r"^/health$"), "GET /health", "health"),
    ]
    OPENAPI_PATTERNS = [re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$") for p in OPENAPI_PATHS]

    def control_request(self):
        route = None
        path_known = False
        for method, pattern, key, name in self.CONTROL_ROUTES:
            m = pattern.match(self.url_path)
            if m:
                path_known = True
                if method == self.command:
                    route = (key, name, m.groups())
                    break
        if route is None:
            self.read_body(MAX_JSON_BODY)
            self.app.count_request(f"{self.command} (unrouted)")
            if path_known:
                raise Violation("method not allowed on this path by openapi.yml")
            if any(p.match(self.url_path) for p in self.OPENAPI_PATTERNS):
                raise Violation("endpoint of openapi.yml that this contract server does not support "
                                "(extend tests/e2b/e2b_server.py if the backend needs it)")
            raise Violation("no such path in openapi.yml")
        key, name, groups = route
        self.app.count_request(key)
        body = self.read_body(MAX_JSON_BODY)
        if name != "health":
            api_key = self.headers.get("X-API-Key")
            if api_key != self.app.args.api_key:
                self.app.violation(f"{self.command} {self.url_path}: "
                                   f"{'missing' if api_key is None else 'wrong'} X-API-Key")
                self.send_json(401, {"code": 401, "message": "Invalid API key, it must start with 'e2b_'"})
                return
        getattr(self, "c_" + name)(body, *groups)

    def json_body(self, body, schema, optional=False):
        if optional and not body:
            return {}
        self.require_json_type()
        obj = parse_json(body)
        check_schema(obj, SCHEMAS[schema], schema)
        return obj

    def query_params(self, allowed):
        try:
            pairs = urllib.parse.parse_qsl(self.query, keep_blank_values=True, strict_parsing=bool(self.query))
        except ValueError as e:
            raise Violation(f"malformed query string ({e})") from None
        params = {}
        for k, v in pairs:
            if k not in allowed:
                raise Violation(f"unknown query parameter {k!r}")
            if k in params:
                raise Violation(f"query parameter {k!r} given twice")
            params[k] = v
        return params

    def no_query(self):
        if self.query:
            raise Violation("no query parameters are defined for this endpoint")

    def c_health(self, body):
        if self.apply_fault():
            return
        self.send_json(200, {"message": "Health check successful"})

    def c_create_sandbox(self, body):
        self.no_query()
        req = self.json_body(body, "NewSandbox")
        if self.upstream_forward(body):
            return
        if self.apply_fault():
            return
        template = req["templateID"]
        if self.app.templates is not None and template not in self.app.templates:
            self.error_json(404, f"template '{template}' not found")
            return
        with self.app.lock:
            live = len(self.app.sandboxes)
        if self.app.args.max_sandboxes and live >= self.app.args.max_sandboxes:
            self.error_json(429, f"You have reached the maximum number of concurrent E2B sandboxes "
                                 f"({self.app.args.max_sandboxes}). If you need more, please contact us")
            return
        sb = self.app.create(template, req.get("metadata") or {}, req.get("envVars") or {},
                             req.get("timeout", DEFAULT_TIMEOUT_S), req.get("secure", True) is not False,
                             "created")
        self.send_json(201, sb.sandbox_json())

    def listing(self, params, paged):
        metadata = {}
        if "metadata" in params:
            raw = params["metadata"]
            try:
                pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw))
            except ValueError:
                raise Violation(f"metadata filter {raw!r} is not 'k=v&k2=v2' with URL-encoded keys and values") \
                    from None
            metadata = dict(pairs)
        states = {"running", "paused"}
        if "state" in params:
            states = set(params["state"].split(","))
            bad = states - {"running", "paused"}
            if bad:
                raise Violation(f"state {sorted(bad)} is not one of running, paused")
        order = params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise Violation(f"order {order!r} is not asc or desc")
        started_after = None
        if "startedAfter" in params:
            started_after = parse_rfc3339(params["startedAfter"])
            if started_after is None:
                raise Violation(f"startedAfter {params['startedAfter']!r} is not a date-time")
        limit = 100
        if "limit" in params:
            if not re.fullmatch(r"[0-9]{1,9}", params["limit"]) or not 1 <= int(params["limit"]) <= 100:
                raise Violation(f"limit {params['limit']!r} is not an integer in 1..100")
            limit = int(params["limit"])
        after = None
        if "nextToken" in params:
            try:
                after = json.loads(base64.urlsafe_b64decode(params["nextToken"].encode()))
                after = (float(after[0]), str(after[1]))
            except (ValueError, TypeError, IndexError, binascii.Error):
                raise Violation(f"nextToken {params['nextToken']!r} is not a token this server issued") from None
        now = time.time()
        with self.app.lock:
            boxes = [sb for sb in self.app.sandboxes.values() if sb.end_at > now]
        boxes = [sb for sb in boxes
                 if "running" in states and all(sb.metadata.get(k) == v for k, v in metadata.items())
                 and (started_after is None or sb.started_at >= started_after)
                 and params.get("template") in (None, sb.template_id)]
        desc = order == "desc"
        boxes.sort(key=lambda sb: (sb.started_at, sb.id), reverse=desc)
        total = len(boxes)
        if after is not None:
            boxes = [sb for sb in boxes if ((sb.started_at, sb.id) < after if desc else (sb.started_at, sb.id) > after)]
        headers = []
        if paged:
            if len(boxes) > limit:
                last = boxes[limit - 1]
                token = base64.urlsafe_b64encode(json.dumps([last.started_at, last.id]).encode()).decode()
                headers.append(("X-Next-Token", token))
            boxes = boxes[:limit]
            if "running" in states:
                headers.append(("X-Total-Running", str(total)))
        return [sb.listed_json() for sb in boxes], headers

    def c_list_v2(self, body):
        params = self.query_params(V2_LIST_PARAMS)
        result = self.listing(params, True)
        if self.upstream_forward(body):
            return
        if self.apply_fault():
            return
        items, headers = result
        self.send_json(200, items, headers)

    def c_list_v1(self, body):
        params = self.query_params(V1_LIST_PARAMS)
        result = self.listing(params, False)
        if self.upstream_forward(body):
            return
        if self.apply_fault():
            return
        self.send_json(200, result[0])

    def c_get_sandbox(self, body, sid):
        self.no_query()
        if self.upstream_forward(body):
            return
        if self.apply_fault():
            return
        sb = self.app.lookup(sid)
        if sb is None:
            self.error_json(404, f"sandbox \"{sid}\" doesn't exist or you don't have access to it")
            return
        self.send_json(200, sb.detail_json())

    def c_delete_sandbox(self, body, sid):
        self.no_query()
        if self.upstream_forward(body):
            return
        if self.apply_fault():
            return
        if self.app.lookup(sid) is None or self.app.remove(sid.split("-", 1)[0], "deleted") is None:
            self.error_json(404, f"sandbox \"{sid}\" doesn't exist or you don't have access to it")
            return
        self.send_empty(204)

    def c_set_timeout(self, body, sid):
        self.no_query()
        req = self.json_body(body, "SandboxTimeoutRequest")
        if self.upstream_forward(body):
            return
        if self.apply_fault():
            return
        sb = self.app.lookup(sid)
        if sb is None:
            self.error_json(404, f"sandbox \"{sid}\" doesn't exist or you don't have access to it")
            return
        with self.app.lock:
            sb.timeout = req["timeout"]
            sb.end_at = time.time() + req["timeout"]
        self.send_empty(204)

    def c_refresh(self, body, sid):
        self.no_query()
        req = self.json_body(body, "SandboxRefreshRequest", optional=True)
        if self.upstream_forward(body):
            return
        if self.apply_fault():
            return
        sb = self.app.lookup(sid)
        if sb is None:
            self.error_json(404, f"sandbox \"{sid}\" doesn't exist or you don't have access to it")
            return
        duration = req.get("duration", DEFAULT_TIMEOUT_S)  # E2B's default when none is given
        with self.app.lock:
            sb.end_at = max(sb.end_at, time.time() + duration)
        self.send_empty(204)

    def c_connect_sandbox(self, body, sid):
        self.no_query()
        req = self.json_body(body, "ConnectSandbox")
        if self.upstream_forward(body):
            return
        if self.apply_fault():
            return
        sb = self.app.lookup(sid)
        if sb is None:
            self.error_json(404, f"sandbox \"{sid}\" doesn't exist or you don't have access to it")
            return
        with self.app.lock:
            sb.timeout = req["timeout"]
            sb.end_at = time.time() + req["timeout"]
        self.send_json(200, sb.sandbox_json())

    # --- in-sandbox traffic ----------------------------------------------------------------------------------

    SANDBOX_ROUTES = {
        CODE_INTERPRETER_PORT: [
            ("GET", re.compile(r"^/health$"), "GET /health", "ci_health"),
            ("POST", re.compile(r"^/execute$"), "POST /execute", "execute"),
            ("POST", re.compile(r"^/contexts$"), "POST /contexts", "context_create"),
            ("GET", re.compile(r"^/contexts$"), "GET /contexts", "context_list"),
            ("POST", re.compile(r"^/contexts/([^/]+)/restart$"), "POST /contexts/{id}/restart", "context_restart"),
            ("DELETE", re.compile(r"^/contexts/([^/]+)$"), "DELETE /contexts/{id}", "context_delete"),
        ],
        ENVD_PORT: [
            ("GET", re.compile(r"^/health$"), "GET /health", "envd_health"),
            ("POST", re.compile(r"^/process\.Process/Start$"), "POST /process.Process/Start", "proc_start"),
            ("POST", re.compile(r"^/process\.Process/SendInput$"), "POST /process.Process/SendInput", "proc_input"),
            ("POST", re.compile(r"^/process\.Process/CloseStdin$"), "POST /process.Process/CloseStdin",
             "proc_close_stdin"),
            ("POST", re.compile(r"^/process\.Process/SendSignal$"), "POST /process.Process/SendSignal",
             "proc_signal"),
            ("POST", re.compile(r"^/process\.Process/List$"), "POST /process.Process/List", "proc_list"),
            ("GET", re.compile(r"^/files$"), "GET /files", "file_get"),
            ("POST", re.compile(r"^/files$"), "POST /files", "file_put"),
            ("POST", re.compile(r"^/filesystem\.Filesystem/ListDir$"), "POST /filesystem.Filesystem/ListDir",
             "fs_list"),
            ("POST", re.compile(r"^/filesystem\.Filesystem/Stat$"), "POST /filesystem.Filesystem/Stat", "fs_stat"),
            ("POST", re.compile(r"^/filesystem\.Filesystem/MakeDir$"), "POST /filesystem.Filesystem/MakeDir",
             "fs_mkdir"),
            ("POST", re.compile(r"^/filesystem\.Filesystem/Move$"), "POST /filesystem.Filesystem/Move", "fs_move"),
            ("POST", re.compile(r"^/filesystem\.Filesystem/Remove$"), "POST /filesystem.Filesystem/Remove",
             "fs_remove"),
        ],
    }
    # Services of the two .proto files this server does not implement.
    ENVD_UNSUPPORTED = re.compile(r"^/(process\.Process/(Connect|Update|StreamInput)|filesystem\.Filesystem/"
                                  r"(WatchDir|CreateWatcher|GetWatcherEvents|RemoveWatcher))$")

    def sandbox_request(self, sid, port):
        if port not in self.SANDBOX_ROUTES:
            self.read_body(MAX_FILE_BODY)
            raise Violation(f"sandbox port {port} is neither the code interpreter ({CODE_INTERPRETER_PORT}) "
                            f"nor envd ({ENVD_PORT})")
        route = None
        path_known = False
        for method, pattern, key, name in self.SANDBOX_ROUTES[port]:
            m = pattern.match(self.url_path)
            if m:
                path_known = True
                if method == self.command:
                    route = (key, name, m.groups())
                    break
        if route is None:
            self.read_body(MAX_FILE_BODY)
            self.app.count_request(f"{self.command} (unrouted sandbox {port})")
            if path_known:
                raise Violation(f"method not allowed on this path of port {port}")
            if port == ENVD_PORT and self.ENVD_UNSUPPORTED.match(self.url_path):
                raise Violation("envd RPC that this contract server does not support "
                                "(extend tests/e2b/e2b_server.py if the backend needs it)")
            raise Violation(f"no such path on port {port}")
        key, name, groups = route
        self.app.count_request(key)
        body = self.read_body(MAX_FILE_BODY if name == "file_put" else MAX_JSON_BODY)
        if self.app.args.upstream:
            self.upstream_sandbox(sid, port, body)
            return
        sb = self.app.lookup(sid)
        if sb is not None:
            with self.app.lock:
                sb.requests += 1
                sb.last_activity = time.time()
            if sb.token is not None:
                token = self.headers.get("X-Access-Token")
                if token != sb.token:
                    self.app.violation(f"{self.command} {self.url_path} in {sb.id}: "
                                       f"{'missing' if token is None else 'wrong'} X-Access-Token")
                    if name.startswith(("proc_", "fs_")):
                        self.connect_error("unauthenticated", "invalid access token")
                    else:
                        self.error_json(401, "invalid access token")
                    return
        try:
            getattr(self, "s_" + name)(sb, sid, port, body, *groups)
        except (ConnectionError, TimeoutError):
            raise
        except OSError as e:
            # The sandbox's file system refused (a file where a directory should be, a full disk): an error
            # answer, as envd gives one, in the sandbox's own paths.
            if self.response_started:
                raise ClientGone() from None
            text = str(e).replace(sb.root, "") if sb is not None else str(e)
            if name.startswith(("proc_", "fs_")):
                self.connect_error("internal", text)
            else:
                self.error_json(500, text)

    def sandbox_prelude(self, sb, sid, port):
        """Faults, then the proxy's 404 for a sandbox that is gone; True when the request is answered."""
        if self.apply_fault(port):
            return True
        if sb is None or sb.dead:
            self.error_json(404, "sandbox not found")
            return True
        return False

    # code interpreter

    def s_ci_health(self, sb, sid, port, body):
        self.no_query()
        if self.sandbox_prelude(sb, sid, port):
            return
        self.send_json(200, "OK")

    @staticmethod
    def normalize_language(language):
        language = (language or "python").strip().lower()
        return {"js": "javascript", "ts": "typescript"}.get(language, language)

    def ensure_context(self, sb, language, cwd):
        """Creates a context; returns it or an error message."""
        if language not in LANGUAGES:
            return None, f"language {language!r} is not supported by the contract server ({', '.join(LANGUAGES)})"
        ctx = Context(language, cwd)
        try:
            host = sb.map_path(cwd)
        except PermissionError as e:
            return None, str(e)
        inside = sb.sandbox_path(host)
        if sb.app.view and inside.split("/")[1] not in ("home", "tmp"):
            host = inside
        if not os.path.isdir(host):
            return None, "Failed to set working directory"
        with sb.lock:
            sb.contexts[ctx.id] = ctx
        return ctx, None

    def s_context_create(self, sb, sid, port, body):
        self.no_query()
        req = self.json_body(body, "CreateContext")
        if self.sandbox_prelude(sb, sid, port):
            return
        ctx, err = self.ensure_context(sb, self.normalize_language(req.get("language")),
                                       req.get("cwd") or SANDBOX_HOME)
        if ctx is None:
            self.error_json(400 if "language" in err else 500, err)
            return
        self.send_json(200, ctx.describe())

    def s_context_list(self, sb, sid, port, body):
        self.no_query()
        if self.sandbox_prelude(sb, sid, port):
            return
        with sb.lock:
            items = [c.describe() for c in sb.contexts.values()]
        self.send_json(200, items)

    def context_or_404(self, sb, cid):
        with sb.lock:
            ctx = sb.contexts.get(cid)
        if ctx is None:
            self.error_json(404, f"Context {cid} not found")
        return ctx

    def s_context_restart(self, sb, sid, port, body, cid):
        self.no_query()
        if body:
            self.json_body(body, "CreateContext")  # the SDK sends no body; an empty object is harmless
        if self.sandbox_prelude(sb, sid, port):
            return
        ctx = self.context_or_404(sb, cid)
        if ctx is None:
            return
        ctx.stop()
        with ctx.lock:
            ctx.reset()
        self.send_empty(204)

    def s_context_delete(self, sb, sid, port, body, cid):
        self.no_query()
        if self.sandbox_prelude(sb, sid, port):
            return
        ctx = self.context_or_404(sb, cid)
        if ctx is None:
            return
        with sb.lock:
            sb.contexts.pop(cid, None)
            for lang, default_id in list(sb.default_contexts.items()):
                if default_id == cid:
                    del sb.default_contexts[lang]
        ctx.stop()
        with ctx.lock:
            ctx.reset()
        self.send_empty(204)

    def s_execute(self, sb, sid, port, body):
        self.no_query()
        req = self.json_body(body, "ExecutionRequest")
        if req.get("context_id") and req.get("language"):
            raise Violation("context_id and language are both given (the code interpreter answers 400)")
        if self.sandbox_prelude(sb, sid, port):
            return
        if req.get("context_id"):
            with sb.lock:
                ctx = sb.contexts.get(req["context_id"])
            if ctx is None:
                self.error_json(404, f"Context {req['context_id']} not found")
                return
        else:
            language = self.normalize_language(req.get("language"))
            with sb.lock:
                ctx = sb.contexts.get(sb.default_contexts.get(language, ""))
            if ctx is None:
                ctx, err = self.ensure_context(sb, language, SANDBOX_HOME)
                if ctx is None:
                    self.error_json(400 if "language" in err else 500, err)
                    return
                with sb.lock:
                    if language in sb.default_contexts:  # a concurrent request made it first
                        sb.contexts.pop(ctx.id, None)
                        ctx = sb.contexts[sb.default_contexts[language]]
                    else:
                        sb.default_contexts[language] = ctx.id
        # Cells of one context run one after the other; a client that leaves while waiting is not served.
        while not ctx.lock.acquire(timeout=0.2):
            if self.client_gone():
                raise ClientGone()
        try:
            if sb.dead:
                self.error_json(404, "sandbox not found")
                return
            if ctx.language == "bash":
                self.execute_bash(sb, ctx, req["code"], req.get("env_vars") or {})
            else:
                self.execute_kernel(sb, ctx, req["code"], req.get("env_vars") or {})
        finally:
            ctx.lock.release()

    def ndjson(self, stream, obj):
        stream.unit(json.dumps(obj).encode() + b"\n")

    def execute_kernel(self, sb, ctx, code, env_vars):
        """A python or javascript cell, in the context's kernel process (started on first use)."""
        if ctx.kernel is None or not ctx.kernel.alive():
            if ctx.kernel is not None:
                ctx.kernel.kill()
                ctx.kernel = None
            try:
                popen = sb.spawn(KERNELS[ctx.language], ctx.cwd, sb.env({"PYTHONDONTWRITEBYTECODE": "1"}),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            except SpawnError as e:
                self.error_json(500, f"Failed to start the {ctx.language} kernel: {e}")
                return
            ctx.kernel = KernelProc(popen)
        kernel = ctx.kernel
        try:
            kernel.popen.stdin.write(json.dumps({"code": code, "env_vars": env_vars}).encode() + b"\n")
            kernel.popen.stdin.flush()
        except OSError:
            pass  # a dead kernel shows as EOF below
        try:
            stream = Stream(self, "application/json")
        except ClientGone:
            self.interrupt_cell(ctx)
            raise
        last = time.monotonic()
        try:
            while True:
                client = self.client_fd()
                fds = [kernel.popen.stdout.fileno()] + ([client] if client is not None else [])
                readable, _, _ = select.select(fds, [], [], max(0.0, KEEPALIVE_S - (time.monotonic() - last)))
                if client is not None and client in readable and self.client_gone():
                    raise ClientGone()
                events, eof = kernel.read_events(0)
                for ev in events:
                    if ev.get("type") == "done":
                        self.ndjson(stream, {"type": "end_of_execution"})
                        stream.finish()
                        return
                    self.ndjson(stream, ev)
                    last = time.monotonic()
                if eof:
                    # What E2B's code interpreter sends when it loses its kernel mid-cell.
                    kernel.kill()
                    ctx.kernel = None
                    self.ndjson(stream, {"type": "error", "name": "UnexpectedEndOfExecution",
                                         "value": "Connection to the execution was closed before the execution "
                                                  "was finished", "traceback": ""})
                    self.ndjson(stream, {"type": "end_of_execution"})
                    stream.finish()
                    return
                if not events and time.monotonic() - last >= KEEPALIVE_S:
                    self.ndjson(stream, {"type": "keepalive"})
                    last = time.monotonic()
        except ClientGone:
            self.interrupt_cell(ctx)
            raise

    def interrupt_cell(self, ctx):
        """The client left mid-cell: KeyboardInterrupt in the cell, then wait for the kernel to be idle."""
        kernel = ctx.kernel
        with self.app.lock:
            self.app.counters["cells_interrupted"] += 1
        if kernel is None or not kernel.alive():
            return
        try:
            os.kill(kernel.popen.pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        while time.monotonic() < deadline:
            events, eof = kernel.read_events(0.1)
            if eof or any(ev.get("type") == "done" for ev in events):
                if eof:
                    kernel.kill()
                    ctx.kernel = None
                return
        kernel.kill()  # the cell swallowed the interrupt: a fresh kernel next time, as a Jupyter restart would
        ctx.kernel = None

    def pump_process(self, popen, on_data, on_idle, deadline=None):
        """Streams a child's stdout/stderr until it exits; returns its return code. Raises ClientGone (the child
        is then killed) when the client leaves. on_data(name, bytes) and on_idle() may raise ClientGone."""
        pipes = {}
        for f, name in ((popen.stdout, "stdout"), (popen.stderr, "stderr")):
            if f is not None:
                pipes[f.fileno()] = name
        pidfd = pidfd_for(popen.pid)
        last = time.monotonic()
        try:
            while True:
                client = self.client_fd()
                fds = list(pipes) + [x for x in (pidfd, client) if x is not None]
                wait = KEEPALIVE_S - (time.monotonic() - last)
                if pidfd is None:
                    wait = min(wait, 0.05)
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                readable, _, _ = select.select(fds, [], [], max(0.0, wait))
                if client is not None and client in readable and self.client_gone():
                    raise ClientGone()
                for fd in readable:
                    if fd in pipes:
                        data = os.read(fd, 32 << 10)
                        if data:
                            on_data(pipes[fd], data)
                            last = time.monotonic()
                        else:
                            del pipes[fd]
                if deadline is not None and time.monotonic() >= deadline:
                    kill_group(popen)
                    deadline = None
                if popen.poll() is not None:
                    # Output already written belongs to the process; children that still hold the pipes do not
                    # keep the stream open (Go's exec closes the pipes once the process has exited).
                    while pipes:
                        ready, _, _ = select.select(list(pipes), [], [], 0)
                        if not ready:
                            break
                        for fd in ready:
                            data = os.read(fd, 32 << 10)
                            if data:
                                on_data(pipes[fd], data)
                            else:
                                del pipes[fd]
                    return popen.returncode
                if time.monotonic() - last >= KEEPALIVE_S:
                    on_idle()
                    last = time.monotonic()
        except ClientGone:
            kill_group(popen)
            popen.wait()
            raise
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def execute_bash(self, sb, ctx, code, env_vars):
        try:
            popen = sb.spawn(["/bin/bash", "-c", code], ctx.cwd, sb.env(env_vars), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except SpawnError as e:
            self.error_json(500, f"Failed to run the bash cell: {e}")
            return
        ctx.count += 1
        ctx.bash = popen
        try:
            stream = Stream(self, "application/json")
            self.ndjson(stream, {"type": "number_of_executions", "execution_count": ctx.count})
            decoders = {n: codecs.getincrementaldecoder("utf-8")("replace") for n in ("stdout", "stderr")}

            def on_data(name, data):
                text = decoders[name].decode(data)
                if text:
                    self.ndjson(stream, {"type": name, "text": text, "timestamp": now_iso()})

            try:
                rc = self.pump_process(popen, on_data, lambda: self.ndjson(stream, {"type": "keepalive"}))
            except ClientGone:
                with self.app.lock:
                    self.app.counters["cells_interrupted"] += 1
                raise
            if rc != 0:
                status = f"exit status {rc}" if rc > 0 else f"signal: {GO_SIGNAL_NAMES.get(-rc, -rc)}"
                self.ndjson(stream, {"type": "error", "name": "ExitStatus", "value": status, "traceback": ""})
            self.ndjson(stream, {"type": "end_of_execution"})
            stream.finish()
        finally:
            ctx.bash = None
            kill_group(popen)
            popen.wait()
            popen.stdout.close()
            popen.stderr.close()

    # envd: Connect RPCs

    def connect_unary(self, body, message):
        self.no_query()
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise Violation(f"a unary Connect call with the JSON codec needs Content-Type application/json, "
                            f"got {ctype or 'none'!r}")
        version = self.headers.get("Connect-Protocol-Version")
        if version != "1":
            raise Violation(f"Connect-Protocol-Version must be 1, got {version!r}")
        return proto_decode(parse_json(body), message, message)

    def s_envd_health(self, sb, sid, port, body):
        self.no_query()
        if self.sandbox_prelude(sb, sid, port):
            return
        self.send_empty(204)

    def find_proc(self, sb, selector):
        with sb.lock:
            if "pid" in selector:
                return sb.procs.get(selector["pid"])
            if "tag" in selector:
                return next((p for p in sb.procs.values() if p.tag == selector["tag"]), None)
        return None

    def selected_proc(self, sb, req):
        sel = req.get("process")
        if sel is None or not sel:
            raise Violation("process selector (pid or tag) is missing")
        proc = self.find_proc(sb, sel)
        if proc is None:
            what = f"pid {sel['pid']}" if "pid" in sel else f"tag {sel['tag']!r}"
            self.connect_error("not_found", f"process with {what} not found")
        return proc

    def s_proc_start(self, sb, sid, port, body):
        where = f"{self.command} {self.url_path}"
        self.no_query()
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/connect+json":
            self.app.violation(f"{where}: a streaming Connect call with the JSON codec needs Content-Type "
                               f"application/connect+json, got {ctype or 'none'!r}")
            self.send_json(415, {"code": "invalid_argument",
                                 "message": "contract violation: Content-Type must be application/connect+json"})
            return
        try:
            if len(body) < 5:
                raise Violation(f"body of {len(body)} bytes is not a Connect envelope")
            flags, length = body[0], int.from_bytes(body[1:5], "big")
            if flags != 0:
                raise Violation(f"envelope flags 0x{flags:02x} (want 0x00: uncompressed message)")
            if length != len(body) - 5:
                raise Violation(f"envelope says {length} bytes, {len(body) - 5} follow")
            req = proto_decode(parse_json(body[5:]), "process.StartRequest", "StartRequest")
            if not req.get("process", {}).get("cmd"):
                raise Violation("process.cmd is missing")
        except Violation as v:
            # A streaming call reports errors in the end-of-stream message, with HTTP 200 (Connect protocol).
            self.app.violation(f"{where}: {v}")
            if self.sandbox_prelude(sb, sid, port):
                return
            stream = Stream(self, "application/connect+json")
            stream.unit(envelope({"error": {"code": "invalid_argument", "message": f"contract violation: {v}"}}, 2))
            stream.finish()
            return
        if self.sandbox_prelude(sb, sid, port):
            return
        stream = Stream(self, "application/connect+json")
        if "pty" in req:
            stream.unit(envelope({"error": {"code": "unimplemented",
                                            "message": "pty is not supported by the contract server"}}, 2))
            stream.finish()
            return
        config = req["process"]
        try:
            popen = sb.spawn([config["cmd"]] + config.get("args", []), config.get("cwd") or SANDBOX_HOME,
                             sb.env(config.get("envs")),
                             stdin=subprocess.PIPE if req.get("stdin", True) else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except SpawnError as e:
            stream.unit(envelope({"error": {"code": "invalid_argument", "message": str(e)}}, 2))
            stream.finish()
            return
        proc = Proc(popen, config, req.get("tag"), req.get("stdin", True))
        with sb.lock:
            sb.procs[popen.pid] = proc
        deadline = None
        timeout_ms = self.headers.get("Connect-Timeout-Ms")
        if timeout_ms is not None and timeout_ms.isdigit() and int(timeout_ms) > 0:
            deadline = time.monotonic() + int(timeout_ms) / 1000
        try:
            stream.unit(envelope({"event": {"start": {"pid": popen.pid}}}))

            def on_data(name, data):
                stream.unit(envelope({"event": {"data": {name: base64.b64encode(data).decode()}}}))

            try:
                rc = self.pump_process(popen, on_data,
                                       lambda: stream.unit(envelope({"event": {"keepalive": {}}})), deadline)
            except ClientGone:
                with self.app.lock:
                    self.app.counters["process_disconnect_kills"] += 1
                raise
            with sb.lock:
                sb.procs.pop(popen.pid, None)
            stream.unit(envelope({"event": {"end": exit_fields(rc)}}))
            stream.unit(envelope({}, 2))
            stream.finish()
        finally:
            with sb.lock:
                sb.procs.pop(popen.pid, None)
            kill_group(popen)
            popen.wait()
            for f in (popen.stdin, popen.stdout, popen.stderr):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass

    def s_proc_input(self, sb, sid, port, body):
        req = self.connect_unary(body, "process.SendInputRequest")
        if self.sandbox_prelude(sb, sid, port):
            return
        proc = self.selected_proc(sb, req)
        if proc is None:
            return
        inp = req.get("input", {})
        if "pty" in inp:
            self.connect_error("failed_precondition", "tty not assigned to process")
            return
        with proc.stdin_lock:
            if not proc.stdin_open or proc.popen.stdin is None:
                self.connect_error("failed_precondition", "stdin not enabled or closed")
                return
            try:
                proc.popen.stdin.write(inp.get("stdin", b""))
                proc.popen.stdin.flush()
            except OSError as e:
                self.connect_error("internal", f"error writing to stdin of process '{proc.popen.pid}': {e}")
                return
        self.send_json(200, {})

    def s_proc_close_stdin(self, sb, sid, port, body):
        req = self.connect_unary(body, "process.CloseStdinRequest")
        if self.sandbox_prelude(sb, sid, port):
            return
        proc = self.selected_proc(sb, req)
        if proc is None:
            return
        with proc.stdin_lock:
            if proc.stdin_open and proc.popen.stdin is not None:
                proc.stdin_open = False
                try:
                    proc.popen.stdin.close()
                except OSError:
                    pass
        self.send_json(200, {})

    def s_proc_signal(self, sb, sid, port, body):
        req = self.connect_unary(body, "process.SendSignalRequest")
        sig = req.get("signal", 0)
        if sig == 0:
            raise Violation("signal is missing or SIGNAL_UNSPECIFIED")
        if self.sandbox_prelude(sb, sid, port):
            return
        proc = self.selected_proc(sb, req)
        if proc is None:
            return
        kill_group(proc.popen, signal.Signals(sig))
        self.send_json(200, {})

    def s_proc_list(self, sb, sid, port, body):
        self.connect_unary(body, "process.ListRequest")
        if self.sandbox_prelude(sb, sid, port):
            return
        with sb.lock:
            procs = list(sb.procs.items())
        out = []
        for pid, p in procs:
            config = {"cmd": p.config["cmd"]}
            for k in ("args", "envs", "cwd"):
                if p.config.get(k):
                    config[k] = p.config[k]
            item = {"config": config, "pid": pid}
            if p.tag is not None:
                item["tag"] = p.tag
            out.append(item)
        self.send_json(200, {"processes": out} if out else {})

    # envd: files

    def entry_info(self, sb, host):
        st = os.lstat(host)
        kind = ("FILE_TYPE_DIRECTORY" if stat.S_ISDIR(st.st_mode) else
                "FILE_TYPE_SYMLINK" if stat.S_ISLNK(st.st_mode) else
                "FILE_TYPE_FILE" if stat.S_ISREG(st.st_mode) else "FILE_TYPE_UNSPECIFIED")
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = str(st.st_uid)
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        # protojson: int64 as a decimal string, zero values left out
        entry = {"name": os.path.basename(host) or "/", "type": kind, "path": sb.sandbox_path(host)}
        if st.st_size:
            entry["size"] = str(st.st_size)
        if stat.S_IMODE(st.st_mode) & 0o777:
            entry["mode"] = stat.S_IMODE(st.st_mode) & 0o777
        entry.update({"permissions": go_file_mode_string(st.st_mode), "owner": owner, "group": group,
                      "modifiedTime": proto_timestamp(st.st_mtime_ns)})
        if stat.S_ISLNK(st.st_mode):
            entry["symlinkTarget"] = os.readlink(host)
        return entry

    def fs_path(self, sb, path):
        if not path:
            raise Violation("path is missing")
        try:
            return sb.map_path(path)
        except PermissionError as e:
            self.connect_error("permission_denied", str(e))
            return None

    def s_fs_list(self, sb, sid, port, body):
        req = self.connect_unary(body, "filesystem.ListDirRequest")
        if self.sandbox_prelude(sb, sid, port):
            return
        host = self.fs_path(sb, req.get("path"))
        if host is None:
            return
        depth = req.get("depth", 0) or 1
        if not os.path.lexists(host):
            self.connect_error("not_found", f"path not found: {req['path']}")
            return
        if not os.path.isdir(host):
            self.connect_error("invalid_argument", f"path is not a directory: {req['path']}")
            return
        entries = []
        base_depth = host.rstrip("/").count("/")
        for dirpath, dirnames, filenames in os.walk(host):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                entries.append(self.entry_info(sb, os.path.join(dirpath, name)))
            if dirpath.rstrip("/").count("/") - base_depth + 1 >= depth:
                dirnames[:] = []
        self.send_json(200, {"entries": entries} if entries else {})

    def s_fs_stat(self, sb, sid, port, body):
        req = self.connect_unary(body, "filesystem.StatRequest")
        if self.sandbox_prelude(sb, sid, port):
            return
        host = self.fs_path(sb, req.get("path"))
        if host is None:
            return
        if not os.path.lexists(host):
            self.connect_error("not_found", f"file not found: {req['path']}")
            return
        self.send_json(200, {"entry": self.entry_info(sb, host)})

    def s_fs_mkdir(self, sb, sid, port, body):
        req = self.connect_unary(body, "filesystem.MakeDirRequest")
        if self.sandbox_prelude(sb, sid, port):
            return
        host = self.fs_path(sb, req.get("path"))
        if host is None:
            return
        if os.path.isdir(host):
            self.connect_error("already_exists", f"directory already exists: {req['path']}")
            return
        if os.path.lexists(host):
            self.connect_error("invalid_argument", f"path already exists but it is not a directory: {req['path']}")
            return
        os.makedirs(host, exist_ok=True)
        self.send_json(200, {"entry": {"name": os.path.basename(host), "type": "FILE_TYPE_DIRECTORY",
                                       "path": sb.sandbox_path(host)}})

    def s_fs_move(self, sb, sid, port, body):
        req = self.connect_unary(body, "filesystem.MoveRequest")
        if self.sandbox_prelude(sb, sid, port):
            return
        src = self.fs_path(sb, req.get("source"))
        dst = src and self.fs_path(sb, req.get("destination"))
        if dst is None:
            return
        if not os.path.lexists(src):
            self.connect_error("not_found", f"source file not found: {req['source']}")
            return
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)
        self.send_json(200, {"entry": self.entry_info(sb, dst)})

    def s_fs_remove(self, sb, sid, port, body):
        req = self.connect_unary(body, "filesystem.RemoveRequest")
        if self.sandbox_prelude(sb, sid, port):
            return
        host = self.fs_path(sb, req.get("path"))
        if host is None:
            return
        if not os.path.lexists(host):
            self.connect_error("not_found", f"path not found: {req['path']}")
            return
        if os.path.isdir(host) and not os.path.islink(host):
            shutil.rmtree(host)
        else:
            os.unlink(host)
        self.send_json(200, {})

    FILES_PARAMS = {"path", "username", "signature", "signature_expiration"}

    def files_path(self, sb):
        params = self.query_params(self.FILES_PARAMS)
        if not params.get("path"):
            raise Violation("query parameter 'path' is missing")
        if sb is None:
            return None, params["path"]
        try:
            return sb.map_path(params["path"]), params["path"]
        except PermissionError as e:
            self.error_json(403, str(e))
            return False, params["path"]

    def s_file_get(self, sb, sid, port, body):
        host, path = self.files_path(sb)
        if self.sandbox_prelude(sb, sid, port) or host is False:
            return
        if not os.path.exists(host):
            self.error_json(404, f"path '{path}' does not exist")
            return
        if os.path.isdir(host):
            self.error_json(400, f"path '{path}' is a directory")
            return
        with open(host, "rb") as f:
            data = f.read(MAX_FILE_BODY + 1)
        if len(data) > MAX_FILE_BODY:
            self.error_json(413, f"file larger than {MAX_FILE_BODY} bytes")
            return
        self.send_bytes(200, data, "application/octet-stream")

    def parse_multipart(self, body):
        ctype = self.headers.get("Content-Type") or ""
        m = re.match(r'^\s*multipart/form-data\s*;.*?boundary=("([^"]+)"|[^;\s]+)', ctype, re.I)
        if not m:
            raise Violation(f"Content-Type must be multipart/form-data with a boundary, got {ctype!r}")
        boundary = (m.group(2) or m.group(1)).encode()
        delim = b"--" + boundary
        if not body.startswith(delim):
            raise Violation("multipart body does not start with its boundary")
        rest, parts = body[len(delim):], []
        while not rest.startswith(b"--"):  # "--boundary--" closes the body
            if not rest.startswith(b"\r\n"):
                raise Violation("multipart boundary not followed by CRLF")
            end = rest.find(b"\r\n" + delim)
            if end < 0:
                raise Violation("multipart body does not end with the closing boundary")
            head, sep, data = rest[2:end].partition(b"\r\n\r\n")
            if not sep:
                raise Violation("multipart part without a header/body separator")
            headers = {}
            for line in head.split(b"\r\n"):
                k, _, v = line.decode("utf-8", "replace").partition(":")
                headers[k.strip().lower()] = v.strip()
            disp = headers.get("content-disposition", "")
            name = re.search(r'(?:^|;)\s*name="([^"]*)"', disp)
            filename = re.search(r'(?:^|;)\s*filename="([^"]*)"', disp)
            if not disp.lower().startswith("form-data") or not name:
                raise Violation(f"multipart part with Content-Disposition {disp!r}")
            parts.append((name.group(1), filename.group(1) if filename else None, data))
            rest = rest[end + 2 + len(delim):]
        return parts

    def s_file_put(self, sb, sid, port, body):
        host, path = self.files_path(sb)
        parts = self.parse_multipart(body)
        if len(parts) != 1 or parts[0][0] != "file":
            raise Violation(f"want exactly one multipart part named 'file', got {[p[0] for p in parts]}")
        if self.sandbox_prelude(sb, sid, port) or host is False:
            return
        if os.path.isdir(host):
            self.error_json(400, f"path '{path}' is a directory")
            return
        os.makedirs(os.path.dirname(host), exist_ok=True)
        tmp = host + ".e2bsrv-upload"
        with open(tmp, "wb") as f:
            f.write(parts[0][2])
        os.replace(tmp, host)
        self.send_json(200, [{"name": os.path.basename(host), "type": "file", "path": sb.sandbox_path(host)}])

    # --- test control ------------------------------------------------------------------------------------------

    def test_control(self):
        body = self.read_body(MAX_JSON_BODY)
        routes = {("GET", "/_test/state"): self.t_state, ("POST", "/_test/faults"): self.t_faults,
                  ("GET", "/_test/faults"): self.t_faults_list, ("POST", "/_test/faults/clear"): self.t_faults_clear,
                  ("POST", "/_test/vanish"): self.t_vanish, ("POST", "/_test/plant"): self.t_plant,
                  ("POST", "/_test/violations/clear"): self.t_violations_clear}
        fn = routes.get((self.command, self.url_path))
        if fn is None:
            self.error_json(404, f"no test-control endpoint {self.command} {self.url_path}")
            return
        obj = None
        if body:
            try:
                obj = json.loads(body)
            except ValueError as e:
                self.error_json(400, f"body is not JSON: {e}")
                return
        fn(obj)

    def t_state(self, obj):
        if self.app.args.upstream:
            self.upstream_refresh_state()
        now = time.time()
        with self.app.lock:
            boxes = sorted(self.app.sandboxes.values(), key=lambda sb: sb.started_at)
            state = {
                "live": len(boxes),
                "sandboxes": [{"sandboxID": sb.id, "templateID": sb.template_id, "metadata": dict(sb.metadata),
                               "startedAt": rfc3339(sb.started_at), "endAt": rfc3339(sb.end_at),
                               "secondsLeft": round(sb.end_at - now, 3), "timeout": sb.timeout,
                               "requests": sb.requests,
                               "lastActivity": rfc3339(sb.last_activity) if sb.last_activity else None}
                              for sb in boxes],
                **self.app.counters,
                "requests": dict(self.app.requests),
                "violations": list(self.app.violations),
                "violations_dropped": self.app.violations_dropped,
                "internal_errors": list(self.app.internal_errors),
                "faults": [r.describe() for r in self.app.faults if r.count != 0],
                "view": self.app.view is not None,
                "languages": LANGUAGES,
            }
        self.send_json(200, state)

    def t_faults(self, obj):
        if not isinstance(obj, dict) or not isinstance(obj.get("rules"), list) or set(obj) != {"rules"}:
            self.error_json(400, 'want {"rules": [...]}')
            return
        try:
            rules = [FaultRule(r) for r in obj["rules"]]
        except ValueError as e:
            self.error_json(400, f"bad fault rule: {e}")
            return
        with self.app.lock:
            self.app.faults = [r for r in self.app.faults if r.count != 0] + rules
        self.send_json(200, {"rules": len(rules)})

    def t_faults_list(self, obj):
        with self.app.lock:
            self.send_json(200, {"rules": [r.describe() for r in self.app.faults if r.count != 0]})

    def t_faults_clear(self, obj):
        with self.app.lock:
            self.app.faults = []
        self.send_empty(204)

    def t_violations_clear(self, obj):
        with self.app.lock:
            cleared, self.app.violations, self.app.violations_dropped = self.app.violations, [], 0
        self.send_json(200, {"violations": cleared})

    def t_vanish(self, obj):
        if not isinstance(obj, dict) or not isinstance(obj.get("sandboxID"), str):
            self.error_json(400, 'want {"sandboxID": "..."}')
            return
        if self.app.args.upstream:
            status, _, _ = self.upstream_call("DELETE", f"/sandboxes/{obj['sandboxID']}", None)
            with self.app.lock:
                found = status == 204 and obj["sandboxID"] in self.app.known
                if found:
                    self.app.gone.add(obj["sandboxID"])
                    self.app.counters["vanished"] += 1
        else:
            found = self.app.remove(obj["sandboxID"], "vanished") is not None
        if not found:
            self.error_json(404, f"no live sandbox {obj['sandboxID']}")
            return
        self.send_empty(204)

    def t_plant(self, obj):
        obj = obj if isinstance(obj, dict) else {}
        unknown = set(obj) - {"templateID", "metadata", "timeout", "envVars"}
        try:
            if unknown:
                raise Violation(f"unknown field(s) {sorted(unknown)}")
            req = {"templateID": obj.get("templateID", "base"), "timeout": obj.get("timeout", 300),
                   "metadata": obj.get("metadata") or {}, "envVars": obj.get("envVars") or {}}
            check_schema(req, SCHEMAS["NewSandbox"], "plant")
        except Violation as e:
            self.error_json(400, str(e))
            return
        if self.app.args.upstream:
            status, _, data = self.upstream_call("POST", "/sandboxes", req)
            if status == 201:
                created = json.loads(data)
                self.note_upstream_sandbox(created, "planted")
            self.send_bytes(status, data, "application/json")
            return
        sb = self.app.create(req["templateID"], req["metadata"], req["envVars"], req["timeout"], True, "planted")
        self.send_json(201, sb.sandbox_json())

    # --- upstream mode -----------------------------------------------------------------------------------------

    def upstream_connection(self, base):
        url = urllib.parse.urlsplit(base)
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        return cls(url.hostname, url.port, timeout=60), url.path.rstrip("/")

    def upstream_call(self, method, path, obj):
        """A request of this server's own to the upstream control plane: (status, headers, body)."""
        conn, prefix = self.upstream_connection(self.app.args.upstream)
        try:
            body = json.dumps(obj).encode() if obj is not None else None
            headers = {"X-API-Key": self.app.upstream_key}
            if body is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, prefix + path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def note_upstream_sandbox(self, created, counter):
        if not isinstance(created, dict) or not isinstance(created.get("sandboxID"), str):
            self.app.internal_error(f"upstream create answer is not a Sandbox: {created!r}"[:500])
            return
        for name in ("templateID", "sandboxID", "clientID", "envdVersion"):  # Sandbox.required
            if name not in created:
                self.app.internal_error(f"upstream Sandbox lacks required field {name!r}")
        with self.app.lock:
            self.app.known[created["sandboxID"]] = {"token": created.get("envdAccessToken"),
                                                   "domain": created.get("domain") or self.app.args.domain}
            self.app.counters[counter] += 1

    def upstream_forward(self, body):
        """Upstream mode: after validation and faults, relays a control-plane request; True when done."""
        if not self.app.args.upstream:
            return False
        if self.apply_fault():
            return True
        conn, prefix = self.upstream_connection(self.app.args.upstream)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "x-api-key"}
        headers["X-API-Key"] = self.app.upstream_key
        path = prefix + self.url_path + (("?" + self.query) if self.query else "")
        result = self.relay(conn, path, headers, body)
        if result is None:
            return True
        status, data = result
        sid = self.url_path.split("/")[2] if self.url_path.startswith("/sandboxes/") else None
        if self.command == "POST" and self.url_path == "/sandboxes" and status == 201:
            try:
                self.note_upstream_sandbox(json.loads(data), "created")
            except ValueError:
                self.app.internal_error("upstream create answer is not JSON")
        elif self.command == "DELETE" and sid and status == 204:
            with self.app.lock:
                self.app.counters["deleted"] += 1
                self.app.gone.add(sid.split("-", 1)[0])
        return True

    def upstream_sandbox(self, sid, port, body):
        if self.apply_fault(port):
            return
        with self.app.lock:
            known = self.app.known.get(sid.split("-", 1)[0])
        if known is not None and known["token"] is not None and self.headers.get("X-Access-Token") != known["token"]:
            self.app.violation(f"{self.command} {self.url_path} in {sid}: wrong or missing X-Access-Token")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if self.app.args.upstream_sandbox_url:
            base = self.app.args.upstream_sandbox_url
        else:
            domain = known["domain"] if known is not None else self.app.args.domain
            base = f"https://{port}-{sid}.{domain}"
            headers.pop("E2b-Sandbox-Id", None)
            headers.pop("E2b-Sandbox-Port", None)
        conn, prefix = self.upstream_connection(base)
        self.relay(conn, prefix + self.url_path + (("?" + self.query) if self.query else ""), headers, body)

    def relay(self, conn, path, headers, body):
        """Forwards the request and relays the answer; streamed answers are relayed as they come, and a client
        that leaves closes the upstream connection too. Returns (status, body) for non-streamed answers."""
        try:
            conn.request(self.command, path, body=body if body or self.command in ("POST", "PUT", "PATCH") else None,
                         headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self.error_json(502, f"upstream unreachable: {e}")
            return None
        out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        if resp.getheader("Transfer-Encoding", "").lower() != "chunked":
            data = resp.read()
            conn.close()
            if self.drop_response:
                self.drop_connection()
                return resp.status, data
            self.send_response(resp.status)
            for k, v in out_headers:
                self.send_header(k, v)
            if resp.status not in (204, 304):
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if resp.status not in (204, 304):
                self.wfile.write(data)
            return resp.status, data
        chunks = queue.Queue()

        def reader():
            try:
                while True:
                    data = resp.read1(65536)
                    chunks.put(data)
                    if not data:
                        return
            except (OSError, http.client.HTTPException, ValueError):
                chunks.put(None)

        threading.Thread(target=reader, daemon=True).start()
        self.send_response(resp.status)
        for k, v in out_headers:
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while True:
                try:
                    data = chunks.get(timeout=0.2)
                except queue.Empty:
                    if self.client_gone():
                        raise ClientGone() from None
                    continue
                if data is None:  # the upstream broke off: so does this answer
                    self.drop_connection()
                    return None
                if not data:
                    self.wfile.write(b"0\r\n\r\n")
                    return None
                try:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                except OSError:
                    raise ClientGone() from None
        finally:
            try:
                conn.sock and conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def upstream_refresh_state(self):
        """Upstream mode: the sandboxes of /_test/state are the upstream's live ones that this proxy created."""
        boxes, token = [], None
        for _ in range(100):
            path = "/v2/sandboxes?limit=100" + (f"&nextToken={urllib.parse.quote(token)}" if token else "")
            status, headers, data = self.upstream_call("GET", path, None)
            if status != 200:
                self.app.internal_error(f"upstream listing answered {status}")
                return
            boxes += json.loads(data)
            token = dict((k.lower(), v) for k, v in headers).get("x-next-token")
            if not token:
                break
        with self.app.lock:
            live = {b["sandboxID"]: b for b in boxes if b.get("sandboxID") in self.app.known}
            for sid in self.app.known:
                if sid not in live and sid not in self.app.gone:
                    self.app.gone.add(sid)
                    self.app.counters["expired"] += 1
            self.app.sandboxes = {}
            for sid, b in live.items():
                sb = Sandbox.__new__(Sandbox)
                sb.id, sb.template_id, sb.metadata = sid, b.get("templateID"), b.get("metadata") or {}
                sb.started_at = parse_rfc3339(b.get("startedAt", "")) or 0
                sb.end_at = parse_rfc3339(b.get("endAt", "")) or 0
                sb.timeout, sb.requests, sb.last_activity = None, 0, None
                self.app.sandboxes[sid] = sb


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, addr, app):
        self.app = app
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(addr, Handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the connection bound: refused, as an overloaded proxy would
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, TimeoutError)):
            return  # a client that left or idled out
        self.app.internal_error(traceback.format_exc())


def main(argv):
    p = argparse.ArgumentParser(description="E2B contract server for sandpool's tests (see tests/e2b/README.md)")
    p.add_argument("--port-file", required=True, help="written (atomically) with the port once listening")
    p.add_argument("--api-key", required=True, help="the X-API-Key clients must send")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--domain", default="e2b.app", help="Sandbox.domain in answers")
    p.add_argument("--templates", help="comma-separated templates that exist (default: any)")
    p.add_argument("--max-sandboxes", type=int, default=0, help="concurrency cap answered with 429 (0: none)")
    p.add_argument("--upstream", help="forward to this E2B API after validating, e.g. https://api.e2b.app")
    p.add_argument("--upstream-key-env", default="E2B_API_KEY", help="env var holding the upstream API key")
    p.add_argument("--upstream-sandbox-url",
                   help="send in-sandbox traffic to this URL with E2b-Sandbox-* headers, not to "
                        "https://{port}-{sandboxID}.{domain}")
    p.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process goes away")
    p.add_argument("--verbose", action="store_true", help="log every request on stderr")
    args = p.parse_args(argv[1:])
    app = App(args)
    if args.upstream:
        app.upstream_key = os.environ.get(args.upstream_key_env)
        if not app.upstream_key:
            print(f"e2b_server: --upstream needs the key in ${args.upstream_key_env}", file=sys.stderr)
            return 2
    parent = os.getppid()
    server = Server((args.host, args.port), app)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    threading.Thread(target=app.reaper, daemon=True).start()
    tmp = f"{args.port_file}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(tmp, args.port_file)
    while not stop.wait(0.2):
        if args.exit_with_parent and os.getppid() != parent:
            break
    # A second SIGTERM must not cut the shutdown short: Python puts back the default handlers as it exits.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    server.shutdown()
    server.server_close()
    with app.lock:
        live = len(app.sandboxes)
        violations, errors = list(app.violations), list(app.internal_errors)
    app.shutdown()
    if live and not args.upstream:
        print(f"e2b_server: {live} sandbox(es) still live at exit", file=sys.stderr)
    for v in violations:
        print(f"e2b_server: VIOLATION {v}", file=sys.stderr)
    for e in errors:
        print(f"e2b_server: INTERNAL ERROR {e}", file=sys.stderr)
    return 1 if violations or errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
