// The frontend guide's socket set-up (docs/frontend.md, "Subscriptions") with the real graphql-ws
// client: connectionParams is a function, so every (re)connect sends the current key or token.
// Follows one execution from afterSeq until it completes and prints one JSON object:
// {"events": [{seq, type, status}, ...], "connects": n}
// Usage: node subscribe.mjs <ws url> <api key> <execution id> <afterSeq>
import { createClient } from 'graphql-ws';
import WebSocket from 'ws'; // Node 20 has no global WebSocket; browsers do

const [url, key, id, afterSeqArg] = process.argv.slice(2);
let connects = 0;
let lastSeq = Number(afterSeqArg);

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: async () => ({ authorization: `Bearer ${key}` }),
  on: { connected: () => { connects += 1; } },
});

const query = `subscription ($id: ID!, $afterSeq: Int) {
  executionUpdates(id: $id, afterSeq: $afterSeq) { seq type status }
}`;

const events = [];
try {
  for await (const result of client.iterate({ query, variables: { id, afterSeq: lastSeq } })) {
    if (result.errors) throw new Error(JSON.stringify(result.errors));
    const event = result.data.executionUpdates;
    lastSeq = event.seq; // what a reconnect resumes from
    events.push(event);
  }
} finally {
  await client.dispose();
}
console.log(JSON.stringify({ events, connects }));
