"""Serving PTI to people: GPU calls that work on ZeroGPU Spaces and plain machines alike, and their durations.

On ZeroGPU (Hugging Face's shared GPUs) a function decorated with `spaces.GPU` runs in a forked worker that holds a
GPU for the call; its arguments and results are pickled across a queue. So GPU work here is done by module-level
functions over plain data (`gpu_calls`), the models are loaded once in the main process (on the CPU there) and
reached from the worker through a registry key, and nothing touches CUDA outside a GPU function.
"""
