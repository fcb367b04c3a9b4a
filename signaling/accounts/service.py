"""Register, log in, rotate refresh tokens, log out, and resolve access tokens to principals.

Refresh tokens rotate on every use. All tokens descending from one login form a family (the login
session, `sid` in access tokens). Presenting a token that was already used means it leaked: the whole
family is revoked (OAuth 2.0 Security BCP, section 4.14.2).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from signaling.accounts.names import RESERVED_NAMES, username_problem
from signaling.auth import secrets
from signaling.auth.access_tokens import AccessTokens
from signaling.auth.passwords import Passwords
from signaling.auth.roles import Principal, Role
from signaling.db.database import Database
from signaling.db.models import Channel, OidcIdentity, RefreshToken, User
from signaling.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    """What an OpenID Connect provider vouched for."""

    provider: str
    subject: str
    email: str
    email_verified: bool
    preferred_username: str
    name: str


class AccountService:
    def __init__(
        self,
        db: Database,
        passwords: Passwords,
        access_tokens: AccessTokens,
        refresh_ttl: int,
        default_role: Role,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._passwords = passwords
        self._access = access_tokens
        self._refresh_ttl = refresh_ttl
        self._default_role = default_role
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def register(self, username: str, email: str, password: str) -> User:
        password_hash = await self._passwords.hash(password)
        async with self._db.session() as session:
            await self._check_free(session, username, email)
            return await self._create_user(session, username, email, password_hash, email_verified=False)

    async def _check_free(self, session: AsyncSession, username: str, email: str) -> None:
        taken = await session.scalar(
            select(User.username).where(or_(User.username == username, User.email == email)).limit(1)
        )
        if taken is not None:
            field = "username" if taken == username else "email"
            raise Conflict(f"that {field} is taken", errors=[{"field": field, "message": "taken"}])

    async def _create_user(
        self, session: AsyncSession, username: str, email: str, password_hash: str | None, email_verified: bool
    ) -> User:
        # The first account of a fresh installation administers it.
        first = await session.scalar(select(func.count()).select_from(User)) == 0
        user = User(
            username=username,
            email=email,
            email_verified=email_verified,
            password_hash=password_hash,
            role=(Role.ADMIN if first else self._default_role).label,
            display_name=username,
            bio="",
            created_at=self._now(),
            updated_at=self._now(),
        )
        session.add(user)
        try:
            await session.flush()
        except IntegrityError:
            # Two registrations raced for the same name; the database decided.
            raise Conflict("that username or email is taken") from None
        session.add(Channel(owner_id=user.id, name=username, title=f"{username}'s channel", tags=[]))
        await session.flush()
        return user

    async def login(self, login: str, password: str) -> Tokens:
        async with self._db.session() as session:
            user = await session.scalar(select(User).where(or_(User.username == login, User.email == login)))
        ok = await self._passwords.verify(user.password_hash if user else None, password)
        if user is None or not ok:
            raise Unauthorized("wrong username or password")
        return await self._open_session(user)

    async def _open_session(self, user: User) -> Tokens:
        async with self._db.session() as session:
            return await self._issue(session, user, uuid.uuid4().hex)

    async def _issue(self, session: AsyncSession, user: User, family_id: str) -> Tokens:
        refresh = secrets.issue(secrets.REFRESH_TOKEN_PREFIX)
        now = self._now()
        session.add(
            RefreshToken(
                user_id=user.id,
                family_id=family_id,
                token_hash=refresh.digest,
                created_at=now,
                expires_at=now + timedelta(seconds=self._refresh_ttl),
            )
        )
        access = self._access.issue(user.id, family_id, user.role)
        return Tokens(access_token=access, refresh_token=refresh.value, expires_in=self._access.ttl)

    async def refresh(self, refresh_token: str) -> Tokens:
        now = self._now()
        async with self._db.session() as session:
            row = await session.scalar(
                select(RefreshToken).where(RefreshToken.token_hash == secrets.digest(refresh_token))
            )
            if row is None or row.revoked_at is not None or row.expires_at <= now:
                raise Unauthorized("the refresh token is invalid or expired")
            # Claim the token atomically so two concurrent refreshes cannot both succeed.
            claimed = await session.execute(
                update(RefreshToken)
                .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
                .values(used_at=now)
            )
            if claimed.rowcount == 1:  # type: ignore[attr-defined]
                user = await session.get(User, row.user_id)
                assert user is not None  # the foreign key cascades deletes
                return await self._issue(session, user, row.family_id)
        await self._revoke_family(row.family_id)
        raise Unauthorized("the refresh token was already used; the session has been ended")

    async def _revoke_family(self, family_id: str) -> None:
        async with self._db.session() as session:
            await session.execute(
                update(RefreshToken)
                .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )

    async def logout(self, refresh_token: str) -> None:
        async with self._db.session() as session:
            family = await session.scalar(
                select(RefreshToken.family_id).where(RefreshToken.token_hash == secrets.digest(refresh_token))
            )
        if family is None:
            raise Unauthorized("the refresh token is invalid")
        await self._revoke_family(family)

    async def authenticate(self, access_token: str) -> Principal:
        claims = self._access.verify(access_token)
        async with self._db.session() as session:
            found = (
                await session.execute(
                    select(User.username, User.role, RefreshToken.id)
                    .join(RefreshToken, RefreshToken.user_id == User.id)
                    .where(
                        User.id == claims.user_id,
                        RefreshToken.family_id == claims.session_id,
                        RefreshToken.revoked_at.is_(None),
                    )
                    .limit(1)
                )
            ).first()
        if found is None:
            raise Unauthorized("the session has ended")
        # The role is read from the user, not the token, so a role change applies at once.
        return Principal(user_id=claims.user_id, username=found[0], role=Role.parse(found[1]), session_id=claims.session_id)

    async def get_user(self, user_id: int) -> User:
        async with self._db.session() as session:
            user = await session.get(User, user_id)
        if user is None:
            raise NotFound("no such user")
        return user

    async def update_profile(
        self,
        user_id: int,
        *,
        display_name: str | None,
        bio: str | None,
        email: str | None,
        current_password: str | None,
        new_password: str | None,
    ) -> User:
        user = await self.get_user(user_id)
        if (email is not None and email != user.email) or new_password is not None:
            if user.password_hash is not None and not await self._passwords.verify(
                user.password_hash, current_password or ""
            ):
                raise Forbidden(
                    "changing the email or password needs the current password",
                    errors=[{"field": "current_password", "message": "wrong or missing"}],
                )
        new_hash = await self._passwords.hash(new_password) if new_password is not None else None
        async with self._db.session() as session:
            found = await session.get(User, user_id)
            if found is None:
                raise NotFound("no such user")
            user = found
            if display_name is not None:
                user.display_name = display_name or user.username
            if bio is not None:
                user.bio = bio
            if email is not None and email != user.email:
                if await session.scalar(select(User.id).where(User.email == email)) is not None:
                    raise Conflict("that email is taken", errors=[{"field": "email", "message": "taken"}])
                user.email, user.email_verified = email, False
            if new_hash is not None:
                user.password_hash = new_hash
            user.updated_at = self._now()
            try:
                await session.flush()
            except IntegrityError:
                raise Conflict("that email is taken") from None
        return user

    async def list_users(self, limit: int = 200) -> list[User]:
        async with self._db.session() as session:
            return list(await session.scalars(select(User).order_by(User.id).limit(limit)))

    async def set_role(self, username: str, role: Role, by: Principal | None = None) -> User:
        async with self._db.session() as session:
            user = await session.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound("no such user")
            if by is not None and user.id == by.user_id and role < Role.ADMIN:
                admins = await session.scalar(select(func.count()).select_from(User).where(User.role == "admin"))
                if admins == 1:
                    raise Invalid("the last admin cannot step down; appoint another admin first")
            user.role = role.label
            user.updated_at = self._now()
        return user

    async def sign_in_external(self, identity: ExternalIdentity) -> Tokens:
        """Log in with an OpenID Connect identity: known identity, else link by verified email, else sign up."""
        async with self._db.session() as session:
            user = await session.scalar(
                select(User)
                .join(OidcIdentity, OidcIdentity.user_id == User.id)
                .where(OidcIdentity.provider == identity.provider, OidcIdentity.subject == identity.subject)
            )
            if user is None:
                if not identity.email_verified:
                    raise Forbidden("the provider did not verify this email address; it cannot sign in here")
                user = await session.scalar(select(User).where(User.email == identity.email))
                if user is None:
                    name = await self._free_username(session, identity)
                    user = await self._create_user(session, name, identity.email, None, email_verified=True)
                    if identity.name:
                        user.display_name = identity.name[:64]
                session.add(
                    OidcIdentity(
                        provider=identity.provider, subject=identity.subject, user_id=user.id, email=identity.email
                    )
                )
        return await self._open_session(user)

    async def _free_username(self, session: AsyncSession, identity: ExternalIdentity) -> str:
        wanted = identity.preferred_username or identity.email.split("@")[0]
        base = "".join(c for c in wanted.lower() if c.isascii() and (c.isalnum() or c == "_"))[:20].lstrip("_")
        if len(base) < 3 or base in RESERVED_NAMES:
            base = f"user{base}"[:20]
        candidate, n = base, 1
        while username_problem(candidate) or await session.scalar(
            select(User.id).where(User.username == candidate)
        ) is not None:
            n += 1
            candidate = f"{base}{n}"
        return candidate
