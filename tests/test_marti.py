"""The Marti API that TAK clients call on connect, checked with httpx against a live post."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from fieldc2 import __version__
from fieldc2.server import CommandPost
from tests.test_interop import TIMEOUT, XmlClient, clients_of


@pytest.fixture
async def http(post: CommandPost) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{post.http_port}",
                                 timeout=TIMEOUT) as client:
        yield client


async def get_json(http: httpx.AsyncClient, path: str) -> Any:
    response = await http.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


async def poll(fetch: Callable[[], Awaitable[Any]], check: Callable[[Any], bool]) -> Any:
    """Fetch until ``check`` holds for the result; fail after TIMEOUT seconds."""
    async def until() -> Any:
        while not check(found := await fetch()):
            await asyncio.sleep(0.05)
        return found
    try:
        return await asyncio.wait_for(until(), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"{check} never held; last answer {await fetch()}") from None


def envelope(body: Any, kind: str) -> Any:
    """TAK Server's ``{"version": "3", "type": ..., "data": ..., "nodeId": ...}``."""
    assert isinstance(body, dict), body
    assert body["version"] == "3"
    assert body["type"] == kind
    assert isinstance(body["nodeId"], str) and body["nodeId"]
    return body["data"]


async def test_version_is_plain_text(http: httpx.AsyncClient) -> None:
    response = await http.get("/Marti/api/version")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert __version__ in response.text


async def test_version_config_shape(http: httpx.AsyncClient) -> None:
    data = envelope(await get_json(http, "/Marti/api/version/config"), "ServerConfig")
    assert data["version"] == __version__
    assert data["api"] == "3"
    assert data["hostname"] == "127.0.0.1"


async def test_client_endpoints_and_contacts_follow_connections(
        post: CommandPost, http: httpx.AsyncClient) -> None:
    async with clients_of(post) as connect:
        alpha = await connect("ALPHA")
        bravo = await connect("BRAVO")
        assert isinstance(alpha, XmlClient) and isinstance(bravo, XmlClient)
        await alpha.report(group="Cyan")
        await bravo.report(group="Red")

        async def endpoints() -> dict[str, dict[str, Any]]:
            body = await get_json(http, "/Marti/api/clientEndPoints")
            data = envelope(body, "com.bbn.marti.remote.ClientEndpoint")
            return {entry["uid"]: entry for entry in data}

        wanted = {alpha.uid, bravo.uid}
        seen = await poll(endpoints, lambda found: wanted <= found.keys())
        for client in (alpha, bravo):
            entry = seen[client.uid]
            assert entry["callsign"] == client.name
            assert entry["lastStatus"] == "Connected"
            last = datetime.fromisoformat(entry["lastEventTime"])
            assert last.tzinfo is not None and last.year >= 2024

        contacts = await get_json(http, "/Marti/api/contacts/all")
        assert isinstance(contacts, list)
        by_uid = {c["uid"]: c for c in contacts}
        assert by_uid[alpha.uid]["callsign"] == "ALPHA"
        assert by_uid[alpha.uid]["team"] == "Cyan"
        assert by_uid[bravo.uid]["team"] == "Red"

        groups = envelope(await get_json(http, "/Marti/api/groups/all"),
                          "com.bbn.marti.remote.groups.Group")
        names = {(g["name"], g["direction"]) for g in groups}
        for name in ("Cyan", "Red", post.config.groups.default):
            assert {(name, "IN"), (name, "OUT")} <= names, names

        await bravo.close()
        after = await poll(endpoints,
                           lambda found: found[bravo.uid]["lastStatus"] == "Disconnected")
        gone = after[bravo.uid]
        assert gone["callsign"] == "BRAVO"
        assert after[alpha.uid]["lastStatus"] == "Connected"
        contacts = await get_json(http, "/Marti/api/contacts/all")
        assert {c["uid"] for c in contacts} >= {alpha.uid}
        assert bravo.uid not in {c["uid"] for c in contacts}
