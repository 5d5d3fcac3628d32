"""/api/v1/users: list users, read one, grant and revoke roles, (de)activate users (staff and admins)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Router, delete, get, patch, put
from litestar.exceptions import PermissionDeniedException
from litestar.params import Body, Parameter, PathParameter
from litestar.security.jwt import Token

from app.db.models import MAX_ID
from app.errors import NotFoundError
from app.http.deps import Session
from app.http.openapi import ApiOperation
from app.http.problems import CLOSED, STAFF_ONLY, problems
from app.http.schemas import UserDetail, UserPage, UserUpdate, user_detail
from app.http.security import BEARER, require_role
from app.repositories.roles import RoleRepository
from app.repositories.users import UserRecord, UserRepository
from app.roles import RoleName
from app.services.role_admin import grant_role, revoke_role, set_active

STAFF = {str(RoleName.ADMIN), str(RoleName.MODERATOR)}
admins = [require_role(RoleName.ADMIN)]
staff = [require_role(RoleName.ADMIN, RoleName.MODERATOR)]
UserId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="the user's id")]
# Role names as the seeder writes them; the document says so, and anything else is refused before a query.
ROLE_NAME = {"min_length": 1, "max_length": 50, "pattern": r"^[A-Za-z0-9_.-]+$"}
Role = Annotated[str, PathParameter(description="a role's name, such as `moderator`", **ROLE_NAME)]


@get(
    "/users",
    summary="List users",
    operation_class=ApiOperation,
    guards=staff,
    responses=problems(400, *STAFF_ONLY),
)
async def list_users(
    session: Session,
    role: Annotated[str | None, Parameter(description="only users holding this role", **ROLE_NAME)] = None,
    after: Annotated[
        int, Parameter(ge=0, le=MAX_ID, description="the `next` of the previous page; 0 (the default) for the first")
    ] = 0,
    limit: Annotated[int, Parameter(ge=1, le=100, description="users per page")] = 20,
) -> UserPage:
    """Users by id, a page at a time (admins and moderators): follow `next` until it is null."""
    role_id = await RoleRepository(session).id_of(role) if role is not None else None
    if role is not None and role_id is None:
        return UserPage(items=[], next=None)  # nobody holds a role that does not exist
    users, next_after = await UserRepository(session).page(after=after, limit=limit, role_id=role_id)
    return UserPage(items=[user_detail(user) for user in users], next=next_after)


@get(
    "/users/{user_id:int}",
    summary="A user",
    operation_class=ApiOperation,
    responses=problems(400, *STAFF_ONLY, 404),
)
async def get_user(session: Session, request: Request[UserRecord, Token, Any], user_id: UserId) -> UserDetail:
    """A user by id: the user itself, admins and moderators (the `Location` of a sign-up)."""
    if request.user.id != user_id and not STAFF & set(request.user.roles):
        raise PermissionDeniedException("Only the user itself, admins and moderators may see this user")
    user = await UserRepository(session).get(user_id)
    if user is None:
        raise NotFoundError(f"No user with id {user_id}")
    return user_detail(user)


@put(
    "/users/{user_id:int}/roles/{role:str}",
    summary="Grant a role",
    operation_class=ApiOperation,
    guards=admins,
    responses=problems(400, *STAFF_ONLY, 404),
)
async def grant(session: Session, user_id: UserId, role: Role) -> UserDetail:
    """Give the user the role (admins only); granting a role held already changes nothing."""
    return user_detail(await grant_role(session, user_id, role))


@delete(
    "/users/{user_id:int}/roles/{role:str}",
    summary="Revoke a role",
    operation_class=ApiOperation,
    guards=admins,
    status_code=200,
    responses=problems(400, *STAFF_ONLY, 404, 409),
)
async def revoke(session: Session, user_id: UserId, role: Role) -> UserDetail:
    """Take the role from the user (admins only)."""
    return user_detail(await revoke_role(session, user_id, role))


@patch(
    "/users/{user_id:int}",
    summary="Activate or deactivate a user",
    operation_class=ApiOperation,
    guards=admins,
    responses=problems(400, *STAFF_ONLY, 404, 409, 413),
)
async def update_user(
    session: Session, user_id: UserId, data: Annotated[UserUpdate, Body(schema_extra=CLOSED)]
) -> UserDetail:
    """Deactivate (or reactivate) a user (admins only); a deactivated user's tokens stop working at once."""
    return user_detail(await set_active(session, user_id, data.is_active))


# Every one needs a bearer token; the guards say whose.
router = Router("/", route_handlers=[list_users, get_user, grant, revoke, update_user], security=BEARER)
