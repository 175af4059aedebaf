"""The real-robot backend (ROS 2 nodes, transports, watchdog, bags).

Never imports ``robotrl.sim`` at module level: a robot computer need not have JAX.
"""
