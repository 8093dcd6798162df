"""The web console (`pipeline_events.web`) against a real server over a real SQLite file.

Over HTTP with aiohttp's client: the pages, the /api/ JSON, the live tail's Server-Sent
Events, escaping of what producers wrote, 404s, and the bearer token when auth is on.
In a real browser: Debian's headless Chromium driven by Playwright, while `pipeline-events
demo` publishes; screenshots go to the test's tmp_path, and to docs/screenshots/ as well
with PIPELINE_EVENTS_SCREENSHOTS=1 (the README shows those).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from pipeline_events import domain
from pipeline_events.client import AsyncEventClient
from pipeline_events.service.auth import Authenticator
from pipeline_events.service.server import RunningServer, start_server
from pipeline_events.store import SQLiteEventStore
from pipeline_events.tokens import new_token, principal_toml
from pipeline_events.web import Console, start_console
from pipeline_events.web import console as console_module

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "pipeline-events")
CHROMIUM = "/usr/bin/chromium"
XSS = "<script>alert(1)</script>"
METRICS = domain.ProcessingMetrics(bytes_processed=4 << 20, bytes_total=4 << 20)
CONTEXT = domain.SecurityContext(
    user_id="alice", permissions=(domain.StandardPermission.READ,), encryption_key_id=None,
    security_level=domain.SecurityLevel.CONFIDENTIAL,
)  # fmt: skip


@dataclass
class Setup:
    running: RunningServer
    console: Console

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.console.port}"


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    store = await SQLiteEventStore.open(tmp_path / "events.db")
    running = await start_server(store)
    console = await start_console(running, "127.0.0.1:0")
    yield Setup(running, console)
    await console.stop()
    await running.stop(0)
    await store.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    jar = aiohttp.CookieJar(unsafe=True)  # keeps cookies of an IP address (127.0.0.1)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, cookie_jar=jar) as session:
        yield session


def one_run(name: str = "ingest") -> tuple[uuid.UUID, uuid.UUID, list[domain.Event]]:
    """A pipeline and one completed run with two stages of chunks."""
    pipeline, run = uuid.uuid4(), uuid.uuid4()
    events: list[domain.Event] = [
        domain.PipelineCreated.new(pipeline, name, 2, "alice"),
        domain.ProcessingStarted.new(
            pipeline, run, "/in/a.csv", "/out/a.csv.adapipe", 4 << 20, CONTEXT
        ),
    ]
    for stage_name in ("compression", "encryption"):
        stage = uuid.uuid4()
        events.append(domain.StageStarted.new(pipeline, run, stage, stage_name, stage_name))
        for n in range(4):
            events.append(
                domain.ChunkProcessed.new(
                    pipeline, run, uuid.uuid4(), n, 1 << 20, stage_name, 5 + n
                )
            )
        events.append(domain.StageCompleted.new(pipeline, run, stage, stage_name, 26, 4 << 20))
    events.append(
        domain.SecurityViolation.new(
            pipeline, "unauthorized_access", f"tried {XSS}", domain.SecurityViolationSeverity.HIGH,
            processing_id=run, user_id="mallory", source_ip="203.0.113.7",
        )
    )  # fmt: skip
    events.append(domain.ProcessingCompleted.new(pipeline, run, METRICS, 1 << 20))
    return pipeline, run, events


async def publish(setup: Setup, events: list[domain.Event]) -> int:
    """Publish through the gRPC service; the last position, once the read models hold it."""
    async with AsyncEventClient(setup.target) as client:
        result = await client.publish(events)
    position = result.positions[-1].global_position
    assert await setup.running.service.read_models.wait(position, 10) >= position
    return position


async def get(http: aiohttp.ClientSession, url: str, status: int = 200, **kwargs) -> str:
    async with http.get(url, **kwargs) as response:
        text = await response.text()
        assert response.status == status, text
        return text


# --- over HTTP ---------------------------------------------------------------------------


async def test_every_page_answers_and_shows_the_folded_state(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    pipeline, run, events = one_run("sales-ingest")
    await publish(setup, events)
    for path in ("/", "/pipelines", "/runs", f"/runs?pipeline={pipeline}", "/groups"):
        async with http.get(setup.url + path) as response:
            assert response.status == 200, path
            assert response.content_type == "text/html"
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "sales-ingest" in await get(http, setup.url + "/pipelines")
    assert str(run) in await get(http, setup.url + "/runs")
    page = await get(http, f"{setup.url}/runs/{run}")
    assert "compression" in page and "encryption" in page and "completed" in page
    assert 'data-api="/api/runs/' in page and "/static/run.js" in page
    async with http.get(setup.url + "/static/tail.js") as response:
        assert response.status == 200 and "EventSource" in await response.text()


async def test_the_api_answers_what_the_pages_draw(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    pipeline, run, events = one_run()
    await publish(setup, events)
    async with http.get(f"{setup.url}/api/runs/{run}") as response:
        assert response.status == 200 and response.content_type == "application/json"
        data = await response.json()
    assert data["processing_id"] == str(run)
    assert data["pipeline_id"] == str(pipeline) and data["pipeline_name"] == "ingest"
    assert data["status"] == "completed"
    assert [s["stage_name"] for s in data["stages"]] == ["compression", "encryption"]
    assert [s["chunks_processed"] for s in data["stages"]] == [4, 4]
    assert data["chunks_processed"] == 8 and data["security_violations"] == 1
    assert data["violations"][0]["user_id"] == "mallory"
    chunks = data["chunks"]
    assert [c["chunk_sequence"] for c in chunks] == [0, 1, 2, 3] * 2
    assert [c["t_ms"] for c in chunks][:4] == [5, 11, 18, 26]
    assert chunks[0]["bytes_per_second"] == pytest.approx((1 << 20) / 0.005)
    assert {"anomalies", "transitions", "metrics", "exhaustions"} <= set(data)

    pipelines = orjson.loads(await get(http, setup.url + "/api/pipelines"))["pipelines"]
    assert [(p["pipeline_id"], p["runs_completed"]) for p in pipelines] == [(str(pipeline), 1)]
    runs = orjson.loads(await get(http, setup.url + "/api/runs"))["runs"]
    assert [(r["processing_id"], r["status"]) for r in runs] == [(str(run), "completed")]
    assert orjson.loads(await get(http, f"{setup.url}/api/runs?status=failed"))["runs"] == []
    assert orjson.loads(await get(http, setup.url + "/api/groups")) == {"groups": []}


async def test_groups_show_lag_and_parked_events(setup: Setup, http: aiohttp.ClientSession) -> None:
    from adaptive_pipeline.events.v1 import consumer_group_pb2 as pb

    await setup.running.groups.create(pb.CreateConsumerGroupRequest(name="billing"))
    await publish(setup, one_run()[2])
    groups = orjson.loads(await get(http, setup.url + "/api/groups"))["groups"]
    assert [g["name"] for g in groups] == ["billing"]
    assert groups[0]["lag"] == groups[0]["head"] > 0 and groups[0]["parked"] == 0
    assert groups[0]["parked_events"] == []
    page = await get(http, setup.url + "/groups")
    assert "billing" in page and "every event" in page


async def test_the_live_tail_streams_an_event_published_after_connecting(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    pipeline, _, events = one_run()
    first = await publish(setup, events[:1])
    url = f"{setup.url}/events/stream?after={first}&type=ChunkProcessed&pipeline={pipeline}"
    async with http.get(url) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        await publish(setup, events[1:])  # after connecting
        received = []
        while len(received) < 8:
            line = (await asyncio.wait_for(response.content.readline(), 10)).decode()
            if line.startswith("data: "):
                received.append(orjson.loads(line.removeprefix("data: ")))
    assert [e["type"] for e in received] == ["ChunkProcessed"] * 8
    assert all(
        e["pipeline_id"] == str(pipeline) and e["pipeline_name"] == "ingest" for e in received
    )
    assert received[0]["position"] > first
    assert "chunk_sequence=0" in received[0]["details"]
    # The tail page points its EventSource at the stream with the page's filters.
    page = await get(http, f"{setup.url}/?type=ChunkProcessed&pipeline={pipeline}")
    assert f"type=ChunkProcessed&amp;pipeline={pipeline}" in page


async def test_the_stream_ends_when_the_console_stops(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{setup.url}/events/stream?after=end") as response:
        assert response.status == 200
        await response.content.readline()  # retry: ...
        stopping = asyncio.create_task(setup.console.stop())
        await asyncio.wait_for(response.content.read(), 10)  # the end of the stream: EOF
        await asyncio.wait_for(stopping, 10)


async def test_a_closed_tail_frees_its_slot_while_the_log_is_busy(
    setup: Setup, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_module, "MAX_STREAMS", 1)
    monkeypatch.setattr(console_module, "HEARTBEAT_SECONDS", 0.2)
    # A filter nothing matches: the tail writes no event, however busy the log.
    url = f"{setup.url}/events/stream?after=end&pipeline={uuid.uuid4()}"
    async with http.get(url) as response:
        assert response.status == 200
        await response.content.readline()
    stop = asyncio.Event()

    async def busy() -> None:
        async with AsyncEventClient(setup.target) as client:
            while not stop.is_set():
                await client.publish(one_run()[2][:3])

    publishing = asyncio.create_task(busy())
    try:
        freed = False
        for _ in range(100):  # the closed tail notices at its next heartbeat
            async with http.get(url) as again:
                if again.status == 200:
                    freed = True
                    break
                assert again.status == 503
            await asyncio.sleep(0.1)
        assert freed, "the closed tail kept the only slot while the log was busy"
    finally:
        stop.set()
        await publishing


async def test_a_position_in_other_digits_is_refused(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    assert "after must be" in await get(http, setup.url + "/events/stream?after=%C2%B2", 400)
    refused = await get(
        http, setup.url + "/events/stream", 400, headers={"Last-Event-ID": "\u00b2"}
    )
    assert "after must be" in refused


async def test_what_producers_wrote_is_escaped(setup: Setup, http: aiohttp.ClientSession) -> None:
    _, run, events = one_run(XSS)
    await publish(setup, events)
    for path in ("/pipelines", "/runs", f"/runs/{run}", f"/?pipeline={events[0].pipeline_id}"):
        page = await get(http, setup.url + path)
        assert XSS not in page, path
        assert "<script>" not in page.replace('<script src="/static/', ""), path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in await get(http, setup.url + "/pipelines")
    assert "tried &lt;script&gt;" in await get(http, f"{setup.url}/runs/{run}")
    # JSON carries it as data (the scripts set it as text, never as markup).
    data = orjson.loads(await get(http, f"{setup.url}/api/runs/{run}"))
    assert data["pipeline_name"] == XSS


async def test_bad_paths_and_unknown_runs_are_404(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    page = await get(http, setup.url + "/no/such/page", 404)
    assert "404" in page and "nothing at this address" in page
    unknown = uuid.uuid4()
    page = await get(http, f"{setup.url}/runs/{unknown}", 404)
    assert f"no processing run {unknown} in the log" in page
    assert "not a processing run id" in await get(http, f"{setup.url}/runs/not-a-run", 404)
    async with http.get(f"{setup.url}/api/runs/{unknown}") as response:
        assert response.status == 404
        assert "no processing run" in (await response.json())["error"]
    assert "unknown event type" in await get(http, setup.url + "/?type=Bogus", 400)
    assert "Bogus" in await get(http, setup.url + "/events/stream?type=Bogus", 400)


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[Setup, dict[str, str]]]:
    tokens, lines = {}, []
    for name, roles, pipelines in (
        ("viewer", ["subscriber"], []),
        ("ingest", ["publisher"], []),
        ("narrow", ["subscriber"], [str(uuid.uuid4())]),
    ):
        token, token_id, hash_line = new_token()
        tokens[name] = token
        lines.append(principal_toml(name, token_id, hash_line, roles, pipelines))
    path = tmp_path / "principals.toml"
    path.write_text("\n".join(lines))
    authenticator = Authenticator.open(path)
    store = await SQLiteEventStore.open(tmp_path / "events.db")
    running = await start_server(store, authenticator=authenticator)
    console = await start_console(running, "127.0.0.1:0", authenticator=authenticator)
    yield Setup(running, console), tokens
    await console.stop()
    await running.stop(0)
    await store.close()


async def test_with_auth_every_page_needs_the_token(
    secured: tuple[Setup, dict[str, str]], http: aiohttp.ClientSession
) -> None:
    setup, tokens = secured
    # Without a token: pages redirect to the login form; the API and the stream are 401.
    async with http.get(setup.url + "/runs", allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/login?next=/runs"
    await get(http, setup.url + "/api/runs", 401)
    await get(http, setup.url + "/events/stream", 401)
    assert 'name="token"' in await get(http, setup.url + "/login")
    await get(http, setup.url + "/static/console.css")  # the login page's style
    # A bad token, a publisher's, one limited to some pipelines: refused, and said why.
    bad = {"Authorization": "Bearer pe_AAAAAAAA_" + "x" * 40}
    assert "unknown token" in await get(http, setup.url + "/runs", 401, headers=bad)
    for name in ("ingest", "narrow"):
        headers = {"Authorization": f"Bearer {tokens[name]}"}
        assert "may not use the console" in await get(http, setup.url + "/", 401, headers=headers)
    # The subscriber's token as a header...
    headers = {"Authorization": f"Bearer {tokens['viewer']}"}
    assert "viewer" in await get(http, setup.url + "/runs", headers=headers)
    assert "runs" in orjson.loads(await get(http, setup.url + "/api/runs", headers=headers))
    # ...or through the login form: an HttpOnly, SameSite=Strict cookie.
    form = {"token": tokens["viewer"], "next": "/groups"}
    async with http.post(setup.url + "/login", data=form, allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/groups"
        cookie = response.headers["Set-Cookie"]
    assert re.search(r"HttpOnly", cookie, re.I) and re.search(r"SameSite=Strict", cookie, re.I)
    assert "Consumer groups" in await get(http, setup.url + "/groups")  # the session's cookie
    form = {"token": tokens["ingest"], "next": "https://elsewhere.example/"}
    async with http.post(setup.url + "/login", data=form, allow_redirects=False) as response:
        assert response.status == 401
    form = {"token": tokens["viewer"], "next": "//elsewhere.example/"}
    async with http.post(setup.url + "/login", data=form, allow_redirects=False) as response:
        assert response.headers["Location"] == "/"  # never to another site


# --- in a real browser ---------------------------------------------------------------------


def _chromium() -> str:
    """Debian's Chromium, or a failure saying how to install it (never a silent skip)."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail(
            f"the browser test needs Debian's Chromium at {CHROMIUM}: apt-get install chromium"
            " (`make toolchains` installs it)"
        )
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


async def _demo(setup: Setup, *args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        CLI, "demo", "--target", setup.target, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, output.decode()


async def test_in_a_browser_the_tail_goes_live_and_a_run_shows_its_stages(
    setup: Setup, tmp_path: Path
) -> None:
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        pytest.fail("the browser test needs Playwright for Python: pip install playwright")
    executable = _chromium()
    shots = [tmp_path / "screenshots"]
    if os.environ.get("PIPELINE_EVENTS_SCREENSHOTS") == "1":
        shots.append(ROOT / "docs" / "screenshots")
    for directory in shots:
        directory.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(setup.url + "/")
            await expect(page.locator("#state")).to_have_text("live", timeout=15_000)
            assert await page.locator("#count").inner_text() == "0"

            await _demo(setup, "--pipelines", "1", "--runs", "2", "--seed", "3")
            await expect(page.locator("#tail tr td:nth-child(3)", has_text="ChunkProcessed").first
                         ).to_be_visible(timeout=15_000)  # fmt: skip
            await page.wait_for_function(
                "Number(document.getElementById('count').textContent) > 50", timeout=15_000
            )
            first = int(await page.locator("#count").inner_text())
            await _demo(setup, "--pipelines", "3", "--runs", "4", "--seed", "42")
            await page.wait_for_function(
                f"Number(document.getElementById('count').textContent) > {first + 400}",
                timeout=15_000,
            )
            for directory in shots:
                await page.screenshot(path=str(directory / "console-tail.png"))

            # A run's page, from the runs list: its stages, their timeline and the chart.
            await page.goto(setup.url + "/runs")
            completed = page.locator("tbody tr", has=page.locator(".status-completed"))
            await completed.first.locator("a[href^='/runs/']").click()
            await expect(page.locator("h1")).to_contain_text("Run ")
            stages = page.locator("#stages tr td:first-child")
            await expect(stages.first).to_have_text("input_checksum")
            await expect(stages).to_have_count(4)  # the demo's four stages
            await expect(page.locator("#timeline rect").first).to_be_visible()
            await expect(page.locator("#throughput polyline").first).to_be_visible()
            for directory in shots:
                await page.screenshot(path=str(directory / "console-run.png"), full_page=True)
            assert errors == []
        finally:
            await browser.close()
    assert (tmp_path / "screenshots" / "console-run.png").stat().st_size > 10_000
