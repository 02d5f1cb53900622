"""``/users``: the caller's own account (``/users/me…``) and the superuser admin API."""

from __future__ import annotations

from flask import Blueprint, Response

from usermgmt.http import UserListQuery, items, page
from usermgmt.schemas import (
    AdminUserUpdateIn,
    ChangePasswordIn,
    MembershipOut,
    ProfileUpdateIn,
    SessionOut,
    UserOut,
)
from usermgmt.services.base import parse_uuid
from usermgmt_flask.blueprints._common import json_body, no_content, ok, parse, query, route
from usermgmt_flask.context import current_claims, current_user, get_um, request_context

__all__ = ["users_blueprint"]


def users_blueprint() -> Blueprint:
    """The ``/users`` routes (a new blueprint on each call). Werkzeug matches the static
    ``/users/me…`` rules before ``/users/<user_id>``, so ``me`` is never a user id."""
    bp = Blueprint("users", __name__)

    # --- the caller's own account ------------------------------------------------------

    @route(bp, "GET", "/users/me")
    def get_me() -> Response:
        return ok(UserOut.of(current_user()))

    @route(bp, "PATCH", "/users/me")
    def update_me() -> Response:
        body = json_body()
        user = current_user()
        data = parse(ProfileUpdateIn, body)
        changes = data.model_dump(exclude_unset=True)
        return ok(
            UserOut.of(get_um().users.update_profile(user.id, changes, ctx=request_context()))
        )

    @route(bp, "POST", "/users/me/password")
    def change_password() -> Response:
        body = json_body()
        user = current_user()
        claims = current_claims()
        data = parse(ChangePasswordIn, body)
        get_um().users.change_password(
            user.id,
            data.current_password,
            data.new_password,
            keep_session_id=claims.session_id,
            ctx=request_context(),
        )
        return no_content()

    @route(bp, "GET", "/users/me/sessions")
    def list_sessions() -> Response:
        user = current_user()
        claims = current_claims()
        sessions = get_um().users.list_sessions(user.id)
        return ok(items(SessionOut.of(s, claims.session_id) for s in sessions))

    @route(bp, "DELETE", "/users/me/sessions/<session_id>")
    def revoke_session(session_id: str) -> Response:
        user = current_user()
        get_um().users.revoke_session(
            user.id, parse_uuid(session_id, "session"), ctx=request_context()
        )
        return no_content()

    @route(bp, "GET", "/users/me/organizations")
    def my_organizations() -> Response:
        user = current_user()
        return ok(items(MembershipOut.of(m) for m in get_um().organizations.list_for_user(user.id)))

    @route(bp, "DELETE", "/users/me")
    def deactivate_me() -> Response:
        user = current_user()
        get_um().users.deactivate(user.id, ctx=request_context())
        return no_content()

    # --- admin API (platform superusers) ------------------------------------------------

    @route(bp, "GET", "/users")
    def list_users() -> Response:
        user = current_user()
        params = query(UserListQuery)
        result = get_um().admin.list_users(
            user.id,
            email_prefix=params.email_prefix,
            limit=params.limit,
            cursor=params.cursor,
            ctx=request_context(),
        )
        return ok(page(result, UserOut.of))

    @route(bp, "GET", "/users/<user_id>")
    def get_user(user_id: str) -> Response:
        user = current_user()
        target = parse_uuid(user_id, "user")
        return ok(UserOut.of(get_um().admin.get_user(user.id, target, ctx=request_context())))

    @route(bp, "PATCH", "/users/<user_id>")
    def update_user(user_id: str) -> Response:
        body = json_body()
        user = current_user()
        data = parse(AdminUserUpdateIn, body)
        updated = get_um().admin.update_user(
            user.id,
            parse_uuid(user_id, "user"),
            data.model_dump(exclude_unset=True),
            ctx=request_context(),
        )
        return ok(UserOut.of(updated))

    @route(bp, "DELETE", "/users/<user_id>")
    def delete_user(user_id: str) -> Response:
        user = current_user()
        get_um().admin.delete_user(user.id, parse_uuid(user_id, "user"), ctx=request_context())
        return no_content()

    return bp
