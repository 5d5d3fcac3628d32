"""Schema changes and data commands: migrations, their safety net, backups, resets, the seeder, MLflow untouched."""
