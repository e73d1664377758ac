"""The names and shapes of the system warren replaces (its
``UserIsolationManager`` and ``IsolatedUser``), over warren's API, so code
written for it runs with one import changed::

    from warren_client.compat import UserIsolationManager

Each call maps to the API (clients/python/README.md has the table). What
differs, by design: homes are where the server keeps them (``users_base``
is accepted and not used: that is the server's ``--workspace-root``);
limits always apply (``enable_cgroups`` is accepted and not used);
commands run inside the user's sandbox, not as a host process, and
``run_as_user`` returns a :class:`~warren_client.process.Process`, which
has ``Popen``'s interface.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from .client import Client
from .errors import NotFound, WarrenError
from .models import User
from .process import Process

logger = logging.getLogger("warren_client.compat")

#: Where a home appears inside a sandbox of the namespaces tier.
SANDBOX_WORKSPACE = PurePosixPath("/workspace")


@dataclass
class IsolatedUser:
    """A tenant, in the replaced system's shape.

    Attributes:
        saas_user_id: the id as given (warren's ``id``).
        linux_username: the derived name (warren's ``slug``).
        linux_uid: the host uid (``host_uid``).
        linux_gid: the host gid (``host_gid``; the uid where the server
            does not say it).
        home_dir: the home's path on the host (``home_dir``).
        created_at: Unix seconds, as a float.
    """

    saas_user_id: str
    linux_username: str
    linux_uid: int
    linux_gid: int
    home_dir: Path
    created_at: float

    @classmethod
    def from_user(cls, u: User) -> "IsolatedUser":
        return cls(
            saas_user_id=u.id,
            linux_username=u.slug,
            linux_uid=u.host_uid,
            linux_gid=u.host_gid if u.host_gid is not None else u.host_uid,
            home_dir=Path(u.home_dir) if u.home_dir else SANDBOX_WORKSPACE.joinpath(u.slug),  # type: ignore[arg-type]
            created_at=float(u.created_at),
        )

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serializable dictionary."""
        d = asdict(self)
        d["home_dir"] = str(self.home_dir)
        return d


class UserIsolationManager:
    """Per-user sandboxes, managed through a warren server.

    Args:
        users_base: accepted for compatibility; warren keeps homes under its
            own ``--workspace-root``.
        enable_cgroups: accepted for compatibility; warren's limits always apply.
        url, admin_token: the server (default: ``WARREN_URL``,
            ``WARREN_ADMIN_TOKEN``).
        client: a :class:`~warren_client.Client` to use instead.
    """

    def __init__(
        self,
        users_base: Union[None, str, "os.PathLike[str]"] = None,
        enable_cgroups: bool = False,
        *,
        url: Optional[str] = None,
        admin_token: Optional[str] = None,
        client: Optional[Client] = None,
    ) -> None:
        self.client = client or Client(url, admin_token)
        if users_base is not None:
            logger.info(
                "users_base=%s is not used: warren keeps homes under its --workspace-root", users_base
            )
        self.users_base = Path(users_base) if users_base is not None else None
        self.enable_cgroups = enable_cgroups

    def get_or_create_user(self, saas_user_id: str) -> IsolatedUser:
        """Gets or creates the tenant (host uid, home)."""
        user, _ = self.client.create_user(saas_user_id)
        return IsolatedUser.from_user(user)

    def get_user(self, saas_user_id: str) -> Optional[IsolatedUser]:
        """The tenant, or ``None`` when there is none (nothing is created)."""
        try:
            return IsolatedUser.from_user(self.client.get_user(saas_user_id))
        except NotFound:
            return None

    def get_sandbox_path(self, saas_user_id: str, service_id: str) -> Path:
        """``<home>/sandboxes/<service_id>``, created (inside the sandbox, as
        the user) if missing; the tenant too.

        The path is the host's. Write into it through the API
        (:meth:`warren_client.Client.write_file`) or a command run as the
        user: host code writing there as root would follow any symlink the
        user left.

        Raises:
            ValueError: a service id that is not one plain name.
        """
        service = _plain_name(service_id)
        user = self.get_or_create_user(saas_user_id)
        rel = f"sandboxes/{service}"
        self.client.exec(saas_user_id, ["mkdir", "-p", "--", rel], check=True)
        return user.home_dir / "sandboxes" / service

    def run_as_user(
        self,
        saas_user_id: str,
        command: Union[str, Sequence[str]],
        cwd: Union[None, str, "os.PathLike[str]"] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> Process:
        """Starts ``command`` (a string runs with ``sh -c``, a list as argv)
        in the user's sandbox, as the user, and returns a ``Popen``-like
        :class:`~warren_client.process.Process`: ``stdout`` and ``stderr``
        are readable binary streams, with ``wait()``, ``poll()``,
        ``communicate()``, ``returncode``, ``kill()``, ``terminate()``.

        ``cwd`` is a path in the home: the host path (as
        :meth:`get_sandbox_path` returns it), the path inside the sandbox
        (``/workspace/<name>/...``) or one relative to the home. ``env``
        adds variables (``PORT``, ...) to the sandbox's environment. The
        command may run for an hour (the API's most).

        Raises:
            ValueError: a ``cwd`` outside the user's home.
        """
        rel = None
        if cwd is not None:
            user = self.client.get_user(saas_user_id)
            rel = _home_relative(cwd, user)
        return self.client.popen(saas_user_id, command, cwd=rel, env=env)

    def list_users(self) -> List[IsolatedUser]:
        """Every tenant."""
        return [IsolatedUser.from_user(u) for u in self.client.list_users()]

    def get_user_stats(self, saas_user_id: str) -> Dict[str, Any]:
        """``{"user": {...}, "sandbox_count": N, "total_size_mb": X}`` as the
        replaced system answered, and warren's whole stats under ``"warren"``
        (limits in force, cgroup counters, the sandbox's record)."""
        stats = self.client.stats(saas_user_id)
        count = self.client.exec(
            saas_user_id,
            ["sh", "-c", "find sandboxes -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l"],
        )
        size = stats.workspace.bytes if stats.workspace else 0
        return {
            "user": IsolatedUser.from_user(stats.user).to_dict(),
            "sandbox_count": int(count.stdout.strip() or 0),
            "total_size_mb": size / (1024 * 1024),
            "warren": stats.raw,
        }

    def export_user_data(self, saas_user_id: str, output_path: Union[str, "os.PathLike[str]"]) -> bool:
        """Writes the home as tar.gz to ``output_path`` (whole or not at all);
        False (the reason logged) when it failed."""
        try:
            Path(output_path).parent.mkdir(parents=True, exist_ok=True)
            self.client.export_home(saas_user_id, output_path)
            return True
        except (WarrenError, OSError) as e:
            logger.error("export of %s failed: %s", saas_user_id, e)
            return False

    def import_user_data(self, saas_user_id: str, archive_path: Union[str, "os.PathLike[str]"]) -> bool:
        """Unpacks a tar.gz into the user's home (the user created if
        needed); a hostile archive is refused with nothing written. False
        (the reason logged) when it failed."""
        try:
            self.client.create_user(saas_user_id)
            self.client.import_home(saas_user_id, archive_path)
            return True
        except (WarrenError, OSError) as e:
            logger.error("import into %s failed: %s", saas_user_id, e)
            return False

    def delete_user(self, saas_user_id: str, delete_home: bool = True) -> bool:
        """Stops the user's sandbox and removes the tenant (and its home,
        unless ``delete_home=False``). False when there was no such user or
        the delete failed (the reason logged)."""
        try:
            self.client.delete_user(saas_user_id, remove_home=delete_home)
            return True
        except NotFound:
            return False
        except WarrenError as e:
            logger.error("delete of %s failed: %s", saas_user_id, e)
            return False


_manager: Optional[UserIsolationManager] = None
_manager_lock = threading.Lock()


def get_isolation_manager() -> UserIsolationManager:
    """One shared manager (from ``WARREN_URL`` / ``WARREN_ADMIN_TOKEN``)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = UserIsolationManager()
        return _manager


def _plain_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"not a plain name for a sandbox directory: {name!r}")
    return name


def _home_relative(cwd: Union[str, "os.PathLike[str]"], user: User) -> str:
    """``cwd`` as a path relative to the user's home."""
    p = PurePosixPath(os.fspath(cwd))
    if not p.is_absolute():
        rel = p
    else:
        homes = [SANDBOX_WORKSPACE / user.slug]
        if user.home_dir:
            homes.insert(0, PurePosixPath(user.home_dir))
        for home in homes:
            try:
                rel = p.relative_to(home)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"cwd {str(p)!r} is not in {user.id!r}'s home ({homes[0]})")
    if ".." in rel.parts:
        raise ValueError(f"cwd {str(cwd)!r} has a '..'")
    return str(rel)


__all__ = ["IsolatedUser", "UserIsolationManager", "get_isolation_manager"]
