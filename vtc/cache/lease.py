"""One writer per store on an object store, where there is no ``flock``: a lease object.

``.lease`` at the store's root holds its owner and an expiry time. A writer takes it with a
conditional PUT (``If-None-Match: *``: only if there is none; ``If-Match: <etag>``: only if it is still
the expired lease just read), renews it from a background thread every third of its time to live,
and deletes it at the end. A second writer finds a live lease and fails at once with one line.

What this does not guarantee, honestly:

- A writer that stalls past its lease (a frozen VM, a debugger) while another takes the store over
  can still complete a commit it had started: the renewal thread notices the loss within a third of
  the lease time, and every commit checks the flag first, but a commit that passed the check just
  before the loss lands anyway. Its part then sorts before the new writer's (writer names carry their
  start time), so the new writer's entries win; a video both wrote is still complete in either case,
  because ``put`` writes the same bytes for the same input.
- Expiry compares clocks of different machines: a lease is taken over only ``GRACE`` seconds after
  it expired by the taker's clock, which covers ordinary NTP skew, not a clock that is minutes off.
- A killed writer leaves its lease behind: the next writer waits for it to expire (``TTL``), and is
  told so.
- Object stores that ignore conditional headers: after taking the lease the writer reads it back and
  checks it is its own, which catches a simultaneous taker unless both PUTs land before either read.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator

from vtc.errors import VtcError

LEASE = ".lease"
TTL = 60.0  # seconds a lease lives without renewal; renewed every TTL / 3
GRACE = 5.0  # seconds past expiry before another writer takes it over (clock skew)


class Conflict(Exception):
    """A conditional PUT lost: the object is not what the writer last read."""


def _describe(lease: dict) -> str:
    until = lease.get("expires", 0) - time.time()
    left = f"expires in {until:.0f}s if that process is gone" if until > 0 else "expired just now"
    return f"lease held by {lease.get('host', '?')} pid {lease.get('pid', '?')}, {left}"


def _parse(body: bytes | None) -> dict:
    """A lease object's fields, or {} for none, a torn one or a foreign one."""
    try:
        lease = json.loads(body) if body is not None else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    ok = isinstance(lease, dict) and isinstance(lease.get("expires"), (int, float))
    return lease if ok else {}


def _owner(body: bytes | None) -> str | None:
    return _parse(body).get("owner")


class Lease:
    """The lease on one store's root, held by this process while ``lost`` is False."""

    def __init__(self, fs, what: str, ttl: float | None = None):
        self.fs, self.what, self.ttl = fs, what, TTL if ttl is None else ttl
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.etag: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        body = {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires": time.time() + self.ttl,
        }
        return json.dumps(body).encode()

    def acquire(self) -> None:
        try:
            self.etag = self.fs.put_if(LEASE, self._body(), match=None)
        except Conflict:
            current, etag = self.fs.read_with_etag(LEASE)
            held = _parse(current)  # a torn or foreign lease object reads as expired
            if held and held["expires"] + GRACE > time.time():
                raise VtcError(
                    f"{self.what} is being written by another process ({_describe(held)})"
                ) from None
            try:
                self.etag = self.fs.put_if(LEASE, self._body(), match=etag)
            except Conflict:
                raise VtcError(
                    f"{self.what} is being written by another process (it just took the lease)"
                ) from None
        if _owner(self.fs.read_with_etag(LEASE)[0]) != self.owner:
            raise VtcError(f"{self.what} is being written by another process (it just took the lease)")
        self._thread = threading.Thread(target=self._renew, name="vtc-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3) and not self.lost:
            with contextlib.suppress(Exception):  # a transient network error: retry at the next tick
                self.renew()

    def renew(self) -> None:
        """Extend the lease, if it is still ours (else ``lost``: another writer took it after expiry)."""
        try:
            self.etag = self.fs.put_if(LEASE, self._body(), match=self.etag)
        except Conflict:
            self.lost = True

    def check(self) -> None:
        """Raise if another writer has taken the store over (called before each commit)."""
        if self.lost:
            raise VtcError(
                f"{self.what}: lost the write lease to another writer (stalled > {self.ttl:.0f}s?)"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost:
            return
        # Not conditional (S3 has no conditional DELETE everywhere): between this read and the delete,
        # another writer can take the lease only if ours expired meanwhile, i.e. after TTL of silence.
        with contextlib.suppress(Exception):
            if _owner(self.fs.read_with_etag(LEASE)[0]) == self.owner:
                self.fs.remove(LEASE)


_HELD: dict[int, Lease] = {}  # id(fs) -> the lease this process holds on it: commits check it


@contextlib.contextmanager
def lease(fs, what: str) -> Iterator[Lease]:
    held = Lease(fs, what)
    held.acquire()
    _HELD[id(fs)] = held
    try:
        yield held
    finally:
        _HELD.pop(id(fs), None)
        held.release()


def check_held(fs) -> None:
    """Before an object-store commit: refuse it if this process's lease on ``fs`` was lost."""
    held = _HELD.get(id(fs))
    if held is not None:
        held.check()
