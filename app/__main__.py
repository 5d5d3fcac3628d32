"""`python -m app`: the project's command line."""

from app.cli import main

raise SystemExit(main())
