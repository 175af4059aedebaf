"""robotrl: robot control with reinforcement learning, from batched simulation to ROS 2."""
__version__ = "0.1.0"
