"""fourm-ros: run 4M-21 perception on images, videos and rosbags from the command line.

    fourm-ros infer IMAGES|DIR|VIDEO -o OUT    pictures + raw dumps per frame
    fourm-ros download                         fetch the weights a job needs into the hub cache
    fourm-ros bench                            per-stage latency, frames/s, memory, FLOP/s on this machine
    fourm-ros sample-bag OUT [--rgbd]          a camera rosbag2 of the bundled sample photographs (or RGB-D)
    fourm-ros replay IN_BAG -o OUT_BAG         play a bag through perception_node, record its outputs
    fourm-ros export | build-engines | check-fp16   ONNX export, TensorRT engines, fp16-vs-fp32 check

Every command that runs the model takes the pipeline settings of config/perception.yaml: ``--config FILE``
plus ``--set key=value`` overrides (e.g. ``--set tasks.caption.enabled=false``).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from fourm_ros.errors import UserError
from fourm_ros.pipeline.config import ConfigError, PipelineConfig, read_yaml

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
LOG = logging.getLogger("fourm_ros")


class InputError(UserError, ValueError):
    """An input file or directory cannot be read as images or video; the message names it."""


# ---------------------------------------------------------------------------------------------- configuration


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pipeline settings (see config/perception.yaml)")
    group.add_argument(
        "--config", type=Path, help="YAML settings or a ROS 2 parameters file (default: built-in)"
    )
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting",
    )
    group.add_argument("--model", help="4M-21 checkpoint: hub repo id or local directory")
    group.add_argument(
        "--random-weights", action="store_true", help="run WITHOUT trained weights (meaningless)"
    )
    group.add_argument("--offline", action="store_true", help="never contact the Hugging Face hub")
    group.add_argument("--backend", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    group.add_argument("--device", help="cpu, cuda or cuda:N")
    group.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The nested settings mapping from --config, the shortcut options and --set overrides."""
    values = read_yaml(args.config) if args.config else {}
    shortcuts = {
        "model": args.model,
        "random_weights": args.random_weights or None,
        "offline": args.offline or None,
        "backend": args.backend,
        "device": args.device,
        "dtype": args.dtype,
    }
    for key, value in shortcuts.items():
        if value is not None:
            values[key] = value
    for item in args.overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        target = values
        *parents, leaf = key.split(".")
        for name in parents:
            target = target.setdefault(name, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {key}: {name} is not a section")
        target[leaf] = yaml.safe_load(text)
    return values


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    return PipelineConfig.from_dict(settings(args))


# ---------------------------------------------------------------------------------------------- infer


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read {path} as an image (missing, unreadable or not an image file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _video_frames(path: Path, every: int) -> Iterator[tuple[str, np.ndarray]]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"cannot open {path} as a video (unsupported codec or container, or not a video)")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                yield f"{path.stem}_{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
        if index == 0:
            raise InputError(f"{path} has no readable video frames")
    finally:
        capture.release()


def input_frames(inputs: Sequence[Path], every: int = 1) -> Iterator[tuple[str, np.ndarray]]:
    """(name, RGB frame) for image files, directories of images (sorted) and video files."""
    for path in inputs:
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise InputError(f"directory {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for image in images:
                yield image.stem, _read_image(image)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            yield from _video_frames(path, every)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            yield path.stem, _read_image(path)
        elif not path.exists():
            raise InputError(f"{path} does not exist")
        else:
            known = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
            raise InputError(
                f"{path}: unsupported input type {path.suffix or '(no suffix)'}; expected one of {known}"
            )


def _infer(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fourm_ros import pictures, sample
    from fourm_ros.pipeline.pipeline import Pipeline

    if not args.inputs and not args.sample:
        raise InputError(
            "give images, directories or videos to run on (or --sample for the bundled photographs)"
        )
    pipeline = Pipeline.from_config(pipeline_config(args))
    LOG.info("%s", pipeline.describe())
    frames = (
        ((item.name, item.rgb) for item in sample.sample_frames())
        if args.sample
        else input_frames(args.inputs, args.every)
    )
    names_seen: dict[str, int] = {}
    count = 0
    for name, frame in tqdm(frames, desc="frames", unit="frame", disable=args.quiet):
        (result,) = pipeline([frame])
        names_seen[name] = names_seen.get(name, 0) + 1
        folder = name if names_seen[name] == 1 else f"{name}_{names_seen[name]}"
        pictures.write(frame, result, args.output / folder)
        count += 1
    print(f"wrote pictures and raw.npz of {count} frame(s) to {args.output}")
    if pipeline.random_weights:
        print("WARNING: random weights were used; every output is meaningless", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------ download / bench


def _download(args: argparse.Namespace) -> int:
    from fourm_ros.pipeline import weights

    for name, found in weights.download(pipeline_config(args)).items():
        print(f"{name:13} {found.source} -> {found.directory}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from fourm_ros.benchmarks import pipeline as bench

    return bench.run(pipeline_config(args), frames=args.frames, batch=args.batch)


def _export(args: argparse.Namespace) -> int:
    from fourm_ros.backends.job import export_job

    manifest = export_job(pipeline_config(args), args.output)
    print(f"exported {len(manifest.graphs)} graphs to {manifest.directory}")
    return 0


def _build_engines(args: argparse.Namespace) -> int:
    from fourm_ros.backends.job import build_engines

    config = pipeline_config(args)
    directory, precision, why = build_engines(config, max_batch=config.engines.max_batch)
    print(f"TensorRT engines ready in {directory}; the node will run the {precision} engines: {why}")
    return 0


def _check_fp16(args: argparse.Namespace) -> int:
    from fourm_ros.backends.fp16_check import check_fp16

    config = pipeline_config(args)
    report = check_fp16(config, max_batch=config.engines.max_batch)
    print(report.summary())
    return 0 if report.passed else 1


# ---------------------------------------------------------------------------------------------- bags


def _sample_bag(args: argparse.Namespace) -> int:
    if args.rgbd:
        return _sample_rgbd_bag(args)
    from fourm_ros import sample
    from fourm_ros.ros.bag import write_camera_bag

    frames = [item.rgb for item in sample.sample_frames()]
    path = write_camera_bag(
        args.output, frames, rate_hz=args.rate, compressed=args.compressed, storage=args.storage
    )
    topic = "/camera/image_raw" + ("/compressed" if args.compressed else "")
    print(f"wrote {len(frames)} frames on {topic} and /camera/camera_info to {path}")
    return 0


def _sample_rgbd_bag(args: argparse.Namespace) -> int:
    from fourm_ros import sample_rgbd
    from fourm_ros.ros.bag import write_rgbd_bag

    if args.compressed:
        raise UserError("--rgbd writes raw images (16UC1 depth has no JPEG form); drop --compressed")
    if args.frames < 1:
        raise UserError(f"--frames must be at least 1, got {args.frames}")
    frames = [sample_rgbd.render(index) for index in range(args.frames)]
    path = write_rgbd_bag(
        args.output,
        [(frame.rgb, frame.sensor_mm) for frame in frames],
        sample_rgbd.K,
        rate_hz=args.rate,
        storage=args.storage,
    )
    print(
        f"wrote {len(frames)} synthetic RGB-D frames on /camera/image_raw, /camera/camera_info, "
        f"/camera/depth/image_raw (16UC1, registered) and /camera/depth/camera_info to {path}"
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    try:
        return _run_replay(args)
    except KeyboardInterrupt:  # also while the modules load, before replay() could catch it
        kept = "kept with what was recorded" if args.output.exists() else "not written (nothing recorded)"
        print(f"replay interrupted; output bag {args.output} {kept}", file=sys.stderr)
        return 130


def _run_replay(args: argparse.Namespace) -> int:
    from fourm_ros.ros.node import node_factory as make_node_factory
    from fourm_ros.ros.pictures import OutputPictures
    from fourm_ros.ros.replay import replay

    node_factory, random_weights = None, False
    if args.run_node:
        values = settings(args)
        # Fail here, with the setting named, rather than inside the node.
        random_weights = PipelineConfig.from_dict(values).random_weights
        node_factory = make_node_factory(values, args.namespace)

    shots = OutputPictures(args.pictures_limit, random_weights) if args.pictures else None
    summary = replay(
        args.input,
        args.output,
        rate=args.rate,
        namespace=args.namespace,
        image_topic=args.image_topic,
        node_inputs=args.node_inputs,
        record_inputs=args.record_inputs,
        frame_timeout_s=args.frame_timeout,
        storage=args.storage,
        node_factory=node_factory,
        keep=shots.add_output if shots else (lambda topic, data, kind: None),
        on_input=shots.add_input if shots else (lambda msg: None),
        progress=not args.quiet,
    )
    print(
        f"sent {summary.frames_sent} frames, {summary.frames_processed} processed, "
        f"{len(summary.skipped)} skipped by the node, in {summary.seconds:.1f} s"
    )
    for stamp, reason in summary.skipped:
        print(f"  skipped the frame stamped {stamp:.3f} s: {reason}")
    if summary.unanswered:
        print(f"  {summary.unanswered} frames got no answer within --frame-timeout {args.frame_timeout:g} s")
    for topic, count in sorted(summary.recorded.items()):
        print(f"  {topic:32} {count} messages")
    print(f"output bag: {args.output}")
    if shots:
        for path in shots.write(args.pictures):
            print(f"  picture {path}")
    return 0 if summary.frames_processed else 1


# ---------------------------------------------------------------------------------------------- main


def _number(kind: type, minimum: float, inclusive: bool = True) -> Callable[[str], Any]:
    """An argparse type: a finite ``kind`` at least (or above) ``minimum``, else a clear error."""
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
    expected = f"expected {'an integer' if kind is int else 'a number'} {bound}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (not inclusive and value == minimum):
            raise argparse.ArgumentTypeError(f"{expected}, got {text}")
        return value

    return parse


COUNT, LIMIT, POSITIVE = _number(int, 1), _number(int, 0), _number(float, 0, inclusive=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fourm-ros", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    infer = commands.add_parser("infer", help="pictures and raw dumps for images, folders or videos")
    infer.add_argument("inputs", nargs="*", type=Path, help="image files, folders of images, or video files")
    infer.add_argument(
        "-o", "--output", type=Path, required=True, help="output folder (one sub-folder per frame)"
    )
    infer.add_argument("--sample", action="store_true", help="run on the bundled sample photographs")
    infer.add_argument("--every", type=COUNT, default=1, help="use every n-th video frame (default 1)")
    _add_config_options(infer)
    infer.set_defaults(run=_infer)

    download = commands.add_parser("download", help="fetch the checkpoints the configured job needs")
    _add_config_options(download)
    download.set_defaults(run=_download)

    bench = commands.add_parser(
        "bench", help="per-stage latency, frames/s, memory and FLOP/s of the pipeline"
    )
    bench.add_argument(
        "--frames", type=COUNT, default=3, help="timed calls after one warm-up call (default 3)"
    )
    bench.add_argument(
        "--batch", type=COUNT, default=1, help="frames per call, as with several cameras (default 1)"
    )
    _add_config_options(bench)
    bench.set_defaults(run=_bench)

    export = commands.add_parser("export", help="export the job's graphs to ONNX (opset 17) with a manifest")
    export.add_argument("-o", "--output", type=Path, help="folder (default: the engine cache the node reads)")
    _add_config_options(export)
    export.set_defaults(run=_export)

    engines = commands.add_parser(
        "build-engines", help="build the job's TensorRT engines into the engine cache"
    )
    _add_config_options(engines)
    engines.set_defaults(run=_build_engines)

    check = commands.add_parser(
        "check-fp16", help="compare fp16 against fp32 TensorRT engines; record pass/fail"
    )
    _add_config_options(check)
    check.set_defaults(run=_check_fp16)

    sample_bag = commands.add_parser(
        "sample-bag", help="write a camera rosbag2 of the bundled sample photographs"
    )
    sample_bag.add_argument("output", type=Path, help="output bag folder (must not exist)")
    sample_bag.add_argument(
        "--compressed", action="store_true", help="JPEG CompressedImage instead of raw rgb8"
    )
    sample_bag.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    sample_bag.add_argument(
        "--rate", type=POSITIVE, default=2.0, help="frames per second in the bag (default 2)"
    )
    sample_bag.add_argument(
        "--rgbd",
        action="store_true",
        help="a synthetic RGB-D scene (planes and boxes, depth with holes) with registered 16UC1 depth",
    )
    sample_bag.add_argument("--frames", type=int, default=8, help="frames of the --rgbd scene (default 8)")
    sample_bag.set_defaults(run=_sample_bag)

    replay = commands.add_parser(
        "replay", help="play a camera bag through perception_node and record its outputs"
    )
    replay.add_argument("input", type=Path, help="input rosbag2 folder (sqlite3 or mcap)")
    replay.add_argument(
        "-o", "--output", type=Path, required=True, help="output rosbag2 folder (must not exist)"
    )
    replay.add_argument(
        "--rate", type=POSITIVE, help="factor of the recorded rate (default: lock-step, no drops)"
    )
    replay.add_argument(
        "--namespace",
        default="",
        help="perception_node's namespace, where its outputs are (the launch file's: /fourm; default: none)",
    )
    replay.add_argument(
        "--node-inputs",
        action="store_true",
        help="publish on the node's own input names (<namespace>/image, <namespace>/camera_info) instead of "
        "the bag's topics, for a node started without remapping",
    )
    replay.add_argument(
        "--record-inputs",
        action="store_true",
        help="also record the played images and camera_info, so one bag shows input and outputs",
    )
    replay.add_argument("--image-topic", help="the bag's image topic if it has several")
    replay.add_argument("--run-node", action="store_true", help="run perception_node in this process")
    replay.add_argument("--pictures", type=Path, help="also write a contact sheet per frame into this folder")
    replay.add_argument(
        "--pictures-limit", type=LIMIT, default=8, help="frames drawn with --pictures (default 8)"
    )
    replay.add_argument(
        "--frame-timeout", type=POSITIVE, default=300.0, help="seconds to wait for each frame's outputs"
    )
    replay.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    _add_config_options(replay)
    replay.set_defaults(run=_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.run(args)
    except (UserError, FileExistsError) as error:
        print(f"fourm-ros {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
