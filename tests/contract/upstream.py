"""The upstream Rust types' own fields, in declaration order (from the seed and notes/upstream.md).

A trailing `?` marks a Rust `Option`. Common event fields (event_id,
pipeline_id, occurred_at, version) live on the envelope and are not listed.
"""

EVENT_FIELDS: dict[str, list[str]] = {
    "PipelineCreated": ["pipeline_name", "stage_count", "created_by?"],
    "PipelineUpdated": ["changes", "updated_by?"],
    "PipelineDeleted": ["deleted_by?"],
    "ProcessingStarted": [
        "processing_id",
        "input_path",
        "output_path",
        "file_size",
        "security_context",
    ],
    "ProcessingCompleted": ["processing_id", "metrics", "output_size"],
    "ProcessingFailed": [
        "processing_id",
        "error_message",
        "error_code",
        "stage_name?",
        "partial_metrics?",
    ],
    "ProcessingPaused": ["processing_id", "reason", "checkpoint_data?"],
    "ProcessingResumed": ["processing_id", "resumed_from_checkpoint"],
    "ProcessingCancelled": ["processing_id", "reason", "cancelled_by?"],
    "StageStarted": ["processing_id", "stage_id", "stage_name", "stage_type"],
    "StageCompleted": [
        "processing_id",
        "stage_id",
        "stage_name",
        "processing_time_ms",
        "bytes_processed",
    ],
    "StageFailed": ["processing_id", "stage_id", "stage_name", "error_message", "error_code"],
    "ChunkProcessed": [
        "processing_id",
        "chunk_id",
        "chunk_sequence",
        "chunk_size",
        "stage_name",
        "processing_time_ms",
    ],
    "MetricsUpdated": ["processing_id", "metrics"],
    "SecurityViolation": [
        "processing_id?",
        "violation_type",
        "description",
        "severity",
        "user_id?",
        "source_ip?",
    ],
    "ResourceExhausted": [
        "processing_id",
        "resource_type",
        "current_usage",
        "limit",
        "action_taken",
    ],
}

SUPPORT_FIELDS: dict[str, list[str]] = {
    "SecurityContext": [
        "user_id?",
        "session_id",
        "permissions",
        "encryption_key_id?",
        "integrity_required",
        "audit_enabled",
        "security_level",
        "metadata",
        "created_at",
    ],
    "ProcessingMetrics": [
        "bytes_processed",
        "bytes_total",
        "chunks_processed",
        "chunks_total",
        "start_time_rfc3339?",
        "end_time_rfc3339?",
        "processing_duration?",
        "throughput_bytes_per_second",
        "compression_ratio?",
        "error_count",
        "warning_count",
        "input_file_size_bytes",
        "output_file_size_bytes",
        "input_file_checksum?",
        "output_file_checksum?",
        "stage_metrics",
    ],
    "StageMetrics": [
        "stage_name",
        "bytes_processed",
        "processing_time",
        "throughput",
        "error_count",
        "success_rate",
        "memory_usage?",
        "cpu_usage?",
    ],
}

# Upstream enums and their variants, in order.
ENUMS: dict[str, list[str]] = {
    "SecurityViolationSeverity": ["Low", "Medium", "High", "Critical"],
    "SecurityLevel": ["Public", "Internal", "Medium", "Confidential", "Secret", "TopSecret"],
    "StandardPermission": [
        "Read",
        "Write",
        "Execute",
        "Admin",
        "Encrypt",
        "Decrypt",
        "Compress",
        "Decompress",
    ],
}
