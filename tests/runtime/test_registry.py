"""The backend table: a backend defined here, in the test, is one class and one register_backend call,
and then `--backend auto` picks it when model.json records its passed verification, `bench --compare`
gives it rows, and the CLI takes it as a --backend choice. The built-in specs' capability flags match
what their backends implement."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import msmlp
from msmlp.artifacts import read_artifact
from msmlp.bench import BenchOptions, run_benchmark
from msmlp.bench.compare import real_batch
from msmlp.cli import main
from msmlp.errors import InputError
from msmlp.exporters.onnx import export_onnx
from msmlp.manifest import Manifest
from msmlp.runtime import backend_names, backend_specs, open_backend, register_backend
from msmlp.runtime.base import Backend, BackendInfo
from msmlp.runtime.registry import BackendSpec, Candidate, Probe, Request, Rows, Sources, unregister_backend

MODEL = "msmlp_micro"
PASSED = {"passed": True, "cosine": 0.99999, "top1": 1.0}


# -- the whole of a new backend: one class and one spec ---------------------------------------------
class ToyBackend(Backend):
    """An ONNX graph through a bare onnxruntime session, under another name."""

    name = "toy"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = None

    def _load(self) -> BackendInfo:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        artifact = read_artifact(self.path)
        i, o = self.session.get_inputs()[0], self.session.get_outputs()[0]
        return BackendInfo.of_artifact(
            artifact,
            backend=self.name,
            precision=artifact.precision,
            input_name=i.name,
            input_shape=(-1, *i.shape[1:]),
            output_name=o.name,
        )

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (out,) = self.session.run([self.info.output_name], feed)
        return {self.info.output_name: out}


def _toy_rows(sources: Sources, skipped: dict[str, str]) -> Rows:
    return [(f"toy {precision}", ToyBackend(path)) for precision, path in sources.graphs]


TOY = BackendSpec(
    name="toy",
    title="Toy",
    probe=Probe("onnxruntime", "pip install onnxruntime"),
    opens=frozenset({"onnx"}),
    factory=lambda request: ToyBackend(request.source),
    candidates=(Candidate("toy", None, "toy_fp32", "fp32", graph="fp32", rank=1),),
    compare_rows=_toy_rows,
)
# ----------------------------------------------------------------------------------------------------


@pytest.fixture
def toy():
    register_backend(TOY)
    yield TOY
    unregister_backend(TOY.name)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, contributing) -> Path:
    folder = tmp_path_factory.mktemp("toy")
    export_onnx(contributing(MODEL), folder / "model.onnx", config=msmlp.get_config(MODEL), batch=(1, 2, 4))
    return folder / "model.onnx"


def recorded(tmp_path: Path, exported: Path, verification: dict[str, dict]) -> Path:
    """A copy of the graph with a model.json recording ``verification`` (key -> summary)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    graph = tmp_path / "model.onnx"
    shutil.copy(exported, graph)
    manifest = Manifest.open(
        tmp_path,
        model=MODEL,
        config=msmlp.get_config(MODEL),
        weights={"source": "synthetic", "seed": 0},
        opset=17,
        batch=(1, 2, 4),
    )
    manifest.add(graph, {"precision": "fp32", "verification": PASSED})
    for key, summary in verification.items():
        manifest.record_verification(key, summary)
    manifest.write()
    return graph


def auto_line(graph: Path, caplog) -> tuple[Backend, str]:
    with caplog.at_level(logging.INFO, logger="msmlp"):
        backend = open_backend(onnx=graph)
    return backend, [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend auto")][-1]


def test_a_registered_backend_is_picked_only_when_verified(toy, tmp_path, exported, caplog):
    toy_passed = {**PASSED, "backend": "toy", "file": "model.onnx"}
    backend, line = auto_line(recorded(tmp_path / "yes", exported, {"toy_fp32": toy_passed}), caplog)
    assert isinstance(backend, ToyBackend) and "toy fp32 for model.onnx" in line
    assert "fastest verified: toy_fp32 passed on toy" in line
    photo = real_batch(msmlp.get_config(MODEL), 2)  # the packaged photos, preprocessed
    with backend, open_backend(onnx=exported, backend="onnxruntime") as ort:
        np.testing.assert_allclose(backend(photo), ort(photo), rtol=1e-5, atol=1e-5)
    failed = {"toy_fp32": {**toy_passed, "passed": False}}
    backend, line = auto_line(recorded(tmp_path / "no", exported, failed), caplog)
    assert not isinstance(backend, ToyBackend) and "toy fp32 not verified" in line


def test_a_registered_backend_gets_compare_rows(toy, tmp_path):
    opts = BenchOptions(model=MODEL, compare=True, batches=[2], warmup=1, iters=1, threads=1, progress=False)
    rows = {r["label"]: r for r in run_benchmark(opts)["compare"]["rows"]}
    assert rows["toy fp32"]["backend"] == "toy" and rows["toy fp32"]["passed"]
    assert rows["toy fp32"]["cosine"] > 0.99999  # the same FP32 graph as onnxruntime's row
    assert "onnxruntime fp32" in rows and "pytorch fp32 (eager)" in rows


def test_the_cli_takes_a_registered_backend(toy, exported, image_paths, capsys):
    assert "toy" in backend_names()
    code = main(["predict", "--onnx", str(exported), "--backend", "toy", "--json", str(image_paths[0])])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)[0]["predictions"], out
    with pytest.raises(SystemExit):
        main(["predict", "--onnx", str(exported), "--backend", "toy", "--help"])
    assert "toy" in capsys.readouterr().out


def test_an_unregistered_backend_is_not_a_choice(exported, image_paths, capsys):
    assert "toy" not in backend_names()
    with pytest.raises(SystemExit) as exited:
        main(["predict", "--onnx", str(exported), "--backend", "toy", str(image_paths[0])])
    assert exited.value.code == 2 and "invalid choice: 'toy'" in capsys.readouterr().err
    with pytest.raises(InputError, match="--backend 'toy' is not one of auto, pytorch"):
        open_backend(onnx=exported, backend="toy")


def test_a_backend_name_is_registered_once(toy):
    with pytest.raises(InputError, match="already registered"):
        register_backend(TOY)
    assert [s.name for s in backend_specs()].count("toy") == 1


@pytest.mark.parametrize("spec", list(backend_specs()), ids=lambda s: f"{s.name}_spec")
def test_capability_flags_match_what_the_backend_implements(spec):
    backend = spec.factory(Request("x.onnx" if "model" not in spec.opens else MODEL, sorted(spec.opens)[0]))
    cls = type(backend)
    assert (cls._infer_outputs is not Backend._infer_outputs) == spec.intermediate_outputs
    assert (cls.profile_layers is not Backend.profile_layers) == spec.layer_profile
    assert all(c.backend == spec.name for c in spec.candidates)
    assert all(h in spec.hints for c in spec.candidates if c.lowers for h in [c.hint])


@pytest.mark.parametrize("name", [s.name for s in backend_specs() if s.intermediate_outputs])
def test_infer_returns_the_graph_tensors_asked_for(name, exported, tmp_path):
    import onnx

    from msmlp.diagnose.graph import with_outputs

    model = onnx.load(str(exported))
    inner = [model.graph.node[len(model.graph.node) // 2].output[0], model.graph.output[0].name]
    tapped = tmp_path / "tapped.onnx"
    onnx.save(with_outputs(model, inner), str(tapped))
    x = real_batch(msmlp.get_config(MODEL), 2)
    with open_backend(onnx=tapped, backend=name) as backend, open_backend(model=MODEL) as reference:
        got = backend.infer({backend.input_name: x}, outputs=inner)
        assert list(got) == inner and got[inner[0]].shape[0] == 2
        np.testing.assert_allclose(got[inner[1]], backend(x), rtol=1e-5, atol=1e-5)
        assert np.corrcoef(got[inner[1]].ravel(), reference(x).ravel())[0, 1] > 0.9999


def test_a_backend_without_intermediate_outputs_says_so():
    with open_backend(model=MODEL) as backend:
        x = real_batch(backend.info.config, 1)
        with pytest.raises(InputError, match="returns its output 'logits' only"):
            backend.infer({backend.input_name: x}, outputs=["anything"])
