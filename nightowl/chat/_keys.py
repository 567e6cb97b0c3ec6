"""API keys: created once (the plaintext is shown only then), stored as sha256, revocable.

Keys are 32 random bytes (``secrets.token_urlsafe``), so a fast hash is enough: there is
no low-entropy secret to brute-force, unlike passwords. Each key names a tenant (its
namespace): threads and chat demos are scoped by it. Budgets are USD per key.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select, update

from nightowl.chat.tables import ApiKeyRow
from nightowl.chat.threads import utcnow
from nightowl.errors import BudgetExceededError, UnknownNameError, UserError
from nightowl.ledger.tables import detached
from nightowl.storage import Database

KEY_PREFIX = "no-"


def hash_key(plaintext: str) -> str:
    """sha256 hex of a key."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class ApiKey:
    """A stored key (never the plaintext)."""

    id: str
    name: str
    prefix: str
    tenant: str
    budget_usd: float | None
    spent_usd: float
    created_at: datetime
    revoked: bool


def _key(row: ApiKeyRow) -> ApiKey:
    return detached(ApiKey, row, revoked=row.revoked_at is not None)


class KeyStore:
    """Create, list, revoke and check API keys."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self, name: str, *, tenant: str | None = None, budget_usd: float | None = None
    ) -> tuple[str, ApiKey]:
        """A new key; returns (plaintext, record). The plaintext is not stored."""
        if budget_usd is not None and budget_usd < 0:
            raise UserError("a key budget must be >= 0 USD")
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        kid = uuid.uuid4().hex
        row = ApiKeyRow(
            id=kid,
            name=name,
            prefix=plaintext[:10],
            key_hash=hash_key(plaintext),
            tenant=tenant or f"key-{kid[:12]}",
            budget_usd=budget_usd,
            spent_usd=0.0,
            created_at=utcnow(),
            revoked_at=None,
        )
        self.db.write(lambda s: s.add(row))
        return plaintext, _key(row)

    def list(self) -> list[ApiKey]:
        """All keys, newest first."""
        rows = self.db.read(
            lambda s: list(s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at.desc())))
        )
        return [_key(r) for r in rows]

    def revoke(self, key_id_or_prefix: str) -> ApiKey:
        """Revoke by id, id prefix or key prefix (must match exactly one key)."""
        matches = [
            k
            for k in self.list()
            if k.id.startswith(key_id_or_prefix) or k.prefix == key_id_or_prefix
        ]
        if len(matches) != 1:
            raise UnknownNameError("api key", key_id_or_prefix, [k.id[:12] for k in self.list()])
        kid = matches[0].id
        self.db.write(
            lambda s: s.execute(
                update(ApiKeyRow).where(ApiKeyRow.id == kid).values(revoked_at=utcnow())
            )
        )
        return replace(matches[0], revoked=True)

    def authenticate(self, plaintext: str) -> ApiKey | None:
        """The live key matching ``plaintext``, else None."""
        stmt = select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_key(plaintext))
        row = self.db.read(lambda s: s.scalar(stmt))
        if row is None or row.revoked_at is not None:
            return None
        return _key(row)

    def authenticate_id(self, key_id: str) -> ApiKey:
        """The current record of a key (fresh spend), `UserError` if revoked or unknown."""
        row = self.db.read(lambda s: s.get(ApiKeyRow, key_id))
        if row is None or row.revoked_at is not None:
            raise UserError("the API key was revoked")
        return _key(row)

    def check_budget(self, key: ApiKey) -> None:
        """`BudgetExceededError` when the key's budget is spent."""
        if key.budget_usd is not None and key.spent_usd >= key.budget_usd:
            raise BudgetExceededError(f"api key {key.prefix} cost", key.budget_usd, key.spent_usd)

    def add_spend(self, key_id: str, cost: float) -> None:
        """Add ``cost`` USD to a key's spend (atomic increment)."""
        self.db.write(
            lambda s: s.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id)
                .values(spent_usd=ApiKeyRow.spent_usd + cost)
            )
        )
