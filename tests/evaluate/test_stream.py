"""The streaming evaluation on real exported micro models and real JPEG files: per-image results equal the
backend run by hand, unreadable images are skipped and listed (or fatal), Ctrl-C leaves a partial result."""

from __future__ import annotations

import dataclasses
import shutil
import time

import numpy as np
import pytest

from msmlp.data.transforms import load_image, preprocess
from msmlp.errors import InputError
from msmlp.evaluate.candidates import open_candidate, parse_candidate
from msmlp.evaluate.datasets import open_dataset
from msmlp.evaluate.report import build_report, reference_index
from msmlp.evaluate.stream import Candidate, evaluate

from .conftest import unreadable


def candidates(*texts: str) -> list[Candidate]:
    found = []
    for text in texts:
        spec = parse_candidate(text)
        backend = open_candidate(spec, threads=1).load()
        describe = {"precision": backend.info.precision}
        found.append(Candidate(spec.label, backend, spec.config, spec.classes, describe))
    return found


@pytest.fixture(scope="module")
def cands(micro3):
    found = candidates(f"{micro3['fp32']}@onnxruntime", f"{micro3['fp16']}@onnxruntime")
    yield found
    for c in found:
        c.backend.close()


def by_hand(cand: Candidate, paths) -> np.ndarray:
    return cand.backend(preprocess([load_image(p) for p in paths], cand.config))


def test_the_output_shape_gives_the_class_count(cands):
    assert [c.classes for c in cands] == [3, 3]  # the recorded model config says 1000: the graph wins


@pytest.mark.parametrize(("batch", "workers"), [(5, 2), (32, 1)])
def test_results_equal_the_backend_run_by_hand(imagefolder, cands, batch, workers):
    data = open_dataset(imagefolder)
    progress, tallies = evaluate(data, cands, batch=batch, workers=workers)
    assert progress.done.all() and not progress.partial and progress.unreadable_count == 0
    labels = np.asarray(data.labels)
    for cand, tally in zip(cands, tallies):
        logits = by_hand(cand, data.paths)
        np.testing.assert_array_equal(tally.pred, logits.argmax(1))
        np.testing.assert_array_equal(tally.top1, logits.argmax(1) == labels)
        top3 = np.argsort(-logits, axis=1)[:, :3]
        np.testing.assert_array_equal(tally.topk, (top3 == labels[:, None]).any(1))
        assert tally.calls == -(-len(data) // batch) and tally.infer_s > 0
    report = build_report(
        data, cands, tallies, progress, reference=reference_index(cands), batch=batch, workers=1
    )
    fp32, fp16 = report["candidates"]
    assert fp32["reference"] and not fp16["reference"]
    assert fp32["top1_correct"] == int(tallies[0].top1.sum())
    assert fp16["vs_reference"]["gained"] == int((tallies[1].top1 & ~tallies[0].top1).sum())
    assert fp16["vs_reference"]["lost"] == int((~tallies[1].top1 & tallies[0].top1).sum())
    assert fp32["vs_reference"] == {
        "gained": 0,
        "lost": 0,
        "top1_delta_points": 0.0,
        "agreement": 1.0,
        "mcnemar_p": 1.0,
    }


def test_unreadable_images_are_skipped_and_listed_or_fatal(tmp_path, imagefolder, cands):
    root = tmp_path / "set"
    shutil.copytree(imagefolder, root)
    bad = unreadable(root / "coffee" / "zz_notes.jpg")
    data = open_dataset(root)
    progress, tallies = evaluate(data, cands, batch=4, workers=2)
    assert progress.unreadable_count == 1 and progress.unreadable[0]["path"] == str(bad)
    assert "cannot read" in progress.unreadable[0]["error"]
    skipped = data.paths.index(bad)
    assert not progress.done[skipped] and progress.done.sum() == len(data) - 1
    report = build_report(data, cands, tallies, progress, reference=0, batch=4, workers=2)
    assert report["images_scored"] == len(data) - 1 and report["unreadable_files"][0]["path"] == str(bad)
    with pytest.raises(InputError, match="zz_notes.jpg.*--strict"):
        evaluate(data, cands, batch=4, workers=2, strict=True)


def test_ctrl_c_leaves_a_partial_result_of_the_batches_done(imagefolder, cands):
    data = open_dataset(imagefolder)
    seen = []

    def interrupt(count: int) -> None:
        seen.append(count)
        if len(seen) == 2:
            raise KeyboardInterrupt

    progress, tallies = evaluate(data, cands, batch=3, workers=2, on_batch=interrupt)
    assert progress.partial and int(progress.done.sum()) == 6
    report = build_report(data, cands, tallies, progress, reference=0, batch=3, workers=2)
    assert report["partial"] and report["images_scored"] == 6


def test_candidates_with_other_preprocessing_get_their_own(imagefolder, micro3):
    """Two configs in one run: each candidate is fed its own transform of the same decoded image."""
    a, b = candidates(str(micro3["fp32"]), str(micro3["fp32"]))
    b.config = dataclasses.replace(b.config, interpolation="bilinear", crop_pct=1.0)
    data = open_dataset(imagefolder).head(5)
    _, (ta, tb) = evaluate(data, [a, b], batch=5, workers=2)
    np.testing.assert_array_equal(ta.pred, by_hand(a, data.paths).argmax(1))
    np.testing.assert_array_equal(tb.pred, by_hand(b, data.paths).argmax(1))
    a.backend.close()
    b.backend.close()


def test_decoding_runs_at_most_a_window_ahead_of_scoring(tmp_path, imagefolder, cands, monkeypatch):
    """Memory is bounded: however large the set, decoded images wait for scoring only within the window."""
    import msmlp.evaluate.stream as stream

    root = tmp_path / "many" / "coffee"
    root.mkdir(parents=True)
    source = sorted((imagefolder / "coffee").glob("*.jpg"))[0]
    for i in range(120):
        (root / f"{i:03d}.jpg").hardlink_to(source)
    for name in ("astronaut", "rocket"):  # three classes, as the 3-class head wants
        shutil.copytree(imagefolder / name, root.parent / name)
    decoded, ahead, scored = [0], [], [0]
    real = stream.load_image

    def counting(path):
        decoded[0] += 1
        return real(path)

    def on_batch(count: int) -> None:  # a slow consumer: unbounded decoding would race far ahead
        time.sleep(0.05)
        scored[0] += count
        ahead.append(decoded[0] - scored[0])

    monkeypatch.setattr(stream, "load_image", counting)
    data = open_dataset(root.parent)
    progress, _ = evaluate(data, cands[:1], batch=4, workers=2, on_batch=on_batch)
    assert progress.done.all() and scored[0] == len(data) == 128
    assert max(ahead) <= max(2 * 4, 4 * 2)  # the window of _batches
