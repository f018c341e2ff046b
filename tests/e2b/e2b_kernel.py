#!/usr/bin/python3
"""The python kernel of e2b_server.py's code interpreter: one child process per context, the way Jupyter runs one
per notebook, so that a cell can be interrupted (SIGINT raises KeyboardInterrupt even inside time.sleep) and can
neither crash nor block the server.

It reads one JSON request per line on stdin ({"code", "env_vars"}) and writes JSON events, one per line, on its
original stdout: the lines of E2B's /execute stream (number_of_executions, stdout, stderr, result, error) and
{"type": "done"} when the cell is over. What the cell writes, at python level or to fds 1 and 2 (its
subprocesses too), becomes stdout/stderr events. Kept apart from the server so that it starts fast.
"""

import ast
import builtins
import codecs
import datetime
import json
import linecache
import os
import queue
import select
import signal
import sys
import threading
import traceback


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class _KernelOut:
    """sys.stdout / sys.stderr of a cell: complete lines go out at once, a partial line within 0.1 s."""

    def __init__(self, kernel, name):
        self.kernel, self.name, self.buf, self.lock = kernel, name, "", threading.Lock()
        self.encoding, self.errors = "utf-8", "replace"

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self.lock:
            self.buf += text
            cut = self.buf.rfind("\n") + 1
            out, self.buf = self.buf[:cut], self.buf[cut:]
        if out:
            self.kernel.emit({"type": self.name, "text": out, "timestamp": now_iso()})
        return len(text)

    def flush(self):
        with self.lock:
            out, self.buf = self.buf, ""
        if out:
            self.kernel.emit({"type": self.name, "text": out, "timestamp": now_iso()})

    def isatty(self):
        return False

    def fileno(self):
        return 1 if self.name == "stdout" else 2

    def writable(self):
        return True


class Kernel:
    def __init__(self):
        self.events = os.dup(1)
        # The requests come on fd 0; a cell calling input() reads /dev/null instead.
        self.requests = os.fdopen(os.dup(0), "rb")
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        # SimpleQueue.put is one C call: a KeyboardInterrupt cannot leave it half done.
        self.queue = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        self.fd_out = {}
        for fd, name in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            self.fd_out[r] = (name, codecs.getincrementaldecoder("utf-8")("replace"))
        self.stdout, self.stderr = _KernelOut(self, "stdout"), _KernelOut(self, "stderr")
        sys.stdout, sys.stderr = self.stdout, self.stderr
        self.count = 0
        self.ns = {"__name__": "__main__", "__builtins__": builtins, "display": self.display}
        threading.Thread(target=self.pump, daemon=True).start()

    def emit(self, event):
        # Only the pump thread writes the events pipe, so that a KeyboardInterrupt in the cell's thread never
        # tears a line in half.
        self.queue.put(event)
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass

    def _forward(self, readable):
        for fd in readable:
            data = os.read(fd, 65536)
            name, dec = self.fd_out[fd]
            text = dec.decode(data)
            if text:
                self._write({"type": name, "text": text, "timestamp": now_iso()})

    def _drain_fds(self):
        while True:
            readable, _, _ = select.select(list(self.fd_out), [], [], 0)
            if not readable:
                return
            self._forward(readable)

    def _write(self, event):
        data = (json.dumps(event) + "\n").encode()
        while data:
            data = data[os.write(self.events, data):]

    def pump(self):
        os.set_blocking(self.wake_w, False)
        while True:
            readable, _, _ = select.select(list(self.fd_out) + [self.wake_r], [], [], 0.1)
            if self.wake_r in readable:
                os.read(self.wake_r, 4096)
                readable.remove(self.wake_r)
            self._forward(readable)
            while True:
                try:
                    event = self.queue.get_nowait()
                except queue.Empty:
                    break
                if event == "done":
                    # What the cell's children wrote to fds 1 and 2 belongs to this cell: read it first.
                    self._drain_fds()
                    self._write({"type": "done"})
                else:
                    self._write(event)
            if not readable:  # a quiet moment: a partial line waits no longer
                self.stdout.flush()
                self.stderr.flush()

    @staticmethod
    def representation(value, main):
        """A result event as E2B's code interpreter builds it from IPython's display data."""
        text = repr(value)
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]  # E2B strips the quotes of a string's repr
        result = {"type": "result", "text": text}
        for method, key in (("_repr_html_", "html"), ("_repr_markdown_", "markdown"), ("_repr_svg_", "svg"),
                            ("_repr_png_", "png"), ("_repr_jpeg_", "jpeg"), ("_repr_latex_", "latex"),
                            ("_repr_json_", "json"), ("_repr_javascript_", "javascript")):
            fn = getattr(value, method, None)
            if callable(fn) and not isinstance(value, type):
                try:
                    data = fn()
                except Exception:  # a broken _repr_*_ loses that format only, as in IPython
                    data = None
                if data is not None:
                    result[key] = data
        result["is_main_result"] = main
        return result

    def display(self, *objs, **_kwargs):
        for obj in objs:
            self.emit(self.representation(obj, False))

    def error(self, exc, skip_frames):
        tb = exc.__traceback__
        for _ in range(skip_frames):
            if tb is not None:
                tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        self.emit({"type": "error", "name": type(exc).__name__, "value": str(exc), "traceback": text})

    def run_cell(self, code, env_vars):
        self.count += 1
        self.emit({"type": "number_of_executions", "execution_count": self.count})
        filename = f"<cell-{self.count}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        saved = {k: os.environ.get(k) for k in env_vars}
        os.environ.update(env_vars)
        try:
            try:
                tree = ast.parse(code, filename, "exec")
            except SyntaxError as e:
                self.error(e, 99)
                return
            last = None
            # IPython shows the value of a trailing expression unless a semicolon ends the cell.
            if tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";"):
                last = tree.body.pop()
            exec(compile(tree, filename, "exec"), self.ns)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), filename, "eval"), self.ns)
                if value is not None:
                    self.ns["_"] = value
                    self.emit(self.representation(value, True))
        except BaseException as e:  # KeyboardInterrupt and SystemExit too: the cell ends, the kernel lives
            self.error(e, 1)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def serve(self):
        while True:
            try:
                line = self.requests.readline()
            except KeyboardInterrupt:
                continue  # an interrupt that lands between cells has nothing to stop
            if not line:
                return 0
            try:
                req = json.loads(line)
                self.run_cell(req["code"], req.get("env_vars") or {})
            except KeyboardInterrupt:
                pass  # it came after run_cell's own handler: the cell is over anyway
            while True:  # "done" must go out even if a late interrupt lands here
                try:
                    self.stdout.flush()
                    self.stderr.flush()
                    self.emit("done")
                    break
                except KeyboardInterrupt:
                    continue


def kernel_main():
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    return Kernel().serve()


if __name__ == "__main__":
    sys.exit(kernel_main())
