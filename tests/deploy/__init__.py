"""The production shape: compose, PgBouncer, instances behind a balancer, servers, the environment."""
