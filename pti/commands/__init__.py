"""Sub-commands of `python -m pti`, one module each."""
