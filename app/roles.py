"""The roles every API database holds; the seeder creates them and registration hands out `user`."""

from enum import StrEnum


class RoleName(StrEnum):
    USER = "user"
    ADMIN = "admin"
    MODERATOR = "moderator"


DEFAULT_ROLES: dict[RoleName, str] = {
    RoleName.USER: "Regular user",
    RoleName.ADMIN: "Administrator",
    RoleName.MODERATOR: "Moderator",
}
