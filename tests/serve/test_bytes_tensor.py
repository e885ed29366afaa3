"""The v2 BYTES encoding msmlp writes itself (the serving install has no tritonclient) is the one
tritonclient reads and writes."""

from __future__ import annotations

import numpy as np
import pytest

from msmlp.serve.v2 import bytes_tensor


@pytest.mark.parametrize("strings", [["12.5:3:tabby cat", "0.25:7:dög"], [""], ["a" * 300, "b"]])
def test_bytes_tensor_is_tritonclients(strings):
    utils = pytest.importorskip("tritonclient.utils")
    assert bytes_tensor(strings) == utils.serialize_byte_tensor(np.array(strings, dtype=np.object_)).item()
    decoded = utils.deserialize_bytes_tensor(bytes_tensor(strings))
    assert [d.decode("utf-8") for d in decoded] == strings
