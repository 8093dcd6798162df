// Checks every golden vector with protobuf-es, by the manifest's conventions: decode "binary",
// re-encode, compare the bytes with the canonical bytes ("canonical_binary", else "binary");
// the same from "json" unless it is null. Differences the manifest lists for protobuf-es
// ("known_differences") are pinned in PINNED below: each must happen exactly as described
// there, or the vector fails.
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { fromBinary, fromJson, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { EventEnvelopeSchema, EventTypeSchema } from "./gen/adaptive_pipeline/events/v1/envelope_pb.js";

const RUNTIME = "protobuf-es";
const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const dir = resolve(process.argv[2] ?? join(root, "tests", "vectors", "v1"));
const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
if (manifest.message !== EventEnvelopeSchema.typeName) {
  throw new Error(`manifest is for ${manifest.message}, this check decodes ${EventEnvelopeSchema.typeName}`);
}

// The differences of protobuf-es this check expects, by manifest id: for which check, and
// what must happen instead of the canonical bytes (a problem string when it does not).
const PINNED = {
  // readMapEntry (from-binary.js) reads fields 1 and 2 of a map entry and skips nothing
  // else, so an unknown field in an entry is misread and decoding throws.
  "protobuf-es-map-entry-unknown": {
    checks: ["binary"],
    expect: (outcome) => (outcome.error ? null : "fromBinary no longer throws on a map entry with an unknown field"),
  },
};

const hex = (bytes) => Buffer.from(bytes).toString("hex");

// The key of a map entry's bytes: field 1 (the last one if repeated), absent = "".
function entryKey(entry) {
  const reader = new BinaryReader(entry);
  let key = new Uint8Array(0);
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag();
    if (no === 1 && wireType === WireType.LengthDelimited) key = reader.bytes();
    else reader.skip(wireType, no);
  }
  return key;
}

// protobuf-es has no deterministic serialization: it writes map entries in the JS object's
// order (integer-like keys first, numerically; then insertion order). This sorts the entries
// of every map, at any depth, by the canonical rule (string keys as UTF-8 bytes, "" first, a
// key before the longer keys it begins), each among its own places; no other byte moves.
function sortMapEntries(desc, bytes) {
  const reader = new BinaryReader(bytes);
  const records = [];
  while (reader.pos < reader.len) {
    const start = reader.pos;
    const [no, wireType] = reader.tag();
    const field = desc.fields.find((f) => f.number === no);
    if (wireType !== WireType.LengthDelimited || !field) {
      reader.skip(wireType, no);
      records.push({ no, raw: bytes.subarray(start, reader.pos) });
    } else if (field.fieldKind === "map") {
      let entry = reader.bytes();
      if (field.mapKind === "message") {
        entry = sortMapEntries({ fields: [{ number: 2, fieldKind: "message", message: field.message }] }, entry);
      }
      records.push({ no, body: entry, key: entryKey(entry) });
    } else if (field.fieldKind === "message" || field.listKind === "message") {
      records.push({ no, body: sortMapEntries(field.message, reader.bytes()) });
    } else {
      records.push({ no, body: reader.bytes() });
    }
  }
  for (const no of new Set(records.filter((r) => r.key).map((r) => r.no))) {
    const slots = records.map((r, i) => (r.no === no && r.key ? i : -1)).filter((i) => i >= 0);
    const entries = slots.map((i) => records[i]).sort((a, b) => Buffer.compare(a.key, b.key));
    slots.forEach((slot, i) => {
      records[slot] = entries[i];
    });
  }
  const writer = new BinaryWriter();
  for (const record of records) {
    if (record.raw) writer.raw(record.raw);
    else writer.tag(record.no, WireType.LengthDelimited).bytes(record.body);
  }
  return writer.finish();
}

function pinnedFor(entry, check) {
  return (entry.known_differences ?? [])
    .filter((d) => d.runtime.split(" ")[0] === RUNTIME && d.checks.includes(check))
    .map((d) => d.id);
}

function firstDifference(a, b) {
  let at = 0;
  while (at < a.length && at < b.length && a[at] === b[at]) at++;
  return `${a.length} bytes, canonical ${b.length}, first difference at ${at} (${hex(a.subarray(at, at + 12))} vs ${hex(b.subarray(at, at + 12))})`;
}

function runCheck(entry, check, decode, canonical, problems, notes) {
  const outcome = {};
  try {
    outcome.message = decode();
    outcome.written = toBinary(EventEnvelopeSchema, outcome.message);
    outcome.sorted = sortMapEntries(EventEnvelopeSchema, outcome.written);
  } catch (err) {
    outcome.error = String(err?.message ?? err);
  }
  const pinned = pinnedFor(entry, check);
  for (const id of pinned) {
    const pin = PINNED[id];
    if (!pin || !pin.checks.includes(check)) {
      problems.push(`${check}: the manifest lists ${id}, which this check does not pin`);
      continue;
    }
    const problem = pin.expect(outcome);
    if (problem) problems.push(`${check}: pinned ${id}: ${problem}`);
    else notes.push(`${check}: known difference ${id}${outcome.error ? `: ${outcome.error}` : ""}`);
  }
  if (pinned.length > 0) return outcome;
  if (outcome.error) {
    problems.push(`${check}: ${outcome.error}`);
  } else if (Buffer.compare(outcome.sorted, canonical) !== 0) {
    problems.push(`${check} re-encodes otherwise: ${firstDifference(outcome.sorted, canonical)}`);
  } else if (Buffer.compare(outcome.written, canonical) !== 0) {
    notes.push(`${check}: map entries re-sorted`);
  }
  return outcome;
}

function check(entry) {
  const problems = [];
  const notes = [];
  const binary = new Uint8Array(readFileSync(join(dir, entry.binary)));
  const canonical = new Uint8Array(readFileSync(join(dir, entry.canonical_binary ?? entry.binary)));
  const fromBin = runCheck(entry, "binary", () => fromBinary(EventEnvelopeSchema, binary), canonical, problems, notes);
  if (entry.json !== null) {
    const text = readFileSync(join(dir, entry.json), "utf8");
    runCheck(entry, "json", () => fromJson(EventEnvelopeSchema, JSON.parse(text)), canonical, problems, notes);
  }
  // The event type and payload case, from the canonical bytes (the input may be pinned).
  const message = fromBin.message ?? fromBinary(EventEnvelopeSchema, canonical);
  if (typeof entry.event_type === "number") {
    if (EventTypeSchema.values.some((v) => v.number === entry.event_type)) {
      problems.push(`event_type ${entry.event_type} is defined: the manifest names defined values`);
    }
    if (message.eventType !== entry.event_type) problems.push(`eventType is ${message.eventType}, manifest says ${entry.event_type}`);
    if (message.payload.case !== undefined) problems.push(`payload case ${message.payload.case} for an undefined EventType`);
  } else {
    const type = EventTypeSchema.values.find((v) => v.name === entry.event_type);
    if (!type) problems.push(`unknown event_type ${entry.event_type}`);
    else if (message.eventType !== type.number) problems.push(`eventType is ${message.eventType}, manifest says ${type.number}`);
    const wantCase = entry.event_type.replace(/^EVENT_TYPE_/, "").toLowerCase().replace(/_(.)/g, (_, c) => c.toUpperCase());
    if (message.payload.case !== wantCase) problems.push(`payload case is ${message.payload.case}, expected ${wantCase}`);
  }
  return { problems, notes };
}

let passed = 0;
let failed = 0;
const listed = new Set();
for (const entry of manifest.vectors) {
  for (const check of ["binary", "json"]) pinnedFor(entry, check).forEach((id) => listed.add(id));
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
// A pin the manifest no longer lists would hide nothing, but would be stale: say so.
for (const id of Object.keys(PINNED).filter((id) => !listed.has(id))) {
  failed++;
  console.log(`FAIL pins: ${id} is pinned here but listed for no vector in the manifest`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
