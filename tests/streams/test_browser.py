"""The watch page (``/watch/``) in a real headless Chromium, against a real
daphne: EventSource and WebSocket as a browser runs them, including the
browser's own SSE reconnect with ``Last-Event-ID`` across a server restart.

Chromium comes from Debian (``bin/install-browser``); Playwright's own
browser download does not work on these machines.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from channels.db import database_sync_to_async
from django.test import Client
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import ONE_ITEM, client_for
from tests.streams.conftest import ROOT, free_port, server_env

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Longest wait for anything the page should show; the SSE retry hint is
# 2 s, so a reconnect across a restart fits several times over.
PAGE_WAIT_MS = 15_000
SERVER_START_SECS = 20


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


class RestartableServer:
    """A daphne that can be stopped and started again on the same port, so
    that a browser's own reconnects find it where they left it."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = server_env(
            LOOKOUT_HEARTBEAT_SECS="0.5", LOOKOUT_WATCH_PAGE_LOGIN="1"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1"]
                + ["-p", str(self.port), "project.asgi:application"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SERVER_START_SECS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                httpx.get(f"{self.url}/api/v1/schema/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(self.log_path.read_text())

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def restartable_server(transactional_db, tmp_path) -> Iterator[RestartableServer]:
    server = RestartableServer(tmp_path / "daphne.log")
    server.start()
    yield server
    server.stop()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


async def open_watch_page(browser: Browser, base_url: str, **query: Any) -> Page:
    """Load the watch page and wait until its watch is subscribed."""
    page = await browser.new_page()
    response = await page.goto(f"{base_url}/watch/?{urlencode(query)}")
    assert response is not None and response.ok, response and response.status
    await page.wait_for_function(
        "window.lookout.subscribed.length > 0", timeout=PAGE_WAIT_MS
    )
    return page


async def wait_for_version(page: Page, version: int) -> None:
    await page.wait_for_function(
        "v => window.lookout.versions.includes(v)", arg=version, timeout=PAGE_WAIT_MS
    )


async def logged_versions(page: Page, kind: str) -> list[int]:
    """The data-version of each ``<li>`` of one type in ``#log``."""
    return await page.locator(f'#log li[data-type="{kind}"]').evaluate_all(
        "items => items.map(item => Number(item.dataset.version))"
    )


async def add_item(client: httpx.AsyncClient, order_id: str, sku: str) -> None:
    item = {"sku": sku, "quantity": 1, "unit_price": "1.00"}
    response = await client.post(f"/api/v1/orders/{order_id}/items", json=item)
    assert response.status_code == 200, response.text


async def place_order(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/v1/orders/", json=ONE_ITEM)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _add_item_in_process(token: str, order_id: str, sku: str) -> None:
    """A command that does not go through the server: for while it is down."""
    item = {"sku": sku, "quantity": 1, "unit_price": "1.00"}
    response = client_for(token).post(
        f"/api/v1/orders/{order_id}/items", item, format="json"
    )
    assert response.status_code == 200, response.content


add_item_in_process = database_sync_to_async(_add_item_in_process)


async def test_event_source_in_the_page_gets_every_change_in_order(
    server, alice, browser
):
    _, token = alice
    page = await open_watch_page(
        browser, server, token=token, topic="customers/c-alice/orders"
    )

    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order_id = await place_order(c)
        for n in range(4):
            await add_item(c, order_id, f"sku-{n}")
    await wait_for_version(page, 5)
    seen = await page.evaluate("window.lookout")

    assert seen["subscribed"] == [0]
    assert seen["versions"] == [1, 2, 3, 4, 5]
    assert await logged_versions(page, "change") == [1, 2, 3, 4, 5]
    assert (seen["resets"], seen["errors"]) == ([], [])
    assert (seen["opens"], seen["reopens"]) == (1, 0)


@pytest.mark.parametrize("auth_mode", ["session", "ticket"])
async def test_event_source_in_the_page_resumes_across_a_server_restart(
    restartable_server, alice, browser, auth_mode
):
    server = restartable_server
    _, token = alice
    async with httpx.AsyncClient(
        base_url=server.url, headers=auth(token), timeout=10
    ) as c:
        order_id = await place_order(c)
    page = await open_watch_page(
        browser,
        server.url,
        token=token,
        topic=f"orders/{order_id}",
        auth=auth_mode,
        since=0,
    )
    async with httpx.AsyncClient(
        base_url=server.url, headers=auth(token), timeout=10
    ) as c:
        await add_item(c, order_id, "before-1")
        await add_item(c, order_id, "before-2")
    await wait_for_version(page, 3)

    # Versions 4 and 5 are made while the server is down, 6 after it is up.
    await asyncio.to_thread(server.stop)
    await add_item_in_process(token, order_id, "while-down-1")
    await add_item_in_process(token, order_id, "while-down-2")
    await asyncio.to_thread(server.start)
    async with httpx.AsyncClient(
        base_url=server.url, headers=auth(token), timeout=10
    ) as c:
        await add_item(c, order_id, "after")
    await wait_for_version(page, 6)
    # Anything sent twice would arrive right behind version 6.
    await asyncio.sleep(0.5)
    seen = await page.evaluate("window.lookout")

    assert seen["versions"] == [1, 2, 3, 4, 5, 6]
    assert await logged_versions(page, "change") == [1, 2, 3, 4, 5, 6]
    assert seen["subscribed"] == [0, 3]
    assert (seen["resets"], seen["errors"]) == ([], [])
    assert seen["opens"] == 2
    if auth_mode == "session":
        # One EventSource throughout: the browser reconnected by itself,
        # and only Last-Event-ID kept versions 1 to 3 from coming again.
        assert seen["reopens"] == 0
    else:
        assert seen["reopens"] >= 1


async def test_websocket_in_the_page_gets_every_change_in_order(server, alice, browser):
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order_id = await place_order(c)
    page = await open_watch_page(
        browser, server, token=token, topic=f"orders/{order_id}", transport="ws"
    )

    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        await add_item(c, order_id, "jam")
        await add_item(c, order_id, "scones")
        response = await c.post(
            f"/api/v1/orders/{order_id}/pay", json={"amount": "14.30"}
        )
        assert response.status_code == 200, response.text
    await wait_for_version(page, 4)
    seen = await page.evaluate("window.lookout")

    assert seen["subscribed"] == [1]
    assert seen["versions"] == [2, 3, 4]
    assert await logged_versions(page, "subscribed") == [1]
    assert await logged_versions(page, "change") == [2, 3, 4]
    assert (seen["resets"], seen["errors"]) == ([], [])
    assert (seen["opens"], seen["reopens"]) == (1, 0)


def test_the_page_logs_a_token_in_only_when_allowed(alice, settings):
    _, token = alice
    query = f"token={token}&auth=session&topic=dashboard"

    settings.STREAMS = {**settings.STREAMS, "WATCH_PAGE_LOGIN": False}
    refused = Client().get(f"/watch/?{query}")
    settings.STREAMS = {**settings.STREAMS, "WATCH_PAGE_LOGIN": True}
    browser = Client()
    allowed = browser.get(f"/watch/?{query}")
    bad_token = Client().get("/watch/?token=nope&auth=session&topic=dashboard")
    page = browser.get(allowed["Location"])

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert allowed.status_code == 302
    assert allowed["Location"] == "/watch/?auth=session&topic=dashboard"
    assert bad_token.status_code == 401
    assert page.status_code == 200
    assert page.context["user"].username == "alice"
