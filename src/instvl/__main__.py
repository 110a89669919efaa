"""`python -m instvl` is the same as the `instvl` console script."""

from instvl.cli import main

raise SystemExit(main())
