"""The guidance maths against closed forms, with a stub backend whose UNet outputs are known."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from dreamlmc.guidance.backends.base import DiffusionBackend
from dreamlmc.guidance.corrective import Corrective
from dreamlmc.guidance.noise import NoiseSource
from dreamlmc.guidance.sds import GuidanceConfig, LMCConfig, ScoreDistillation


class StubBackend(DiffusionBackend):
    """Pixel prior (3, 8, 8) whose ε predictions are fixed functions of (x_t, t, embedding)."""

    model_id = "stub"

    def __init__(self):
        super().__init__()
        self.latent_shape, self.image_resolution = (3, 8, 8), 8
        self.alphas_cumprod = torch.linspace(0.999, 0.01, 1000)
        self.calls = 0

    def encode_images(self, images):
        return images * 2 - 1

    def decode(self, x):
        return (x + 1) / 2

    def _encode_prompts(self, prompts):
        return torch.stack([torch.full((4,), float(len(p))) for p in prompts])

    def _predict(self, x_t, t, emb):
        self.calls += 1
        return 0.3 * x_t + 0.01 * emb[:, :1, None, None] + 1e-4 * t.float()[:, None, None, None]


def run(cfg, images, prompts=("a red cube",), t=None, eps=None, corrective=None, backend=None):
    be = backend or StubBackend()
    g = ScoreDistillation(cfg, be, seed=0, corrective=corrective)
    img = images.clone().requires_grad_(True)
    out = g(img, list(prompts), t=t, eps=eps)
    out["loss"].backward()
    return out, img.grad, be


def closed_form_sds(images, prompts, t, eps, s, weighting="sds"):
    be = StubBackend()
    x = images * 2 - 1
    ac = be.alphas_cumprod[t]
    a, sg = ac.sqrt().view(-1, 1, 1, 1), (1 - ac).sqrt().view(-1, 1, 1, 1)
    x_t = a * x + sg * eps
    cond, uncond = be.encode_prompts(list(prompts)), be.encode_prompts([""] * len(prompts))
    e_c, e_u = be._predict(x_t, t, cond), be._predict(x_t, t, uncond)
    w = sg ** 2 if weighting == "sds" else 1.0
    return w * (e_u + s * (e_c - e_u) - eps), w * (e_c - eps), w * (s - 1) * (e_c - e_u)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 8, 8, generator=g), torch.tensor([100, 700]), torch.randn(2, 3, 8, 8, generator=g)


def test_sds_gradient_is_w_times_guided_minus_eps(batch):
    images, t, eps = batch
    cfg = GuidanceConfig(kind="sds", guidance_scale=7.5, fixed_eps=False)
    out, grad, _ = run(cfg, images, ("a red cube", "a blue sphere"), t, eps)
    g_x, _, _ = closed_form_sds(images, ("a red cube", "a blue sphere"), t, eps, 7.5)
    # chain rule through x = 2 * image - 1, and the loss is averaged over the batch
    torch.testing.assert_close(grad, 2 * g_x / 2, rtol=1e-5, atol=1e-7)


def test_cond_plus_proj_reassembles_sds(batch):
    images, t, eps = batch
    s = 12.0
    full, proj, cond = closed_form_sds(images, ("a red cube", "a red cube"), t, eps, s)
    torch.testing.assert_close(full, proj + cond)
    # and the guidance reports the same split: gradients of loss_cond and loss_proj add up to SDS's
    cfg = GuidanceConfig(kind="sds", guidance_scale=s, fixed_eps=False)
    g = ScoreDistillation(cfg, StubBackend())
    img = images.clone().requires_grad_(True)
    out = g(img, ["a red cube"] * 2, t=t, eps=eps)
    gc, = torch.autograd.grad(out["loss_cond"], img, retain_graph=True)
    gp, = torch.autograd.grad(out["loss_proj"], img)
    torch.testing.assert_close(gc, 2 * cond / 2, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gp, 2 * proj / 2, rtol=1e-5, atol=1e-7)


def test_scale_one_is_purely_conditional_and_skips_the_unconditional_call(batch):
    images, t, eps = batch
    out, grad, be = run(GuidanceConfig(kind="sds", guidance_scale=1.0, fixed_eps=False), images[:1], t=t[:1],
                        eps=eps[:1])
    _, proj, _ = closed_form_sds(images[:1], ("a red cube",), t[:1], eps[:1], 1.0)
    torch.testing.assert_close(grad, 2 * proj, rtol=1e-5, atol=1e-7)
    assert float(out["grad_norm_cond"]) == 0.0
    assert be.calls == 1  # one UNet call with the conditional embedding only


def test_guidance_interval_uses_the_high_t_scale_from_guidance_t_max_on(batch):
    """t = (100, 700) with guidance_t_max 0.5: the first view is guided at s = 7.5, the second at high_t_scale."""
    images, t, eps = batch
    for high_s in (1.0, 3.0):
        cfg = GuidanceConfig(kind="sds", guidance_scale=7.5, fixed_eps=False, guidance_t_max=0.5, high_t_scale=high_s)
        _, grad, _ = run(cfg, images, ("a red cube", "a red cube"), t, eps)
        low, _, _ = closed_form_sds(images[:1], ("a red cube",), t[:1], eps[:1], 7.5)
        high, _, _ = closed_form_sds(images[1:], ("a red cube",), t[1:], eps[1:], high_s)
        torch.testing.assert_close(grad, torch.cat([low, high]), rtol=1e-5, atol=1e-7)
    # every view above the interval at scale 1: purely conditional, no unconditional UNet call
    cfg = GuidanceConfig(kind="sds", guidance_scale=7.5, fixed_eps=False, guidance_t_max=0.05)
    _, _, be = run(cfg, images, ("a red cube", "a red cube"), t, eps)
    assert be.calls == 1


@pytest.mark.parametrize("gradient", ["jacobian", "residual"])
def test_identity_corrective_makes_lmc_equal_sds(batch, gradient):
    images, t, eps = batch
    sds_cfg = GuidanceConfig(kind="sds", guidance_scale=20.0, fixed_eps=False)
    lmc_cfg = dataclasses.replace(sds_cfg, kind="lmc-sds", corrective="identity",
                                  lmc=LMCConfig(gradient=gradient, c_t="alpha_over_sigma", weight=1.0))
    _, g_sds, _ = run(sds_cfg, images, ("a red cube", "a blue sphere"), t, eps)
    _, g_lmc, _ = run(lmc_cfg, images, ("a red cube", "a blue sphere"), t, eps)
    torch.testing.assert_close(g_lmc, g_sds, rtol=1e-4, atol=1e-6)


def test_untrained_corrective_is_the_identity():
    k = Corrective(channels=3)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(k(x, torch.tensor([0.1, 0.9])), x)


def test_jacobian_path_matches_finite_differences(batch):
    images, t, eps = batch
    torch.manual_seed(0)
    k = Corrective(channels=3, hidden=8, layers=3, kernel=3)
    with torch.no_grad():
        k.out.weight.normal_(0, 0.1)  # a non-identity corrective so the Jacobian matters
    cfg = GuidanceConfig(kind="lmc-sds", guidance_scale=1.0, fixed_eps=False, lmc=LMCConfig(gradient="jacobian"))
    g = ScoreDistillation(cfg, StubBackend(), corrective=k.double())
    g.backend.alphas_cumprod = g.backend.alphas_cumprod.double()
    # loss_lmc as a function of the image, with x_hat held fixed (it is stop-gradient by definition)
    img = images[:1].double().requires_grad_(True)
    out = g(img, ["a red cube"], t=t[:1], eps=eps[:1].double())
    grad, = torch.autograd.grad(out["loss_lmc"], img)
    be = g.backend
    ac = be.alphas_cumprod[t[:1]]
    a, s = ac.sqrt().view(-1, 1, 1, 1), (1 - ac).sqrt().view(-1, 1, 1, 1)
    x0 = images[:1].double() * 2 - 1
    x_t = a * x0 + s * eps[:1].double()
    e_c = be._predict(x_t, t[:1], be.encode_prompts(["a red cube"]).double())
    x_hat = (x_t - s * e_c) / a
    scale = (s ** 2 * a / s).view(-1)

    def f(im):
        r = k(im * 2 - 1, t[:1].double() / 1000) - x_hat
        return 0.5 * (scale.view(-1, 1, 1, 1) * r ** 2).sum()

    num = torch.zeros_like(img)
    h = 1e-6
    flat = img.detach().clone().view(-1)
    for i in range(0, flat.numel(), 17):  # a spread of coordinates
        e = torch.zeros_like(flat)
        e[i] = h
        num.view(-1)[i] = (f((flat + e).view_as(img)) - f((flat - e).view_as(img))) / (2 * h)
    idx = torch.arange(0, flat.numel(), 17)
    torch.testing.assert_close(grad.view(-1)[idx], num.view(-1)[idx], rtol=1e-5, atol=1e-8)


def test_fixed_eps_is_bit_identical_and_seeds_differ():
    a, b = NoiseSource((3, 8, 8), True, eps_seed=3), NoiseSource((3, 8, 8), True, eps_seed=3)
    assert torch.equal(a.sample(2), b.sample(2))
    assert torch.equal(a.sample(2)[0], a.sample(2)[1])  # shared across views
    assert torch.equal(a.sample(1), a.sample(1))  # reused every step
    assert not torch.equal(a.sample(1), NoiseSource((3, 8, 8), True, eps_seed=4).sample(1))


def test_state_dict_round_trip_makes_resume_exact():
    a = NoiseSource((3, 8, 8), fixed=False, seed=5)
    a.timesteps(4, 20, 980)
    state = a.state_dict()
    expected_t, expected_eps = a.timesteps(4, 20, 980), a.sample(2)
    b = NoiseSource((3, 8, 8), fixed=False, seed=999)
    b.load_state_dict(state)
    assert torch.equal(b.timesteps(4, 20, 980), expected_t)
    assert torch.equal(b.sample(2), expected_eps)
    f = NoiseSource((3, 8, 8), fixed=True, eps_seed=7)
    g = NoiseSource((3, 8, 8), fixed=False)
    g.load_state_dict(f.state_dict())
    assert torch.equal(g.sample(1), f.sample(1))


def test_stratified_timesteps_cover_the_range_evenly_and_resume():
    """t_sampling=stratified: any 10 consecutive steps put about one t in each tenth of the range (independent draws
    leave some tenths empty and fill others 3-4 times), reproducibly and across a resume."""
    def worst(src):
        ts = torch.cat([src.timesteps(1, 20, 980) for _ in range(200)])
        bins = ((ts - 20) * 10 // 961).view(20, 10)
        return max(int(torch.bincount(b, minlength=10).max()) for b in bins)

    assert worst(NoiseSource((3, 8, 8), fixed=False, seed=1, stratified_t=True)) <= 2
    assert worst(NoiseSource((3, 8, 8), fixed=False, seed=1)) >= 3
    a = NoiseSource((3, 8, 8), fixed=False, seed=2, stratified_t=True)
    assert not torch.equal(a.timesteps(4, 20, 980), NoiseSource((3, 8, 8), False, seed=3, stratified_t=True)
                           .timesteps(4, 20, 980))
    t = a.timesteps(4, 20, 980)
    assert t.min() >= 20 and t.max() <= 980 and len(set(((t - 20) * 4 // 961).tolist())) == 4  # a batch spreads
    state = a.state_dict()
    b = NoiseSource((3, 8, 8), fixed=False, seed=999, stratified_t=True)
    b.load_state_dict(state)
    assert torch.equal(b.timesteps(4, 20, 980), a.timesteps(4, 20, 980))


def test_per_view_batching_matches_unbatched(batch):
    images, t, eps = batch
    cfg = GuidanceConfig(kind="lmc-sds", guidance_scale=10.0, fixed_eps=False, corrective="identity")
    prompts = ["a red cube, front view", "a red cube, side view"]
    _, g_batched, _ = run(cfg, images, prompts, t, eps)
    for i in range(2):
        _, g_one, _ = run(cfg, images[i:i + 1], prompts[i:i + 1], t[i:i + 1], eps[i:i + 1])
        # the batched loss is a mean over views
        torch.testing.assert_close(g_batched[i:i + 1] * 2, g_one, rtol=1e-5, atol=1e-7)


def test_fresh_eps_for_the_corrective_costs_a_second_unet_call(batch):
    images, t, eps = batch
    cfg = GuidanceConfig(kind="lmc-sds", guidance_scale=1.0, fixed_eps=True, corrective="identity",
                         lmc=LMCConfig(eps="fresh"))
    _, _, be = run(cfg, images[:1], t=t[:1])
    assert be.calls == 2


def _dds(images, prompt, source_prompt, source_images=None, s=7.5, t=None, eps=None):
    be = StubBackend()
    g = ScoreDistillation(GuidanceConfig(kind="dds", guidance_scale=s), be, seed=0)
    cond, uncond = g.embed([prompt] * len(images))
    img = images.clone().requires_grad_(True)
    out = g(img, cond=cond, uncond=uncond, t=t, eps=eps, source_cond=g.embed([source_prompt] * len(images))[0],
            source_images=source_images)
    out["loss"].backward()
    return out, img.grad, be


def test_dds_is_zero_for_equal_prompts_on_the_source_image(batch):
    images, t, eps = batch
    out, grad, be = _dds(images, "a red cube", "a red cube", t=t, eps=eps)
    assert torch.count_nonzero(grad) == 0 and float(out["grad_norm"]) == 0.0
    assert be.calls == 2  # target cond + uncond, source cond; the unconditional call is shared
    _, grad_other, _ = _dds(images, "a red cube", "a blue sphere", t=t, eps=eps)
    assert grad_other.abs().max() > 1e-4


def test_dds_matches_a_hand_computation(batch):
    """g = w(t) [ε̂_s(x_t, target) − ε̂_s(x̂_t, source)], x_t and x̂_t noised with the same t and ε; the images are
    the pixels mapped to [-1, 1] by the stub, so the gradient on the pixels is 2 g."""
    images, t, eps = batch
    source = torch.rand_like(images, generator=torch.Generator().manual_seed(5))
    s = 7.5
    _, grad, _ = _dds(images, "a red cube", "a blue ball", source_images=source, s=s, t=t, eps=eps)
    be = StubBackend()
    ac = be.alphas_cumprod[t]
    a, sg = ac.sqrt().view(-1, 1, 1, 1), (1 - ac).sqrt().view(-1, 1, 1, 1)
    B = len(images)
    tgt, src, unc = (be.encode_prompts([p] * B) for p in ("a red cube", "a blue ball", ""))

    def guided(x, emb):
        x_t = a * (x * 2 - 1) + sg * eps
        e_c, e_u = be._predict(x_t, t, emb), be._predict(x_t, t, unc)
        return e_u + s * (e_c - e_u)

    expected = sg ** 2 * (guided(images, tgt) - guided(source, src)) * 2 / B
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_dds_without_a_source_prompt_is_a_clear_error(batch):
    from dreamlmc.errors import DreamlmcError

    images, t, eps = batch
    g = ScoreDistillation(GuidanceConfig(kind="dds"), StubBackend(), seed=0)
    with pytest.raises(DreamlmcError, match="source prompt"):
        g(images, ["a red cube"], t=t, eps=eps)


def test_guidance_scale_moves_to_its_end_value_with_training_progress(batch):
    images, t, eps = batch
    cfg = GuidanceConfig(kind="sds", guidance_scale=20.0, guidance_scale_end=7.5, fixed_eps=False)
    g = ScoreDistillation(cfg, StubBackend())
    for progress, s in ((0.0, 20.0), (0.4, 15.0), (1.0, 7.5), (3.0, 7.5)):
        g.set_progress(progress)
        img = images.clone().requires_grad_(True)
        out = g(img, ["a red cube"] * 2, t=t, eps=eps)
        out["loss"].backward()
        g_x, _, _ = closed_form_sds(images, ("a red cube",) * 2, t, eps, s)
        torch.testing.assert_close(img.grad, g_x, rtol=1e-5, atol=1e-7)  # SDS at the scheduled s
        assert float(out["guidance_scale"]) == pytest.approx(s)
    constant = ScoreDistillation(GuidanceConfig(kind="sds", guidance_scale=20.0), StubBackend())
    constant.set_progress(1.0)
    assert constant.scale == 20.0
    # a factor of the start scale (the trainer's default: 0.6), and an absolute end wins over it
    by_factor = ScoreDistillation(GuidanceConfig(kind="sds", guidance_scale=20.0, guidance_scale_end_factor=0.6),
                                  StubBackend())
    by_factor.set_progress(0.5)
    assert by_factor.scale == pytest.approx(16.0)
    both = ScoreDistillation(GuidanceConfig(kind="sds", guidance_scale=20.0, guidance_scale_end=7.5,
                                            guidance_scale_end_factor=0.6), StubBackend())
    both.set_progress(1.0)
    assert both.scale == 7.5


class PartialStub(StubBackend):
    """The stub with a grammar: a prompt's colour alone is its first two words."""

    def partial_prompts(self, prompts):
        return [" ".join(p.split()[:2]) for p in prompts]


def test_composable_guidance_splits_the_prompt_term_into_colour_and_shape(batch):
    images, t, eps = batch
    s, s_p, prompts = 12.0, 3.0, ("a red cube", "a blue sphere")
    cfg = GuidanceConfig(kind="sds", guidance_scale=s, partial_scale=s_p, fixed_eps=False)
    g = ScoreDistillation(cfg, PartialStub())
    img = images.clone().requires_grad_(True)
    out = g(img, list(prompts), t=t, eps=eps)
    gc, = torch.autograd.grad(out["loss_cond"], img)
    be = StubBackend()
    ac = be.alphas_cumprod[t]
    a, sg = ac.sqrt().view(-1, 1, 1, 1), (1 - ac).sqrt().view(-1, 1, 1, 1)
    x_t = a * (images * 2 - 1) + sg * eps
    e_c, e_p, e_u = (be._predict(x_t, t, be.encode_prompts(list(p)))
                     for p in (prompts, ("a red", "a blue"), ("", "")))
    want = sg ** 2 * ((s - 1) * (e_c - e_p) + (s_p - 1) * (e_p - e_u))  # ε̂ − ε_c of the composed ε̂
    torch.testing.assert_close(gc, 2 * want / 2, rtol=1e-5, atol=1e-7)
    # at s_p = s the split adds up to plain guidance
    plain, _, _ = run(GuidanceConfig(kind="sds", guidance_scale=s, fixed_eps=False), images, prompts, t, eps)
    same, _, _ = run(dataclasses.replace(cfg, partial_scale=s), images, prompts, t, eps, backend=PartialStub())
    torch.testing.assert_close(same["grad_norm_cond"], plain["grad_norm_cond"])
    assert not torch.allclose(out["grad_norm_cond"], plain["grad_norm_cond"])


def test_shape_boost_is_composable_guidance_with_the_shape_guided_harder(batch):
    """ε̂ = ε_u + s (ε_c − ε_u) + r s (ε_c − ε_colour): the colour at s, the shape given the colour at (1 + r) s, the
    same gradient as partial_scale = s at guidance scale (1 + r) s; r = 0 is plain guidance."""
    images, t, eps = batch
    s, r, prompts = 12.0, 0.5, ("a red cube", "a blue sphere")
    boosted, grad, _ = run(GuidanceConfig(kind="sds", guidance_scale=s, shape_boost=r, fixed_eps=False), images,
                           prompts, t, eps, backend=PartialStub())
    composed, grad_composed, _ = run(GuidanceConfig(kind="sds", guidance_scale=(1 + r) * s, partial_scale=s,
                                                    fixed_eps=False), images, prompts, t, eps, backend=PartialStub())
    torch.testing.assert_close(grad, grad_composed, rtol=1e-5, atol=1e-7)
    plain, grad_plain, _ = run(GuidanceConfig(kind="sds", guidance_scale=s, fixed_eps=False), images, prompts, t,
                               eps)
    zero, grad_zero, _ = run(GuidanceConfig(kind="sds", guidance_scale=s, shape_boost=0.0, fixed_eps=False), images,
                             prompts, t, eps, backend=PartialStub())
    torch.testing.assert_close(grad_zero, grad_plain)
    assert not torch.allclose(grad, grad_plain)
    from dreamlmc.errors import DreamlmcError

    with pytest.raises(DreamlmcError, match="built-in prior"):
        run(GuidanceConfig(shape_boost=0.5), images, t=t, eps=eps)
    for bad, match in ((dict(partial_scale=3.0), "set one of the two"), (dict(kind="dds"), "kind=dds"),
                       (dict(lmc=LMCConfig(x_hat_from="guided")), "x_hat_from")):
        with pytest.raises(DreamlmcError, match=match):
            GuidanceConfig(shape_boost=0.5, **bad).validate()


def test_composable_guidance_needs_a_prior_with_a_grammar(batch):
    from dreamlmc.errors import DreamlmcError

    images, t, eps = batch
    with pytest.raises(DreamlmcError, match="built-in prior"):
        run(GuidanceConfig(partial_scale=3.0), images, t=t, eps=eps)
    with pytest.raises(DreamlmcError, match="x_hat_from"):  # the corrective's guided target has no split
        GuidanceConfig(partial_scale=3.0, lmc=LMCConfig(x_hat_from="guided")).validate()
    with pytest.raises(DreamlmcError, match="kind=dds"):  # 2D editing has two prompts, no one prompt to split
        GuidanceConfig(kind="dds", partial_scale=3.0).validate()


def test_composable_guidance_at_scale_one_still_guides_the_colour(batch):
    images, t, eps = batch
    cfg = GuidanceConfig(kind="sds", guidance_scale=1.0, partial_scale=3.0, fixed_eps=False)
    out, grad, be = run(cfg, images, ("a red cube", "a blue sphere"), t, eps, backend=PartialStub())
    assert torch.isfinite(grad).all() and float(out["grad_norm_cond"]) > 0  # (s_p − 1)(ε_colour − ε_u) alone


def test_refine_pulls_each_image_towards_its_ddim_denoised_self(batch):
    """ScoreDistillation.refine: gradient 2 (image − x̃) / B, x̃ the image noised to t and denoised by DDIM (η = 0)
    at the given scale, here two steps (t → t/2 → 0) computed by hand with the stub's known ε."""
    images, _, _ = batch
    prompts, s, B = ("a red cube", "a blue sphere"), 3.0, images.shape[0]
    be = StubBackend()
    g = ScoreDistillation(GuidanceConfig(fixed_eps=False), be, seed=0, corrective=Corrective())
    gen = torch.Generator().manual_seed(0)
    gen.set_state(g.noise.generator.get_state())
    t = torch.full((B,), 600)  # t_range (0.6, 0.6): no draw of t varies
    torch.randint(600, 601, (B,), generator=gen)  # what the noise source draws for t, then ε
    eps = torch.randn((B, 3, 8, 8), generator=gen)
    img = images.clone().requires_grad_(True)
    out = g.refine(img, list(prompts), (0.6, 0.6), s, 2)
    out["loss"].backward()

    def guided(x_t, tt):
        e_c, e_u = (be._predict(x_t, tt, be.encode_prompts(list(p))) for p in (prompts, ("", "")))
        return e_u + s * (e_c - e_u)

    def coef(tt):
        ac = be.alphas_cumprod[tt]
        return ac.sqrt().view(-1, 1, 1, 1), (1 - ac).sqrt().view(-1, 1, 1, 1)

    a, sg = coef(t)
    x_t = a * (images * 2 - 1) + sg * eps
    e = guided(x_t, t)
    x0 = (x_t - sg * e) / a
    a2, s2 = coef(t // 2)
    x_mid = a2 * x0 + s2 * e
    e2 = guided(x_mid, t // 2)
    target = (x_mid - s2 * e2) / a2
    torch.testing.assert_close(img.grad, 2 * (images - (target + 1) / 2) / B, rtol=1e-4, atol=1e-6)
    assert float(out["t"]) == pytest.approx(0.6)
    # a scale of 1 skips the unconditional prediction (one UNet call per DDIM step)
    be.calls = 0
    g.refine(images, list(prompts), (0.3, 0.5), 1.0, 3)
    assert be.calls == 3
