"""The configured service providers with their metadata loaded, looked up by name, entity ID or xAccountType.

Metadata comes from a file or a URL. A URL is fetched with a timeout and a size cap and the
last good copy is kept in the metadata folder, so a restart works while the SP's site is down.
Files are re-read when they change; URLs are re-fetched after ``refresh_seconds``. A copy that
fails to load never replaces a good one in memory.
"""

from __future__ import annotations

import logging
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


class ServiceProviderRegistry:
    def __init__(self, config: Config, *, fetcher: Fetcher = fetch_url, refresh_seconds: float = 3600.0) -> None:
        self._config = config
        self._fetcher = fetcher
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._loaded: dict[str, LoadedServiceProvider] = {}
        self._mtimes: dict[str, float] = {}

    def _stale(self, sp: ServiceProviderConfig) -> bool:
        current = self._loaded.get(sp.name)
        if current is None:
            return True
        if sp.metadata_is_url:
            return time.monotonic() - current.loaded_at > self._refresh
        try:
            return Path(sp.metadata).stat().st_mtime != self._mtimes.get(sp.name)
        except OSError:
            return False  # keep the good copy; the error shows on the next successful look

    def get(self, name: str) -> LoadedServiceProvider:
        sp = self._config.sp(name)
        with self._lock:
            if self._stale(sp):
                try:
                    data = load_sp_metadata_bytes(sp, fetcher=self._fetcher, cache_dir=self._config.metadata_dir)
                    meta = parse_sp_metadata(data)
                    self._loaded[sp.name] = LoadedServiceProvider(sp, meta, time.monotonic(), sp.metadata)
                    if not sp.metadata_is_url:
                        self._mtimes[sp.name] = Path(sp.metadata).stat().st_mtime
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
                self._mtimes[sp.name] = Path(sp.metadata).stat().st_mtime
        return loaded

    def all(self) -> list[LoadedServiceProvider]:
        return [self.get(sp.name) for sp in self._config.service_providers]

    def by_entity_id(self, entity_id: str) -> LoadedServiceProvider:
        known = []
        for sp in self._config.service_providers:
            loaded = self.get(sp.name)
            if loaded.metadata.entity_id == entity_id:
                return loaded
            known.append(loaded.metadata.entity_id)
        raise RequestError(f"Issuer {entity_id!r} is not a configured service provider "
                           f"(known entity IDs: {', '.join(known) or 'none'})", code="unknown_issuer")

    def requested(self, name: str | None) -> LoadedServiceProvider:
        """The SP a request names (``?sp=``), else the default one. An unknown name is the client's error (400)."""
        if not name:
            return self.default()
        known = [sp.name for sp in self._config.service_providers]
        if name not in known:
            raise RequestError(f"sp {name[:64]!r} named in the request is not a configured service provider "
                               f"(known: {', '.join(known) or 'none'})", code="sp_unknown")
        return self.get(name)

    def default(self) -> LoadedServiceProvider:
        if not self._config.service_providers:
            raise RequestError("no service provider is configured; run `idp-bridge sp add`",
                               code="sp_none_configured")
        return self.get(self._config.service_providers[0].name)
