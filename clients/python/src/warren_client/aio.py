"""The same API for asyncio code: each call of :class:`~warren_client.Client`
runs in a worker thread (:func:`asyncio.to_thread`), so the event loop never
blocks on the network; a streamed command is an async iterator.

>>> from warren_client.aio import AsyncClient
>>> c = AsyncClient()                     # WARREN_URL, WARREN_ADMIN_TOKEN
>>> result = await c.exec("alice", ["make", "test"])
>>> async with await c.exec_stream("alice", ["seq", "3"]) as s:
...     async for chunk in s:
...         print(chunk.data, end="")
"""

from __future__ import annotations

import asyncio
from typing import IO, Any, AsyncIterator, List, Mapping, Optional, Tuple, Union

from .client import Client, Command, PathLike
from .errors import TransferCut
from .models import (
    DEFAULT,
    AuditEntry,
    Deleted,
    ExecEnd,
    ExecResult,
    FileWritten,
    Imported,
    LimitValue,
    OutputChunk,
    Stats,
    Terminal,
    User,
)
from .process import Process
from .streams import ExecStream


class AsyncClient:
    """:class:`~warren_client.Client`'s calls as coroutines; the same
    arguments (``url``, ``admin_token``, ``timeout``) and the same errors."""

    def __init__(
        self,
        url: Optional[str] = None,
        admin_token: Optional[str] = None,
        *,
        timeout: Optional[float] = 300.0,
    ) -> None:
        #: The synchronous client the calls run on.
        self.sync = Client(url, admin_token, timeout=timeout)

    async def healthz(self) -> bool:
        return await asyncio.to_thread(self.sync.healthz)

    async def metrics(self) -> str:
        return await asyncio.to_thread(self.sync.metrics)

    async def list_users(self) -> List[User]:
        return await asyncio.to_thread(self.sync.list_users)

    async def create_user(self, user_id: str) -> Tuple[User, bool]:
        return await asyncio.to_thread(self.sync.create_user, user_id)

    async def get_user(self, user_id: str) -> User:
        return await asyncio.to_thread(self.sync.get_user, user_id)

    async def delete_user(self, user_id: str, *, remove_home: bool = False) -> Deleted:
        return await asyncio.to_thread(self.sync.delete_user, user_id, remove_home=remove_home)

    async def set_limits(
        self,
        user_id: str,
        *,
        memory_bytes: LimitValue = DEFAULT,
        cpus: LimitValue = DEFAULT,
        pids: LimitValue = DEFAULT,
    ) -> User:
        return await asyncio.to_thread(
            self.sync.set_limits, user_id, memory_bytes=memory_bytes, cpus=cpus, pids=pids
        )

    async def stats(self, user_id: str) -> Stats:
        return await asyncio.to_thread(self.sync.stats, user_id)

    async def exec(
        self,
        user_id: str,
        command: Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[str] = None,
        timeout: Optional[float] = None,
        check: bool = False,
    ) -> ExecResult:
        return await asyncio.to_thread(
            self.sync.exec, user_id, command, cwd=cwd, env=env, stdin=stdin, timeout=timeout, check=check
        )

    async def exec_stream(
        self,
        user_id: str,
        command: Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> "AsyncExecStream":
        s = await asyncio.to_thread(
            self.sync.exec_stream, user_id, command, cwd=cwd, env=env, stdin=stdin, timeout=timeout
        )
        return AsyncExecStream(s)

    async def popen(self, user_id: str, command: Command, **kwargs: Any) -> Process:
        """Starts the command (see :meth:`warren_client.Client.popen`); wait
        for it with ``await asyncio.to_thread(p.wait)``."""
        return await asyncio.to_thread(self.sync.popen, user_id, command, **kwargs)

    async def export_home(self, user_id: str, dest: Union[PathLike, IO[bytes]]) -> int:
        return await asyncio.to_thread(self.sync.export_home, user_id, dest)

    async def import_home(self, user_id: str, src: Union[PathLike, IO[bytes], bytes]) -> Imported:
        return await asyncio.to_thread(self.sync.import_home, user_id, src)

    async def terminals(self, user_id: str) -> List[Terminal]:
        return await asyncio.to_thread(self.sync.terminals, user_id)

    async def close_terminal(self, user_id: str, terminal_id: str) -> None:
        await asyncio.to_thread(self.sync.close_terminal, user_id, terminal_id)

    async def audit(
        self,
        *,
        user: Optional[str] = None,
        action: Optional[str] = None,
        after: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> List[AuditEntry]:
        return await asyncio.to_thread(self.sync.audit, user=user, action=action, after=after, limit=limit)

    async def read_file(self, user_id: str, path: str) -> bytes:
        return await asyncio.to_thread(self.sync.read_file, user_id, path)

    async def download(self, user_id: str, path: str, dest: Union[PathLike, IO[bytes]]) -> int:
        return await asyncio.to_thread(self.sync.download, user_id, path, dest)

    async def write_file(
        self, user_id: str, path: str, data: Union[bytes, PathLike, IO[bytes]]
    ) -> FileWritten:
        return await asyncio.to_thread(self.sync.write_file, user_id, path, data)

    async def upload_archive(
        self, user_id: str, path: str, tar_gz: Union[bytes, PathLike, IO[bytes]]
    ) -> FileWritten:
        return await asyncio.to_thread(self.sync.upload_archive, user_id, path, tar_gz)

    async def upload_directory(self, user_id: str, path: str, local_dir: PathLike) -> FileWritten:
        return await asyncio.to_thread(self.sync.upload_directory, user_id, path, local_dir)


class AsyncExecStream:
    """A streamed command for ``async for``; :attr:`end` once it has ended."""

    def __init__(self, stream: ExecStream) -> None:
        self._stream = stream
        self._chunks = iter(stream)

    @property
    def end(self) -> Optional[ExecEnd]:
        return self._stream.end

    def __aiter__(self) -> AsyncIterator[OutputChunk]:
        return self

    async def __anext__(self) -> OutputChunk:
        chunk = await asyncio.to_thread(next, self._chunks, None)
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def wait(self) -> ExecEnd:
        """Reads (and drops) the rest of the output; returns the end."""
        async for _ in self:
            pass
        if self._stream.end is None:
            raise TransferCut("the exec stream ended before the command's end line")
        return self._stream.end

    async def aclose(self) -> None:
        await asyncio.to_thread(self._stream.close)

    async def __aenter__(self) -> "AsyncExecStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncClient", "AsyncExecStream"]
