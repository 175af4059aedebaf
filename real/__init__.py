"""The real-robot backend (ROS 2 nodes, transports, watchdog, bags).

Never imports ``robotrl.sim`` at module level: a robot computer need not have JAX.

- :mod:`.messages`: the ROS 2 messages deployment uses, as plain dataclasses with
  their ``.msg`` definitions (no ROS import).
- :mod:`.transport`: the interface the node talks through, QoS presets and
  :func:`~robotrl.real.transport.make_transport` (``auto`` | ``dds`` | ``rclpy``).
- :mod:`.dds_transport`: Cyclone DDS speaking the ROS 2 wire format (PyPI only).
- :mod:`.rclpy_transport`: the same on rclpy, where ROS 2 is installed.

Nothing here imports cyclonedds or rclpy at package import; the transport modules
do, when they are used.
"""
