"""The two reference servers of ``bench_http.py``: a Flask hello-world and a pysaml2 IdP.

Both run under the same gunicorn command as the bridge (``gunicorn ... 'http_apps:hello()'`` with
``--pythonpath bench``). The pysaml2 IdP does the bridge's job the way pysaml2's own example IdP
does: it reads the signed HTTP-Redirect AuthnRequest and verifies its signature
(``parse_authn_request`` with ``SigAlg``/``Signature``), finds the signed-in customer from a cookie,
builds a Response with a signed Assertion (``create_authn_response``, its default ``xmlsec1``
backend) and renders the auto-POST form (``apply_binding``). It keeps sessions in process memory
and checks no replay: that is less work than the bridge does, never more.

Its settings come from the directory named by ``$BENCH_PYSAML2_DIR``: ``idp.key``/``idp.crt``
(the bridge's own signing key, so both sign with the same key), ``sp.xml`` and ``users.json``
(cookie value -> attributes), written by ``bench_http.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from flask import Flask

StartResponse = Callable[..., Any]
IDP_ENTITY_ID = "http://127.0.0.1/pysaml2/metadata"


def hello() -> Flask:
    app = Flask("hello")

    @app.get("/")
    def index() -> str:
        return "Hello, World!"

    return app


def pysaml2_idp() -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
        from saml2.config import IdPConfig
        from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_TRANSIENT, NameID
        from saml2.server import Server
        from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

    work = Path(os.environ["BENCH_PYSAML2_DIR"])
    sso_url = os.environ.get("BENCH_PYSAML2_SSO", "http://127.0.0.1/saml/sso")
    conf = IdPConfig()
    conf.load({
        "entityid": IDP_ENTITY_ID,
        "service": {"idp": {
            "endpoints": {"single_sign_on_service": [(sso_url, BINDING_HTTP_REDIRECT)]},
            "policy": {"default": {"lifetime": {"minutes": 5}, "name_form": NAME_FORMAT_URI}},
            "name_id_format": [NAMEID_FORMAT_TRANSIENT],
            "sign_assertion": True,
            "want_authn_requests_signed": True,
        }},
        "key_file": str(work / "idp.key"),
        "cert_file": str(work / "idp.crt"),
        "metadata": {"local": [str(work / "sp.xml")]},
        "xmlsec_binary": shutil.which("xmlsec1"),
        "crypto_backend": "xmlsec1",
        "signing_algorithm": SIG_RSA_SHA256,
        "digest_algorithm": DIGEST_SHA256,
        "accepted_time_diff": 180,
    })
    server = Server(config=conf)
    users: dict[str, dict[str, list[str]]] = json.loads((work / "users.json").read_text())

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        morsel = cookie.get("idpb_session")
        identity = users.get(morsel.value) if morsel else None
        if identity is None or "SAMLRequest" not in query:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"no session or no SAMLRequest"]
        req = server.parse_authn_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT,
                                         relay_state=query.get("RelayState"), sigalg=query.get("SigAlg"),
                                         signature=query.get("Signature"))
        message = req.message
        name_id = NameID(format=NAMEID_FORMAT_TRANSIENT, text="_" + os.urandom(16).hex())
        response = server.create_authn_response(
            identity, in_response_to=message.id, destination=message.assertion_consumer_service_url,
            sp_entity_id=message.issuer.text, name_id=name_id,
            authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport",
                   "authn_auth": IDP_ENTITY_ID},
            sign_assertion=True, sign_response=False, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
        http = server.apply_binding(BINDING_HTTP_POST, str(response), message.assertion_consumer_service_url,
                                    query.get("RelayState"), response=True)
        body = http["data"].encode() if isinstance(http["data"], str) else http["data"]
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")])
        return [body]

    return app
