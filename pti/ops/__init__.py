"""Custom ops: pure-PyTorch references plus CUDA kernels built in the background (`impl='auto'|'ref'|'cuda'`)."""
from pti.ops.bias_act import bias_act
from pti.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["bias_act", "downsample2d", "filter2d", "setup_filter", "upfirdn2d", "upsample2d"]
