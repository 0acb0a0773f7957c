"""perception_node as its own process, through its real entry point, around the tiny random pipeline.

    python tests/node_process.py [--load-s S] [--frame-s S] [--fail] [--ros-args ...]

``--load-s`` stands for a long start (weights, export), ``--frame-s`` for a long inference (both sleep
with the GIL released, as native code does); ``--fail`` makes the start fail as missing weights do.
"inference started" on stderr marks that a frame is in the pipeline.
"""

import argparse
import sys
import time

from support import tiny_components

from fourm_ros.checkpoint import CheckpointError
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.ros.main import main

FAILURE = "no checkpoint at /nowhere/4M-21_B (tiny test failure)"


class SlowPipeline(Pipeline):
    """The tiny pipeline whose every lane call first waits ``frame_s``, like a full-size model on a CPU."""

    frame_s = 0.0

    def _slow(self) -> None:
        print("inference started", file=sys.stderr, flush=True)
        time.sleep(self.frame_s)

    def dense(self, frames, *args, **options):
        self._slow()
        return super().dense(frames, *args, **options)

    def sequences(self, frames, *args, **options):
        self._slow()
        return super().sequences(frames, *args, **options)


def factory(arguments):
    def build(config):
        time.sleep(arguments.load_s)
        if arguments.fail:
            raise CheckpointError(FAILURE)
        pipeline = SlowPipeline(config, tiny_components())
        pipeline.frame_s = arguments.frame_s
        return pipeline

    return build


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--load-s", type=float, default=0.0)
    parser.add_argument("--frame-s", type=float, default=0.0)
    parser.add_argument("--fail", action="store_true")
    arguments, ros_arguments = parser.parse_known_args()
    sys.exit(main(["perception_node", *ros_arguments], pipeline_factory=factory(arguments)))
