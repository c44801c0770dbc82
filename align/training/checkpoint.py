"""Atomic, resumable training checkpoints on top of accelerate, and export to a plain HF folder.

Layout of one run:

    run_dir/checkpoints/step-000040/     a complete checkpoint (has trainer_state.json)
        model.safetensors, optimizer.bin, scheduler.bin, random_states_<rank>.pkl, ...
                                         (accelerator.save_state; under DeepSpeed a pytorch_model/ folder)
        adapter/                         the LoRA adapter in peft format, only for peft models
        trainer_state.json               written last: its presence marks the checkpoint complete
    run_dir/checkpoints/.tmp-step-000050/ a save in progress (or one that crashed): never loaded

A save writes everything into the temp folder, then the main process renames it into place with
os.replace, so a crash at any point leaves the previous checkpoints untouched. All ranks take
part in `accelerator.save_state` (each writes its own RNG state; under ZeRO each writes its
shards), so the run folder must be on a file system every rank sees.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from align.errors import UserError
from align.models.lora import is_peft_model

CHECKPOINTS_DIRNAME = "checkpoints"
TRAINER_STATE_NAME = "trainer_state.json"
ADAPTER_DIRNAME = "adapter"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


class CheckpointError(UserError, ValueError):
    """A checkpoint could not be found, written or read; the message says which and how to fix it."""


def checkpoint_dirname(step: int) -> str:
    return f"step-{step:06d}"


def _is_complete(path: Path) -> bool:
    return (path / TRAINER_STATE_NAME).is_file()


def _complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and _is_complete(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def _fsync_dir(path: Path) -> None:
    # A rename is only durable once the directory entry itself is flushed.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_durably(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def _trainer_state_json(trainer_state: dict, step: int) -> str:
    if not isinstance(trainer_state, dict):
        raise CheckpointError(f"trainer_state must be a dict, got {type(trainer_state).__name__}")
    state = {**trainer_state, "step": step}
    try:
        return json.dumps(state, indent=2, sort_keys=True, allow_nan=True)
    except TypeError as err:
        raise CheckpointError(
            f"trainer_state is not JSON-serialisable ({err}); pass plain numbers, strings, lists and dicts "
            "(convert tensors with .item() or .tolist())"
        ) from None


def _holds_shards(accelerator) -> bool:
    """True when no rank holds the full weights (ZeRO-3, FSDP), so reading them is a collective."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    return accelerator.distributed_type == DistributedType.DEEPSPEED and (
        accelerator.deepspeed_config["zero_optimization"].get("stage", 0) == 3
    )


def _save_adapters(accelerator, folder: Path) -> None:
    """Save each peft model's adapter in peft format (adapter/, adapter_1/, ...) for users.

    Resume does not read these (accelerate's model.safetensors already holds the adapter weights);
    they are there so a checkpoint can be loaded with PeftModel.from_pretrained. Only the models
    passed through accelerator.prepare are seen (accelerate keeps them in `_models`).
    """
    prepared_peft = [(m, accelerator.unwrap_model(m)) for m in accelerator._models]
    prepared_peft = [(m, unwrapped) for m, unwrapped in prepared_peft if is_peft_model(unwrapped)]
    for i, (prepared, peft_model) in enumerate(prepared_peft):
        # Sharded weights must be gathered (every rank takes part); otherwise peft reads the live
        # adapter directly, without copying the whole model.
        state_dict = accelerator.get_state_dict(prepared) if _holds_shards(accelerator) else None
        if accelerator.is_main_process:
            name = ADAPTER_DIRNAME if i == 0 else f"{ADAPTER_DIRNAME}_{i}"
            peft_model.save_pretrained(str(folder / name), state_dict=state_dict)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished `tmp` folder to `final`; an existing `final` (same step saved again) goes last."""
    old = final.with_name(_OLD_PREFIX + final.name)
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


def _prune(root: Path, keep_last: int, current: Path) -> None:
    """Delete complete checkpoints older than the newest `keep_last`, and leftovers of crashed saves."""
    for child in root.iterdir():
        if child.name.startswith((_TMP_PREFIX, _OLD_PREFIX)) and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
    if keep_last == 0:
        return
    for _, folder in _complete_checkpoints(root)[:-keep_last]:
        if folder != current:
            shutil.rmtree(folder, ignore_errors=True)


def save_checkpoint(accelerator, run_dir: str | Path, step: int, trainer_state: dict, keep_last: int = 2) -> Path:
    """Save model, optimizer, scheduler, every rank's RNG and `trainer_state` to run_dir/checkpoints/step-NNNNNN.

    Call it on every rank. `trainer_state` is anything JSON-able the trainer needs to resume (data
    position, weight version, ...); "step" is added. `keep_last` complete checkpoints are kept
    (0 keeps all); older ones are deleted only after the new one is complete. Returns the folder.
    """
    if not isinstance(step, int) or step < 0:
        raise CheckpointError(f"step must be a non-negative int, got {step!r}")
    if not isinstance(keep_last, int) or keep_last < 0:
        raise CheckpointError(f"keep_last must be an int >= 0 (0 keeps every checkpoint), got {keep_last!r}")
    state_text = _trainer_state_json(trainer_state, step)  # fail before writing anything

    root = Path(run_dir) / CHECKPOINTS_DIRNAME
    final = root / checkpoint_dirname(step)
    tmp = root / (_TMP_PREFIX + final.name)  # the same name on every rank: they all write into it
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left by a save that crashed
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()

    try:
        accelerator.save_state(str(tmp))
        _save_adapters(accelerator, tmp)
        _pause_for_crash_test(step)
        accelerator.wait_for_everyone()  # every rank's files are in tmp before it is marked complete

        if accelerator.is_main_process:
            _write_json_durably(tmp / TRAINER_STATE_NAME, state_text)
            _replace_dir(tmp, final)
            _prune(root, keep_last, current=final)
    except BaseException as error:
        # Whatever stopped the save (a full disk surfaces as safetensors' SafetensorError, not OSError),
        # the half-written folder only takes space; the complete checkpoints before it are untouched.
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(error, Exception):  # Ctrl-C, SystemExit: cleaned up, then on their way
            raise
        raise _save_failed(error, final, root) from error
    accelerator.wait_for_everyone()
    return final


def _save_failed(error: Exception, final: Path, root: Path) -> CheckpointError:
    kept = "the previous checkpoints are kept"
    if _is_disk_full(error):
        return CheckpointError(
            f"saving {final.name} in {root}: no space left on device; {kept}; "
            "free disk space, lower log.keep_last, or point log.run_dir at a larger disk"
        )
    reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    return CheckpointError(f"saving {final.name} in {root} failed ({reason}); {kept}; resume=latest continues from the last one")


def _is_disk_full(error: BaseException | None) -> bool:
    """ENOSPC / EDQUOT, as an OSError or inside the message of a library's own error (safetensors: 'os error 28')."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if "No space left on device" in text or "Disk quota exceeded" in text or "os error 28" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def _pause_for_crash_test(step: int) -> None:
    # tests/trainers/test_crash_safety.py SIGKILLs the run here, with the weights written but the
    # checkpoint not yet marked complete: the widest window a real crash can hit.
    if os.environ.get("ALIGN_TEST_PAUSE_IN_SAVE_AT_STEP") == str(step):
        time.sleep(600)


def find_checkpoint(run_dir: str | Path, resume: str) -> Path | None:
    """The checkpoint to resume from: resume="latest" gives the newest complete one under run_dir
    (None if there is none); any other value is a checkpoint folder, which must exist and be complete."""
    if resume == "latest":
        found = _complete_checkpoints(Path(run_dir) / CHECKPOINTS_DIRNAME)
        return found[-1][1] if found else None
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise CheckpointError(
            f"resume='{resume}': no such checkpoint folder; pass resume=latest or a folder like "
            f"{Path(run_dir) / CHECKPOINTS_DIRNAME / checkpoint_dirname(0)}"
        )
    if not _is_complete(path):
        raise CheckpointError(
            f"resume='{resume}': checkpoint is incomplete (no {TRAINER_STATE_NAME}; its save was interrupted); "
            "pass an earlier checkpoint or resume=latest"
        )
    return path


def load_checkpoint(accelerator, path: str | Path) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states from `path` (on every rank); returns trainer_state.

    The accelerator must have prepared the same objects, in the same order, as when it was saved.
    """
    path = Path(path)
    if not _is_complete(path):
        raise CheckpointError(
            f"checkpoint '{path}' is incomplete or missing (no {TRAINER_STATE_NAME}); pick one with "
            "find_checkpoint(run_dir, 'latest')"
        )
    try:
        state = json.loads((path / TRAINER_STATE_NAME).read_text())
        accelerator.load_state(str(path))
    except Exception as error:  # noqa: BLE001 - safetensors, torch and json each raise their own types
        cause = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise CheckpointError(
            f"checkpoint '{path}' is damaged and cannot be loaded ({cause}); pass an earlier checkpoint (resume=PATH)"
        ) from error
    return state


def _merged_peft_copy(peft_model, state_dict: dict[str, torch.Tensor]):
    """A fresh CPU copy of `peft_model` holding `state_dict` with its adapter merged into the base weights.

    Built from the config rather than deep-copied: under ZeRO-3 the live model only holds shards,
    while `state_dict` is the gathered full one.
    """
    from peft import get_peft_model

    base = peft_model.get_base_model()
    with torch.device("meta"):
        fresh = type(base)(copy.deepcopy(base.config))
    # Keep the trained dtype (a bf16 run exports bf16), not the float32 the constructor picks.
    dtype = next(t.dtype for t in state_dict.values() if t.is_floating_point())
    fresh.to_empty(device="cpu").to(dtype)
    fresh.tie_weights()  # to_empty unties shared parameters
    adapter = peft_model.active_adapter
    fresh = get_peft_model(fresh, copy.deepcopy(peft_model.peft_config[adapter]), adapter_name=adapter)
    _load_full_state_dict(fresh, state_dict)
    return fresh.merge_and_unload()


def _load_full_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """load_state_dict that tolerates only missing keys whose tensor is tied to a loaded one."""
    result = model.load_state_dict(state_dict, strict=False)
    params = dict(model.state_dict())
    loaded_ptrs = {params[k].data_ptr() for k in state_dict if k in params}
    untied_missing = [k for k in result.missing_keys if params[k].data_ptr() not in loaded_ptrs]
    if untied_missing or result.unexpected_keys:
        raise CheckpointError(
            f"state dict does not fit the model (missing {untied_missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )


def export_hf(accelerator, model, tokenizer, out_dir: str | Path, merge_lora: bool = True) -> Path:
    """Write a consolidated HF folder (config, safetensors, tokenizer) that from_pretrained loads.

    Call it on every rank: the full state dict is gathered (ZeRO-3 shards included) and the main
    process writes. A peft model is exported merged into a plain model by default; with
    merge_lora=False the folder holds the adapter (peft format), which from_pretrained also loads
    when peft is installed and the base model is reachable.
    """
    out_dir = Path(out_dir)
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        out_dir.mkdir(parents=True, exist_ok=True)
        if is_peft_model(unwrapped) and merge_lora:
            _merged_peft_copy(unwrapped, state_dict).save_pretrained(str(out_dir))
        else:
            unwrapped.save_pretrained(str(out_dir), state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(out_dir))
    accelerator.wait_for_everyone()
    return out_dir
