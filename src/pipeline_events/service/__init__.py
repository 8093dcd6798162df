"""The gRPC EventService: server, validation and error mapping."""
