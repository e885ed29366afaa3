"""What ``msmlp-export`` was asked to do, declared once (CLI flags, options object, API keywords) and
validated before any long work starts. Imports nothing heavy: ``msmlp-export --help`` is built from it."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from msmlp.errors import ExportError, InputError
from msmlp.optionspec import check_choices, option, parse_batch, parse_input_size

if TYPE_CHECKING:
    from msmlp.models.config import DeployConfig

CALIB_METHODS = ("max", "entropy")
INT8_TARGETS = ("cpu", "tensorrt")
SHIFT_FORMS = ("slice", "plugin")
VERIFY_BATCH = 8
MAX_PROFILE_BATCH = 1024  # the largest batch a profile may name
MAX_VERIFY_MIN_BATCH = 64  # verification runs at MIN: bound what that can cost
MAX_CALIB_SIZE = 4096
TENSORRT_MISSING = "TensorRT is not installed (pip install 'msmlp[tensorrt]' on a machine with an NVIDIA GPU)"


REDUCED = "reduced precision"
FEATURES = "backbone features (detection, segmentation)"
ACCURACY = "INT8 accuracy gate"
ENGINE = "TensorRT engine"


@dataclass(frozen=True)
class ExportOptions:
    """What ``msmlp-export`` was asked to do; ``None`` means the default. Each field is declared once:
    its flag, help and conversion give the CLI (:func:`msmlp.optionspec.add_options`) and the keywords of
    :func:`msmlp.export` too."""

    model: str = option(metavar="NAME", help="registered model name (`msmlp models` lists them)")
    weights: Path | None = option(
        None, type=Path, metavar="PATH", help="checkpoint file (state dict, or under 'model'/'state_dict')"
    )
    num_classes: int | None = option(
        None,
        type=int,
        metavar="N",
        help="classes of the head (default: the checkpoint's head rows, else the model's; must agree)",
    )
    input_size: tuple[int, int] | None = option(
        None,
        parse=parse_input_size,
        metavar="SIDE|HxW",
        help="input resolution, e.g. 256 or 256x320: each side a multiple of the family's total stride "
        "(default: the model's)",
    )
    labels: Path | None = option(
        None,
        type=Path,
        metavar="FILE",
        help="class names: one per line, a JSON list, or a JSON {index: name}; one per class, recorded "
        "in model.json for predict, serve and eval (default: ImageNet's for 1000 classes)",
    )
    out: Path | None = option(None, type=Path, metavar="DIR", help="output folder (default: out/<model>)")
    batch: tuple[int, int, int] | None = option(
        None,
        parse=parse_batch,
        metavar="MIN,OPT,MAX",
        help="batch profile for the graph metadata and the engine (default 1,8,64)",
    )
    opset: int = option(17, type=int, metavar="N", help="ONNX opset, 17..20 (default 17)")
    images: Path | None = option(
        None, type=Path, metavar="DIR", help="verification images (default: the built-in sample photos)"
    )
    seed: int = option(
        0, type=int, metavar="N", help="seed for synthetic weights and augmented views (default 0)"
    )
    shift: str = option(
        "slice",
        choices=SHIFT_FORMS,
        help="how shifts are written: slice (Slice/Concat, runs everywhere; default) or plugin (one TensorRT "
        "plugin node per shift, for GPU engines; verified here through its Slice/Concat lowering)",
    )
    reuse: bool = option(
        True,
        kind="negated",
        flag="--no-reuse",
        help="re-export model.onnx even when an identical verified one is already in --out",
    )
    features: bool = option(
        False,
        kind="flag",
        group=FEATURES,
        help="export the backbone without its classifier: one named N,C,H,W output per stage (stage0, "
        "stage1...), channels and stride per output recorded in model.json, verified per output",
    )
    out_indices: str | None = option(
        None,
        metavar="I,J,...",
        group=FEATURES,
        help="with --features: the stages to output, e.g. 1,2,3 (default: all)",
    )
    dynamic_size: str | None = option(
        None,
        metavar="MIN,OPT,MAX",
        group=FEATURES,
        help="with --features: make H and W dynamic within these sizes (each SIDE or HxW, multiples of the "
        "network's stride, e.g. 224,512,800x1344), verified at each of them (default: the model's one size)",
    )
    bf16: bool | None = option(
        None,
        kind="tristate",
        group=REDUCED,
        exclusive="bf16",
        help="require BF16 verification on OpenVINO (default: done where OpenVINO and the CPU support it)",
        negative_help="skip the BF16 verification",
    )
    fp16: bool = option(
        False, kind="flag", group=REDUCED, help="also write model.fp16.onnx (ModelOpt AutoCast)"
    )
    int8: bool = option(
        False, kind="flag", group=REDUCED, help="also write model.int8.onnx (ModelOpt PTQ, explicit Q/DQ)"
    )
    calib: Path | None = option(
        None,
        type=Path,
        metavar="DIR",
        group=REDUCED,
        help="calibration images (default: the built-in sample photos)",
    )
    calib_size: int = option(32, type=int, metavar="N", group=REDUCED, help="calibration inputs (default 32)")
    calib_method: str = option(
        "max", choices=CALIB_METHODS, group=REDUCED, help="INT8 calibration method (default max)"
    )
    int8_target: str | None = option(
        None,
        choices=INT8_TARGETS,
        group=REDUCED,
        help="where the INT8 graph runs: cpu places Q/DQ only on MatMul/Gemm/Conv inputs (fastest on "
        "OpenVINO and ONNX Runtime); tensorrt places them as ModelOpt does for TensorRT (default: tensorrt "
        "when an engine is built here, else cpu)",
    )
    keep_fp32: tuple[str, ...] = option(
        (),
        kind="repeat",
        metavar="NAME_OR_OPTYPE",
        group=REDUCED,
        help="node name or op type to keep in FP32 (repeatable)",
    )
    target_cosine: float | None = option(
        None,
        type=float,
        metavar="COS",
        group=REDUCED,
        help="with --int8: keep the layer groups INT8 hurts most in high precision until the held-out cosine "
        "(worst sample vs FP32) reaches COS, e.g. 0.9995; greedy by accuracy gained per GMAC, at most 8 "
        "configurations tried (each timed at batch 8 on ONNX Runtime CPU), one calibration reused; the "
        "choice and the trade-off table go into model.json, the plot into int8_tradeoff.png",
    )
    val: Path | None = option(
        None,
        type=Path,
        metavar="DIR|CSV",
        group=ACCURACY,
        help="with --int8: labelled held-out images (the layouts of `msmlp eval --data`, none of them in "
        "--calib); FP32 and INT8 top-1/top-5 on them, the drop and its 95%% interval go into model.json",
    )
    max_accuracy_drop: float | None = option(
        None,
        type=float,
        metavar="POINTS",
        group=ACCURACY,
        help="with --val: the INT8 graph is not kept (exit 3, accuracy_int8.json written) when its top-1 "
        "is more than POINTS percentage points below FP32's on --val, e.g. 0.5",
    )
    accuracy_search: bool = option(
        False,
        kind="flag",
        group=ACCURACY,
        help="with --max-accuracy-drop: keep the layer groups INT8 hurts most in high precision until the "
        "top-1 drop on (a seeded subset of up to 256 of) the --val images is within the budget: the "
        "--target-cosine search, judged by labels; the gate then judges the written graph on all of --val",
    )
    engine: bool = option(
        False, kind="flag", group=ENGINE, help="require the engine: fail if TensorRT is unavailable"
    )
    workspace_gib: float = option(
        4.0,
        flag="--workspace",
        type=float,
        metavar="GIB",
        group=ENGINE,
        help="builder workspace limit (default 4)",
    )
    opt_level: int = option(
        3, type=int, metavar="N", group=ENGINE, help="builder optimisation level 0..5 (default 3)"
    )
    timing_cache: Path | None = option(
        None, type=Path, metavar="PATH", group=ENGINE, help="timing cache file to load and save"
    )
    plugins: tuple[Path, ...] = option(
        (),
        flag="--plugin",
        kind="repeat",
        type=Path,
        metavar="LIB",
        group=ENGINE,
        help="plugin library to load (repeatable)",
    )

    @property
    def out_dir(self) -> Path:
        return Path(self.out or Path("out") / (f"{self.model}-features" if self.features else self.model))


def default_batch(config: DeployConfig) -> tuple[int, int, int]:
    """The config's min/max batch with OPT = 8 (clamped into the range)."""
    lo, hi = config.min_batch, config.max_batch
    return lo, min(max(VERIFY_BATCH, lo), hi), hi


def check_options(opts: ExportOptions) -> ExportOptions:
    """Validate everything that can be validated before spending minutes on an export."""
    from msmlp.exporters.onnx import check_opset
    from msmlp.models.registry import get_config

    config = get_config(opts.model)  # unknown model: one clear line with the closest names
    check_opset(opts.opset)
    batch = check_profile(opts.batch) if opts.batch is not None else default_batch(config)
    check_choices(opts)
    size = opts.calib_size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_CALIB_SIZE:
        raise InputError(f"--calib-size {size!r} must be an integer in 1..{MAX_CALIB_SIZE}")
    if not opts.workspace_gib > 0:
        raise InputError(f"--workspace {opts.workspace_gib!r} must be a positive number of GiB")
    if not 0 <= opts.opt_level <= 5:
        raise InputError(
            f"--opt-level {opts.opt_level!r} must be in 0..5 (TensorRT builder optimisation level)"
        )
    for label, path in (("--weights", opts.weights), *(("--plugin", p) for p in opts.plugins)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{label} {str(path)!r} does not exist or is not a file")
    opts = replace(opts, num_classes=deploy_config(opts).num_classes)
    _check_image_folders(opts)
    _check_accuracy_gate(opts)
    _check_target_cosine(opts)
    if (opts.fp16 or opts.int8) and opts.shift == "plugin":
        raise InputError(
            "--fp16/--int8 convert the graph with ModelOpt, which cannot run TensorRT plugin nodes; "
            "use the default --shift slice for reduced-precision graphs"
        )
    _check_features(opts)
    if opts.features:
        batch = check_profile(opts.batch) if opts.batch is not None else FEATURE_BATCH
    if opts.engine:
        available, reason = tensorrt_status()
        if not available:
            raise ExportError(f"--engine was given but the engine cannot be built: {reason}")
    check_writable_folder(opts.out_dir, "--out")
    target = opts.int8_target or ("tensorrt" if opts.engine or tensorrt_status()[0] else "cpu")
    return replace(opts, batch=batch, int8_target=target)


def deploy_config(opts: ExportOptions) -> DeployConfig:
    """The deploy config the export records: the registered one with the checkpoint's (or
    ``--num-classes``) class count, ``--input-size`` and ``--labels``, each checked."""
    from msmlp.data.labels import read_labels
    from msmlp.models.checkpoint import read_state_dict
    from msmlp.models.variant import deploy_variant, resolve_classes

    classes = opts.num_classes
    if opts.weights is not None:
        classes = resolve_classes(opts.model, read_state_dict(opts.weights), classes, str(opts.weights))
    labels = read_labels(opts.labels) if opts.labels is not None else ()
    size = opts.input_size
    size = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    return deploy_variant(opts.model, num_classes=classes, input_size=size, labels=labels)


FEATURE_BATCH = (1, 1, 8)  # detection sizes: small batches


def _check_features(opts: ExportOptions) -> None:
    """--out-indices and --dynamic-size need --features; --features goes with FP32, FP16 and INT8 graphs
    (what it does not do yet is one clear line)."""
    if not opts.features:
        for flag, value in (("--out-indices", opts.out_indices), ("--dynamic-size", opts.dynamic_size)):
            if value is not None:
                raise InputError(f"{flag} {value!r} chooses what a feature export outputs; add --features")
        return
    if opts.dynamic_size is not None:  # the sizes against the family's stride, before any work
        from msmlp.features import SizeProfile
        from msmlp.models.registry import get_config, get_family

        stride = get_family(get_config(opts.model).family).input_stride
        if stride:
            SizeProfile.parse(opts.dynamic_size, stride)
    refused = [
        flag
        for flag, given in (
            ("--target-cosine", opts.target_cosine is not None),
            ("--accuracy-search", opts.accuracy_search),
            ("--engine", opts.engine),
            ("--shift plugin", opts.shift == "plugin"),
            ("--val", opts.val is not None),
        )
        if given
    ]
    if refused:
        raise InputError(
            f"--features exports FP32 (and with --fp16/--int8 FP16/INT8) graphs verified per output; "
            f"{', '.join(refused)} is not supported with it yet: export without it"
        )


def _check_target_cosine(opts: ExportOptions) -> None:
    target = opts.target_cosine
    if target is None:
        return
    if not opts.int8:
        raise InputError(
            f"--target-cosine {target!r} chooses INT8 layers to keep in high precision; add --int8"
        )
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
        raise InputError(f"--target-cosine {target!r} must be a number between 0 and 1, e.g. 0.9995")


def check_profile(batch: tuple[int, int, int]) -> tuple[int, int, int]:
    """MIN <= OPT <= MAX, all positive, within the limits verification and engines can honour."""
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise InputError(f"--batch {lo},{opt},{hi} must satisfy 1 <= MIN <= OPT <= MAX")
    if hi > MAX_PROFILE_BATCH:
        raise InputError(f"--batch MAX {hi} is above {MAX_PROFILE_BATCH}; split larger batches in the caller")
    if lo > MAX_VERIFY_MIN_BATCH:
        raise InputError(
            f"--batch MIN {lo} is above {MAX_VERIFY_MIN_BATCH}: verification runs at MIN; use a smaller MIN "
            "(e.g. 1,{opt},{hi})".replace("{opt}", str(opt)).replace("{hi}", str(hi))
        )
    return lo, opt, hi


def _check_image_folders(opts: ExportOptions) -> None:
    """Each folder holds images that decode (:mod:`msmlp.data.imagecheck`), before any export work."""
    from msmlp.data.imagecheck import require_decodable
    from msmlp.data.transforms import list_images

    folders = [("--images", opts.images), ("--calib", opts.calib if opts.int8 else None)]
    for label, folder in folders:
        if folder is None:
            continue
        if not Path(folder).is_dir():
            raise InputError(f"{label} {str(folder)!r} is not a folder of images")
        require_decodable(list_images(folder), label)  # at least one image, each readable


def _check_accuracy_gate(opts: ExportOptions) -> None:
    """--val is a readable labelled set sharing no image with --calib; the budget is a number of points."""
    budget = opts.max_accuracy_drop
    if opts.accuracy_search and budget is None:
        raise InputError(
            "--accuracy-search keeps layers until the drop is within --max-accuracy-drop; add it"
        )
    if opts.accuracy_search and opts.target_cosine is not None:
        raise InputError("--accuracy-search and --target-cosine are two targets for one search; give one")
    if budget is not None:
        if opts.val is None:
            raise InputError(f"--max-accuracy-drop {budget!r} is measured on labelled images; add --val DIR")
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget <= 100:
            raise InputError(
                f"--max-accuracy-drop {budget!r} must be a number of top-1 points in 0..100, e.g. 0.5"
            )
    if opts.val is None:
        return
    if not opts.int8:
        raise InputError(f"--val {str(opts.val)!r} measures the accuracy of the INT8 graph; add --int8")
    from msmlp.data.imagecheck import require_decodable
    from msmlp.evaluate.datasets import open_dataset
    from msmlp.pipeline.images import val_overlap

    data = open_dataset(opts.val)  # any layout `msmlp eval --data` takes
    require_decodable(data.paths, "--val")
    shared = val_overlap(data.paths, opts.calib)
    if shared:
        val, calib = shared[0]
        raise InputError(
            f"--val and --calib share {len(shared)} image(s), e.g. {str(val)!r} is {str(calib)!r}; accuracy "
            "must be measured on images the calibration never saw: remove them from one folder"
        )


def check_writable_folder(folder: Path, option: str) -> None:
    """The output folder can be created and written to (checked by writing a probe file)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{option} {str(folder)!r} is a file, not a folder; give a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".msmlp-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(
            f"{option} {str(folder)!r} is not writable ({exc.strerror or type(exc).__name__}); "
            "choose a folder you can write to"
        ) from exc


def tensorrt_status() -> tuple[bool, str]:
    """(usable, reason); only a missing or unloadable TensorRT counts as "not installed"."""
    try:
        from msmlp.exporters.engine import tensorrt_available
    except ImportError as exc:  # the engine module needs nothing optional at import: this is a packaging bug
        raise ExportError(f"msmlp's engine module failed to import ({exc}); reinstall msmlp") from exc
    return tensorrt_available()
