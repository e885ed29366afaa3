"""On a CUDA GPU: the PyTorch ops and the model's fused path equal the CPU reference. With TensorRT:
a plugin engine builds from an ONNX file exported with shift="plugin" and agrees with the slice engine.
Both skip with the reason on machines without them (markers from pyproject)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import msmlp
from msmlp.models.layers import SHIFT1, SHIFT2, edge_shift_reference, roll_reference
from msmlp.models.msmlp import chunk_sizes


def test_shifted_token_sum_equals_the_sum_of_the_shifted_tensor():
    from msmlp.plugins.torch_ops import shifted_token_sum

    x = torch.randn(2, 5, 7, 13, dtype=torch.float64)
    for pattern in (SHIFT1, SHIFT2):
        torch.testing.assert_close(
            shifted_token_sum(x, pattern), edge_shift_reference(x, pattern).sum((1, 2))
        )


def test_import_installs_cuda_kernels_but_cpu_keeps_the_slice_form():
    from msmlp.models import layers

    assert set(layers._cuda_kernels) == set(layers.FUSED_NAMES)
    assert layers.fused("edge_shift", torch.zeros(1)) is None  # CPU tensor: Slice/Concat form


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_ops_equal_the_reference(dtype):
    from msmlp.plugins import torch_ops

    x = torch.randn(2, 13, 9, 7).to(dtype)
    chunks = chunk_sizes(13, 5)
    for dim in (2, 3):
        expected = torch.cat(
            [roll_reference(g, s, dim) for g, s in zip(torch.split(x, chunks, 1), range(-2, 3))], 1
        )
        assert torch.equal(torch_ops.group_roll(x.cuda(), chunks, range(-2, 3), dim).cpu(), expected)
    y = torch.randn(2, 6, 5, 12).to(dtype)
    for pattern in (SHIFT1, SHIFT2):
        assert torch.equal(torch_ops.edge_shift(y.cuda(), pattern).cpu(), edge_shift_reference(y, pattern))


@pytest.mark.gpu
@pytest.mark.parametrize("name", msmlp.list_models(test=True))
def test_model_on_cuda_uses_fused_shifts_and_matches_cpu(contributing, name):
    import msmlp.plugins

    model = contributing(name)
    x = torch.randn(2, *msmlp.get_config(name).input_size)
    with torch.no_grad():
        expected = model(x)
        got = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.tensorrt
def test_plugin_engine_matches_slice_engine(contributing, tmp_path):
    import tensorrt as trt

    from msmlp.exporters.onnx import export_onnx
    from msmlp.plugins import register_trt_plugins

    register_trt_plugins()
    name = "s2mlpv2_micro"
    config, model = msmlp.get_config(name), contributing(name)
    x = np.random.default_rng(0).standard_normal((2, *config.input_size), dtype=np.float32)
    outputs = []
    for shift in ("slice", "plugin"):
        path = export_onnx(model, tmp_path / f"{shift}.onnx", config=config, shift=shift, batch=(2, 2, 2))
        outputs.append(_run_engine(trt, path, x))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)


def _run_engine(trt, path, x: np.ndarray) -> np.ndarray:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(path)), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, x.shape, x.shape, x.shape)
    config.add_optimization_profile(profile)
    engine = trt.Runtime(logger).deserialize_cuda_engine(builder.build_serialized_network(network, config))
    context = engine.create_execution_context()
    inp = torch.from_numpy(x).cuda()
    out = torch.empty((x.shape[0], 1000), device="cuda")
    context.set_input_shape(engine.get_tensor_name(0), tuple(x.shape))
    context.set_tensor_address(engine.get_tensor_name(0), inp.data_ptr())
    context.set_tensor_address(engine.get_tensor_name(1), out.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out.cpu().numpy()
