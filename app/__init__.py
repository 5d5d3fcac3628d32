"""bikerental-api: the API database, its migrations and the registration service."""
