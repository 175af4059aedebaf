"""ROS 2 (colcon, ament_python) install layout; pyproject.toml is the project's build.

``pip install -e .`` takes everything from pyproject.toml: this file adds nothing
there. Under a sourced ROS 2 environment (``AMENT_PREFIX_PATH`` set, as ``colcon
build`` runs it) it adds the files ament needs as data files: the package marker
``share/ament_index/resource_index/packages/robotrl``, ``share/robotrl/package.xml``,
the launch files (``share/robotrl/launch``) and their parameter files
(``share/robotrl/config``), so that ``ros2 launch robotrl deploy.launch.py`` finds them.
The launch files run the nodes as ``python -m robotrl.real...``, so no executables
need installing into ``lib/robotrl``.
"""
import glob
import os

from setuptools import setup

data_files = []
if os.environ.get("AMENT_PREFIX_PATH"):
    data_files = [
        ("share/ament_index/resource_index/packages", ["resource/robotrl"]),
        ("share/robotrl", ["package.xml"]),
        ("share/robotrl/launch", sorted(glob.glob("launch/*.launch.py"))),
        ("share/robotrl/config", sorted(glob.glob("launch/config/*.yaml"))),
    ]

setup(data_files=data_files)
