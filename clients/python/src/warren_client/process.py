"""A command in a user's sandbox that looks like :class:`subprocess.Popen`.

It runs over the streamed exec: a thread reads the NDJSON and writes each
chunk into an OS pipe, so :attr:`Process.stdout` and :attr:`Process.stderr`
are real binary files (``read``, ``readline``, iteration, ``fileno`` for
``select``). As with ``Popen``, a reader that leaves one pipe full while it
waits for the other stalls the command (here, through the server's
back-pressure); :meth:`Process.communicate` reads both.

The API has no "signal this command" route, so the command is started
through ``/bin/sh`` that reports its pid on stderr (a marker line this class
removes) and then ``exec``\\s the command: :meth:`Process.kill` runs
``kill -KILL <pid>`` in the same sandbox, as the same user. Output is text:
the server decodes it as UTF-8, invalid sequences replaced.
"""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import WarrenError
from .models import ExecEnd

if TYPE_CHECKING:
    from .client import Client

#: How long kill() waits to learn the command's pid.
PID_WAIT_SECONDS = 10.0

AnyStr_ = Union[bytes, str]


class Process:
    """A command running in a user's sandbox, used like ``subprocess.Popen``.

    Attributes:
        args: the command as given.
        stdout, stderr: readable binary files (text files with ``text=True``).
        stdin: always ``None``: the API takes stdin up front (``stdin=`` of
            :meth:`warren_client.Client.popen`).
        pid: the command's pid inside the sandbox, once known.
    """

    def __init__(
        self,
        client: "Client",
        user: str,
        argv: Sequence[str],
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[str] = None,
        timeout: Optional[float] = None,
        text: bool = False,
    ) -> None:
        self.args: List[str] = list(argv)
        self.stdin = None
        self.pid: Optional[int] = None
        self._client = client
        self._user = user
        self._text = text
        self._end: Optional[ExecEnd] = None
        self._error: Optional[WarrenError] = None
        self._ended = threading.Event()
        self._pid_known = threading.Event()
        self._marker = f"__warren_pid_{secrets.token_hex(8)}__ "
        wrapped = ["/bin/sh", "-c", f'echo "{self._marker}$$" >&2; exec "$@"', "warren-run", *self.args]
        # Raises the API's errors (no such user, bad cwd, ...) here, as
        # Popen raises when the program cannot start.
        self._stream = client.exec_stream(
            user, wrapped, cwd=cwd, env=env, stdin=stdin, timeout=timeout, read_timeout=None
        )
        r_out, self._w_out = os.pipe()
        r_err, self._w_err = os.pipe()
        self.stdout = self._reader(r_out)
        self.stderr = self._reader(r_err)
        self._partial: Tuple[List[Any], List[Any]] = ([], [])
        self._drains: Optional[List[threading.Thread]] = None
        self._thread = threading.Thread(target=self._pump, name=f"warren-exec-{user}", daemon=True)
        self._thread.start()

    def _reader(self, fd: int) -> IO[Any]:
        f = os.fdopen(fd, "rb")
        if self._text:
            return io.TextIOWrapper(f, encoding="utf-8", errors="replace")
        return f

    # The thread: NDJSON in, pipes out.
    def _pump(self) -> None:
        head = ""  # stderr until the marker line is seen (or known absent)
        marker_done = False
        fds: Dict[str, int] = {"stdout": self._w_out, "stderr": self._w_err}
        try:
            for chunk in self._stream:
                data = chunk.data
                if chunk.stream == "stderr" and not marker_done:
                    head += data
                    data, marker_done = self._strip_marker(head)
                    if not marker_done:
                        continue
                    head = ""
                self._write(fds, chunk.stream, data)
            if head:
                self._write(fds, "stderr", head)
            self._end = self._stream.end
        except WarrenError as e:
            self._error = e
        except Exception as e:  # noqa: BLE001 - the caller's wait() reports it
            self._error = WarrenError(f"reading the command's output: {e!r}")
        finally:
            for name, fd in fds.items():
                if fd >= 0:
                    os.close(fd)
                    fds[name] = -1
            self._stream.close()
            self._ended.set()
            self._pid_known.set()

    def _strip_marker(self, head: str) -> Tuple[str, bool]:
        """(what to pass on, whether the marker question is settled)."""
        m = self._marker
        if len(head) < len(m) and m.startswith(head):
            return "", False  # maybe the marker, not whole yet
        if not head.startswith(m):
            return head, True  # the command never ran through the wrapper
        line, nl, rest = head.partition("\n")
        if not nl:
            return "", False
        try:
            self.pid = int(line[len(m):])
        except ValueError:
            pass
        self._pid_known.set()
        return rest, True

    @staticmethod
    def _write(fds: Dict[str, int], stream: str, data: str) -> None:
        fd = fds.get(stream, -1)
        if fd < 0 or not data:
            return
        view = memoryview(data.encode("utf-8"))
        try:
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except BrokenPipeError:
            # The caller closed that pipe: drop the rest of this stream.
            os.close(fd)
            fds[stream] = -1

    # Popen's interface.
    @property
    def returncode(self) -> Optional[int]:
        """The exit code, ``-N`` after signal N, ``None`` while it runs."""
        return self._end.returncode if self._end else None

    @property
    def end(self) -> Optional[ExecEnd]:
        """How it ended (reason ``exit``, ``signal``, ``timeout``,
        ``memory_limit``), once it has."""
        return self._end

    def poll(self) -> Optional[int]:
        """The returncode if it has ended, else ``None``."""
        self._raise_error()
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for the end; returns the returncode. Raises
        :class:`subprocess.TimeoutExpired` after ``timeout`` seconds."""
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self._raise_error()
        assert self._end is not None
        rc = self._end.returncode
        return rc if rc is not None else -1

    def _raise_error(self) -> None:
        if self._ended.is_set() and self._error is not None:
            raise self._error

    def communicate(
        self, input: Optional[AnyStr_] = None, timeout: Optional[float] = None
    ) -> Tuple[AnyStr_, AnyStr_]:
        """Reads stdout and stderr to their ends, waits, and returns both
        (bytes, or str with ``text=True``). After a
        :class:`subprocess.TimeoutExpired`, call it again for the rest, as
        with ``Popen``. ``input`` is not taken: give stdin when starting the
        command."""
        if input:
            raise ValueError("the API takes stdin when the command starts: pass stdin= to popen()/run_as_user()")
        deadline = None if timeout is None else _now() + timeout
        if self._drains is None:
            # One reader per pipe (as Popen does where it cannot select):
            # each reads through its file object, so what a caller's
            # readline() left in the object's buffer is kept.
            self._drains = [
                threading.Thread(target=self._drain, args=(i, f), daemon=True)
                for i, f in enumerate((self.stdout, self.stderr))
            ]
            for t in self._drains:
                t.start()
        for t in self._drains:
            t.join(None if deadline is None else max(deadline - _now(), 0))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.wait(None if deadline is None else max(deadline - _now(), 0))
        out, err = self._partial
        if self._text:
            return "".join(out), "".join(err)
        return b"".join(out), b"".join(err)

    def _drain(self, i: int, f: IO[Any]) -> None:
        try:
            while not f.closed:
                data = f.read1(65536) if hasattr(f, "read1") else f.read(65536)
                if not data:
                    break
                self._partial[i].append(data)
        except (OSError, ValueError):
            pass  # closed by the caller meanwhile
        finally:
            f.close()

    def send_signal(self, sig: int) -> None:
        """Sends signal ``sig`` to the command (by its pid in the sandbox);
        nothing when it has ended."""
        if self._ended.is_set():
            return
        if not self._pid_known.wait(PID_WAIT_SECONDS) or self.pid is None:
            if self._ended.is_set():
                return
            raise WarrenError("the command's pid is not known yet; cannot signal it")
        if self._ended.is_set():
            return
        # A second command in the same sandbox, as the same user. The pid
        # belongs to this command while it runs (it is the sandbox's own
        # pid namespace), so only a command that ends in between is racy,
        # and then the pid could only be one of this user's processes.
        self._client.exec(self._user, ["kill", f"-{int(sig)}", str(self.pid)], timeout=30)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(15)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(9)

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *exc: object) -> None:
        for f in (self.stdout, self.stderr):
            f.close()
        self.wait()

    def __repr__(self) -> str:
        return f"<warren Process user={self._user!r} args={self.args!r} returncode={self.returncode}>"


def _now() -> float:
    return time.monotonic()
