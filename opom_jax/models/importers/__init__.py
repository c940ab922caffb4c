"""Readers of model file formats (ONNX, TFLite, TensorFlow.js graphs, PyTorch pickles
through a restricted unpickler, dlib .dat) into pure JAX functions and params."""
