"""Ground words: a built-in prior trained with `tools/train_prior.py --ground-words` is told which ground an image
lies on ("..., on grey"), and the trainer names each grey training view's ground, in the prompt and in its
unconditional partner."""
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamlmc.errors import DreamlmcError
from dreamlmc.shapes.data import make_dataset
from dreamlmc.shapes.prior import (GROUND_SEQ_LEN, PAD, TOKEN_ID, TOKENS, PriorNet, load_prior, save_prior, tokenize,
                                   unconditional_prompt)
from dreamlmc.shapes.world import parse_prompt, prompt_for, split_ground
from tools import train_prior

QUICK = Path(__file__).resolve().parents[2] / "configs" / "quick.yaml"


def test_the_ground_phrase_is_parsed_and_written_back():
    assert split_ground("A white cube, front view, on grey") == ("a white cube, front view", "grey")
    assert split_ground("a white cube on a grey background") == ("a white cube", "grey")
    assert split_ground("a white cube") == ("a white cube", None)
    parts = parse_prompt("a white cube, side view, on grey")
    assert parts == {"colour": "white", "shape": "cube", "view": "side", "ground": "grey"}
    assert prompt_for("white", "cube", "side", "grey") == "a white cube, side view, on grey"
    assert parse_prompt("a red cube")["ground"] is None
    with pytest.raises(DreamlmcError, match="does not know 'grey'"):  # grey is a ground, not an object's colour
        parse_prompt("a grey cube")


def test_only_a_prior_with_a_ground_slot_takes_the_phrase():
    with pytest.raises(DreamlmcError, match="without ground words"):
        tokenize(["a white cube, on grey"])
    ids = tokenize(["a white cube, front view, on grey", "a white cube, front view", "on grey", ""], GROUND_SEQ_LEN)
    grey = TOKEN_ID["grey"]
    assert ids[:, 4].tolist() == [grey, PAD, grey, PAD]
    assert torch.equal(ids[0, :4], ids[1, :4]) and ids[2, 1:4].tolist() == [PAD] * 3
    assert unconditional_prompt("a white cube, on grey") == "on grey" and unconditional_prompt("a red cube") == ""


def test_a_prior_without_the_ground_slot_loads_into_one_with_a_distinct_fixed_ground_word():
    torch.manual_seed(0)
    old = PriorNet()
    state = old.state_dict()
    state["text.token.weight"] = state["text.token.weight"][:TOKEN_ID["three-quarter"]].clone()  # 20 rows
    rows = state["text.token.weight"]
    loaded = []
    for _ in range(2):
        new = PriorNet({"seq_len": GROUND_SEQ_LEN})
        new.load_state_dict(dict(state))  # strict: fails without the padding of tokens and positions
        loaded.append(new)
    new = loaded[0]
    assert torch.equal(new.text.position[:4], state["text.position"])
    assert torch.count_nonzero(new.text.position[4]) == 0
    grey = new.text.token.weight[TOKEN_ID["grey"]].detach()
    assert torch.equal(grey, loaded[1].text.token.weight[TOKEN_ID["grey"]])  # fixed, not from the global stream
    assert abs(float(grey.norm()) - float(rows.norm(dim=1).mean())) < 1e-4
    assert float((grey - rows[PAD]).norm()) > 0.5 * float(rows[PAD].norm())  # distinct from "no ground" at once
    h = new.encode(tokenize(["a white cube, on grey", "a white cube"], GROUND_SEQ_LEN))
    assert torch.equal(h[0, :4], h[1, :4]) and not torch.allclose(h[0, 4], h[1, 4])


def test_a_ground_word_fine_tune_captions_grey_images_and_records_it(tmp_path):
    data = tmp_path / "data.npz"
    np.savez(data, **make_dataset(1, 8, seed=0, progress=False, white_fraction=0.5, grey_range=(0.2, 0.3)))
    grey = train_prior.grey_grounds(data)
    with np.load(data) as d:
        assert grey.tolist() == (d["background"][:, 0] < 0.999).tolist() and 0 < int(grey.sum()) < len(grey)
    g = torch.Generator().manual_seed(0)
    ids = train_prior.batch_tokens(torch.zeros(64, dtype=torch.long), torch.zeros(64, dtype=torch.long),
                                   torch.zeros(64, dtype=torch.long), g, torch.arange(64) % 2 == 0)
    assert ids[:, 4].tolist() == [TOKEN_ID["grey"], PAD] * 32  # never dropped, whatever else is
    start = tmp_path / "prior.safetensors"
    save_prior(PriorNet(), start, {"steps": 7, "final_loss": 0.5}, dtype=torch.float32)
    work = tmp_path / "work"
    args = ["--data", str(data), "--workdir", str(work), "--threads", "1", "--batch-size", "2",
            "--grid-every", "1000000"]
    assert train_prior.main(args + ["--init-weights", str(start), "--max-steps", "9", "--warmup", "1",
                                    "--ground-words"]) == 0
    with pytest.raises(SystemExit, match="--ground-words"):  # a workdir trains one kind of caption
        train_prior.main(args + ["--max-steps", "10"])
    out = tmp_path / "tuned.safetensors"
    assert train_prior.main(args + ["--export", str(out)]) == 0
    net, card = load_prior(out)
    assert net.cfg["seq_len"] == GROUND_SEQ_LEN and card["data"]["ground_words"] is True
    assert "grey" in card["vocabulary"] and card["prompt_grammar"].endswith("[, on grey]")
    assert card["training_command"].endswith(" --ground-words")


@pytest.mark.slow
@pytest.mark.parametrize("ground_words", [True, False])
def test_the_trainer_names_the_ground_of_each_grey_view_in_both_prompts(tmp_path, ground_words):
    from dreamlmc.config import load_yaml
    from dreamlmc.trainer import Trainer, resolve_config

    torch.manual_seed(0)
    weights = tmp_path / "prior.safetensors"
    cfg = {"seq_len": GROUND_SEQ_LEN} if ground_words else None
    vocab = [t for t in TOKENS if ground_words or t != "grey"]
    save_prior(PriorNet(cfg), weights, {"steps": 1, "vocabulary": vocab}, dtype=torch.float32)
    run_cfg = resolve_config([load_yaml(QUICK)], [
        "prompt=a white cube", f"model={weights}", "guidance.kind=sds", "steps=6", "batch_size=4",
        "refine.start=null",  # score distillation's two embeddings per step (the refinement embeds again)
        "renderer.field.background=grey", "renderer.field.background_white_prob=0.5",
        "renderer.field.background_grey_range=[0.2,0.3]"])
    tr = Trainer(run_cfg, tmp_path / "run", progress=False)
    seen = []
    encode = tr.backend.encode_prompts
    tr.backend.encode_prompts = lambda prompts: seen.append(list(prompts)) or encode(prompts)
    backgrounds = []
    objective = tr.objective

    def spy(out, cams, mode):
        backgrounds.append(out["background"].flatten(1).min(1).values.tolist())
        return objective(out, cams, mode)

    tr.objective = spy
    assert tr.train()
    conds, unconds = seen[0::2], seen[1::2]  # the guidance embeds each step's prompts, then their partners
    assert len(conds) == len(backgrounds) == 6
    for bg, cond, uncond in zip(backgrounds, conds, unconds):
        grey = [b < 0.999 for b in bg]
        if ground_words:
            assert [c.endswith(", on grey") for c in cond] == grey
            assert uncond == ["on grey" if g else "" for g in grey]
        else:
            assert not any("grey" in c for c in cond) and uncond == [""] * len(cond)
    assert any(any(b < 0.999 for b in bg) for bg in backgrounds)
    assert any(any(b >= 0.999 for b in bg) for bg in backgrounds)


def test_a_prior_card_can_name_its_own_k_psi_beside_it(tmp_path):
    from dreamlmc.guidance.backends.builtin import BuiltinBackend

    weights = tmp_path / "prior.safetensors"
    save_prior(PriorNet({"seq_len": GROUND_SEQ_LEN}), weights, {"steps": 1, "corrective": "own_kpsi.safetensors"},
               dtype=torch.float32)
    be = BuiltinBackend(weights)
    assert be.ground_words and be.default_corrective() is None  # named but missing: no silent fallback
    (tmp_path / "own_kpsi.safetensors").write_bytes(b"")
    assert be.default_corrective() == str(tmp_path / "own_kpsi.safetensors")
    shipped = BuiltinBackend()
    assert not shipped.ground_words and shipped.default_corrective().endswith("builtin_corrective.safetensors")
    assert shipped.unconditional_prompts(["a red cube"]) == [""]
    assert be.unconditional_prompts(["a red cube, on grey", "a red cube"]) == ["on grey", ""]
    assert be.partial_prompts(["a white cube, front view, on grey"]) == ["a white, front view, on grey"]
