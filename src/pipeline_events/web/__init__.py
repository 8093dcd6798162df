"""A small live web console, served in the service's process (`serve --web HOST:PORT`).

Server-rendered HTML and a little vanilla JavaScript (`static/`, committed; no CDN,
no build): the live tail of events over Server-Sent Events, the pipelines, the runs
and a run's page, the consumer groups. It reads the running server's objects
directly (store, read models, groups): no gRPC round trip. Needs the `[grpc]` extra.
"""

from pipeline_events.web.console import Console, start_console

__all__ = ["Console", "start_console"]
