"""Services: what the HTTP layer and the commands do, on top of the repositories."""
