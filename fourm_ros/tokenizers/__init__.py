"""Tokenizer decoders: 4M-21 tokens back to depth, normals, segmentation, human poses and text (ROS-free)."""
