// Checks every golden vector with protobuf-java, from code protoc generated out of the bundle.
//
//   java -cp <classes>:protobuf.jar:protobuf-util.jar:gson.jar:guava.jar Vectors <manifest.json>
//
// For each manifest entry: EventEnvelope.parseFrom(binary) and JsonFormat.parser() on the JSON
// (when "json" is not null: a vector with unknown fields has no JSON form) must both re-encode,
// deterministically, to the canonical bytes: the entry's "canonical_binary" file if it has one,
// else its "binary" file. The JSON protobuf-java prints must parse back to the same bytes, and the
// envelope's event type must be the manifest's. Prints one JSON line per vector,
// {"name": ..., "ok": true|false, "failed": {check: why}, "reason": ...}, then "N passed, M failed";
// exits 1 on a failure. The checks are "binary" and "json", so that known differences
// (the manifest's "known_differences") can be pinned per check.
import com.google.gson.Gson;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.protobuf.CodedOutputStream;
import com.google.protobuf.Descriptors.EnumValueDescriptor;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.MapEntry;
import com.google.protobuf.Message;
import com.google.protobuf.util.JsonFormat;
import io.adaptivepipeline.events.v1.EventEnvelope;
import io.adaptivepipeline.events.v1.EventType;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;

public final class Vectors {
  private Vectors() {}

  /** The message's bytes with deterministic serialization (map entries sorted by key). */
  static byte[] deterministic(Message message) throws IOException {
    byte[] out = new byte[message.getSerializedSize()];
    CodedOutputStream stream = CodedOutputStream.newInstance(out);
    stream.useDeterministicSerialization();
    message.writeTo(stream);
    stream.checkNoSpaceLeft();
    return out;
  }

  static String hex(byte[] bytes, int from, int to) {
    StringBuilder text = new StringBuilder();
    for (int i = Math.max(0, from); i < Math.min(bytes.length, to); i++) {
      text.append(String.format("%02x", bytes[i] & 0xff));
    }
    return text.toString();
  }

  /** null when equal, else where and how `got` differs from `want`. */
  static String difference(byte[] got, byte[] want) {
    int at = 0;
    while (at < got.length && at < want.length && got[at] == want[at]) {
      at++;
    }
    if (at == got.length && at == want.length) {
      return null;
    }
    return String.format(
        "%d bytes, expected %d; first difference at offset %d: got %s, expected %s",
        got.length, want.length, at, hex(got, at - 4, at + 12), hex(want, at - 4, at + 12));
  }

  static String nonNull(JsonObject entry, String key) {
    JsonElement value = entry.get(key);
    return value == null || value.isJsonNull() ? null : value.getAsString();
  }


  static Object scalar(Object value) {
    // An enum value, defined or not, compares by its number; doubles by their bits (Double.equals).
    return value instanceof EnumValueDescriptor ? ((EnumValueDescriptor) value).getNumber() : value;
  }

  static Map<Object, Object> asMap(List<?> entries) {
    Map<Object, Object> map = new LinkedHashMap<>();
    for (Object entry : entries) {
      MapEntry<?, ?> e = (MapEntry<?, ?>) entry;
      map.put(e.getKey(), e.getValue());
    }
    return map;
  }

  static String describe(Object value) {
    if (value instanceof Message) {
      return "{" + value.toString().replace("\n", " ").trim() + "}";
    }
    if (value instanceof String) {
      return new Gson().toJson(value);
    }
    return String.valueOf(scalar(value));
  }

  /** The first field where `got` differs from `want` (path: got ..., expected ...), or null. */
  static String firstDifference(String path, Object got, Object want) {
    if (got instanceof Message && want instanceof Message) {
      Message a = (Message) got;
      Message b = (Message) want;
      for (FieldDescriptor field : a.getDescriptorForType().getFields()) {
        String at = path.isEmpty() ? field.getName() : path + "." + field.getName();
        Object x = a.getField(field);
        Object y = b.getField(field);
        if (field.isMapField()) {
          Map<Object, Object> mx = asMap((List<?>) x);
          Map<Object, Object> my = asMap((List<?>) y);
          if (!mx.keySet().equals(my.keySet())) {
            return at + ": keys " + describe(mx.keySet().toString()) + ", expected "
                + describe(my.keySet().toString());
          }
          for (Object key : mx.keySet()) {
            String d = firstDifference(at + "[" + describe(key) + "]", mx.get(key), my.get(key));
            if (d != null) {
              return d;
            }
          }
        } else if (field.isRepeated()) {
          List<?> lx = (List<?>) x;
          List<?> ly = (List<?>) y;
          if (lx.size() != ly.size()) {
            return at + ": " + lx.size() + " elements, expected " + ly.size();
          }
          for (int i = 0; i < lx.size(); i++) {
            String d = firstDifference(at + "[" + i + "]", lx.get(i), ly.get(i));
            if (d != null) {
              return d;
            }
          }
        } else if (field.hasPresence() && a.hasField(field) != b.hasField(field)) {
          return at + ": " + (a.hasField(field) ? describe(x) : "absent") + ", expected "
              + (b.hasField(field) ? describe(y) : "absent");
        } else {
          String d = firstDifference(at, x, y);
          if (d != null) {
            return d;
          }
        }
      }
      if (!a.getUnknownFields().equals(b.getUnknownFields())) {
        return (path.isEmpty() ? "" : path + ": ") + "unknown fields {"
            + a.getUnknownFields().toString().replace("\n", " ").trim() + "}, expected {"
            + b.getUnknownFields().toString().replace("\n", " ").trim() + "}";
      }
      return null;
    }
    if (Objects.equals(scalar(got), scalar(want))) {
      return null;
    }
    return path + ": " + describe(got) + ", expected " + describe(want);
  }

  /** null when `got` is `want`, else how they differ: first the field, then the bytes. */
  static String compare(Message decoded, byte[] want, EventEnvelope expected) throws IOException {
    byte[] got = deterministic(decoded);
    String bytes = difference(got, want);
    if (bytes == null) {
      return null;
    }
    String field = firstDifference("", decoded, expected);
    if (field == null) {
      return "the same message, but protobuf-java orders its map entries or unknown fields differently ("
          + bytes + ")";
    }
    return field + " (" + bytes + ")";
  }

  /** Adds a problem to the check ("binary" or "json") it belongs to. */
  static void fail(Map<String, List<String>> problems, String check, String problem) {
    problems.computeIfAbsent(check, k -> new ArrayList<>()).add(problem);
  }

  /** The problems of one vector, by check: "binary" (the binary decoded and re-encoded, with
   * the event type and payload case) and "json" (the JSON decoded and re-encoded, and
   * JsonFormat's own output); empty when it passes. */
  static Map<String, List<String>> check(Path dir, JsonObject entry) throws IOException {
    Map<String, List<String>> problems = new LinkedHashMap<>();
    String binaryName = entry.get("binary").getAsString();
    byte[] binary = Files.readAllBytes(dir.resolve(binaryName));
    String canonicalName = nonNull(entry, "canonical_binary");
    if (canonicalName == null) {
      canonicalName = binaryName;
    }
    byte[] canonical = Files.readAllBytes(dir.resolve(canonicalName));
    EventEnvelope expected = EventEnvelope.parseFrom(canonical);

    EventEnvelope fromBinary = EventEnvelope.parseFrom(binary);
    String diff = compare(fromBinary, canonical, expected);
    if (diff != null) {
      fail(problems, "binary", "binary " + binaryName + " re-encodes differently from " + canonicalName + ": " + diff);
    }

    String jsonName = nonNull(entry, "json");
    if (jsonName != null) {
      String json = Files.readString(dir.resolve(jsonName), StandardCharsets.UTF_8);
      EventEnvelope.Builder builder = EventEnvelope.newBuilder();
      try {
        JsonFormat.parser().merge(json, builder);
        diff = compare(builder.build(), canonical, expected);
        if (diff != null) {
          fail(problems, "json", "JSON " + jsonName + " encodes differently from " + canonicalName + ": " + diff);
        }
      } catch (IOException | RuntimeException e) {
        fail(problems, "json", "JsonFormat.parser() rejects " + jsonName + ": " + e);
      }
      try {
        String printed = JsonFormat.printer().print(fromBinary);
        EventEnvelope.Builder again = EventEnvelope.newBuilder();
        JsonFormat.parser().merge(printed, again);
        diff = compare(again.build(), canonical, expected);
        if (diff != null) {
          fail(problems, "json", "the JSON JsonFormat.printer() writes does not parse back to " + canonicalName + ": " + diff);
        }
      } catch (IOException | RuntimeException e) {
        fail(problems, "json", "JsonFormat.printer() -> parser() fails: " + e);
      }
    }

    JsonElement eventType = entry.get("event_type");
    if (eventType != null && !eventType.isJsonNull()) {
      int want;
      EnumValueDescriptor named = null;
      if (eventType.getAsJsonPrimitive().isNumber()) {
        want = eventType.getAsInt();
      } else {
        named = EventType.getDescriptor().findValueByName(eventType.getAsString());
        if (named == null) {
          fail(problems, "binary", "manifest event_type " + eventType.getAsString() + " is not an EventType value");
          return problems;
        }
        want = named.getNumber();
      }
      if (fromBinary.getEventTypeValue() != want) {
        fail(problems, "binary", "event_type is " + fromBinary.getEventTypeValue() + ", the manifest says " + want);
      }
      if (named != null && want != 0) {
        // EVENT_TYPE_CHUNK_PROCESSED <-> the oneof case chunk_processed.
        String field = named.getName().replaceFirst("^EVENT_TYPE_", "").toLowerCase(Locale.ROOT);
        FieldDescriptor payload = EventEnvelope.getDescriptor().findFieldByName(field);
        EventEnvelope.PayloadCase actual = fromBinary.getPayloadCase();
        if (payload != null && actual.getNumber() != payload.getNumber()) {
          fail(problems, "binary", "payload case is " + actual + ", expected " + field);
        }
      }
    }
    return problems;
  }

  public static void main(String[] args) throws IOException {
    if (args.length != 1) {
      System.err.println("usage: Vectors <manifest.json>");
      System.exit(2);
    }
    Path manifestPath = Path.of(args[0]);
    Path dir = manifestPath.toAbsolutePath().getParent();
    JsonObject manifest =
        JsonParser.parseString(Files.readString(manifestPath, StandardCharsets.UTF_8)).getAsJsonObject();
    String message = manifest.get("message").getAsString();
    if (!message.equals(EventEnvelope.getDescriptor().getFullName())) {
      System.err.println("the manifest is for " + message + ", this check decodes "
          + EventEnvelope.getDescriptor().getFullName());
      System.exit(2);
    }
    Gson gson = new Gson();
    int passed = 0;
    int failed = 0;
    for (JsonElement element : manifest.getAsJsonArray("vectors")) {
      JsonObject entry = element.getAsJsonObject();
      String name = entry.has("name") ? entry.get("name").getAsString() : String.valueOf(entry);
      Map<String, List<String>> problems;
      try {
        problems = check(dir, entry);
      } catch (IOException | RuntimeException e) {
        problems = Map.of("binary", List.of(e.toString()));
      }
      Map<String, Object> line = new LinkedHashMap<>();
      line.put("name", name);
      line.put("ok", problems.isEmpty());
      if (problems.isEmpty()) {
        passed++;
      } else {
        failed++;
        Map<String, String> reasons = new LinkedHashMap<>();
        problems.forEach((check, found) -> reasons.put(check, String.join("; ", found)));
        line.put("failed", reasons);
        line.put("reason", String.join("; ", reasons.values()));
      }
      System.out.println(gson.toJson(line));
    }
    System.out.println(passed + " passed, " + failed + " failed");
    System.exit(failed > 0 || passed == 0 ? 1 : 0);
  }
}
