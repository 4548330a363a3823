#!/usr/bin/env node
'use strict';
// Enqueues one job and prints {"jobId": ..., "created": ...} as one JSON line.
// With --wait, follows the job with StreamUpdates until it is terminal and
// prints the final job as a second JSON line (state, attempts, error, and the
// result decoded: JSON when its content type says so).
//
//   node producer.js --address 127.0.0.1:50051 --queue math --type add --payload '{"a":1,"b":2}' --wait
//
// Environment: DISPATCHER_ADDRESS, DISPATCHER_TOKEN, DISPATCHER_NAMESPACE,
// DISPATCHER_TLS_CA. Exit codes: 0 (with --wait: the job SUCCEEDED), 1 on an
// RPC failure, 2 on bad options, 3 if the job ended DEAD_LETTERED or CANCELLED.

const { parseArgs } = require('node:util');
const rpc = require('./client');

const { grpc } = rpc;

const USAGE = `usage: node producer.js --address HOST:PORT --queue Q --type T [--payload DATA]
       [--content-type TYPE] [--priority critical|high|default|low] [--max-attempts N]
       [--delay SECONDS] [--lease-duration SECONDS] [--idempotency-key K] [--namespace NS] [--token T]
       [--tls] [--tls-ca FILE] [--wait] [--timeout SECONDS]`;

function options(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      address: { type: 'string', default: process.env.DISPATCHER_ADDRESS || '127.0.0.1:50051' },
      queue: { type: 'string', default: '' },
      type: { type: 'string', default: '' },
      payload: { type: 'string', default: '' },
      'content-type': { type: 'string', default: '' },
      priority: { type: 'string', default: '' },
      'max-attempts': { type: 'string', default: '0' },
      delay: { type: 'string', default: '' },
      'lease-duration': { type: 'string', default: '' },
      'idempotency-key': { type: 'string', default: '' },
      namespace: { type: 'string', default: process.env.DISPATCHER_NAMESPACE || '' },
      token: { type: 'string', default: process.env.DISPATCHER_TOKEN || '' },
      tls: { type: 'boolean', default: false },
      'tls-ca': { type: 'string', default: process.env.DISPATCHER_TLS_CA || '' },
      wait: { type: 'boolean', default: false },
      timeout: { type: 'string', default: '300' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  return values;
}

function jobSpec(o) {
  let contentType = o['content-type'];
  if (!contentType && o.payload) {
    try {
      JSON.parse(o.payload);
      contentType = 'application/json';
    } catch {
      contentType = 'text/plain; charset=utf-8';
    }
  }
  const spec = {
    queue: o.queue,
    type: o.type,
    payload: Buffer.from(o.payload, 'utf8'),
    contentType,
    maxAttempts: Number(o['max-attempts']) || 0,
    idempotencyKey: o['idempotency-key'],
  };
  if (o.priority) spec.priority = `PRIORITY_${o.priority.toUpperCase()}`;
  if (o.delay) spec.delay = rpc.msToDuration(Number(o.delay) * 1000);
  if (o['lease-duration'])
    spec.leaseDuration = rpc.msToDuration(Number(o['lease-duration']) * 1000);
  return spec;
}

/** The parts of a Job worth printing, with the result decoded. */
function summary(job) {
  const time = (t) => {
    const d = rpc.timestampToDate(t);
    return d ? d.toISOString() : null;
  };
  return {
    jobId: job.id,
    queue: job.queue,
    type: job.type,
    state: job.state,
    terminalReason: job.terminalReason,
    attempt: job.attempt,
    maxAttempts: job.maxAttempts,
    lastError: job.lastError,
    result: rpc.decodeBody(job.result, job.resultContentType),
    resultContentType: job.resultContentType,
    createTime: time(job.createTime),
    finishTime: time(job.finishTime),
  };
}

/**
 * Follows one job until it is terminal and returns it. The stream starts with
 * the job's current state, so after a broken connection it is simply opened
 * again; the terminal message carries the whole job with its result.
 */
async function follow(client, namespace, jobId, deadlineMs) {
  for (let attempt = 0; ; attempt++) {
    try {
      const job = await followOnce(client, namespace, jobId, deadlineMs);
      if (job) return job;
    } catch (err) {
      if (![grpc.status.UNAVAILABLE, grpc.status.INTERNAL].includes(err.code)) throw err;
      if (Date.now() > deadlineMs) throw err;
    }
    await rpc.sleep(rpc.backoffMs(attempt));
  }
}

function followOnce(client, namespace, jobId, deadlineMs) {
  return new Promise((resolve, reject) => {
    let last = null;
    const stream = client.StreamUpdates({ namespace, jobIds: [jobId] }, { deadline: deadlineMs });
    stream.on('data', (update) => {
      if (update.job) last = update.job;
      if (rpc.TERMINAL_STATES.has(update.state) && update.job) {
        resolve(update.job);
        stream.cancel();
      }
    });
    stream.on('error', (err) => (err.code === grpc.status.CANCELLED ? null : reject(err)));
    stream.on('end', () => resolve(last && rpc.TERMINAL_STATES.has(last.state) ? last : null));
  });
}

async function main() {
  let o;
  try {
    o = options(process.argv.slice(2));
  } catch (err) {
    console.error(`${err.message}\n${USAGE}`);
    return 2;
  }
  if (o.help) {
    console.log(USAGE);
    return 0;
  }
  if (!o.queue || !o.type) {
    console.error(`--queue and --type are required\n${USAGE}`);
    return 2;
  }
  const client = rpc.createClient({
    address: o.address,
    token: o.token,
    tls: o.tls,
    tlsCa: o['tls-ca'],
  });
  try {
    const { job, created } = await rpc.unary(client, 'Enqueue', {
      namespace: o.namespace,
      job: jobSpec(o),
    });
    console.log(JSON.stringify({ jobId: job.id, created }));
    if (!o.wait) return 0;
    const deadline = Date.now() + Number(o.timeout) * 1000;
    let final = await follow(client, o.namespace, job.id, deadline);
    if (!final.id) {
      final = (await rpc.unary(client, 'GetStatus', { namespace: o.namespace, jobId: job.id })).job;
    }
    console.log(JSON.stringify(summary(final)));
    return final.state === 'JOB_STATE_SUCCEEDED' ? 0 : 3;
  } catch (err) {
    console.error(`producer: ${rpc.describeError(err)}`);
    return 1;
  } finally {
    client.close();
  }
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      console.error(err.stack || err);
      process.exit(1);
    },
  );
}

module.exports = { jobSpec, summary, follow };
