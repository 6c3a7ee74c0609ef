"""The audit spool: events that could not be stored while the database was away, kept in a local file
and written to the database once it answers again - exactly once.

Rule: the spool is one append-only JSON-lines file, owner-only (directory 0700, file 0600), shared by
every process of the node. Each line is one event with its unique ``event_uid``; replaying inserts
them with ``ON CONFLICT (event_uid) DO NOTHING``, so a replay cut short and run again stores nothing
twice. Writers and the replayer take an exclusive ``flock`` on the file; the replayer deletes the file
while still holding it, and a writer that then gets the lock sees its file gone and opens a new one,
so no line is written into a file already replayed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

from idp_bridge.store import Store, StoreError

log = logging.getLogger("idp_bridge.audit")

FILE_NAME = "audit-spool.jsonl"
MAX_LINE_BYTES = 64 * 1024


class AuditSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME

    def _open_locked(self, flags: int, *, blocking: bool = True) -> int | None:
        """An fd of the current spool file, exclusively locked; None if there is none (or it is busy)."""
        for _ in range(10):
            try:
                fd = os.open(self.path, flags | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)  # replayed and deleted while we waited: open the new one
        raise OSError(f"audit spool {self.path}: kept changing under us")

    def append(self, event: dict[str, Any]) -> None:
        """Write one event (with its ``event_uid``) durably; OSError if the disk refuses too."""
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(f"audit event of {len(line)} bytes is too large to spool")
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = self._open_locked(os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        assert fd is not None  # O_CREAT
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def pending(self) -> int:
        """Events waiting (lines in the file)."""
        try:
            with self.path.open("rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def replay(self, store: Store) -> int:
        """Store every spooled event, then delete the file. Returns how many were new in the database.

        A database still away leaves the file as it is (StoreError is raised for the caller to log)."""
        fd = self._open_locked(os.O_RDWR, blocking=False)
        if fd is None:
            return 0
        try:
            with os.fdopen(os.dup(fd), "rb") as f:
                raw = f.read()
            events: list[dict[str, Any]] = []
            for n, line in enumerate(raw.splitlines(), 1):
                try:
                    event = json.loads(line)
                except ValueError:  # a line cut short by a crash: nothing to store
                    log.error(json.dumps({"event": "audit_spool_bad_line", "file": str(self.path), "line": n}))
                    continue
                if isinstance(event, dict) and event.get("event_uid"):
                    events.append(event)
            added = store.audit.restore(events) if events else 0
            os.unlink(self.path)  # under the lock: writers waiting for it will open a new file
            if events:
                log.info(json.dumps({"event": "audit_spool_replayed", "events": len(events), "new": added}))
            return added
        finally:
            os.close(fd)


def replay_job(spool: AuditSpool, store: Store) -> bool:
    """One pass for a Periodic loop; a database still away is quiet (the spool waits)."""
    with contextlib.suppress(StoreError):
        spool.replay(store)
    return False
