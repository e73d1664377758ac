"""A streamed command (``POST /api/users/{id}/exec/stream``): NDJSON lines
``{"stream", "data"}`` as output arrives, then one line with the end."""

from __future__ import annotations

import http.client
import json
from typing import Iterator, Optional

from .errors import ConnectionFailed, TransferCut
from .models import ExecEnd, OutputChunk


class ExecStream:
    """The output of a running command, chunk by chunk.

    Iterate it for :class:`OutputChunk` values; when the iteration ends,
    :attr:`end` says how the command ended. A reader that stops reading
    slows the command (the server holds nothing back for it); closing the
    stream early cuts the connection, and the command gets EPIPE on its next
    write. Use it as a context manager to be sure the connection is closed.
    """

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp
        #: How the command ended; set once the last line is read.
        self.end: Optional[ExecEnd] = None

    def __iter__(self) -> Iterator[OutputChunk]:
        while self.end is None:
            try:
                line = self._resp.readline()
            except (OSError, http.client.HTTPException, ValueError) as e:
                self.close()
                raise ConnectionFailed(f"exec stream: {e}") from e
            if not line:
                self.close()
                raise TransferCut("the exec stream ended before the command's end line")
            value = json.loads(line)
            if "stream" in value:
                yield OutputChunk(value["stream"], value["data"])
            else:
                self.end = ExecEnd.from_json(value)
        self.close()

    def wait(self) -> ExecEnd:
        """Reads (and drops) the rest of the output; returns the end."""
        for _ in self:
            pass
        assert self.end is not None
        return self.end

    def close(self) -> None:
        """Closes the connection (early: the command's pipes break)."""
        self._conn.close()

    def __enter__(self) -> "ExecStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
