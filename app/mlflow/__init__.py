"""MLflow's tracking store on the API's PostgreSQL: where it is, and the one guarded way to upgrade its schema.

Nothing here runs unless asked (`just mlflow`, `just mlflow-upgrade`); MLflow itself is imported only inside the
functions that need it, from the `mlflow` extra.
"""
