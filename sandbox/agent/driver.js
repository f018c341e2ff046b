// sandpool's JavaScript context driver (docs/AGENT.md, "Interpreter drivers").
// The agent embeds this file and runs it as `node -e SOURCE` as the sandbox
// user. Fd 4 is its channel to the agent: cells come in as length-prefixed
// frames, and "ready", "result" and "done" go back as msgpack maps. Cells
// run in one persistent vm context; a cell's value is its completion value
// (awaited when it is a promise).
'use strict';
const net = require('net');
const util = require('util');
const vm = require('vm');

const MAX_DEPTH = 32;
const chan = new net.Socket({ fd: 4, readable: true, writable: true });

function head(n, fix, fixMax, h8, h16, h32) {
  if (fix !== null && n < fixMax) return Buffer.from([fix | n]);
  if (h8 !== null && n < 256) return Buffer.from([h8, n]);
  const b = Buffer.alloc(n < 65536 ? 3 : 5);
  b[0] = n < 65536 ? h16 : h32;
  if (n < 65536) b.writeUInt16BE(n, 1);
  else b.writeUInt32BE(n, 1);
  return b;
}

// msgpack of o; what msgpack cannot say travels as util.inspect() text.
function pack(o, out, depth = 0) {
  if (o === null || o === undefined) {
    out.push(Buffer.from([0xc0]));
  } else if (typeof o === 'boolean') {
    out.push(Buffer.from([o ? 0xc3 : 0xc2]));
  } else if (typeof o === 'number' && Number.isSafeInteger(o)) {
    if (o >= 0 && o < 128) {
      out.push(Buffer.from([o]));
    } else {
      const b = Buffer.alloc(9);
      b[0] = o < 0 ? 0xd3 : 0xcf;
      b.writeBigInt64BE(BigInt(o), 1);
      out.push(b);
    }
  } else if (typeof o === 'number') {
    const b = Buffer.alloc(9);
    b[0] = 0xcb;
    b.writeDoubleBE(o, 1);
    out.push(b);
  } else if (typeof o === 'string') {
    const b = Buffer.from(o, 'utf8');
    out.push(head(b.length, 0xa0, 32, 0xd9, 0xda, 0xdb), b);
  } else if (o instanceof Uint8Array) {
    out.push(head(o.length, null, 0, 0xc4, 0xc5, 0xc6), Buffer.from(o));
  } else if (depth < MAX_DEPTH && Array.isArray(o)) {
    out.push(head(o.length, 0x90, 16, null, 0xdc, 0xdd));
    for (const v of o) pack(v, out, depth + 1);
  } else if (depth < MAX_DEPTH && typeof o === 'object' && Object.getPrototypeOf(o) === Object.prototype) {
    const keys = Object.keys(o);
    out.push(head(keys.length, 0x80, 16, null, 0xde, 0xdf));
    for (const k of keys) {
      pack(k, out, depth + 1);
      pack(o[k], out, depth + 1);
    }
  } else {
    pack(util.inspect(o), out, depth);
  }
}

function send(msg) {
  const out = [];
  pack(msg, out);
  chan.write(Buffer.concat(out));
}

function bundle(value, isMain) {
  const r = { is_main_result: isMain, text: util.inspect(value) };
  // The same rich-display hooks as the Python driver's _repr_html_ and kin.
  for (const fmt of ['html', 'markdown', 'svg', 'png', 'jpeg', 'latex', 'json']) {
    try {
      const f = value !== null && typeof value === 'object' ? value[`_repr_${fmt}_`] : undefined;
      const v = typeof f === 'function' ? f.call(value) : undefined;
      if (v !== undefined && v !== null) r[fmt] = v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v;
    } catch (e) {
      // a broken hook loses its format, not the result
    }
  }
  return r;
}

// The stack without the driver's and node's own frames: it ends in the cell.
function userStack(stack) {
  return String(stack || '')
    .split('\n')
    .filter((l) => !/^\s+at .*(\[eval\]|\(node:|^\s+at node:)/.test(l))
    .join('\n');
}

function describe(e) {
  if (e instanceof Error || (e && typeof e === 'object' && 'stack' in e)) {
    return { name: String(e.name || 'Error'), value: String(e.message || ''), traceback: userStack(e.stack) };
  }
  return { name: 'Error', value: util.inspect(e), traceback: '' };
}

const sandbox = {
  require, console, process, Buffer, URL, URLSearchParams, TextEncoder, TextDecoder,
  setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, clearImmediate, queueMicrotask,
  display: (...objs) => objs.forEach((o) => send({ type: 'result', result: bundle(o, false) })),
};
sandbox.global = sandbox;
const context = vm.createContext(sandbox);

async function runCell(code, env) {
  const saved = {};
  for (const kv of env) {
    const eq = kv.indexOf('=');
    const k = kv.slice(0, eq);
    if (!(k in saved)) saved[k] = process.env[k];
    process.env[k] = kv.slice(eq + 1);
  }
  try {
    let value = vm.runInContext(code, context, { filename: '<cell>', breakOnSigint: true });
    if (value !== null && typeof value === 'object' && typeof value.then === 'function') value = await value;
    if (value !== undefined) send({ type: 'result', result: bundle(value, true) });
    return null;
  } catch (e) {
    return describe(e);
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

// Frames: u32 size, then u32 count and count (u32 length, bytes) items:
// the code, then "K=V" environment entries for this cell.
let pending = Buffer.alloc(0);
const cells = [];
let busy = false;

function takeFrames() {
  while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32BE(0)) {
    const frame = pending.subarray(4, 4 + pending.readUInt32BE(0));
    pending = pending.subarray(4 + frame.length);
    const items = [];
    for (let i = 0, pos = 4; i < frame.readUInt32BE(0); i++) {
      const n = frame.readUInt32BE(pos);
      items.push(frame.toString('utf8', pos + 4, pos + 4 + n));
      pos += 4 + n;
    }
    cells.push(items);
  }
}

async function drain() {
  if (busy) return;
  busy = true;
  while (cells.length) {
    const [code, ...env] = cells.shift();
    const error = await runCell(code, env);
    send({ type: 'done', error });
  }
  busy = false;
}

// SIGINT interrupts a running cell (breakOnSigint); between cells it must
// not end the process.
process.on('SIGINT', () => {});
chan.on('data', (d) => {
  pending = Buffer.concat([pending, d]);
  takeFrames();
  drain();
});
chan.on('end', () => process.exit(0));
chan.on('error', () => process.exit(0));
send({ type: 'ready' });
