"""Whole datasets: list the images, invert each one (resumable, atomic files), share the work over torchrun ranks,
and gather a Table-1-style summary (`python -m pti invert-dataset`)."""
