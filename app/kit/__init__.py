"""Building blocks that know nothing of the API's tables: hashing, mail, login lockout, tokens, logs, metrics."""
