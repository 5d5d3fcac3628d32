"""The service over HTTP: sign-up, login, sessions, mail, health, observability, the contract and its docs."""
