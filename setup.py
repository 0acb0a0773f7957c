"""ament_python package definition; also installs with plain pip (see README.md)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "fourm_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    package_data={PACKAGE: ["data/*.json", "data/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="fourm_ros maintainers",
    maintainer_email="maintainers@fourm-ros.invalid",
    description="4M-21 any-to-any perception for ROS 2: depth, normals, segmentation, human pose, captions.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "fourm-ros = fourm_ros.cli:main",
            "perception_node = fourm_ros.ros.main:main",
        ],
    },
)
