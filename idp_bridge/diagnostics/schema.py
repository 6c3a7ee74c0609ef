"""Schema validation against the OASIS SAML 2.0 XSDs shipped in ``idp_bridge/saml/schemas`` (no network)."""

from __future__ import annotations

import functools
from pathlib import Path

from lxml import etree

from idp_bridge.saml.xml import parse_untrusted

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "saml" / "schemas"
METADATA_XSD = "saml-schema-metadata-2.0.xsd"
PROTOCOL_XSD = "saml-schema-protocol-2.0.xsd"


@functools.cache
def _schema(name: str) -> etree.XMLSchema:
    # Our own files: imports resolve relative to the folder; the parser never touches the network.
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / name), parser))


def schema_errors(xml: bytes, *, schema: str = METADATA_XSD, limit: int = 10) -> list[str]:
    """Validation errors of ``xml`` (peer or our own) against a shipped schema; empty when valid."""
    try:
        root = parse_untrusted(xml, what="XML document")
    except Exception as exc:  # noqa: BLE001 - any parse failure is a validation failure
        return [str(exc)]
    xsd = _schema(schema)
    if xsd.validate(root):
        return []
    return [f"line {e.line}: {e.message}" for e in list(xsd.error_log)[:limit]]
