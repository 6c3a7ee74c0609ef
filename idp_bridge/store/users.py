"""Local accounts with argon2id password hashes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from idp_bridge.errors import UnknownUserError, UserExistsError
from idp_bridge.store.db import Database
from idp_bridge.store.tables import UserRow

MAX_USER_ID_LENGTH = 128
# argon2 copes with long input, but an unbounded field is a free CPU/memory lever.
MAX_PASSWORD_LENGTH = 1024


@dataclass(frozen=True)
class User:
    user_id: str
    email: str | None
    name: str | None
    mobile: str | None
    created_at: datetime
    disabled: bool


def _check_user_id(user_id: str) -> None:
    if not user_id or len(user_id) > MAX_USER_ID_LENGTH or user_id.strip() != user_id:
        raise ValueError(f"user_id must be 1..{MAX_USER_ID_LENGTH} characters without surrounding spaces")


def _check_password(password: str) -> None:
    if not password:
        raise ValueError("password must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"password longer than {MAX_PASSWORD_LENGTH} characters")


@cache
def _dummy_hash(hasher: PasswordHasher) -> str:
    return hasher.hash("idp-bridge dummy password for unknown users")


_USER_COLUMNS = (
    UserRow.user_id,
    UserRow.email,
    UserRow.name,
    UserRow.mobile,
    UserRow.created_at,
    UserRow.disabled,
)


class UserRepository:
    """``store.users``: local accounts (argon2id hashes)."""

    def __init__(self, db: Database, hasher: PasswordHasher) -> None:
        self._db = db
        self._hasher = hasher

    def prepare(self) -> None:
        """Make the unknown-user dummy hash now, so not even the first unknown user costs more time."""
        _dummy_hash(self._hasher)

    def add(
        self,
        user_id: str,
        password: str,
        *,
        email: str | None = None,
        name: str | None = None,
        mobile: str | None = None,
        now: datetime | None = None,
    ) -> User:
        _check_user_id(user_id)
        _check_password(password)
        created_at = now or datetime.now(UTC)
        values = {
            "user_id": user_id,
            "password_hash": self._hasher.hash(password),
            "email": email,
            "name": name,
            "mobile": mobile,
            "created_at": created_at,
            "disabled": False,
        }
        try:
            with self._db.write() as conn:
                conn.execute(insert(UserRow).values(values))
        except IntegrityError as exc:
            raise UserExistsError(f"user {user_id!r} already exists") from exc
        return User(user_id, email, name, mobile, created_at.astimezone(UTC), False)

    def get(self, user_id: str) -> User | None:
        with self._db.read() as conn:
            row = conn.execute(select(*_USER_COLUMNS).where(UserRow.user_id == user_id)).first()
        if row is None:
            return None
        return User(row.user_id, row.email, row.name, row.mobile, row.created_at, row.disabled)

    def set_password(self, user_id: str, password: str) -> None:
        _check_password(password)
        new_hash = self._hasher.hash(password)
        with self._db.write() as conn:
            result = conn.execute(
                update(UserRow).where(UserRow.user_id == user_id).values(password_hash=new_hash)
            )
        if result.rowcount != 1:
            raise UnknownUserError(f"no user {user_id!r} to set a password for")

    def set_disabled(self, user_id: str, disabled: bool) -> None:
        with self._db.write() as conn:
            result = conn.execute(update(UserRow).where(UserRow.user_id == user_id).values(disabled=disabled))
        if result.rowcount != 1:
            raise UnknownUserError(f"no user {user_id!r} to {'disable' if disabled else 'enable'}")

    def authenticate(self, user_id: str, password: str) -> User | None:
        """The user if the password matches and the account is enabled, else None.

        An unknown user still costs one argon2 verification, so response time does not tell
        which user ids exist. A hash made with older parameters is replaced after a success.
        """
        if not password or len(password) > MAX_PASSWORD_LENGTH or len(user_id) > MAX_USER_ID_LENGTH:
            return None
        with self._db.read() as conn:
            row = conn.execute(
                select(UserRow.password_hash, *_USER_COLUMNS).where(UserRow.user_id == user_id)
            ).first()
        if row is None:
            with contextlib.suppress(VerificationError):
                self._hasher.verify(_dummy_hash(self._hasher), password)
            return None
        try:
            self._hasher.verify(row.password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row.disabled:
            return None
        if self._hasher.check_needs_rehash(row.password_hash):
            new_hash = self._hasher.hash(password)
            with self._db.write() as conn:
                conn.execute(
                    update(UserRow)
                    .where(UserRow.user_id == user_id, UserRow.password_hash == row.password_hash)
                    .values(password_hash=new_hash)
                )
        return User(row.user_id, row.email, row.name, row.mobile, row.created_at, row.disabled)
