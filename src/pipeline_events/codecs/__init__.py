"""Codecs: binary protobuf, canonical proto3 JSON, upstream Rust serde JSON, CloudEvents."""
