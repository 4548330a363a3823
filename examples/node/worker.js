#!/usr/bin/env node
'use strict';
// A dispatcher worker in plain Node: long-polls Lease, runs each job's handler,
// heartbeats every lease it holds in one call, Acks or Nacks, and on SIGTERM
// gives back what it cannot finish. The protocol it follows is described in
// docs/other-languages.md; this file is one way to follow it.
//
//   node worker.js --address 127.0.0.1:50051 --queues emails,reports --concurrency 4 [--token T]
//
// Environment: DISPATCHER_ADDRESS, DISPATCHER_QUEUES, DISPATCHER_TOKEN,
// DISPATCHER_NAMESPACE, DISPATCHER_TLS_CA. Exit codes: 0 after a clean
// shutdown, 2 on bad options or a credential the server refuses.

const os = require('node:os');
const { parseArgs } = require('node:util');
const rpc = require('./client');

const { grpc } = rpc;
const S = grpc.status;

// ---- handlers ------------------------------------------------------------
// One async function per job type. It gets a context and returns the result:
// json(value) for a JSON result, a Buffer or string for raw bytes, or nothing.
// Throwing Nacks the job with the error message (retried while attempts last);
// throwing a NonRetryableError dead-letters it at once. `ctx.signal` is aborted
// when the worker stops working on the job (lease lost, cancelled, shutdown).

class NonRetryableError extends Error {
  constructor(message) {
    super(message);
    this.name = 'NonRetryableError';
  }
}

const json = (value) => ({
  body: Buffer.from(JSON.stringify(value)),
  contentType: 'application/json',
});

const handlers = {
  // {"a": 1, "b": 2} -> {"sum": 3}
  async add(ctx) {
    const { a, b } = ctx.json() || {};
    if (typeof a !== 'number' || typeof b !== 'number') {
      throw new NonRetryableError('add expects a JSON payload {"a": <number>, "b": <number>}');
    }
    return json({ sum: a + b });
  },

  // Always fails: shows retries and dead-lettering.
  async fail(ctx) {
    throw new Error(
      `fail handler: intentional failure of job ${ctx.job.id} (attempt ${ctx.job.attempt})`,
    );
  },

  // {"ms": 5000}: a long job that reports progress and stops when told to.
  async sleep(ctx) {
    const { ms } = ctx.json();
    const started = Date.now();
    while (Date.now() - started < ms) {
      if (ctx.signal.aborted) throw new Error('sleep: stopped');
      await rpc.sleep(Math.min(100, ms - (Date.now() - started)), ctx.signal);
      ctx.progress(Math.min(100, ((Date.now() - started) / ms) * 100), 'sleeping');
    }
    return json({ slept_ms: Date.now() - started });
  },
};

function toResult(value) {
  if (value === undefined || value === null) return { body: Buffer.alloc(0), contentType: '' };
  if (Buffer.isBuffer(value)) return { body: value, contentType: 'application/octet-stream' };
  if (typeof value === 'string')
    return { body: Buffer.from(value), contentType: 'text/plain; charset=utf-8' };
  if (Buffer.isBuffer(value.body))
    return { body: value.body, contentType: value.contentType || '' };
  return json(value);
}

// ---- the worker ------------------------------------------------------------

// Codes after which polling again cannot help: fix the configuration.
const FATAL = new Set([
  S.UNAUTHENTICATED,
  S.PERMISSION_DENIED,
  S.INVALID_ARGUMENT,
  S.UNIMPLEMENTED,
]);
// Codes after which an Ack, Nack or Heartbeat is worth sending again (all three
// are harmless to repeat with the same lease token).
const TRANSIENT = new Set([S.UNAVAILABLE, S.DEADLINE_EXCEEDED, S.RESOURCE_EXHAUSTED, S.ABORTED]);
// The lease token is no longer this worker's: stop, and never Ack or Nack it.
const LEASE_GONE = new Set([S.FAILED_PRECONDITION, S.NOT_FOUND]);
const MAX_BATCH = 1000;
const RPC_TIMEOUT_MS = 10000;

class Worker {
  constructor({ client, namespace = '', workerId, queues, concurrency, pollWaitMs, graceMs, log }) {
    Object.assign(this, {
      client,
      namespace,
      workerId,
      queues,
      concurrency,
      pollWaitMs,
      graceMs,
      log,
    });
    this.tasks = new Map(); // lease token -> task
    this.stopping = false;
    this.stopCtl = new AbortController(); // aborted when shutdown starts
    this.graceCtl = new AbortController(); // aborted when the grace period ends
    this.beatsCtl = new AbortController(); // aborted when heartbeats must stop
    this.slotWaiter = null;
    this.pollCall = null;
    this.fatal = null;
  }

  /** Runs until stop() and the shutdown sequence end. Resolves to the exit code. */
  async run() {
    this.log(
      `worker ${this.workerId} leasing ${this.queues.join(',')} (concurrency ${this.concurrency})`,
    );
    const beats = this.heartbeatLoop();
    try {
      await this.pollLoop();
    } finally {
      await this.shutdown();
      this.beatsCtl.abort();
      await beats;
      this.client.close();
    }
    return this.fatal ? 2 : 0;
  }

  /** First call: stop leasing and drain. A second call: give everything back now. */
  stop(why) {
    if (this.stopping) {
      this.log(`${why} again: releasing running jobs now`);
      this.graceCtl.abort();
      return;
    }
    this.stopping = true;
    this.log(
      `${why}: no new leases; waiting up to ${this.graceMs} ms for ${this.busy()} running job(s)`,
    );
    this.stopCtl.abort();
    this.wakePoller();
    const timer = setTimeout(() => this.graceCtl.abort(), this.graceMs);
    this.graceCtl.signal.addEventListener('abort', () => {
      clearTimeout(timer);
      // A poll still waiting now is abandoned. Jobs the server leased to it in
      // that instant are redelivered when their lease expires.
      if (this.pollCall) this.pollCall.cancel();
    });
  }

  busy() {
    return [...this.tasks.values()].filter((t) => t.state === 'running').length;
  }

  // ---- leasing -------------------------------------------------------------

  async pollLoop() {
    let failures = 0;
    while (!this.stopping) {
      const free = this.concurrency - this.tasks.size;
      if (free <= 0) {
        await new Promise((resolve) => (this.slotWaiter = resolve));
        continue;
      }
      const request = {
        namespace: this.namespace,
        workerId: this.workerId,
        queues: this.queues,
        maxJobs: Math.min(free, MAX_BATCH),
        wait: rpc.msToDuration(this.pollWaitMs),
      };
      // The deadline outlives the wait, so an empty answer is the normal end of a poll.
      const { promise, call } = rpc.unaryCall(
        this.client,
        'Lease',
        request,
        this.pollWaitMs + 10000,
      );
      this.pollCall = call;
      let leases;
      try {
        leases = (await promise).leases;
      } catch (err) {
        if (this.stopping && err.code === S.CANCELLED) break;
        if (FATAL.has(err.code)) {
          this.fatal = err;
          this.log(`Lease refused, giving up: ${rpc.describeError(err)}`);
          break;
        }
        const delay = rpc.backoffMs(failures++);
        this.log(`Lease failed (${rpc.describeError(err)}); retrying in ${Math.round(delay)} ms`);
        await rpc.sleep(delay, this.stopCtl.signal);
        continue;
      } finally {
        this.pollCall = null;
      }
      if (failures > 0) this.log(`connected again after ${failures} failed poll(s)`);
      failures = 0;
      if (this.stopping) {
        // Leased while shutdown began: give them straight back.
        await this.release(leases.map((lease) => this.track(lease)));
        break;
      }
      for (const lease of leases) this.start(lease);
    }
  }

  wakePoller() {
    if (this.slotWaiter) {
      this.slotWaiter();
      this.slotWaiter = null;
    }
  }

  track(lease) {
    const now = Date.now();
    const job = lease.job;
    const expire = rpc.timestampToDate(lease.expireTime);
    const durationMs =
      rpc.durationToMs(job.leaseDuration) || (expire ? Math.max(1000, expire - now) : 30000);
    const task = {
      job,
      token: lease.leaseToken,
      durationMs,
      nextBeatAt: now + durationMs / 3,
      state: 'running', // -> completing -> done | lost | cancelled | released
      abort: new AbortController(),
      progress: null,
      done: Promise.resolve(),
    };
    this.tasks.set(task.token, task);
    return task;
  }

  start(lease) {
    const task = this.track(lease);
    task.done = this.execute(task)
      .catch((err) => this.log(`job ${task.job.id}: ${err.stack || err}`))
      .finally(() => {
        // The slot is free only once the handler has really returned.
        this.tasks.delete(task.token);
        this.wakePoller();
      });
  }

  // ---- running one job -------------------------------------------------------

  async execute(task) {
    const { job } = task;
    const handler =
      handlers[job.type] ||
      (() => {
        throw new NonRetryableError(`no handler for job type "${job.type}" in this worker`);
      });
    const ctx = {
      job,
      payload: Buffer.from(job.payload || []),
      json: () => JSON.parse(Buffer.from(job.payload || []).toString('utf8') || 'null'),
      signal: task.abort.signal,
      progress: (percent, message = '') => (task.progress = { percent, message }),
    };
    let value;
    let failed = false;
    let failure;
    try {
      value = await handler(ctx);
    } catch (err) {
      failed = true;
      failure = err instanceof Error ? err : new Error(String(err));
    }
    if (task.state !== 'running') return; // lost, cancelled or given back meanwhile
    task.state = 'completing';
    if (!failed) {
      const { body, contentType } = toResult(value);
      const ok = await this.settle(task, 'Ack', {
        leaseToken: task.token,
        result: body,
        resultContentType: contentType,
      });
      if (ok) this.log(`job ${job.id} (${job.type}) succeeded on attempt ${job.attempt}`);
    } else {
      const retry = !(failure instanceof NonRetryableError);
      const error = `${failure.name}: ${failure.message}`;
      this.log(`job ${job.id} (${job.type}) failed on attempt ${job.attempt}: ${error}`);
      await this.settle(task, 'Nack', { leaseToken: task.token, error, retry });
    }
    task.state = 'done';
  }

  /**
   * Sends one Ack or Nack item, again on transient errors for as long as the
   * lease could still be live (the same token makes a repeat harmless).
   * Returns true if the server took it.
   */
  async settle(task, method, item) {
    const giveUpAt = Date.now() + task.durationMs;
    for (let attempt = 0; ; attempt++) {
      try {
        await rpc.unary(
          this.client,
          method,
          { namespace: this.namespace, items: [item] },
          RPC_TIMEOUT_MS,
        );
        return true;
      } catch (err) {
        if (method === 'Ack' && rpc.errorReason(err) === 'JOB_CANCELLED') {
          // Cancelled while it ran: the result is refused; a Nack ends it CANCELLED.
          this.log(`job ${task.job.id} was cancelled while it ran; its result is dropped`);
          return this.settle(task, 'Nack', {
            leaseToken: task.token,
            error: 'cancelled',
            retry: false,
          });
        }
        if (!TRANSIENT.has(err.code) || Date.now() > giveUpAt) {
          this.log(`${method} of job ${task.job.id} refused: ${rpc.describeError(err)}`);
          return false;
        }
        await rpc.sleep(rpc.backoffMs(attempt, 100, 2000));
      }
    }
  }

  // ---- heartbeats ------------------------------------------------------------

  /** One Heartbeat call for every running lease, at a third of the lease duration. */
  async heartbeatLoop() {
    const stop = this.beatsCtl.signal;
    while (!stop.aborted) {
      const running = [...this.tasks.values()].filter((t) => t.state === 'running');
      const due = Math.min(...running.map((t) => t.nextBeatAt));
      const now = Date.now();
      if (!running.length || due > now) {
        await rpc.sleep(Math.min(running.length ? due - now : 250, 250), stop);
        continue;
      }
      for (let i = 0; i < running.length; i += MAX_BATCH) {
        await this.beat(running.slice(i, i + MAX_BATCH));
      }
    }
  }

  async beat(tasks) {
    const sentAt = Date.now();
    const items = tasks.map((t) => ({ leaseToken: t.token, progress: t.progress || undefined }));
    const shortest = Math.min(...tasks.map((t) => t.durationMs));
    let results;
    try {
      const timeout = Math.max(500, Math.min(RPC_TIMEOUT_MS, shortest / 3));
      results = (
        await rpc.unary(this.client, 'Heartbeat', { namespace: this.namespace, items }, timeout)
      ).results;
    } catch (err) {
      if (tasks.length === 1 && LEASE_GONE.has(err.code)) {
        // A one-item call fails as a whole with the item's error.
        this.lose(tasks[0], rpc.describeError(err));
        return;
      }
      this.log(`Heartbeat failed (${rpc.describeError(err)}); trying again shortly`);
      for (const t of tasks) t.nextBeatAt = Date.now() + Math.min(1000, t.durationMs / 10);
      return;
    }
    results.forEach((result, i) => {
      const task = tasks[i];
      if (task.state !== 'running') return; // finished while the call was in flight
      const error = result.error;
      if (error && error.code) {
        if (LEASE_GONE.has(error.code)) {
          this.lose(task, `${error.reason}: ${error.message}`);
        } else {
          this.log(`Heartbeat of job ${task.job.id}: ${error.reason}: ${error.message}`);
          task.progress = null; // most likely a bad progress value: drop it
          task.nextBeatAt = Date.now() + Math.min(1000, task.durationMs / 10);
        }
        return;
      }
      if (items[i].progress === task.progress) task.progress = null;
      task.nextBeatAt = sentAt + task.durationMs / 3;
      if (result.cancelRequested) this.cancel(task);
    });
  }

  lose(task, why) {
    if (task.state !== 'running') return;
    task.state = 'lost';
    task.abort.abort(new Error('lease lost'));
    this.log(`lost the lease of job ${task.job.id} (${why}); dropping it`);
  }

  async cancel(task) {
    task.state = 'cancelled';
    task.abort.abort(new Error('cancel requested'));
    this.log(`job ${task.job.id} cancel requested; stopping it`);
    await this.settle(task, 'Nack', { leaseToken: task.token, error: 'cancelled', retry: false });
  }

  // ---- shutdown ----------------------------------------------------------------

  async shutdown() {
    this.stopping = true;
    const grace = new Promise((resolve) => {
      if (this.graceCtl.signal.aborted) resolve();
      this.graceCtl.signal.addEventListener('abort', resolve, { once: true });
    });
    if (this.fatal) this.graceCtl.abort();
    await Promise.race([Promise.allSettled([...this.tasks.values()].map((t) => t.done)), grace]);
    const left = [...this.tasks.values()].filter((t) => t.state === 'running');
    await this.release(left);
    // Acks and Nacks already on the wire get their own deadline to finish.
    const settling = [...this.tasks.values()].filter((t) => t.state === 'completing');
    await Promise.race([
      Promise.allSettled(settling.map((t) => t.done)),
      rpc.sleep(RPC_TIMEOUT_MS),
    ]);
    this.log('stopped');
  }

  /** Gives leases back unfinished: queued again at once, the attempt not counted. */
  async release(tasks) {
    if (!tasks.length) return;
    for (const t of tasks) {
      t.state = 'released';
      t.abort.abort(new Error('worker shutting down'));
    }
    for (let i = 0; i < tasks.length; i += MAX_BATCH) {
      const chunk = tasks.slice(i, i + MAX_BATCH);
      const items = chunk.map((t) => ({
        leaseToken: t.token,
        release: true,
        error: 'worker shutting down',
      }));
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          const { results } = await rpc.unary(
            this.client,
            'Nack',
            { namespace: this.namespace, items },
            RPC_TIMEOUT_MS,
          );
          const refused = results.filter((r) => r.error && r.error.code).length;
          this.log(
            `released ${chunk.length - refused} job(s) for redelivery${refused ? ` (${refused} no longer ours)` : ''}`,
          );
          break;
        } catch (err) {
          if (!TRANSIENT.has(err.code) || attempt === 2) {
            this.log(
              `releasing ${chunk.length} job(s) failed (${rpc.describeError(err)}); they return when their leases expire`,
            );
            break;
          }
          await rpc.sleep(rpc.backoffMs(attempt));
        }
      }
    }
  }
}

// ---- command line ------------------------------------------------------------

const USAGE = `usage: node worker.js --address HOST:PORT --queues Q1,Q2 [--concurrency N] [--token T]
       [--namespace NS] [--worker-id ID] [--wait SECONDS] [--grace SECONDS] [--tls] [--tls-ca FILE]`;

function options(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      address: { type: 'string', default: process.env.DISPATCHER_ADDRESS || '127.0.0.1:50051' },
      queues: { type: 'string', default: process.env.DISPATCHER_QUEUES || '' },
      concurrency: { type: 'string', default: '4' },
      token: { type: 'string', default: process.env.DISPATCHER_TOKEN || '' },
      namespace: { type: 'string', default: process.env.DISPATCHER_NAMESPACE || '' },
      'worker-id': { type: 'string', default: `node-${os.hostname()}-${process.pid}` },
      wait: { type: 'string', default: '10' },
      grace: { type: 'string', default: '30' },
      tls: { type: 'boolean', default: false },
      'tls-ca': { type: 'string', default: process.env.DISPATCHER_TLS_CA || '' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const queues = values.queues
    .split(',')
    .map((q) => q.trim())
    .filter(Boolean);
  const concurrency = Number(values.concurrency);
  const wait = Number(values.wait);
  const grace = Number(values.grace);
  const problems = [];
  if (!queues.length) problems.push('--queues (or DISPATCHER_QUEUES) names no queue');
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_BATCH) {
    problems.push(`--concurrency must be an integer from 1 to ${MAX_BATCH}`);
  }
  if (!(wait >= 0 && wait <= 30)) problems.push('--wait must be 0 to 30 seconds');
  if (!(grace >= 0)) problems.push('--grace must be a number of seconds');
  return { values, queues, concurrency, wait, grace, problems };
}

async function main() {
  let opts;
  try {
    opts = options(process.argv.slice(2));
  } catch (err) {
    console.error(`${err.message}\n${USAGE}`);
    return 2;
  }
  if (opts.values.help) {
    console.log(USAGE);
    return 0;
  }
  if (opts.problems.length) {
    console.error(`${opts.problems.join('\n')}\n${USAGE}`);
    return 2;
  }
  const { values } = opts;
  const client = rpc.createClient({
    address: values.address,
    token: values.token,
    tls: values.tls,
    tlsCa: values['tls-ca'],
  });
  const worker = new Worker({
    client,
    namespace: values.namespace,
    workerId: values['worker-id'],
    queues: opts.queues,
    concurrency: opts.concurrency,
    pollWaitMs: opts.wait * 1000,
    graceMs: opts.grace * 1000,
    log: (line) => console.error(`${new Date().toISOString()} ${line}`),
  });
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => worker.stop(sig));
  return worker.run();
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

module.exports = { Worker, handlers, json, NonRetryableError };
