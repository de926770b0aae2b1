"""`python -m pti ...`: the command line."""
from pti.cli import main
from pti.cpu_allocator import keep_freed_memory

keep_freed_memory()  # process-wide, so here and not in main(): large CPU tensors reuse freed memory
raise SystemExit(main())
