// Runs graphql-http's GraphQL-over-HTTP server audit against a running API and prints one JSON
// object: {"counts": {"ok": n, "notice": n, "warn": n, "error": n}, "results": [...]}.
// Usage: node audit.mjs <graphql url> <api key>
// The audit's requests carry no credentials of their own: fetchFn adds the API key to each one.
import { serverAudits } from 'graphql-http';

const [url, key] = process.argv.slice(2);
if (!url || !key) {
  console.error('usage: node audit.mjs <graphql url> <api key>');
  process.exit(2);
}

function withKey(input, init = {}) {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${key}`);
  return fetch(input, { ...init, headers });
}

const counts = { ok: 0, notice: 0, warn: 0, error: 0 };
const results = [];
// One at a time (auditServer runs all ~65 at once): gentler on a shared machine, same verdicts.
for (const audit of serverAudits({ url, fetchFn: withKey })) {
  const result = await audit.fn();
  counts[result.status] += 1;
  const row = { id: result.id, name: result.name, status: result.status };
  if (result.status !== 'ok') {
    row.reason = result.reason;
    row.httpStatus = result.response.status;
    row.contentType = result.response.headers.get('content-type');
  }
  results.push(row);
}
console.log(JSON.stringify({ counts, results }, null, 2));
