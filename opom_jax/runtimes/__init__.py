"""Black-box targets: each zoo model run by its own runtime (onnxruntime, LiteRT, dlib),
or its JAX import run as a black box where no runtime exists."""
