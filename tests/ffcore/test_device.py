import pytest
import torch

from ffcore.device import resolve_device


def test_auto_picks_what_torch_sees():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_bad_devices_are_clear_errors():
    with pytest.raises(ValueError, match="device must be auto, cpu or cuda, got 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run through the device tool)")
def test_recurrent_step_on_gpu_matches_cpu():
    from ffcore.recurrent import RecurrentConfig, RecurrentFF

    torch.manual_seed(0)
    model = RecurrentFF(RecurrentConfig(input_dim=20, num_classes=4, widths=(16, 12)))
    frames, labels = torch.rand(3, 20), torch.tensor([0, 1, -1])
    cpu_state, cpu_g = model.step(frames, labels, model.initial_state(frames))
    gpu = model.to("cuda")
    gpu_state, gpu_g = gpu.step(frames.cuda(), labels.cuda(), gpu.initial_state(frames.cuda()))
    assert torch.allclose(cpu_g, gpu_g.cpu(), atol=1e-4, rtol=1e-4)
