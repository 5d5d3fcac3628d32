"""Repositories: every SQL statement the service and the commands run against the API's tables."""
