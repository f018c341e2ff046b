// The javascript kernel of e2b_server.py's code interpreter (node), speaking e2b_kernel.py's protocol: one JSON
// request per line on stdin ({"code", "env_vars"}), JSON events one per line on stdout (number_of_executions,
// stdout, stderr, result, error, then {"type": "done"}).
//
// Cells run with vm.runInThisContext, so that their globals and top-level let/const carry over to the next cell;
// the completion value (awaited when it is a promise) is the main result, util.inspect() its text. SIGINT
// breaks a running cell (breakOnSigint) and is ignored between cells.
'use strict';

const fs = require('fs');
const readline = require('readline');
const util = require('util');
const vm = require('vm');

const EVENTS = 1; // the original stdout; the cell's own stdout becomes stdout events

function emit(event) {
  const data = Buffer.from(JSON.stringify(event) + '\n');
  let off = 0;
  while (off < data.length) off += fs.writeSync(EVENTS, data, off);
}

// E2B strips the quotes of a string's representation.
function text(value) {
  const t = util.inspect(value);
  return t.length >= 2 && t[0] === t[t.length - 1] && '\'"`'.includes(t[0]) ? t.slice(1, -1) : t;
}

for (const name of ['stdout', 'stderr']) {
  process[name].write = (chunk, encoding, cb) => {
    emit({ type: name, text: String(chunk), timestamp: new Date().toISOString() });
    const done = typeof encoding === 'function' ? encoding : cb;
    if (done) done();
    return true;
  };
}

globalThis.display = (...objs) => {
  for (const obj of objs) emit({ type: 'result', text: text(obj), is_main_result: false });
};

process.on('SIGINT', () => {});

let count = 0;

async function run(req) {
  count += 1;
  emit({ type: 'number_of_executions', execution_count: count });
  const saved = {};
  for (const [k, v] of Object.entries(req.env_vars || {})) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  try {
    let value = vm.runInThisContext(req.code, { filename: `<cell-${count}>`, breakOnSigint: true });
    if (value && typeof value.then === 'function') value = await value;
    if (value !== undefined) emit({ type: 'result', text: text(value), is_main_result: true });
  } catch (e) {
    const err = e instanceof Error ? e : new Error(util.inspect(e));
    emit({ type: 'error', name: err.name || 'Error', value: err.message, traceback: err.stack || '' });
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    emit({ type: 'done' });
  }
}

let queue = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  // run() never throws; a request that is not JSON (or a dead events pipe) ends the kernel
  queue = queue.then(() => run(JSON.parse(line))).catch(() => process.exit(1));
});
rl.on('close', () => queue.then(() => process.exit(0)));
