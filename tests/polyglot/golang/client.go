// Command client talks to a running EventService with grpc-go and the stubs
// protoc-gen-go-grpc generated from the schema bundle.
//
// Usage: go run client.go HOST:PORT
//
// Against a server with an empty store it publishes one batch of envelopes
// built here (PipelineCreated, ProcessingStarted, ChunkProcessed x2,
// PipelineUpdated, expecting no stream), reads the pipeline back with
// ReadAggregate, subscribes from the start until CaughtUp, then publishes with
// a wrong expected revision and decodes the error. It prints one JSON document
// for the test to check; the exit status is 1 when a call fails unexpectedly.
//
// Requests are marshalled deterministically (a codec forced per call), so the
// bytes of each envelope on the wire are exactly
// proto.MarshalOptions{Deterministic: true}.Marshal(envelope); the same codec
// keeps the raw bytes of every response, from which the stored envelopes are
// cut out unparsed: the server relays what its producer wrote, byte for byte.
//
// Built by file name (go build client.go), so that it and vectors.go, both
// package main, can share this folder.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	eventsv1 "github.com/adaptive-pipeline/pipeline-events/gen/go/adaptive_pipeline/events/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var deterministic = proto.MarshalOptions{Deterministic: true}

// capture is a gRPC codec that marshals deterministically and keeps a copy of
// every message it unmarshals.
type capture struct{ raw [][]byte }

func (c *capture) Marshal(v interface{}) ([]byte, error) {
	return deterministic.Marshal(v.(proto.Message))
}

func (c *capture) Unmarshal(data []byte, v interface{}) error {
	c.raw = append(c.raw, append([]byte(nil), data...))
	return proto.Unmarshal(data, v.(proto.Message))
}

func (c *capture) Name() string { return "proto" }

// fields returns the values of every length-delimited field `num` of a message.
func fields(message []byte, num protowire.Number) ([][]byte, error) {
	var values [][]byte
	for len(message) > 0 {
		n, typ, size := protowire.ConsumeTag(message)
		if size < 0 {
			return nil, protowire.ParseError(size)
		}
		message = message[size:]
		if n == num && typ == protowire.BytesType {
			value, size := protowire.ConsumeBytes(message)
			if size < 0 {
				return nil, protowire.ParseError(size)
			}
			values = append(values, value)
			message = message[size:]
			continue
		}
		size = protowire.ConsumeFieldValue(n, typ, message)
		if size < 0 {
			return nil, protowire.ParseError(size)
		}
		message = message[size:]
	}
	return values, nil
}

// storedEnvelopes cuts the envelope bytes out of raw responses whose field
// `records` holds RecordedEvents (ReadAggregateResponse.events = 1) or, with
// batch set, an EventBatch that does (SubscribeResponse.events = 1).
func storedEnvelopes(responses [][]byte, batch bool) ([][]byte, error) {
	var out [][]byte
	for _, response := range responses {
		containers := [][]byte{response}
		if batch {
			var err error
			if containers, err = fields(response, 1); err != nil {
				return nil, err
			}
		}
		for _, container := range containers {
			records, err := fields(container, 1)
			if err != nil {
				return nil, err
			}
			for _, record := range records {
				envelope, err := fields(record, 1) // RecordedEvent.envelope = 1
				if err != nil || len(envelope) != 1 {
					return nil, fmt.Errorf("a RecordedEvent without one envelope (%v)", err)
				}
				out = append(out, envelope[0])
			}
		}
	}
	return out, nil
}

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

type sentEvent struct {
	EventID   string `json:"event_id"`
	EventType string `json:"event_type"`
	Envelope  []byte `json:"envelope"` // deterministic bytes (base64 in JSON)
}

type position struct {
	GlobalPosition uint64 `json:"global_position"`
	Revision       uint64 `json:"revision"`
}

type readEvent struct {
	EventID        string `json:"event_id"`
	EventType      string `json:"event_type"`
	GlobalPosition uint64 `json:"global_position"`
	Revision       uint64 `json:"revision"`
	Envelope       []byte `json:"envelope"`     // as the server sent it, unparsed
	Reencoded      []byte `json:"reencoded"`    // decoded, then deterministic again
	SameMessage    bool   `json:"same_message"` // proto.Equal to the envelope sent
	RecordedAtSet  bool   `json:"recorded_at_set"`
}

type errorDetail struct {
	Type     string            `json:"type"`
	Reason   string            `json:"reason,omitempty"`
	Domain   string            `json:"domain,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type report struct {
	PipelineID string      `json:"pipeline_id"`
	Published  []sentEvent `json:"published"`
	Positions  []position  `json:"positions"`
	Read       struct {
		Events       []readEvent `json:"events"`
		NextRevision uint64      `json:"next_revision"`
		LastRevision uint64      `json:"last_revision"`
	} `json:"read"`
	Subscribe struct {
		Events   []readEvent `json:"events"`
		CaughtUp uint64      `json:"caught_up"`
	} `json:"subscribe"`
	WrongRevision struct {
		Code    string        `json:"code"`
		Message string        `json:"message"`
		Details []errorDetail `json:"details"`
	} `json:"wrong_revision"`
}

func envelope(pipeline string, at time.Time, payload interface{}) *eventsv1.EventEnvelope {
	e := &eventsv1.EventEnvelope{
		EventId:       newUUID(),
		AggregateId:   pipeline,
		OccurredAt:    timestamppb.New(at),
		SchemaVersion: 1,
		Metadata:      map[string]string{"producer": "grpc-go", "toolchain": "debian", "lang": "go"},
	}
	switch p := payload.(type) {
	case *eventsv1.PipelineCreated:
		e.EventType, e.Payload = eventsv1.EventType_EVENT_TYPE_PIPELINE_CREATED, &eventsv1.EventEnvelope_PipelineCreated{PipelineCreated: p}
	case *eventsv1.PipelineUpdated:
		e.EventType, e.Payload = eventsv1.EventType_EVENT_TYPE_PIPELINE_UPDATED, &eventsv1.EventEnvelope_PipelineUpdated{PipelineUpdated: p}
	case *eventsv1.ProcessingStarted:
		e.EventType, e.Payload = eventsv1.EventType_EVENT_TYPE_PROCESSING_STARTED, &eventsv1.EventEnvelope_ProcessingStarted{ProcessingStarted: p}
	case *eventsv1.ChunkProcessed:
		e.EventType, e.Payload = eventsv1.EventType_EVENT_TYPE_CHUNK_PROCESSED, &eventsv1.EventEnvelope_ChunkProcessed{ChunkProcessed: p}
	default:
		panic(fmt.Sprintf("no case for %T", payload))
	}
	return e
}

func batch(pipeline string) []*eventsv1.EventEnvelope {
	run := newUUID()
	start := time.Now().UTC()
	at := func(n int) time.Time { return start.Add(time.Duration(n) * 1234567 * time.Nanosecond) }
	chunk := func(n uint64) *eventsv1.ChunkProcessed {
		return &eventsv1.ChunkProcessed{
			ProcessingId: run, ChunkId: newUUID(), ChunkSequence: n, ChunkSize: 1 << 20,
			StageName: "compression", ProcessingTimeMs: 7 + n,
		}
	}
	events := []*eventsv1.EventEnvelope{
		envelope(pipeline, at(0), &eventsv1.PipelineCreated{
			PipelineName: "go-ingest", StageCount: 3, CreatedBy: proto.String("gopher"),
		}),
		envelope(pipeline, at(1), &eventsv1.ProcessingStarted{
			ProcessingId: run, InputPath: "/data/in/batch.csv", OutputPath: "/data/out/batch.csv.adapipe",
			FileSize: 2 << 20,
			SecurityContext: &eventsv1.SecurityContext{
				UserId:    proto.String("gopher"),
				SessionId: newUUID(),
				Permissions: []*eventsv1.Permission{
					{Kind: &eventsv1.Permission_Standard{Standard: eventsv1.StandardPermission_STANDARD_PERMISSION_READ}},
					{Kind: &eventsv1.Permission_Custom{Custom: "export-audit"}},
				},
				IntegrityRequired: true,
				SecurityLevel:     eventsv1.SecurityLevel_SECURITY_LEVEL_CONFIDENTIAL,
				Metadata:          map[string]string{"team": "go", "zone": "eu", "": "empty key", "ü": "non-ASCII"},
				CreatedAt:         timestamppb.New(at(1)),
			},
		}),
		envelope(pipeline, at(2), chunk(0)),
		envelope(pipeline, at(3), chunk(1)),
		envelope(pipeline, at(4), &eventsv1.PipelineUpdated{
			Changes: []string{"chunk size 1 MiB", "encryption aes-256-gcm"}, UpdatedBy: proto.String("gopher"),
		}),
	}
	for i, e := range events {
		e.CorrelationId = run
		if i > 0 {
			e.CausationId = events[i-1].EventId
		}
	}
	return events
}

func readEvents(records []*eventsv1.RecordedEvent, raw [][]byte, sent map[string]*eventsv1.EventEnvelope) ([]readEvent, error) {
	if len(raw) != len(records) {
		return nil, fmt.Errorf("%d records decoded, %d envelopes cut from the raw bytes", len(records), len(raw))
	}
	out := make([]readEvent, 0, len(records))
	for i, r := range records {
		e := r.GetEnvelope()
		reencoded, err := deterministic.Marshal(e)
		if err != nil {
			return nil, err
		}
		original, known := sent[e.GetEventId()]
		out = append(out, readEvent{
			EventID: e.GetEventId(), EventType: e.GetEventType().String(),
			GlobalPosition: r.GetGlobalPosition(), Revision: r.GetRevision(),
			Envelope: raw[i], Reencoded: reencoded,
			SameMessage: known && proto.Equal(e, original), RecordedAtSet: r.GetRecordedAt() != nil,
		})
	}
	return out, nil
}

func run(target string) (*report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, target, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	defer conn.Close()
	client := eventsv1.NewEventServiceClient(conn)

	rep := &report{PipelineID: newUUID()}
	events := batch(rep.PipelineID)
	sent := map[string]*eventsv1.EventEnvelope{}
	for _, e := range events {
		data, err := deterministic.Marshal(e)
		if err != nil {
			return nil, err
		}
		sent[e.EventId] = e
		rep.Published = append(rep.Published, sentEvent{e.EventId, e.EventType.String(), data})
	}

	published, err := client.Publish(ctx, &eventsv1.PublishRequest{
		Events: events,
		ExpectedRevisions: []*eventsv1.ExpectedRevision{{
			AggregateId: rep.PipelineID,
			Expected:    &eventsv1.ExpectedRevision_NoStream{NoStream: &emptypb.Empty{}},
		}},
	}, grpc.ForceCodec(&capture{}))
	if err != nil {
		return nil, fmt.Errorf("Publish: %w", err)
	}
	for _, p := range published.GetPositions() {
		rep.Positions = append(rep.Positions, position{p.GetGlobalPosition(), p.GetRevision()})
	}

	readCodec := &capture{}
	read, err := client.ReadAggregate(ctx, &eventsv1.ReadAggregateRequest{AggregateId: rep.PipelineID}, grpc.ForceCodec(readCodec))
	if err != nil {
		return nil, fmt.Errorf("ReadAggregate: %w", err)
	}
	raw, err := storedEnvelopes(readCodec.raw, false)
	if err != nil {
		return nil, err
	}
	if rep.Read.Events, err = readEvents(read.GetEvents(), raw, sent); err != nil {
		return nil, err
	}
	rep.Read.NextRevision, rep.Read.LastRevision = read.GetNextRevision(), read.GetLastRevision()

	subCtx, stop := context.WithCancel(ctx)
	defer stop()
	subCodec := &capture{}
	stream, err := client.Subscribe(subCtx, &eventsv1.SubscribeRequest{
		Start: &eventsv1.SubscribeRequest_FromStart{FromStart: &emptypb.Empty{}},
	}, grpc.ForceCodec(subCodec))
	if err != nil {
		return nil, fmt.Errorf("Subscribe: %w", err)
	}
	var records []*eventsv1.RecordedEvent
	for {
		response, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("Subscribe: the stream ended before CaughtUp: %w", err)
		}
		if caughtUp := response.GetCaughtUp(); caughtUp != nil {
			rep.Subscribe.CaughtUp = caughtUp.GetPosition()
			break
		}
		records = append(records, response.GetEvents().GetEvents()...)
	}
	stop()
	if raw, err = storedEnvelopes(subCodec.raw, true); err != nil {
		return nil, err
	}
	if rep.Subscribe.Events, err = readEvents(records, raw, sent); err != nil {
		return nil, err
	}

	// The stream is at revision 5: expecting 1 must fail as FAILED_PRECONDITION
	// with a google.rpc.ErrorInfo in the status details.
	late := batch(rep.PipelineID)[2]
	_, err = client.Publish(ctx, &eventsv1.PublishRequest{
		Events: []*eventsv1.EventEnvelope{late},
		ExpectedRevisions: []*eventsv1.ExpectedRevision{{
			AggregateId: rep.PipelineID,
			Expected:    &eventsv1.ExpectedRevision_Revision{Revision: 1},
		}},
	})
	if err == nil {
		return nil, errors.New("Publish with a wrong expected revision succeeded")
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil, fmt.Errorf("Publish with a wrong expected revision: not a gRPC status: %w", err)
	}
	rep.WrongRevision.Code, rep.WrongRevision.Message = st.Code().String(), st.Message()
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			rep.WrongRevision.Details = append(rep.WrongRevision.Details, errorDetail{
				Type: "google.rpc.ErrorInfo", Reason: d.GetReason(), Domain: d.GetDomain(), Metadata: d.GetMetadata(),
			})
		case error:
			rep.WrongRevision.Details = append(rep.WrongRevision.Details, errorDetail{Type: "error: " + d.Error()})
		default:
			rep.WrongRevision.Details = append(rep.WrongRevision.Details, errorDetail{Type: fmt.Sprintf("%T", d)})
		}
	}
	return rep, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: client HOST:PORT")
		os.Exit(2)
	}
	rep, err := run(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", " ")
	if err := out.Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
