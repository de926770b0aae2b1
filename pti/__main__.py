"""`python -m pti ...`: the command line."""
from pti.cli import main

raise SystemExit(main())
