"""The API database: models, server, migrations and the guards around them."""
