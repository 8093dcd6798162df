// A grpc-js client that publishes to and subscribes from the EventService at TARGET (host:port).
// Usage: node client.mjs TARGET. Prints one line per check, then `N passed, M failed`.
import { randomUUID } from "node:crypto";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const TIMEOUT_MS = 20_000;
const CALL_DEADLINE_MS = 5_000;
const SETTLE_MS = 300; // how long the subscription must stay quiet after the expected events

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const target = process.argv[2];
if (!target) {
  console.error("usage: node client.mjs HOST:PORT");
  process.exit(2);
}

// keepCase: field names are the proto's snake_case ones throughout this file.
// The google/protobuf imports resolve to the copies bundled with protobufjs/proto-loader.
const definition = protoLoader.loadSync("adaptive_pipeline/events/v1/service.proto", {
  includeDirs: [join(root, "proto"), join(root, "build", "protovalidate")],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
});
const { EventService } = grpc.loadPackageDefinition(definition).adaptive_pipeline.events.v1;
const client = new EventService(target, grpc.credentials.createInsecure());

let passed = 0;
let failed = 0;
function check(name, ok, detail = "") {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${!ok && detail ? `: ${detail}` : ""}`);
}
function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed > 0 || passed === 0 ? 1 : 0);
}
setTimeout(() => {
  check("finished within 20 s", false, "overall timeout");
  finish();
}, TIMEOUT_MS);

const deadline = () => ({ deadline: Date.now() + CALL_DEADLINE_MS });
const publish = (request) =>
  new Promise((ok, fail) => client.Publish(request, deadline(), (err, res) => (err ? fail(err) : ok(res))));
const describe = (err) => (err?.code !== undefined ? `status ${err.code}: ${err.details}` : String(err));
const positionsOf = (response) => (response?.positions ?? []).map((p) => `${p.global_position}/${p.revision}`);

function chunkProcessed(pipelineId, sequence) {
  const now = Date.now();
  return {
    event_id: randomUUID(),
    aggregate_id: pipelineId,
    event_type: "EVENT_TYPE_CHUNK_PROCESSED",
    occurred_at: { seconds: String(Math.floor(now / 1000)), nanos: (now % 1000) * 1_000_000 },
    schema_version: "1",
    chunk_processed: {
      processing_id: randomUUID(),
      chunk_id: randomUUID(),
      chunk_sequence: String(sequence),
      chunk_size: "65536",
      stage_name: "compression",
      processing_time_ms: "12",
    },
  };
}

// The subscription: collects events, notes caught_up, and lets the script wait for a condition.
function subscribe(pipelineId) {
  const state = { events: [], caughtUp: 0, error: null, waiters: [] };
  const call = client.Subscribe({ from_start: {}, filter: { aggregate_ids: [pipelineId] } });
  const wake = () => {
    state.waiters = state.waiters.filter((w) => !w());
  };
  call.on("data", (message) => {
    if (message.content === "events") state.events.push(...message.events.events);
    if (message.content === "caught_up") state.caughtUp++;
    wake();
  });
  call.on("error", (err) => {
    state.error = err;
    wake();
  });
  state.call = call;
  // Resolves once `ready()` holds; rejects if the stream fails first.
  state.until = (ready) =>
    new Promise((ok, fail) => {
      const test = () => {
        if (ready()) ok();
        else if (state.error) fail(state.error);
        else return false;
        return true;
      };
      if (!test()) state.waiters.push(test);
    });
  return state;
}

async function main() {
  const pipelineId = randomUUID();
  const batch = [0, 1, 2].map((i) => chunkProcessed(pipelineId, i));
  const request = {
    events: batch,
    expected_revisions: [{ aggregate_id: pipelineId, no_stream: {} }],
  };
  const wanted = ["1/1", "2/2", "3/3"];

  const sub = subscribe(pipelineId);
  try {
    await sub.until(() => sub.caughtUp > 0);
    check("subscription from_start catches up on an empty stream", true);
  } catch (err) {
    check("subscription from_start catches up on an empty stream", false, describe(err));
  }

  let first;
  try {
    first = await publish(request);
    const got = positionsOf(first);
    const ok = got.join() === wanted.join() && !first.already_recorded;
    check("publish 3 events with expected revision no_stream", ok, `positions ${got}`);
  } catch (err) {
    check("publish 3 events with expected revision no_stream", false, describe(err));
  }

  try {
    const invalid = { ...chunkProcessed(pipelineId, 3), event_id: "not-a-uuid" };
    await publish({ events: [invalid] });
    check("invalid envelope is rejected with INVALID_ARGUMENT", false, "it was accepted");
    check("rejection carries grpc-status-details-bin", false, "no rejection");
  } catch (err) {
    check("invalid envelope is rejected with INVALID_ARGUMENT", err.code === grpc.status.INVALID_ARGUMENT, describe(err));
    const [details] = err.metadata?.get("grpc-status-details-bin") ?? [];
    const ok = Buffer.isBuffer(details) && details.includes("google.rpc.BadRequest");
    check("rejection carries grpc-status-details-bin", ok, details ? "no google.rpc.BadRequest in it" : "trailer missing");
  }

  try {
    const again = await publish(request);
    const got = positionsOf(again);
    const ok = got.join() === wanted.join() && again.already_recorded === true;
    check("republishing the batch returns the same positions", ok, `positions ${got}, already_recorded ${again.already_recorded}`);
  } catch (err) {
    check("republishing the batch returns the same positions", false, describe(err));
  }

  try {
    await sub.until(() => sub.events.length >= 3);
    await new Promise((ok) => setTimeout(ok, SETTLE_MS)); // let any wrongly appended extra arrive
    const got = sub.events.map((e) => `${e.global_position}/${e.revision}`);
    const ids = sub.events.map((e) => e.envelope.event_id);
    const ok = got.join() === wanted.join() && ids.join() === batch.map((e) => e.event_id).join();
    check("subscription delivers exactly the 3 events, in order", ok, `positions ${got}`);
  } catch (err) {
    check("subscription delivers exactly the 3 events, in order", false, describe(err));
  }

  const ended = sub.error ? Promise.resolve(sub.error) : new Promise((ok) => sub.call.on("error", ok));
  sub.call.cancel();
  const err = await ended;
  check("cancelling the subscription ends it with CANCELLED", err.code === grpc.status.CANCELLED, describe(err));
}

main()
  .catch((err) => check("client ran", false, err?.stack ?? String(err)))
  .finally(() => {
    client.close();
    finish();
  });
