"""ros_fusion: an ament_python package that also installs with plain pip.

colcon uses setup.cfg to put node executables under lib/ros_fusion; pip
(editable or not) puts the same console scripts on PATH. data_files install
launch/, config/ and models/ into share/ros_fusion for both.
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "ros_fusion"
ROOT = Path(__file__).parent


def files(pattern: str) -> list[str]:
    return sorted(p for p in glob(pattern, root_dir=ROOT) if (ROOT / p).is_file())


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Camera, LiDAR, radar and IMU fusion into 3D obstacles for ROS 2",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    maintainer="ros_fusion maintainers",
    maintainer_email="maintainers@ros-fusion.dev",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", files("launch/*.py")),
        (f"share/{PACKAGE}/config", files("config/*")),
        (f"share/{PACKAGE}/models", files("models/*")),
        # one folder per rig-specific model bundle (models/<rig>/manifest.yaml + ONNX files)
        *((f"share/{PACKAGE}/{d.rstrip('/')}", files(f"{d}*")) for d in sorted(glob("models/*/", root_dir=ROOT))),
    ],
    # Runtime libraries; exact pins for pip mode live in requirements.txt. rclpy and
    # the message packages come from ROS (apt) or the ros-kilted-* wheels.
    install_requires=[
        "numpy>=1.24",
        "PyYAML>=6",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10",
        "mcap>=1.1",
        "mcap-ros2-support>=0.5",
        "rich>=13",
        "matplotlib>=3.7",
        "scipy>=1.10",
    ],
    extras_require={
        "sim": ["open3d-cpu>=0.18"],
        "onnx": ["onnxruntime>=1.17"],
        "test": ["pytest>=8", "hypothesis>=6.100", "pytest-benchmark>=4", "ruff>=0.6"],
        "train": ["torch==2.13.0", "onnx>=1.16", "onnxscript>=0.1"],
    },
    entry_points={
        "console_scripts": [
            "ros-fusion = ros_fusion.cli:main",
            "fusion_node = ros_fusion.ros.fusion_node:main",
        ],
    },
    zip_safe=False,
)
