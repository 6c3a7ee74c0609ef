"""Which fetches of ``/saml/metadata`` are written down: evidence without a database write per request.

Key rotation counts a fetch as evidence that an SP holds a key when the metadata it got listed the
key and it came from that SP's ``metadata_fetchers`` (``keys.rotation.judge_fetch``). What matters
is therefore *that* an address fetched a key set after the key was published, not every repeat.
The rule here: the first fetch of each (address, ``?sp=`` tag, ETag) is written at once (so
``keys status`` sees it as soon as the response has gone out), a repeat only once it is older than
``refresh_seconds``. A new key set is a new ETag, so the first fetch after a rotation step is
always recorded. Fetches from addresses no SP lists can never be evidence; they are written only
within a small budget per minute, so anonymous traffic cannot grow the table (the rest is counted
and logged). Per process; several workers may each write their first sighting.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence

from idp_bridge.config import ServiceProviderConfig
from idp_bridge.store import Store

log = logging.getLogger("idp_bridge.metadata")

REFRESH_SECONDS = 300.0
UNLISTED_PER_MINUTE = 10
MAX_TRACKED = 4096


def listed_fetcher(remote_addr: str | None, sps: Sequence[ServiceProviderConfig]) -> bool:
    """True when some SP lists the address in ``metadata_fetchers`` (the fetch may be evidence)."""
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for sp in sps for net in sp.metadata_fetchers)


class FetchRecorder:
    def __init__(self, store: Store, sps: Sequence[ServiceProviderConfig], *,
                 refresh_seconds: float = REFRESH_SECONDS, unlisted_per_minute: int = UNLISTED_PER_MINUTE,
                 max_tracked: int = MAX_TRACKED) -> None:
        self._store = store
        self._sps = tuple(sps)
        self._refresh = dt.timedelta(seconds=refresh_seconds)
        self._unlisted_per_minute = unlisted_per_minute
        self._max_tracked = max_tracked
        self._lock = threading.Lock()
        self._written: OrderedDict[tuple[str | None, str | None, str], dt.datetime] = OrderedDict()
        self._minute: dt.datetime | None = None
        self._unlisted_written = 0
        self.skipped = 0  # fetches not written (repeats and over-budget), since start

    def record(self, *, remote_addr: str | None, user_agent: str | None, etag: str, key_ids: Sequence[str],
               sp: str | None, now: dt.datetime) -> bool:
        """Write the fetch if it is news; True when a row was written."""
        key = (remote_addr, sp, etag)
        with self._lock:
            last = self._written.get(key)
            if last is not None and now - last < self._refresh:
                self.skipped += 1
                return False
            if not listed_fetcher(remote_addr, self._sps) and not self._unlisted_budget(now):
                self.skipped += 1
                return False
            self._written[key] = now
            self._written.move_to_end(key)
            while len(self._written) > self._max_tracked:
                self._written.popitem(last=False)
        self._store.keyring.record_metadata_fetch(remote_addr=remote_addr, user_agent=user_agent, etag=etag,
                                                  key_ids=list(key_ids), now=now, sp=sp)
        return True

    def _unlisted_budget(self, now: dt.datetime) -> bool:
        minute = now.replace(second=0, microsecond=0)
        if minute != self._minute:
            if self._minute is not None and self.skipped:
                log.info(json.dumps({"event": "metadata_fetches_not_recorded", "count": self.skipped,
                                     "until": minute.isoformat()}))
                self.skipped = 0
            self._minute, self._unlisted_written = minute, 0
        if self._unlisted_written >= self._unlisted_per_minute:
            return False
        self._unlisted_written += 1
        return True
