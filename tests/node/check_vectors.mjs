// Decodes every golden vector with protobuf-es and checks it against its JSON twin.
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { equals, fromBinary, fromJson, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { EventEnvelopeSchema, EventTypeSchema } from "./gen/adaptive_pipeline/events/v1/envelope_pb.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const dir = resolve(process.argv[2] ?? join(root, "tests", "vectors", "v1"));
const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
if (manifest.message !== EventEnvelopeSchema.typeName) {
  throw new Error(`manifest is for ${manifest.message}, this check decodes ${EventEnvelopeSchema.typeName}`);
}

const hex = (bytes) => Buffer.from(bytes).toString("hex");

// A message's wire records as text, sub-messages canonicalised recursively and
// map entries sorted among their own slots: serializers may write map entries
// in any order (JS objects even put integer-like keys first), nothing else.
function canonical(desc, bytes) {
  const reader = new BinaryReader(bytes);
  const records = [];
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag();
    const field = desc.fields.find((f) => f.number === no);
    let body;
    if (wireType !== WireType.LengthDelimited || !field) {
      body = hex(reader.skip(wireType, no));
    } else if (field.fieldKind === "message" || field.listKind === "message") {
      body = canonical(field.message, reader.bytes());
    } else if (field.mapKind === "message") {
      body = canonical({ fields: [{ number: 2, fieldKind: "message", message: field.message }] }, reader.bytes());
    } else {
      body = hex(reader.bytes());
    }
    records.push({ isMap: field?.fieldKind === "map", text: `${no}:${wireType}:${body}` });
  }
  const entries = records.filter((r) => r.isMap).map((r) => r.text).sort();
  return `[${records.map((r) => (r.isMap ? entries.shift() : r.text)).join(",")}]`;
}

const sameWire = (x, y) => canonical(EventEnvelopeSchema, x) === canonical(EventEnvelopeSchema, y);

function check(entry) {
  const bytes = new Uint8Array(readFileSync(join(dir, entry.binary)));
  const a = fromBinary(EventEnvelopeSchema, bytes);
  const b = fromJson(EventEnvelopeSchema, JSON.parse(readFileSync(join(dir, entry.json), "utf8")));
  const problems = [];
  const notes = [];
  const encoded = toBinary(EventEnvelopeSchema, a);
  // equals() is IEEE (NaN != NaN), so a NaN-bearing pair falls back to its
  // re-encoding, which writes NaN the same way from either side.
  const same = equals(EventEnvelopeSchema, a, b, { unknown: true }) || sameWire(encoded, toBinary(EventEnvelopeSchema, b));
  if (!same) problems.push("binary and JSON decode to different messages");
  if (Buffer.compare(encoded, bytes) !== 0) {
    if (sameWire(encoded, bytes)) notes.push("re-encoding equal up to map entry order");
    else problems.push(`re-encoding differs from ${entry.binary}`);
  }
  const type = EventTypeSchema.values.find((v) => v.name === entry.event_type);
  if (!type) problems.push(`unknown event_type ${entry.event_type}`);
  else if (a.eventType !== type.number) problems.push(`eventType is ${a.eventType}, manifest says ${type.number}`);
  const wantCase = entry.event_type.replace(/^EVENT_TYPE_/, "").toLowerCase().replace(/_(.)/g, (_, c) => c.toUpperCase());
  if (a.payload.case !== wantCase) problems.push(`payload case is ${a.payload.case}, expected ${wantCase}`);
  return { problems, notes };
}

let passed = 0;
let failed = 0;
for (const entry of manifest.vectors) {
  let result;
  try {
    result = check(entry);
  } catch (err) {
    result = { problems: [String(err?.message ?? err)], notes: [] };
  }
  if (result.problems.length === 0) {
    passed++;
    console.log(`ok   ${entry.name}${result.notes.length ? ` (${result.notes.join("; ")})` : ""}`);
  } else {
    failed++;
    console.log(`FAIL ${entry.name}: ${result.problems.join("; ")}`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
