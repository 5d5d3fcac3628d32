"""What the service runs on: models, engines, the server, provisioning, and PostgreSQL's errors, catalog and tools."""
