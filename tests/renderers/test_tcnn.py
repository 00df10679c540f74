"""tiny-cuda-nn integration, on the CPU through a stand-in that mimics tinycudann.Encoding's interface (flat
`params`, tcnn's parameter layout), plus the real module where a GPU with tinycudann is present."""
import sys
import types
from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from dreamlmc.errors import DreamlmcError
from dreamlmc.renderers.hash_grid import HashEncoding, HashGridConfig, _unflat, level_layout

CFG = HashGridConfig(num_levels=4, log2_table_size=11, base_resolution=4, growth_factor=2.0, implementation="tcnn")


class StandInEncoding(nn.Module):
    """tinycudann.Encoding(n_input_dims, encoding_config, dtype): one flat `params` in tcnn's layout (level by level,
    rows padded to 8, features fastest); forward computed by dreamlmc's reference maths on those parameters."""

    extra_params = 0  # > 0 simulates a tcnn version whose layout differs from ours

    def __init__(self, n_input_dims, encoding_config, dtype=torch.float32):
        super().__init__()
        c = encoding_config
        self.cfg = HashGridConfig(num_levels=c["n_levels"], features_per_level=c["n_features_per_level"],
                                  log2_table_size=c["log2_hashmap_size"], base_resolution=c["base_resolution"],
                                  growth_factor=c["per_level_scale"], implementation="torch")
        self.layout = level_layout(self.cfg)
        n = sum(rows for _, _, rows, _ in self.layout) * self.cfg.features_per_level + self.extra_params
        self.params = nn.Parameter(torch.zeros(n, dtype=dtype))
        self.n_output_dims = self.cfg.num_levels * self.cfg.features_per_level
        object.__setattr__(self, "_maths", HashEncoding(self.cfg))  # helper maths, not a registered submodule

    def forward(self, x):
        self._maths.tables = lambda: _unflat(self.params, self.layout, self.cfg.features_per_level)
        return self._maths.encode(x)


@pytest.fixture
def fake_tcnn(monkeypatch):
    mod = types.ModuleType("tinycudann")
    mod.Encoding = StandInEncoding
    monkeypatch.setitem(sys.modules, "tinycudann", mod)
    StandInEncoding.extra_params = 0
    return mod


def _torch_twin(enc):
    twin = HashEncoding(replace(enc.cfg, implementation="torch"))
    twin.load_state_dict(enc.state_dict(), strict=True)
    return twin


def test_tcnn_module_is_built_at_init_and_its_parameters_are_the_encodings(fake_tcnn):
    torch.manual_seed(0)
    enc = HashEncoding(CFG)
    assert isinstance(enc.tcnn, StandInEncoding) and enc.levels is None
    assert [p for p in enc.parameters()] == [enc.tcnn.params]
    assert enc.tcnn.params.abs().max() > 0  # initialised from dreamlmc's table, not zeros
    x = torch.rand(500, 3)
    torch.testing.assert_close(enc(x), _torch_twin(enc).encode(x))


def test_optimiser_steps_move_the_tcnn_parameters(fake_tcnn):
    torch.manual_seed(0)
    enc = HashEncoding(CFG)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    before = enc.tcnn.params.detach().clone()
    x = torch.rand(300, 3)
    for _ in range(3):
        loss = (enc(x) - 1.0).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(before, enc.tcnn.params.detach())
    assert float((enc(x) - 1.0).square().mean().detach()) < float(loss.detach())


def test_state_dict_keeps_the_level_layout_both_ways(fake_tcnn):
    torch.manual_seed(0)
    enc = HashEncoding(CFG)
    with torch.no_grad():
        enc.tcnn.params.normal_()
    sd = enc.state_dict()
    assert sorted(sd) == [f"levels.{i}" for i in range(4)]  # no tcnn keys: strict loads work on any machine
    cpu = HashEncoding(replace(CFG, implementation="torch"))
    cpu.load_state_dict(sd, strict=True)
    x = torch.rand(200, 3)
    torch.testing.assert_close(cpu.encode(x), enc(x))
    back = HashEncoding(CFG)
    back.load_state_dict(cpu.state_dict(), strict=True)
    assert torch.equal(back.tcnn.params, enc.tcnn.params)


def test_renderer_checkpoint_from_tcnn_loads_strictly_without_it(fake_tcnn):
    from dreamlmc.cameras import CameraConfig, orbit_cameras
    from dreamlmc.renderers.renderer import Renderer, RendererConfig

    torch.manual_seed(0)
    cfg = RendererConfig(num_samples=24)
    cfg.field.hash_grid = CFG
    ren = Renderer(cfg)
    cams = orbit_cameras(CameraConfig(), 1, 12, 12)
    (ren(cams, "lambertian")["rgb"].mean()).backward()
    plain_cfg = RendererConfig(num_samples=24)
    plain_cfg.field.hash_grid = replace(CFG, implementation="torch")
    plain = Renderer(plain_cfg)
    plain.load_state_dict(ren.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(cams, "albedo", perturb=False)["rgb"], ren(cams, "albedo", perturb=False)["rgb"])


def test_a_layout_mismatch_is_an_error_not_a_truncation(fake_tcnn):
    StandInEncoding.extra_params = 16
    with pytest.raises(ValueError, match="refusing to truncate"):
        HashEncoding(CFG)


def test_required_tcnn_missing_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tinycudann", None)
    with pytest.raises(DreamlmcError, match="tinycudann cannot be imported"):
        HashEncoding(CFG)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_real_tinycudann_matches_the_torch_path_on_cuda():
    pytest.importorskip("tinycudann", reason="tinycudann is not installed")
    torch.manual_seed(0)
    enc = HashEncoding(replace(CFG, implementation="auto"), device="cuda").cuda()
    assert enc.tcnn is not None
    twin = _torch_twin(enc).cuda()
    x = torch.rand(4096, 3, device="cuda")
    torch.testing.assert_close(enc(x), twin.encode(x), rtol=1e-3, atol=1e-4)
