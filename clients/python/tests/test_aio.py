"""The asyncio client: the same calls as coroutines, a streamed command as
an async iterator, several commands at once on one event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from warren_client import NotFound
from warren_client.aio import AsyncClient

from .conftest import Server


def test_async_calls(server: Server, user_id: str) -> None:
    async def main() -> None:
        c = AsyncClient(server.url, server.token)
        user, created = await c.create_user(user_id)
        assert created and user.id == user_id
        assert (await c.get_user(user_id)).slug == user.slug
        assert user_id in [u.id for u in await c.list_users()]
        r = await c.exec(user_id, "echo hi; exit 2")
        assert (r.stdout, r.returncode) == ("hi\n", 2)
        s = await c.exec_stream(user_id, ["sh", "-c", "echo a; echo b >&2"])
        async with s:
            chunks = [(ch.stream, ch.data) async for ch in s]
        assert sorted(chunks) == [("stderr", "b\n"), ("stdout", "a\n")]
        assert s.end is not None and s.end.returncode == 0
        # Three two-second commands at once take about two seconds, not six.
        began = time.monotonic()
        results = await asyncio.gather(*(c.exec(user_id, ["sleep", "2"]) for _ in range(3)))
        assert all(r.returncode == 0 for r in results)
        assert time.monotonic() - began < 5.5
        assert (await c.stats(user_id)).user.id == user_id
        assert any(e.action == "exec" for e in await c.audit(user=user_id))
        with pytest.raises(NotFound):
            await c.get_user("ghost-of-py")

    asyncio.run(main())
