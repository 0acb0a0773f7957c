"""Test-wide environment: isolated ROS 2 discovery and no access to the Hugging Face hub."""

import os

# Real DDS traffic from the tests stays on this machine and off any other test run's domain.
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# No test may reach the Hugging Face hub.
os.environ["HF_HUB_OFFLINE"] = "1"
