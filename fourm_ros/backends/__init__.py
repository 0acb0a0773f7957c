"""Inference backends behind one interface: PyTorch, ONNX Runtime and TensorRT run the same named graphs."""
