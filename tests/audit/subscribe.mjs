// Runs the frontend guide's own graphql-ws code (docs/frontend.md, the block that exports
// followExecution) against the API: its URL swapped for <ws url>, its getToken answering
// <api key>. Follows one execution from <afterSeq> until its terminal event and prints
// {"events": [{seq, type, status}, ...]}.
// Usage: node subscribe.mjs <ws url> <api key> <execution id> <afterSeq>
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const [url, key, id, afterSeq] = process.argv.slice(2);
const guide = readFileSync(new URL('../../docs/frontend.md', import.meta.url), 'utf8');
const blocks = [...guide.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
const follow = blocks.find((code) => code.includes('export function followExecution'));
if (!follow) throw new Error('docs/frontend.md has no followExecution block');
const documents = [...guide.matchAll(/```graphql\n([\s\S]*?)```/g)].map((m) => m[1]);

// What the guide leaves to the app: a WebSocket (browsers have one; Node 20 has not), the
// token source, and the ExecutionUpdates document (the guide's own).
globalThis.WebSocket = WebSocket;
globalThis.getToken = async () => key;
globalThis.refreshToken = async () => {};
globalThis.EXECUTION_UPDATES = documents.find((d) => d.includes('subscription ExecutionUpdates'));

// Next to node_modules, so `import "graphql-ws"` resolves; removed once imported.
const module = new URL(`./.guide-${process.pid}.mjs`, import.meta.url);
writeFileSync(module, follow.replace('wss://workflows.example.com/graphql', url));
let followExecution;
try {
  ({ followExecution } = await import(module.href));
} finally {
  rmSync(fileURLToPath(module));
}

const events = [];
await new Promise((resolve, reject) => {
  setTimeout(() => reject(new Error(`timed out; events so far: ${JSON.stringify(events)}`)), 60000);
  followExecution(
    id,
    (event) => {
      events.push({ seq: event.seq, type: event.type, status: event.status });
      if (['COMPLETED', 'FAILED', 'CANCELLED'].includes(event.type)) resolve();
    },
    Number(afterSeq),
  );
});
console.log(JSON.stringify({ events }));
process.exit(0); // the guide's client keeps its socket for the next subscription
