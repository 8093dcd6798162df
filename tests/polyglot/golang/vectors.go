// Command vectors checks every golden vector with the Go code protoc-gen-go
// generated from the schema bundle (google.golang.org/protobuf, Debian's
// golang-google-protobuf-dev).
//
// Usage: go run vectors.go tests/vectors/v1/manifest.json
//
// For each manifest entry it decodes the binary (proto.Unmarshal) and, when
// "json" is not null, the proto3 JSON (protojson.Unmarshal); re-encodes each
// with deterministic marshalling and compares the bytes with the canonical
// encoding: the entry's "canonical_binary" file when present, else its
// "binary" file. It also checks the EventType against the entry's
// "event_type", and that protojson's own output of the decoded message is the
// vector's JSON (as JSON values: whitespace and number spelling aside). It
// prints one JSON line per vector, {"name", "ok", "failed"}: "failed" maps
// each check that failed ("binary": the binary decoded and re-encoded, with
// the event type; "json": the JSON decoded and re-encoded, and protojson's
// output) to why, so that a test can pin a known difference on one check.
// The exit status is 1 when any vector fails, 2 when the manifest cannot be
// read.
//
// Built by file name (go build vectors.go), so that it and client.go, both
// package main, can share this folder.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"

	eventsv1 "github.com/adaptive-pipeline/pipeline-events/gen/go/adaptive_pipeline/events/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

type entry struct {
	Name            string          `json:"name"`
	EventType       json.RawMessage `json:"event_type"`
	Binary          string          `json:"binary"`
	JSON            *string         `json:"json"`
	CanonicalBinary *string         `json:"canonical_binary"`
}

type manifest struct {
	Message string  `json:"message"`
	Vectors []entry `json:"vectors"`
}

type result struct {
	Name   string            `json:"name"`
	OK     bool              `json:"ok"`
	Failed map[string]string `json:"failed,omitempty"` // check -> why
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// sameBytes describes how got differs from want, or returns "" when equal.
func sameBytes(what string, got, want []byte) string {
	if bytes.Equal(got, want) {
		return ""
	}
	at := 0
	for at < len(got) && at < len(want) && got[at] == want[at] {
		at++
	}
	return fmt.Sprintf("%s: %d bytes, canonical %d bytes, first difference at offset %d (got %x, want %x)",
		what, len(got), len(want), at, window(got, at), window(want, at))
}

func window(b []byte, at int) []byte {
	end := at + 16
	if end > len(b) {
		end = len(b)
	}
	if at > len(b) {
		at = len(b)
	}
	return b[at:end]
}

// eventTypeMatches compares the decoded EventType with the manifest's
// "event_type": a name (EVENT_TYPE_CHUNK_PROCESSED) or, for a value this
// schema does not define, its number (as a JSON number or a string).
func eventTypeMatches(raw json.RawMessage, got eventsv1.EventType) (bool, string) {
	if len(raw) == 0 || string(raw) == "null" {
		return true, ""
	}
	var name string
	if err := json.Unmarshal(raw, &name); err == nil {
		return name == got.String() || name == strconv.Itoa(int(got)), name
	}
	var number int64
	if err := json.Unmarshal(raw, &number); err == nil {
		return number == int64(got), string(raw)
	}
	return false, string(raw)
}

// sameJSON reports whether two JSON documents hold the same values.
func sameJSON(a, b []byte) (bool, error) {
	var left, right interface{}
	if err := json.Unmarshal(a, &left); err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, &right); err != nil {
		return false, err
	}
	return reflect.DeepEqual(left, right), nil
}

// equality says whether a message whose bytes differ from the canonical ones
// still equals the canonical bytes' message, which tells an encoding
// difference from a decoding one.
func equality(got, canonical proto.Message) string {
	if proto.Equal(got, canonical) {
		return "; it equals the canonical bytes' message (proto.Equal, NaNs equal): only the encoding differs (map entry order, NaN bits, unknown field placement)"
	}
	return "; it does not equal the canonical bytes' message (proto.Equal): the values differ"
}

func check(dir string, v entry) result {
	r := result{Name: v.Name, OK: true, Failed: map[string]string{}}
	fromCanonical, why := checkBinary(dir, v)
	if why != "" {
		r.Failed["binary"] = why
	}
	if v.JSON != nil {
		if why := checkJSON(dir, v, fromCanonical); why != "" {
			r.Failed["json"] = why
		}
	}
	r.OK = len(r.Failed) == 0
	return r
}

// checkBinary decodes the binary and re-encodes it; it returns the canonical
// bytes' message (nil if they do not decode) and why the check failed ("": it passed).
func checkBinary(dir string, v entry) (proto.Message, string) {
	binary, err := os.ReadFile(filepath.Join(dir, v.Binary))
	if err != nil {
		return nil, err.Error()
	}
	canonical := binary
	if v.CanonicalBinary != nil {
		if canonical, err = os.ReadFile(filepath.Join(dir, *v.CanonicalBinary)); err != nil {
			return nil, err.Error()
		}
	}
	fromCanonical := &eventsv1.EventEnvelope{}
	if err := proto.Unmarshal(canonical, fromCanonical); err != nil {
		return nil, fmt.Sprintf("proto.Unmarshal of the canonical bytes: %v", err)
	}
	fromBinary := &eventsv1.EventEnvelope{}
	if err := proto.Unmarshal(binary, fromBinary); err != nil {
		return fromCanonical, fmt.Sprintf("proto.Unmarshal: %v", err)
	}
	if ok, want := eventTypeMatches(v.EventType, fromBinary.GetEventType()); !ok {
		return fromCanonical, fmt.Sprintf("event_type %s, manifest says %s", fromBinary.GetEventType(), want)
	}
	encoded, err := deterministic.Marshal(fromBinary)
	if err != nil {
		return fromCanonical, fmt.Sprintf("proto.Marshal of the binary's message: %v", err)
	}
	if diff := sameBytes("binary re-encoded", encoded, canonical); diff != "" {
		return fromCanonical, diff + equality(fromBinary, fromCanonical)
	}
	return fromCanonical, ""
}

// checkJSON decodes the JSON, re-encodes it as binary, and compares protojson's
// own output of the canonical message with the JSON; it returns why it failed.
func checkJSON(dir string, v entry, fromCanonical proto.Message) string {
	if fromCanonical == nil {
		return "no canonical message to compare with"
	}
	text, err := os.ReadFile(filepath.Join(dir, *v.JSON))
	if err != nil {
		return err.Error()
	}
	canonical, err := deterministic.Marshal(fromCanonical)
	if err != nil {
		return fmt.Sprintf("proto.Marshal of the canonical message: %v", err)
	}
	if v.CanonicalBinary == nil { // the binary file is the canonical bytes
		canonical, _ = os.ReadFile(filepath.Join(dir, v.Binary))
	} else {
		canonical, _ = os.ReadFile(filepath.Join(dir, *v.CanonicalBinary))
	}
	fromJSON := &eventsv1.EventEnvelope{}
	if err := protojson.Unmarshal(text, fromJSON); err != nil {
		return fmt.Sprintf("protojson.Unmarshal: %v", err)
	}
	encoded, err := deterministic.Marshal(fromJSON)
	if err != nil {
		return fmt.Sprintf("proto.Marshal of the JSON's message: %v", err)
	}
	if diff := sameBytes("JSON re-encoded as binary", encoded, canonical); diff != "" {
		return diff + equality(fromJSON, fromCanonical)
	}
	written, err := protojson.Marshal(fromCanonical)
	if err != nil {
		return fmt.Sprintf("protojson.Marshal: %v", err)
	}
	if same, err := sameJSON(written, text); err != nil || !same {
		return fmt.Sprintf("protojson.Marshal wrote %s, the vector's JSON is %s (%v)", written, bytes.TrimSpace(text), err)
	}
	return ""
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: vectors MANIFEST.json")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		fmt.Fprintln(os.Stderr, "manifest:", err)
		os.Exit(2)
	}
	if want := string((&eventsv1.EventEnvelope{}).ProtoReflect().Descriptor().FullName()); m.Message != want {
		fmt.Fprintf(os.Stderr, "manifest message %q, this checker decodes %q\n", m.Message, want)
		os.Exit(2)
	}
	dir := filepath.Dir(os.Args[1])
	out := json.NewEncoder(os.Stdout)
	failed := 0
	for _, v := range m.Vectors {
		r := check(dir, v)
		if !r.OK {
			failed++
		}
		if err := out.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	if failed > 0 {
		os.Exit(1)
	}
}
