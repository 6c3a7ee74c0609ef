"""The configured service providers with their metadata loaded, looked up by name, entity ID or xAccountType.

Metadata comes from a file or a URL. A URL is fetched with a timeout and a size cap and the
last good copy is kept in the metadata folder, so a restart works while the SP's site is down.
Files are re-read when they change (each is looked at with one ``stat`` at most every ``stat_seconds``, 1 s
by default, so a sign-in rarely pays a system call for it); URLs are re-fetched after ``refresh_seconds``. A
copy that fails to load never replaces a good one in memory.

Lookups cost the same for 1 or 1000 SPs: by name from a dict, by entity ID from an index of the
loaded metadata. A hit checks only the SP it found (its file, as above); an entity ID the
index does not know re-reads the other SPs' files at most every ``rescan_seconds`` (an unknown
Issuer must not make every request walk every SP).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from idp_bridge.config import Config, ServiceProviderConfig
from idp_bridge.errors import MetadataError, RequestError
from idp_bridge.fetch import fetch_bounded
from idp_bridge.huawei.sites import Site, site
from idp_bridge.saml.metadata import ServiceProviderMetadata, parse_sp_metadata
from idp_bridge.saml.xml import MAX_XML_BYTES

log = logging.getLogger("idp_bridge.sp")

Fetcher = Callable[[str], bytes]


def fetch_url(url: str, *, timeout: float = 10.0, max_bytes: int = MAX_XML_BYTES) -> bytes:
    """SP metadata from a URL, through the one bounded fetcher."""
    return fetch_bounded(url, what="SP metadata", timeout=timeout, max_bytes=max_bytes)


@dataclass(frozen=True)
class LoadedServiceProvider:
    config: ServiceProviderConfig
    metadata: ServiceProviderMetadata
    loaded_at: float
    source: str

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def site(self) -> Site:
        return site(self.config.site)


def load_sp_metadata_bytes(sp: ServiceProviderConfig, *, fetcher: Fetcher = fetch_url,
                           cache_dir: Path | None = None) -> bytes:
    if sp.metadata_is_url:
        cache = cache_dir / f"sp-{sp.name}.xml" if cache_dir else None
        try:
            data = fetcher(sp.metadata)
        except MetadataError:
            if cache and cache.exists():
                log.warning("SP %s: metadata URL unreachable; using the cached copy %s", sp.name, cache)
                return cache.read_bytes()
            raise
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(data)
        return data
    try:
        return Path(sp.metadata).read_bytes()
    except OSError as exc:
        raise MetadataError(f"SP {sp.name}: cannot read metadata file {sp.metadata!r}: {exc}",
                            code="metadata_file") from exc


def _file_id(path: str) -> tuple[int, int, int]:
    """What tells a changed file from the one loaded: modification time, size and inode (a file replaced by
    rename within the same clock tick still differs)."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


#: How many entity IDs an ``unknown_issuer`` refusal lists.
SHOWN_ENTITY_IDS = 10


class ServiceProviderRegistry:
    def __init__(self, config: Config, *, fetcher: Fetcher = fetch_url, refresh_seconds: float = 3600.0,
                 rescan_seconds: float = 2.0, stat_seconds: float = 1.0) -> None:
        self._config = config
        self._fetcher = fetcher
        self._refresh = refresh_seconds
        self._rescan = rescan_seconds
        self._lock = threading.Lock()
        self._loaded: dict[str, LoadedServiceProvider] = {}
        self._stat_seconds = stat_seconds
        self._file_ids: dict[str, tuple[int, int, int]] = {}  # SP name -> its file's (mtime_ns, size, inode)
        self._statted: dict[str, float] = {}  # SP name -> when its file was last looked at (monotonic)
        self._by_name: dict[str, ServiceProviderConfig] = {sp.name: sp for sp in config.service_providers}
        self._by_entity_id: dict[str, str] = {}  # entity ID -> SP name, from the metadata loaded so far
        self._scanned_at: float | None = None
        self._scan_lock = threading.Lock()  # one scan at a time; the others wait for its index

    def _stale(self, sp: ServiceProviderConfig) -> bool:
        current = self._loaded.get(sp.name)
        if current is None:
            return True
        if sp.metadata_is_url:
            return time.monotonic() - current.loaded_at > self._refresh
        now = time.monotonic()
        if now - self._statted.get(sp.name, -self._stat_seconds) < self._stat_seconds:
            return False  # looked at less than stat_seconds ago
        self._statted[sp.name] = now
        try:
            return _file_id(sp.metadata) != self._file_ids.get(sp.name)
        except OSError:
            return False  # keep the good copy; the error shows on the next successful look

    def config_of(self, name: str) -> ServiceProviderConfig:
        """An SP's configuration by name, without looking at its metadata."""
        return self._by_name.get(name) or self._config.sp(name)  # config.sp raises the named error

    def get(self, name: str) -> LoadedServiceProvider:
        sp = self.config_of(name)
        with self._lock:
            if self._stale(sp):
                try:
                    data = load_sp_metadata_bytes(sp, fetcher=self._fetcher, cache_dir=self._config.metadata_dir)
                    meta = parse_sp_metadata(data)
                    previous = self._loaded.get(sp.name)
                    if previous is not None and self._by_entity_id.get(previous.metadata.entity_id) == sp.name:
                        del self._by_entity_id[previous.metadata.entity_id]
                    self._loaded[sp.name] = LoadedServiceProvider(sp, meta, time.monotonic(), sp.metadata)
                    self._by_entity_id.setdefault(meta.entity_id, sp.name)  # the first configured SP wins
                    if not sp.metadata_is_url:
                        self._file_ids[sp.name] = _file_id(sp.metadata)
                        self._statted[sp.name] = time.monotonic()
                except MetadataError:
                    if sp.name not in self._loaded:
                        raise
                    log.exception("SP %s: new metadata failed to load; keeping the previous copy", sp.name)
            return self._loaded[sp.name]

    def refresh(self, name: str) -> LoadedServiceProvider:
        """Load one SP's metadata now (the operator console's refresh button), in this process.

        Unlike ``get``, an unreachable URL or a bad document is raised, not papered over with the cached
        copy; the previous copy stays in use when that happens.
        """
        sp = self._config.sp(name)
        data = load_sp_metadata_bytes(sp, fetcher=self._fetcher)
        loaded = LoadedServiceProvider(sp, parse_sp_metadata(data), time.monotonic(), sp.metadata)
        with self._lock:
            self._loaded[sp.name] = loaded
            if sp.metadata_is_url:
                cache = self._config.metadata_dir / f"sp-{sp.name}.xml"
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_bytes(data)
            else:
                self._file_ids[sp.name] = _file_id(sp.metadata)
                self._statted[sp.name] = time.monotonic()
        return loaded

    def all(self) -> list[LoadedServiceProvider]:
        return [self.get(sp.name) for sp in self._config.service_providers]

    def _indexed(self, entity_id: str) -> LoadedServiceProvider | None:
        name = self._by_entity_id.get(entity_id)
        if name is not None:
            loaded = self.get(name)  # re-reads this SP's metadata if its file changed
            if loaded.metadata.entity_id == entity_id:
                return loaded
        return None

    def by_entity_id(self, entity_id: str) -> LoadedServiceProvider:
        found = self._indexed(entity_id)
        if found is not None:
            return found
        with self._scan_lock:
            found = self._indexed(entity_id)  # a scan that finished while we waited may have indexed it
            if found is not None:
                return found
            if self._scanned_at is None or time.monotonic() - self._scanned_at >= self._rescan:
                for sp in self._config.service_providers:  # index every SP: later lookups are one dict read
                    try:
                        loaded = self.get(sp.name)
                    except MetadataError as exc:  # one SP's broken metadata must not refuse every other SP
                        log.warning("SP %s: metadata cannot be loaded: %s", sp.name, exc)
                        continue
                    self._by_entity_id[loaded.metadata.entity_id] = sp.name
                self._scanned_at = time.monotonic()  # set when the index is complete, not before
                found = self._indexed(entity_id)
                if found is not None:
                    return found
        known = sorted(self._by_entity_id)
        shown = ", ".join(known[:SHOWN_ENTITY_IDS]) + (f" and {len(known) - SHOWN_ENTITY_IDS} more"
                                                        if len(known) > SHOWN_ENTITY_IDS else "")
        raise RequestError(f"Issuer {entity_id[:256]!r} is not a configured service provider "
                           f"(known entity IDs: {shown or 'none'})", code="unknown_issuer")

    def requested(self, name: str | None) -> LoadedServiceProvider:
        """The SP a request names (``?sp=``), else the default one. An unknown name is the client's error (400)."""
        if not name:
            return self.default()
        if name not in self._by_name:
            known = list(self._by_name)
            shown = ", ".join(known[:SHOWN_ENTITY_IDS]) + (f" and {len(known) - SHOWN_ENTITY_IDS} more"
                                                            if len(known) > SHOWN_ENTITY_IDS else "")
            raise RequestError(f"sp {name[:64]!r} named in the request is not a configured service provider "
                               f"(known: {shown or 'none'})", code="sp_unknown")
        return self.get(name)

    def default(self) -> LoadedServiceProvider:
        if not self._config.service_providers:
            raise RequestError("no service provider is configured; run `idp-bridge sp add`",
                               code="sp_none_configured")
        return self.get(self._config.service_providers[0].name)
