"""pipeline-events: the schema-first event contract and event service of the Adaptive Pipeline."""

__version__ = "0.1.0"
