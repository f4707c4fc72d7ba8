"""Tests for the UNet (docs/maths.md section 8): shapes, embedding, conditioning, errors, config I/O, learning."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from diffusionlab.errors import ConfigError
from diffusionlab.models import UNet, UNetConfig, count_parameters
from diffusionlab.models.layers import group_count, timestep_embedding


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and a shared 2-core machine makes 2 threads 10-20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small(image_size: int | tuple[int, int] = 8, **kw: object) -> UNetConfig:
    """A tiny config so each test runs in well under a second."""
    base = dict(image_size=image_size, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, num_heads=2, groups=8)
    base.update(kw)
    return UNetConfig(**base)  # type: ignore[arg-type]


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter (including the zero-initialised ones) random non-zero values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize(
    "size,mult,attn",
    [(8, (1, 2), (4,)), (28, (1, 2, 2), (7,)), (32, (1, 2, 2, 2), (8,)), ((8, 16), (1, 2), (4,))],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape(size: int | tuple[int, int], mult: tuple[int, ...], attn: tuple[int, ...], channels: int) -> None:
    cfg = small(size, channel_mult=mult, attention_resolutions=attn, in_channels=channels)
    net = UNet(cfg)
    h, w = cfg.height_width
    x = torch.randn(2, channels, h, w)
    out = net(x, torch.tensor([1.0, 500.0]))
    assert out.shape == (2, channels, h, w)
    assert out.dtype == torch.float32
    assert out.is_contiguous()


def test_out_channels_for_learned_variance() -> None:
    net = UNet(small(8, in_channels=3, out_channels=6))
    assert net(torch.randn(2, 3, 8, 8), torch.zeros(2)).shape == (2, 6, 8, 8)


@pytest.mark.parametrize("dim", [16, 17])
def test_sinusoidal_embedding_closed_form(dim: int) -> None:
    t = torch.tensor([0.0, 1.0, 37.5, 999.0], dtype=torch.float64)
    emb = timestep_embedding(t, dim)
    half = dim // 2
    for b, tb in enumerate(t.tolist()):
        for i in range(half):
            w = 10000.0 ** (-i / half)
            assert emb[b, i].item() == pytest.approx(math.sin(tb * w), abs=1e-9)
            assert emb[b, half + i].item() == pytest.approx(math.cos(tb * w), abs=1e-9)
        if dim % 2:
            assert emb[b, -1].item() == 0.0
    # integer time steps are accepted and give the same embedding
    assert torch.allclose(timestep_embedding(torch.tensor([37]), dim).double(), timestep_embedding(torch.tensor([37.0]), dim).double())


def test_time_scale_multiplies_t() -> None:
    a = UNet(small(8, time_scale=1000.0))
    b = UNet(small(8, time_scale=1.0))
    randomize_(a)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 8, 8)
    t = torch.tensor([0.25, 0.9])
    torch.testing.assert_close(a(x, t), b(x, 1000.0 * t))


def test_output_depends_on_t_and_y() -> None:
    net = UNet(small(8, num_classes=3, attention_resolutions=(4,)))
    randomize_(net)
    net.eval()
    x = torch.randn(2, 1, 8, 8)
    y = torch.tensor([0, 1])
    base = net(x, torch.tensor([10.0, 10.0]), y)
    assert not torch.allclose(base, net(x, torch.tensor([600.0, 600.0]), y), atol=1e-4)
    assert not torch.allclose(base, net(x, torch.tensor([10.0, 10.0]), torch.tensor([2, 2])), atol=1e-4)
    # per-example conditioning: changing example 1's label leaves example 0 alone
    other = net(x, torch.tensor([10.0, 10.0]), torch.tensor([0, 2]))
    torch.testing.assert_close(other[0], base[0])
    assert not torch.allclose(other[1], base[1], atol=1e-4)


def test_y_none_is_null_label() -> None:
    net = UNet(small(8, num_classes=4))
    randomize_(net)
    net.eval()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(net(x, t), net(x, t, torch.full((3,), 4, dtype=torch.long)))
    assert not torch.allclose(net(x, t), net(x, t, torch.zeros(3, dtype=torch.long)), atol=1e-4)


def _one_line(exc: pytest.ExceptionInfo[ConfigError]) -> None:
    msg = str(exc.value)
    assert msg and "\n" not in msg


def test_bad_image_size_raises() -> None:
    with pytest.raises(ConfigError, match=r"30x30.*divisible by 4") as e:
        UNetConfig(image_size=30, channel_mult=(1, 2, 2))
    _one_line(e)
    with pytest.raises(ConfigError, match="divisible by 2"):
        UNetConfig(image_size=(8, 9), channel_mult=(1, 2))
    net = UNet(small(8))
    with pytest.raises(ConfigError, match="divisible"):
        net(torch.randn(1, 1, 9, 9), torch.zeros(1))


def test_other_bad_configs_raise() -> None:
    with pytest.raises(ConfigError, match="attention resolution 5"):
        small(8, attention_resolutions=(5,))
    with pytest.raises(ConfigError, match="num_heads"):
        small(8, num_heads=3)
    with pytest.raises(ConfigError):
        small(8, dropout=1.0)
    with pytest.raises(ConfigError, match="invalid UNetConfig value") as e:
        UNetConfig.from_dict({"image_size": 8, "channel_mult": ["a", "b"]})
    _one_line(e)


def test_bad_labels_raise() -> None:
    net = UNet(small(8, num_classes=3))
    x, t = torch.randn(2, 1, 8, 8), torch.zeros(2)
    for bad in ([0, 4], [-1, 0]):
        with pytest.raises(ConfigError, match=r"\[0, 3\]") as e:
            net(x, t, torch.tensor(bad))
        _one_line(e)
    net(x, t, torch.tensor([3, 2]))  # the null label itself is valid
    with pytest.raises(ConfigError, match="unconditional"):
        UNet(small(8))(x, t, torch.tensor([0, 1]))


def test_config_json_round_trip() -> None:
    cfg = UNetConfig(image_size=(8, 16), in_channels=3, out_channels=6, channel_mult=(1, 2),
                     attention_resolutions=(4,), num_classes=10, time_scale=1000.0, dropout=0.1)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["channel_mult"] == [1, 2] and d["image_size"] == [8, 16]
    back = UNetConfig.from_dict(d)
    assert back == cfg
    assert UNetConfig.from_dict(json.loads(json.dumps(UNetConfig(28).to_dict()))) == UNetConfig(28)


def test_from_dict_unknown_key_raises() -> None:
    with pytest.raises(ConfigError, match="bogus") as e:
        UNetConfig.from_dict({"image_size": 8, "bogus": 1})
    _one_line(e)


def test_every_parameter_gets_gradient() -> None:
    torch.manual_seed(0)
    net = UNet(small(8, num_classes=2, attention_resolutions=(4, 8)))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(4, 1, 8, 8)
    t = torch.tensor([1.0, 10.0, 100.0, 1000.0])
    y = torch.tensor([0, 1, 2, 0])
    # The zero-initialised last layers block the gradient at step 0, so take a few steps first.
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(net(x, t, y), torch.randn_like(x)).backward()
        opt.step()
    opt.zero_grad()
    F.mse_loss(net(x, t, y), torch.randn_like(x)).backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters with no gradient: {dead}"
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())


def test_overfits_tiny_batch() -> None:
    torch.manual_seed(0)
    net = UNet(small(8, base_channels=32, attention_resolutions=(4,)))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x = torch.randn(4, 1, 8, 8)
    t = torch.tensor([5.0, 50.0, 300.0, 900.0])
    target = torch.randn(4, 1, 8, 8)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.mse_loss(net(x, t), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::10]


def test_eval_mode_is_deterministic_and_dropout_active_in_train() -> None:
    net = UNet(small(8, dropout=0.3))
    randomize_(net)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3.0, 7.0])
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x, t), net(x, t))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x, t), net(x, t))


def test_time_as_float64_and_scalar() -> None:
    net = UNet(small(8))
    randomize_(net)
    x = torch.randn(2, 1, 8, 8)
    ref = net(x, torch.tensor([5.0, 5.0]))
    torch.testing.assert_close(net(x, torch.tensor([5.0, 5.0], dtype=torch.float64)), ref)
    torch.testing.assert_close(net(x, torch.tensor(5.0)), ref)


def test_group_count_is_largest_divisor() -> None:
    assert group_count(64, 32) == 32
    assert group_count(48, 32) == 24
    assert group_count(3, 32) == 3
    assert group_count(7, 4) == 1


def test_group_norm_bf16_channels_last_path_matches_stock() -> None:
    from diffusionlab.models.layers import GroupNorm

    torch.manual_seed(0)
    gn = GroupNorm(4, 16)
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    x = torch.randn(3, 16, 6, 5).bfloat16()
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    x_c = x.clone().requires_grad_()
    y = gn(x_cl)
    ref = F.group_norm(x_c, 4, gn.weight, gn.bias, gn.eps)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, ref)
    g = torch.randn(ref.shape).bfloat16()
    grads = torch.autograd.grad(y, (x_cl, gn.weight, gn.bias), g.contiguous(memory_format=torch.channels_last))
    ref_grads = torch.autograd.grad(ref, (x_c, gn.weight, gn.bias), g)
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(grads, ref_grads):
        assert torch.equal(a, b)


def test_bf16_autocast_close_to_float32() -> None:
    net = UNet(small(8, num_classes=3, attention_resolutions=(4, 8)))
    randomize_(net)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([1.0, 10.0, 100.0, 900.0]), torch.tensor([0, 1, 2, 3])
    ref = net(x, t, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t, y)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    assert ((out.float() - ref).norm() / ref.norm()).item() < 0.05
    out.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_memory_format_is_a_speed_choice_only(monkeypatch) -> None:
    """The same weights give the same output in channels_last and in the standard layout (float rounding only)."""
    from diffusionlab.models.unet import preferred_memory_format

    cfg = UNetConfig(image_size=8, in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(4,), num_heads=2)
    torch.manual_seed(0)
    a = UNet(cfg, memory_format=torch.channels_last)
    b = UNet(cfg, memory_format=torch.contiguous_format)
    with torch.no_grad():  # zero-initialised output layers would make the comparison vacuous
        for p in a.parameters():
            if p.ndim > 1:
                p.normal_(std=0.1)
    b.load_state_dict(a.state_dict())
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1.0, 500.0, 999.0])
    ya, yb = a(x, t), b(x, t)
    assert ya.abs().mean() > 0.01
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-5)
    monkeypatch.setenv("DIFFUSIONLAB_MEMORY_FORMAT", "contiguous")
    assert preferred_memory_format() == torch.contiguous_format
    monkeypatch.setenv("DIFFUSIONLAB_MEMORY_FORMAT", "channels_last")
    assert preferred_memory_format() == torch.channels_last
    monkeypatch.setenv("DIFFUSIONLAB_MEMORY_FORMAT", "nchw")
    with pytest.raises(ConfigError, match="DIFFUSIONLAB_MEMORY_FORMAT"):
        preferred_memory_format()


def test_the_layout_follows_what_was_measured_on_each_cpu(monkeypatch, tmp_path) -> None:
    """channels_last only where it was measured faster for the UNet (Intel AVX-512/AMX); the standard layout on AMD
    (AVX2 and AVX-512: BENCHMARKS.md, "UNet vs diffusers UNet2DModel") and on AVX2; the autoencoder keeps its own."""
    import diffusionlab.models.unet as unet
    from diffusionlab.models.unet import cpu_vendor, preferred_memory_format

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert cpu_vendor(str(cpuinfo)) == "AuthenticAMD" and cpu_vendor(str(tmp_path / "none")) == ""
    monkeypatch.delenv("DIFFUSIONLAB_MEMORY_FORMAT", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for capability, vendor, layout in [("AVX512", "GenuineIntel", torch.channels_last),
                                       ("AVX512", "AuthenticAMD", torch.contiguous_format),
                                       ("AVX2", "GenuineIntel", torch.contiguous_format),
                                       ("AVX2", "AuthenticAMD", torch.contiguous_format)]:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        monkeypatch.setattr(unet, "cpu_vendor", lambda v=vendor: v)
        assert preferred_memory_format() == layout, (capability, vendor)
        amd_ae = capability == "AVX512"  # the autoencoder was measured faster in channels_last on AVX-512
        assert (preferred_memory_format(on_amd_avx512=torch.channels_last) == torch.channels_last) == amd_ae
        net = UNet(UNetConfig(image_size=8, in_channels=1, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                              attention_resolutions=(), num_heads=1))
        assert net.memory_format == layout
