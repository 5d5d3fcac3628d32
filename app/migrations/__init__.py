"""What changes the schema, and the safety net around it: Alembic driven from settings, the guard, the lock, time-outs,
checksums, concurrent indexes, the lint, backups, restores and resets."""
