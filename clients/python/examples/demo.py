#!/usr/bin/env python3
"""User isolation demo, as the replaced system documented it: two users, a
sandbox directory per service, a command run as each user in its sandbox
directory with a PORT, their stats, one user exported to a tar.gz and
imported as another, the list, and deletes.

It uses only the replaced system's names; against warren the one import line
below is all that changed, and WARREN_URL / WARREN_ADMIN_TOKEN say which
server (clients/python/README.md).

Usage:
    python demo.py
"""
import sys
import tempfile
from pathlib import Path

from warren_client.compat import UserIsolationManager

USERS = [
    ("alice@example.com", "Alice", 8001),
    ("bob@example.com", "Bob", 8002),
]
SERVICES = ["my-api", "worker"]
IMPORTED_AS = "carol@example.com"


def fail(message):
    print(f"  FAILED: {message}")
    sys.exit(1)


def main():
    print("=" * 50)
    print("User Isolation Demo")
    print("=" * 50)

    with tempfile.TemporaryDirectory() as tmpdir:
        manager = UserIsolationManager(users_base=Path(tmpdir) / "users")

        print("Creating isolated users...")
        for email, name, _ in USERS:
            user = manager.get_or_create_user(email)
            print(
                f"  {name} -> {user.linux_username} "
                f"(UID: {user.linux_uid}, GID: {user.linux_gid}, home: {user.home_dir})"
            )
        print()

        print("Creating sandboxes...")
        for email, name, _ in USERS:
            for service in SERVICES:
                sandbox = manager.get_sandbox_path(email, service)
                print(f"  {name}/{service}: {sandbox}")
        print()

        print("Running a command as each user...")
        for email, name, port in USERS:
            sandbox = manager.get_sandbox_path(email, "my-api")
            process = manager.run_as_user(
                saas_user_id=email,
                command=(
                    f"echo 'print(\"Hello from {name}!\")' > main.py && "
                    "echo \"user=$(id -un) port=$PORT dir=$(basename \"$PWD\")\""
                ),
                cwd=sandbox,
                env={"PORT": str(port)},
            )
            stdout, stderr = process.communicate(timeout=60)
            if process.returncode != 0:
                fail(f"{name}: exit {process.returncode}: {stderr.decode().strip()}")
            print(f"  {name}: {stdout.decode().strip()}")
        print()

        print("User statistics:")
        for email, name, _ in USERS:
            stats = manager.get_user_stats(email)
            print(
                f"  {name}: {stats['sandbox_count']} sandbox(es), "
                f"{stats['total_size_mb']:.2f} MB"
            )
        print()

        print("Export/Import...")
        export_path = Path(tmpdir) / "alice_backup.tar.gz"
        if not manager.export_user_data("alice@example.com", export_path):
            fail("export of alice")
        print(f"  Exported alice to {export_path.name} ({export_path.stat().st_size} bytes)")
        if not manager.import_user_data(IMPORTED_AS, export_path):
            fail(f"import into {IMPORTED_AS}")
        sandbox = manager.get_sandbox_path(IMPORTED_AS, "my-api")
        process = manager.run_as_user(IMPORTED_AS, "cat main.py", cwd=sandbox)
        stdout, _ = process.communicate(timeout=60)
        print(f"  Imported as {IMPORTED_AS}; its my-api/main.py: {stdout.decode().strip()}")
        print()

        all_users = manager.list_users()
        ours = sorted(u.saas_user_id for u in all_users if u.saas_user_id.endswith("@example.com"))
        print(f"Total isolated users: {len(all_users)} ({', '.join(ours)})")
        print()

        print("Deleting users...")
        for email in [e for e, _, _ in USERS] + [IMPORTED_AS]:
            deleted = manager.delete_user(email)
            print(f"  {email}: {'deleted' if deleted else 'not deleted'}")
            if not deleted or manager.get_user(email) is not None:
                fail(f"delete of {email}")

    print()
    print("=" * 50)
    print("Demo complete!")
    print("=" * 50)


if __name__ == "__main__":
    main()
