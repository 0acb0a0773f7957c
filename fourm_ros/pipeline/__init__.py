"""The ROS-free perception pipeline: frames in, typed results out."""
