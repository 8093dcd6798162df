// Reads events back from the EventService at TARGET with grpc-js and protobuf-es, for
// tests/service/test_roundtrip_bindings.py.
// Usage: node roundtrip.mjs TARGET DESCRIPTOR_SET SPEC_JSON
//   DESCRIPTOR_SET: a FileDescriptorSet of the contract (`buf build --as-file-descriptor-set`),
//     loaded into a protobuf-es registry: the same reflection protobuf-es generated code uses.
//   SPEC_JSON: {"aggregates": [UUID, ...], "head": N, "offline": [{"label", "hex"}, ...]}: the
//     aggregates to read with ReadAggregate (every page), the position a Subscribe from_start
//     must have caught up to, and envelopes to re-encode without the server (a control: what
//     protobuf-es alone makes of the bytes that were published).
// Prints one JSON line per event received: {"via", "aggregate", "position", "revision", "hex"},
// where `hex` is the protobuf-es binary serialization (toBinary) of the RecordedEvent's parsed
// envelope, and "wire" the envelope's bytes exactly as received when they differ from `hex`;
// then one line {"via": "offline", "label", "hex"} per offline envelope. Problems are lines
// {"via", "error"}. The last line is {"done": true, "errors": N}.
import { readFileSync } from "node:fs";
import grpc from "@grpc/grpc-js";
import { create, createFileRegistry, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

const TIMEOUT_MS = 50_000;
const CALL_DEADLINE_MS = 20_000;
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024; // the server's limit (pipeline_events.service.server)
const SERVICE = "/adaptive_pipeline.events.v1.EventService/";

const [target, descriptorSet, specPath] = process.argv.slice(2);
if (!target || !descriptorSet || !specPath) {
  console.error("usage: node roundtrip.mjs HOST:PORT DESCRIPTOR_SET SPEC_JSON");
  process.exit(2);
}
const spec = JSON.parse(readFileSync(specPath, "utf8"));
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, new Uint8Array(readFileSync(descriptorSet))));
const schema = (name) => {
  const desc = registry.getMessage(`adaptive_pipeline.events.v1.${name}`);
  if (!desc) throw new Error(`no message ${name} in ${descriptorSet}`);
  return desc;
};
const EventEnvelope = schema("EventEnvelope");
const ReadAggregateRequest = schema("ReadAggregateRequest");
const ReadAggregateResponse = schema("ReadAggregateResponse");
const SubscribeRequest = schema("SubscribeRequest");
const SubscribeResponse = schema("SubscribeResponse");

const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
  "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
});
const hex = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
const deadline = () => ({ deadline: Date.now() + CALL_DEADLINE_MS });
const serializer = (desc) => (message) => Buffer.from(toBinary(desc, message));
const raw = (buffer) => new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
const describe = (err) => (err?.code !== undefined ? `status ${err.code}: ${err.details}` : String(err?.stack ?? err));

let errors = 0;
function emit(line) {
  if (line.error !== undefined) errors++;
  console.log(JSON.stringify(line));
}
function finish() {
  emit({ done: true, errors });
  client.close();
  // stdout is a pipe, written asynchronously: exit once everything written has been flushed.
  process.stdout.write("", () => process.exit(0));
}
setTimeout(() => {
  emit({ via: "all", error: `not finished within ${TIMEOUT_MS} ms` });
  finish();
}, TIMEOUT_MS).unref();

// The envelope bytes of each RecordedEvent in `bytes`, exactly as on the wire, found by
// following `path` (field numbers of the length-delimited fields leading to RecordedEvents).
function wireEnvelopes(bytes, path) {
  const found = [];
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag();
    if (no === path[0] && wireType === WireType.LengthDelimited) {
      const inner = reader.bytes();
      if (path.length > 1) found.push(...wireEnvelopes(inner, path.slice(1)));
      else found.push(envelopeOf(inner));
    } else {
      reader.skip(wireType, no);
    }
  }
  return found;
}
function envelopeOf(recorded) {
  const reader = new BinaryReader(recorded);
  let envelope;
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag();
    if (no === 1 && wireType === WireType.LengthDelimited) envelope = reader.bytes();
    else reader.skip(wireType, no);
  }
  return envelope;
}

function report(via, aggregate, recorded, wire) {
  const reencoded = toBinary(EventEnvelope, recorded.envelope);
  const line = {
    via,
    aggregate,
    position: String(recorded.globalPosition),
    revision: String(recorded.revision),
    hex: hex(reencoded),
  };
  if (wire === undefined || Buffer.compare(Buffer.from(wire), Buffer.from(reencoded)) !== 0) {
    line.wire = wire === undefined ? null : hex(wire);
  }
  emit(line);
}

const readAggregate = (request) =>
  new Promise((ok, fail) =>
    client.makeUnaryRequest(
      `${SERVICE}ReadAggregate`,
      serializer(ReadAggregateRequest),
      (buffer) => raw(buffer),
      request,
      new grpc.Metadata(),
      deadline(),
      (err, res) => (err ? fail(err) : ok(res)),
    ),
  );

async function readAggregateAll(aggregate) {
  let fromRevision = 0n;
  for (;;) {
    const bytes = await readAggregate(create(ReadAggregateRequest, { aggregateId: aggregate, fromRevision }));
    const response = fromBinary(ReadAggregateResponse, bytes);
    const wire = wireEnvelopes(bytes, [1]);
    response.events.forEach((recorded, i) => report("read_aggregate", aggregate, recorded, wire[i]));
    if (response.nextRevision === 0n) return;
    fromRevision = response.nextRevision;
  }
}

function subscribeAll(head) {
  return new Promise((ok, fail) => {
    const request = create(SubscribeRequest, { start: { case: "fromStart", value: {} } });
    const call = client.makeServerStreamRequest(
      `${SERVICE}Subscribe`,
      serializer(SubscribeRequest),
      (buffer) => raw(buffer),
      request,
      new grpc.Metadata(),
      deadline(),
    );
    let done = false;
    call.on("data", (bytes) => {
      try {
        const message = fromBinary(SubscribeResponse, bytes);
        if (message.content.case === "events") {
          const wire = wireEnvelopes(bytes, [1, 1]);
          message.content.value.events.forEach((recorded, i) => report("subscribe", null, recorded, wire[i]));
        } else if (message.content.case === "caughtUp" && message.content.value.position >= BigInt(head)) {
          done = true;
          call.cancel();
          ok();
        }
      } catch (err) {
        done = true;
        call.cancel();
        fail(err);
      }
    });
    call.on("error", (err) => {
      if (!done) fail(err);
    });
    call.on("end", () => {
      if (!done) fail(new Error("the subscription ended before catching up"));
    });
  });
}

async function main() {
  for (const aggregate of spec.aggregates) {
    try {
      await readAggregateAll(aggregate);
    } catch (err) {
      emit({ via: "read_aggregate", aggregate, error: describe(err) });
    }
  }
  try {
    await subscribeAll(spec.head);
  } catch (err) {
    emit({ via: "subscribe", error: describe(err) });
  }
  for (const { label, hex: sent } of spec.offline ?? []) {
    try {
      const envelope = fromBinary(EventEnvelope, new Uint8Array(Buffer.from(sent, "hex")));
      emit({ via: "offline", label, hex: hex(toBinary(EventEnvelope, envelope)) });
    } catch (err) {
      emit({ via: "offline", label, error: describe(err) });
    }
  }
}

main()
  .catch((err) => emit({ via: "all", error: describe(err) }))
  .finally(finish);
