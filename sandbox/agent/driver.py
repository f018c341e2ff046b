# sandpool's Python context driver (docs/AGENT.md, "Interpreter drivers").
# The agent embeds this file and runs it as `python3 -c SOURCE` as the
# sandbox user. Fd 4 is its channel to the agent: cells come in as
# length-prefixed frames, and "ready", "result" and "done" go back as
# msgpack maps. User code runs in one persistent namespace; stdout and
# stderr are the process's own (pipes the agent reads), so output of
# subprocesses is captured as well.
import ast
import os
import signal
import struct
import sys
import traceback

CHAN = 4
MAX_DEPTH = 32
os.set_inheritable(CHAN, False)
sys.stdout.reconfigure(line_buffering=True)
sys.stderr.reconfigure(line_buffering=True)


def pack(o, out, depth=0):
    """Appends o as msgpack; what msgpack cannot say travels as repr()."""
    if o is None:
        out.append(b"\xc0")
    elif o is True or o is False:
        out.append(b"\xc3" if o else b"\xc2")
    elif isinstance(o, int) and -(1 << 63) <= o < (1 << 64):
        if 0 <= o < 128 or -32 <= o < 0:
            out.append(struct.pack("b" if o < 0 else "B", o))
        elif o > 0:
            out.append(b"\xcf" + struct.pack(">Q", o))
        else:
            out.append(b"\xd3" + struct.pack(">q", o))
    elif isinstance(o, float):
        out.append(b"\xcb" + struct.pack(">d", o))
    elif isinstance(o, str):
        b = o.encode("utf-8", "backslashreplace")
        out.append(head(len(b), 0xA0, 32, b"\xd9", b"\xda", b"\xdb") + b)
    elif isinstance(o, (bytes, bytearray, memoryview)):
        b = bytes(o)
        out.append(head(len(b), None, 0, b"\xc4", b"\xc5", b"\xc6") + b)
    elif depth < MAX_DEPTH and isinstance(o, (list, tuple)):
        out.append(head(len(o), 0x90, 16, None, b"\xdc", b"\xdd"))
        for v in o:
            pack(v, out, depth + 1)
    elif depth < MAX_DEPTH and isinstance(o, dict):
        out.append(head(len(o), 0x80, 16, None, b"\xde", b"\xdf"))
        for k, v in o.items():
            pack(k if isinstance(k, str) else repr(k), out, depth + 1)
            pack(v, out, depth + 1)
    else:
        pack(safe_repr(o), out, depth)


def head(n, fix, fix_max, h8, h16, h32):
    if fix is not None and n < fix_max:
        return bytes([fix | n])
    if h8 is not None and n < 256:
        return h8 + bytes([n])
    if n < 65536:
        return h16 + struct.pack(">H", n)
    return h32 + struct.pack(">I", n)


def send(msg):
    out = []
    pack(msg, out)
    data = b"".join(out)
    while data:
        data = data[os.write(CHAN, data):]


def read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(CHAN, n - len(buf))
        if not chunk:
            sys.exit(0)  # the agent closed the channel
        buf += chunk
    return buf


def read_cell():
    """A frame: u32 count, then count (u32 length, bytes) items: the code,
    then "K=V" environment entries for this cell."""
    (size,) = struct.unpack(">I", read_exact(4))
    frame = read_exact(size)
    (count,) = struct.unpack_from(">I", frame)
    items, pos = [], 4
    for _ in range(count):
        (n,) = struct.unpack_from(">I", frame, pos)
        items.append(frame[pos + 4:pos + 4 + n])
        pos += 4 + n
    return items[0], [kv.decode("utf-8", "surrogateescape") for kv in items[1:]]


def safe_repr(o):
    try:
        return repr(o)
    except BaseException as e:
        return "<repr() failed: %s>" % type(e).__name__


# IPython's rich-display protocol: _repr_<format>_ methods.
FORMATS = ("html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json", "javascript")


def bundle(obj, is_main):
    r = {"is_main_result": is_main, "text": safe_repr(obj)}
    if isinstance(obj, type):
        return r
    for fmt in FORMATS:
        try:
            meth = getattr(obj, "_repr_%s_" % fmt, None)
            v = meth() if callable(meth) else None
        except Exception:
            continue
        if isinstance(v, tuple):  # (data, metadata)
            v = v[0] if v else None
        if isinstance(v, (bytes, bytearray)):
            import base64

            v = base64.b64encode(v).decode()
        if v is not None:
            r[fmt] = v
    return r


def display(*objs):
    """Sends each object as an extra result of the running cell."""
    for o in objs:
        flush()
        send({"type": "result", "result": bundle(o, False)})


namespace = {"__name__": "__main__", "__builtins__": __builtins__, "display": display}
running = False


def on_sigint(signum, frame):
    # The agent interrupts cells only; one that lands between cells (the
    # cell just finished) must not take the driver down.
    if running:
        raise KeyboardInterrupt


def flush():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass


def evaluate(node, mode):
    code = compile(node, "<cell>", mode, flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    value = eval(code, namespace)
    if code.co_flags & 0x80:  # CO_COROUTINE: the cell awaited at top level
        import asyncio

        value = asyncio.get_event_loop_policy().get_event_loop().run_until_complete(value)
    return value


def describe(e):
    te = traceback.TracebackException(type(e), e, e.__traceback__)
    # Without the driver's own frames (its source is "<string>"): the
    # traceback starts in the cell and ends where the cell was.
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != "<string>"])
    return {"name": type(e).__name__, "value": str(e), "traceback": "".join(te.format())}


def run_cell(code, env):
    global running
    saved = {}
    for kv in env:
        k, _, v = kv.partition("=")
        saved.setdefault(k, os.environ.get(k))
        os.environ[k] = v
    try:
        tree = ast.parse(code, "<cell>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        running = True
        evaluate(tree, "exec")
        value = evaluate(last, "eval") if last is not None else None
        running = False
        if value is not None:
            namespace["_"] = value
            flush()
            send({"type": "result", "result": bundle(value, True)})
        return None
    except BaseException as e:
        running = False
        return describe(e)
    finally:
        running = False
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main():
    signal.signal(signal.SIGINT, on_sigint)
    send({"type": "ready"})
    while True:
        code, env = read_cell()
        try:
            error = run_cell(code, env)
        except BaseException as e:  # an interrupt that landed in run_cell itself
            error = describe(e)
        flush()
        send({"type": "done", "error": error})


main()
