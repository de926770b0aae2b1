"""Custom ops: pure-PyTorch references plus optional lazily-built CUDA kernels."""
