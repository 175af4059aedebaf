"""A second DDS process for the transport tests (run as a script, not collected).

Domain from ROS_DOMAIN_ID and discovery from CYCLONEDDS_URI, as a ROS 2 process
would take them. For every round-trip type and QoS preset it echoes
``/echo_in/<Type>_<qos>`` to ``/echo_out/<Type>_<qos>`` (same type and QoS), and it
publishes a best-effort ``std_msgs/Bool`` on ``/ticker`` at 100 Hz. Prints ``ready``
once everything exists and runs until its stdin closes.
"""

import sys
import threading
import time

from message_samples import ROUND_TRIP_TYPES
from robotrl.real import messages as m
from robotrl.real.dds_transport import DdsTransport
from robotrl.real.transport import ROS_DEFAULT, SENSOR_DATA

PRESETS = {"default": ROS_DEFAULT, "sensor": SENSOR_DATA}


def main() -> None:
    transport = DdsTransport()
    for type_name in ROUND_TRIP_TYPES:
        for qos_name, qos in PRESETS.items():
            suffix = f"{type_name}_{qos_name}"
            out = transport.create_publisher(f"/echo_out/{suffix}", getattr(m, type_name), qos)
            transport.create_subscription(f"/echo_in/{suffix}", getattr(m, type_name),
                                          lambda msg, out=out: out.publish(msg), qos)
    ticker = transport.create_publisher("/ticker", m.Bool, SENSOR_DATA)
    stop = threading.Event()

    def tick() -> None:
        value = False
        while not stop.wait(0.01):
            value = not value
            ticker.publish(m.Bool(value))

    threading.Thread(target=tick, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or dies)
    stop.set()
    time.sleep(0.02)
    transport.close()


if __name__ == "__main__":
    main()
