"""A bridge configured with a partner platform ([platform]): hand-off keys, pages, webhook; token minting."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from idp_bridge.config import load_config, read_raw_config, write_raw_config
from tests.journey import Env, make_env
from tests.pki import TestKey, cached_key

HS_SECRET = "hand-off-shared-secret-" + "x" * 24
WEBHOOK_SECRET = "webhook-secret-" + "y" * 32
SHOP = "https://shop.example"


def platform_env(root: Path, db_url: str, *, base_url: str = "http://127.0.0.1:5000", login_url: str | None = None,
                 webhook_url: str | None = None, public_key: TestKey | None = None,
                 public_key_algorithm: str = "RS256", extra: dict[str, Any] | None = None) -> Env:
    env = make_env(root, db_url, base_url=base_url)
    path = env.config.path
    assert path is not None
    raw = read_raw_config(path)
    platform: dict[str, Any] = {
        "handoff_secret": HS_SECRET, "bind_landing_url": SHOP + "/huawei/bound", "return_url": SHOP + "/orders",
        "recharge_url": SHOP + "/wallet", "return_params": ["orderId", "amount"],
    }
    if login_url:
        platform["login_url"] = login_url
    if webhook_url:
        platform["webhook_url"] = webhook_url
        platform["webhook_secret"] = WEBHOOK_SECRET
        platform["webhook_in_process"] = False
    if public_key is not None:
        pem = public_key.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        (root / "platform-public.pem").write_bytes(pem)
        platform["handoff_public_key"] = str(root / "platform-public.pem")
        platform["handoff_public_key_algorithm"] = public_key_algorithm
    platform.update(extra or {})
    raw["platform"] = platform
    write_raw_config(path, raw)
    env.config = load_config(path, environ={})
    return env


def mint(env: Env, sub: str = "cust-1001", *, key: Any = HS_SECRET, alg: str = "HS256",
         now: dt.datetime | None = None, lifetime: int = 120, aud: str | None = None, jti: str | None = None,
         **claims: Any) -> str:
    """A hand-off token as a platform mints it (PyJWT)."""
    now = now or dt.datetime.now(dt.UTC)
    payload: dict[str, Any] = {"sub": sub, "aud": aud or env.config.entity_id, "iat": int(now.timestamp()),
                               "exp": int(now.timestamp()) + lifetime, "jti": jti or uuid.uuid4().hex,
                               "iss": "shop"}
    payload.update(claims)
    return jwt.encode(payload, key, algorithm=alg)


def rsa_platform_key() -> TestKey:
    return cached_key("platform-rs256")


def random_jti() -> str:
    return secrets.token_hex(8)
