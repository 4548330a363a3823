'use strict';
// What worker.js and producer.js share: loading the protos, building the client
// (address, TLS, bearer token, keepalive), promise wrappers with a deadline on
// every call, and small converters for Duration, Timestamp and error details.

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = path.resolve(__dirname, '..', '..', 'protos');

// camelCase field names (keepCase false), enums as their names, 64-bit integers
// as strings, defaults filled in, and each oneof's name set to the chosen field.
// google/protobuf/{duration,timestamp}.proto come with proto-loader itself.
const LOADER_OPTIONS = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTOS],
};

const packageDefinition = protoLoader.loadSync('dispatch/v1/dispatcher.proto', LOADER_OPTIONS);
const dispatchV1 = grpc.loadPackageDefinition(packageDefinition).dispatch.v1;

const TERMINAL_STATES = new Set([
  'JOB_STATE_SUCCEEDED',
  'JOB_STATE_DEAD_LETTERED',
  'JOB_STATE_CANCELLED',
]);

/** Adds `authorization: Bearer <token>` to every call, unary or streaming. */
function bearerInterceptor(token) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

/**
 * A DispatcherService client.
 *
 * @param {object} opts
 * @param {string} opts.address  host:port
 * @param {string} [opts.token]  API token, sent as `authorization: Bearer <token>`
 * @param {boolean} [opts.tls]   use TLS with the system roots
 * @param {string} [opts.tlsCa]  PEM file of the CA that signed the server certificate (implies TLS)
 */
function createClient({ address, token, tls = false, tlsCa }) {
  const credentials =
    tls || tlsCa
      ? grpc.credentials.createSsl(tlsCa ? fs.readFileSync(tlsCa) : null)
      : grpc.credentials.createInsecure();
  return new dispatchV1.DispatcherService(address, credentials, {
    interceptors: token ? [bearerInterceptor(token)] : [],
    // The server lets clients ping every 10 s even without calls; 20 s finds a
    // dead connection under an idle long-poll well before its deadline.
    'grpc.keepalive_time_ms': 20000,
    'grpc.keepalive_timeout_ms': 10000,
    'grpc.keepalive_permit_without_calls': 1,
  });
}

/**
 * Calls a unary method with a deadline. Returns {promise, call}: `call.cancel()`
 * abandons it (the promise then rejects with CANCELLED).
 */
function unaryCall(client, method, request, timeoutMs) {
  let call;
  const promise = new Promise((resolve, reject) => {
    call = client[method](request, { deadline: Date.now() + timeoutMs }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
  return { promise, call };
}

/** The same, when the caller never cancels. */
function unary(client, method, request, timeoutMs = 10000) {
  return unaryCall(client, method, request, timeoutMs).promise;
}

function durationToMs(d) {
  return d ? Number(d.seconds || 0) * 1000 + Math.round((d.nanos || 0) / 1e6) : 0;
}

function msToDuration(ms) {
  const seconds = Math.floor(ms / 1000);
  return { seconds: String(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

function timestampToDate(t) {
  if (!t || (Number(t.seconds || 0) === 0 && !t.nanos)) return null;
  return new Date(Number(t.seconds) * 1000 + Math.round((t.nanos || 0) / 1e6));
}

// ---- error details -------------------------------------------------------
// Failed calls carry a google.rpc.Status in the `grpc-status-details-bin`
// trailer, whose details hold a google.rpc.ErrorInfo with an UPPER_SNAKE
// reason (LEASE_EXPIRED, JOB_CANCELLED, ...). Decoding it needs only three
// fields of two messages, so a few lines of protobuf wire format do it.

function* wireFields(buf) {
  let i = 0;
  const varint = () => {
    let value = 0;
    let shift = 0;
    for (;;) {
      const b = buf[i++];
      value += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (b < 0x80) return value;
    }
  };
  while (i < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) yield [field, varint()];
    else if (wire === 2) {
      const n = varint();
      yield [field, buf.subarray(i, i + n)];
      i += n;
    } else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else return;
  }
}

/** The ErrorInfo reason of a failed call, or '' if it carries none. */
function errorReason(err) {
  const raw = err && err.metadata ? err.metadata.get('grpc-status-details-bin')[0] : undefined;
  if (!raw) return '';
  try {
    for (const [field, any] of wireFields(Buffer.from(raw))) {
      if (field !== 3) continue; // google.rpc.Status.details (repeated Any)
      let typeUrl = '';
      let value = null;
      for (const [f, v] of wireFields(any)) {
        if (f === 1) typeUrl = v.toString();
        if (f === 2) value = v;
      }
      if (typeUrl.endsWith('/google.rpc.ErrorInfo') && value) {
        for (const [f, v] of wireFields(value)) if (f === 1) return v.toString();
      }
    }
  } catch {
    // Not what we expected: no reason.
  }
  return '';
}

/** "CODE_NAME/REASON: message" for logs. */
function describeError(err) {
  const code = Object.keys(grpc.status).find((k) => grpc.status[k] === err.code) || err.code;
  const reason = errorReason(err);
  return `${code}${reason ? `/${reason}` : ''}: ${err.details || err.message}`;
}

/** Decodes a result or payload for display: JSON if it says so, else UTF-8 or base64. */
function decodeBody(bytes, contentType) {
  const buf = Buffer.from(bytes || []);
  if (buf.length === 0) return null;
  if ((contentType || '').includes('json')) {
    try {
      return JSON.parse(buf.toString('utf8'));
    } catch {
      // fall through
    }
  }
  const text = buf.toString('utf8');
  return Buffer.from(text, 'utf8').equals(buf) ? text : { base64: buf.toString('base64') };
}

/** Resolves after ms, or at once when signal is aborted. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal && signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      if (signal) signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (signal) signal.addEventListener('abort', done, { once: true });
  });
}

/** Jittered exponential backoff: attempt 0, 1, 2... -> up to capMs, never less than half. */
function backoffMs(attempt, baseMs = 200, capMs = 10000) {
  const ceiling = Math.min(capMs, baseMs * 2 ** attempt);
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

module.exports = {
  grpc,
  PROTOS,
  LOADER_OPTIONS,
  TERMINAL_STATES,
  createClient,
  unary,
  unaryCall,
  durationToMs,
  msToDuration,
  timestampToDate,
  errorReason,
  describeError,
  decodeBody,
  sleep,
  backoffMs,
};
