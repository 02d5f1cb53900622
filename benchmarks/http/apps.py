"""Application factories served by ``run.py`` (uvicorn ``--factory`` / gunicorn ``"apps:f()"``).

* :func:`fastapi_usermgmt` / :func:`flask_usermgmt`: usermgmt mounted as documented
  (``usermgmt_fastapi.mount`` / ``usermgmt_flask.UserMgmt``), a bare ``GET /hello``
  beside it (it goes through usermgmt's middleware like every route of the app) and
  the protected ``GET /orgs/{org_id}/projects`` of ``examples/*_protect_route.py``
  (``require_permission("project:read")``, one dependency giving the caller too /
  ``@permission_required("project:read")``); FastAPI also serves it as
  ``/orgs/{org_id}/projects-2deps`` declared the older way, with ``current_user``
  beside the permission (two dependencies).
* :func:`fastapi_bare` / :func:`flask_bare`: the framework with nothing but ``GET /hello``.
* :func:`fastapi_users_app`: fastapi-users' documented full SQLAlchemy example (JWT
  strategy, bearer transport, ``GET /users/me``) on its own PostgreSQL database.

Configuration comes from the environment that ``run.py`` sets:

``BENCH_DATABASE_URL``
    usermgmt's database (default ``memory://``: every backend in process). A SQL URL is
    migrated at start.
``BENCH_REDIS_URL``
    when set, usermgmt's cache, rate limiter, attempt counter and revocation store are
    Redis (the usual multi-process deployment); otherwise they are in process.
``BENCH_JWT_SECRET``, ``BENCH_JWT_REFRESH_SECRET``
    the token secrets (random when unset; one value for every worker).
``BENCH_SEED_FILE``
    when set, the factory itself registers a user, logs in and creates an organization
    and writes ``{"token", "org_id", "email", "password"}`` there. Pre-fork servers with
    the memory backends need it (``--preload``): each worker has its own copy of the
    in-process store, so only state created before the fork is known to all of them.
``BENCH_FASTAPI_USERS_DATABASE_URL``
    fastapi-users' database (``postgresql+asyncpg://…``).

The usermgmt apps use the DEFAULT argon2id parameters, the global rate limit (counted
on every request, but set high enough never to refuse one: 1,000,000 per second), and
login/registration limits per IP raised for the same reason; nothing else differs from
the defaults. Logging is left unconfigured (no access log), as for the bare apps.
"""

# No ``from __future__ import annotations``: FastAPI must resolve the annotations of the
# routes defined inside the factories, whose names are local imports.
import json
import os
import secrets
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

PERMISSION = "project:read"
#: FastAPI only: the protected route declared with two dependencies (see fastapi_usermgmt).
TWO_DEPENDENCIES_ROUTE = "/orgs/{org_id}/projects-2deps"
#: Long enough for usermgmt's policy (15+) and not in any breach list.
PASSWORD = "benchmark-Correct-Horse-Battery-Staple-7"


def _setting_default(name: str) -> Any:
    from usermgmt import Settings

    return Settings.model_fields[name].default


def make_um() -> Any:
    """The UserManagement every usermgmt app of this module serves (see the module doc)."""
    from usermgmt import Settings, UserManagement
    from usermgmt.security.limits import BuiltinLimits, Limit

    url = os.environ.get("BENCH_DATABASE_URL", "memory://")
    settings = Settings.for_tests(
        database_url=url,
        redis_url=os.environ.get("BENCH_REDIS_URL") or None,
        jwt_secret=os.environ.get("BENCH_JWT_SECRET") or secrets.token_urlsafe(48),
        jwt_refresh_secret=os.environ.get("BENCH_JWT_REFRESH_SECRET") or secrets.token_urlsafe(48),
        # for_tests() lowers argon2 for speed: the benchmark hashes with the defaults.
        password_argon2_memory_kib=_setting_default("password_argon2_memory_kib"),
        password_argon2_time_cost=_setting_default("password_argon2_time_cost"),
        password_argon2_parallelism=_setting_default("password_argon2_parallelism"),
        rate_limit_window_ms=1000,
        rate_limit_max_requests=1_000_000,
    )
    unlimited = Limit(1_000_000, 60)
    um = UserManagement(
        settings,
        permissions=[(PERMISSION, "See the organization's projects")],
        limits=BuiltinLimits(login_per_ip=unlimited, register_per_ip=unlimited),
    )
    if not url.startswith("memory:"):
        from usermgmt.backends.sqlalchemy import migrate

        migrate.upgrade(url)
    um.seed()
    seed_file = os.environ.get("BENCH_SEED_FILE")
    if seed_file:
        _seed_in_process(um, Path(seed_file))
    return um


def _seed_in_process(um: Any, target: Path) -> None:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    registered = um.users.register(email=email, password=PASSWORD, name="Bench")
    assert registered.user is not None
    pair = um.auth.login(email=email, password=PASSWORD)
    org = um.organizations.create(registered.user.id, name="Bench")
    target.write_text(
        json.dumps(
            {
                "token": pair.access_token,
                "org_id": str(org.id),
                "email": email,
                "password": PASSWORD,
            }
        )
    )


# --- FastAPI ------------------------------------------------------------------------------


def fastapi_bare() -> Any:
    """FastAPI with one route, ``GET /hello``."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def fastapi_usermgmt() -> Any:
    """FastAPI with usermgmt mounted, ``GET /hello`` and the protected route."""
    from fastapi import Depends, FastAPI

    import usermgmt_fastapi
    from usermgmt import Access, User

    um = make_um()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        um.close()

    app = FastAPI(lifespan=lifespan)
    usermgmt_fastapi.mount(app, um)

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/orgs/{org_id}/projects")
    async def list_projects(
        org_id: str,
        access: Annotated[Access, Depends(usermgmt_fastapi.require_permission(PERMISSION))],
    ) -> dict[str, Any]:
        return {"organization_id": org_id, "requested_by": access.user.email, "projects": []}

    # The pattern the docs recommended before Access: the permission in ``dependencies=``
    # and current_user beside it (two dependency nodes); measured and reported, not a gate.
    @app.get(
        TWO_DEPENDENCIES_ROUTE,
        dependencies=[Depends(usermgmt_fastapi.require_permission(PERMISSION))],
    )
    async def list_projects_two_dependencies(
        org_id: str, user: Annotated[User, Depends(usermgmt_fastapi.current_user)]
    ) -> dict[str, Any]:
        return {"organization_id": org_id, "requested_by": user.email, "projects": []}

    return app


# --- Flask --------------------------------------------------------------------------------


def flask_bare() -> Any:
    """Flask with one route, ``GET /hello``."""
    from flask import Flask

    app = Flask("bare", static_folder=None)

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def flask_usermgmt() -> Any:
    """Flask with the usermgmt extension, ``GET /hello`` and the protected route."""
    from flask import Flask

    import usermgmt_flask

    um = make_um()
    app = Flask("bench", static_folder=None)
    usermgmt_flask.UserMgmt(app, um)

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/orgs/<org_id>/projects")
    @usermgmt_flask.permission_required(PERMISSION)
    def list_projects(org_id: str) -> dict[str, Any]:
        user = usermgmt_flask.current_user()
        return {"organization_id": org_id, "requested_by": user.email, "projects": []}

    return app


# --- fastapi-users (its documented full SQLAlchemy example, on PostgreSQL) ----------------


def fastapi_users_app() -> Any:
    """fastapi-users' full example: db.py, schemas.py, users.py and app.py in one factory."""
    from fastapi import Depends, FastAPI, Request
    from fastapi_users import BaseUserManager, FastAPIUsers, UUIDIDMixin, schemas
    from fastapi_users.authentication import AuthenticationBackend, BearerTransport, JWTStrategy
    from fastapi_users.db import SQLAlchemyBaseUserTableUUID, SQLAlchemyUserDatabase
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
    from sqlalchemy.orm import DeclarativeBase

    database_url = os.environ["BENCH_FASTAPI_USERS_DATABASE_URL"]
    secret = os.environ.get("BENCH_JWT_SECRET") or secrets.token_urlsafe(48)

    # db.py
    class Base(DeclarativeBase):
        pass

    class User(SQLAlchemyBaseUserTableUUID, Base):
        pass

    engine = create_async_engine(database_url)
    async_session_maker = async_sessionmaker(engine, expire_on_commit=False)

    async def create_db_and_tables() -> None:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def get_async_session() -> AsyncGenerator[AsyncSession, None]:
        async with async_session_maker() as session:
            yield session

    async def get_user_db(
        session: AsyncSession = Depends(get_async_session),  # noqa: B008 - FastAPI idiom
    ) -> AsyncGenerator[SQLAlchemyUserDatabase[User, uuid.UUID], None]:
        yield SQLAlchemyUserDatabase(session, User)

    # schemas.py
    class UserRead(schemas.BaseUser[uuid.UUID]):
        pass

    class UserCreate(schemas.BaseUserCreate):
        pass

    class UserUpdate(schemas.BaseUserUpdate):
        pass

    # users.py
    class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
        reset_password_token_secret = secret
        verification_token_secret = secret

        async def on_after_register(self, user: User, request: Request | None = None) -> None:
            pass  # the example prints here; the benchmark keeps stdout quiet

    async def get_user_manager(
        user_db: SQLAlchemyUserDatabase[User, uuid.UUID] = Depends(get_user_db),  # noqa: B008
    ) -> AsyncGenerator[UserManager, None]:
        yield UserManager(user_db)

    bearer_transport = BearerTransport(tokenUrl="auth/jwt/login")

    def get_jwt_strategy() -> JWTStrategy[User, uuid.UUID]:
        return JWTStrategy(secret=secret, lifetime_seconds=3600)

    auth_backend = AuthenticationBackend(
        name="jwt", transport=bearer_transport, get_strategy=get_jwt_strategy
    )
    fastapi_users = FastAPIUsers[User, uuid.UUID](get_user_manager, [auth_backend])

    # app.py
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await create_db_and_tables()
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    app.include_router(
        fastapi_users.get_auth_router(auth_backend), prefix="/auth/jwt", tags=["auth"]
    )
    app.include_router(
        fastapi_users.get_register_router(UserRead, UserCreate), prefix="/auth", tags=["auth"]
    )
    app.include_router(
        fastapi_users.get_users_router(UserRead, UserUpdate), prefix="/users", tags=["users"]
    )

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app
