"""The thin ROS 2 adapter: messages to frames, results to messages. The only room that imports rclpy."""
