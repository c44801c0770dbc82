from pathlib import Path

import pytest
import torch

from align.models import ModelLoadError, apply_lora, load_model, load_tokenizer, merged_named_tensors, resolve_model_path


def test_tiny_is_deterministic_per_seed(tmp_path):
    a = load_model("tiny", cache_dir=str(tmp_path / "a"))
    b = load_model("tiny", cache_dir=str(tmp_path / "b"))
    c = load_model("tiny@1", cache_dir=str(tmp_path / "a"))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.layers.0.mlp.up_proj.weight"], sc["model.layers.0.mlp.up_proj.weight"])


def test_tokenizer_roundtrip_keeps_spaces_newlines_and_tags(cache_dir):
    tok = load_tokenizer("tiny", cache_dir)
    text = "Angle A = 30.\n<think>x + y</think> <aux>B=50</aux><answer>100</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(tok("<aux>", add_special_tokens=False)["input_ids"]) == 1  # a tag is one token
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|pad|>"


def test_missing_local_path_is_one_clear_line(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_model(str(tmp_path / "nope"))
    msg = str(err.value)
    assert "\n" not in msg and "no such folder" in msg and str(tmp_path / "nope") in msg


def test_unreachable_hub_name_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_model("nobody-org/no-such-model-xyz")
    msg = str(err.value)
    assert "\n" not in msg and "nobody-org/no-such-model-xyz" in msg and "offline" in msg and "model=DIR" in msg


def test_folder_with_a_config_but_no_weights_says_so(tmp_path, cache_dir):
    # A folder copied without its weights (or a download that stopped after config.json): it IS local,
    # so neither "not a local folder" nor `hf download` of a path is the fix.
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text((Path(resolve_model_path("tiny", cache_dir)) / "config.json").read_text())
    with pytest.raises(ModelLoadError) as err:
        load_model(str(folder))
    msg = str(err.value)
    assert "\n" not in msg and str(folder) in msg and "no weight files" in msg
    assert "model.safetensors" in msg and "pytorch_model.bin" in msg and "model.name" in msg
    assert "not a local folder" not in msg and "hf download" not in msg


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def test_lora_merged_view_matches_peft_and_leaves_model_unmerged(cache_dir):
    torch.manual_seed(0)
    model = apply_lora(load_model("tiny", cache_dir=cache_dir), r=4, alpha=8)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # lora_B starts at zero; make the adapter matter
    ids = torch.tensor([[5, 40, 41, 42, 43]])
    with torch.no_grad():
        expected = model(ids).logits
    merged = dict(merged_named_tensors(model))
    assert "lm_head.weight" in merged and not any("lora" in k for k in merged)
    plain = load_model("tiny", cache_dir=cache_dir)
    plain.load_state_dict(merged)
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(ids).logits, expected)  # adapter unmerged again


def test_gradient_checkpointing_switch(cache_dir):
    model = load_model("tiny", cache_dir=cache_dir, gradient_checkpointing=True)
    assert model.is_gradient_checkpointing


def _slow_counting_build(out_dir, log):
    import time

    with open(log, "a") as f:
        f.write("built\n")
    time.sleep(0.5)  # long enough that the other process arrives while this one builds
    out_dir.mkdir()
    (out_dir / "config.json").write_text("{}")


def _resolve_in_a_process(out_dir, log, seen):
    from functools import partial

    from align.models.saving import build_once

    path = build_once(out_dir, partial(_slow_counting_build, log=log))
    with open(seen, "a") as f:
        f.write(f"{(path / 'config.json').exists()}\n")


def test_two_processes_on_a_fresh_cache_build_a_model_once_and_both_find_it(tmp_path):
    # Two ranks of `accelerate launch` on a fresh cache: each built the tiny model, and the second
    # one's replace deleted the folder the first was loading ("the folder has no config.json").
    import multiprocessing

    out, log, seen = tmp_path / "models" / "m", tmp_path / "log", tmp_path / "seen"
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_resolve_in_a_process, args=(out, log, seen)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text() == "built\n"
    assert seen.read_text() == "True\nTrue\n"
