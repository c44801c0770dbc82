"""`align launch align/train.py recipe=NAME key=value ...` (also `python -m align train ...`).

Reads the recipe and overrides into one typed Config, builds the accelerator (plain, DDP or
DeepSpeed ZeRO, as the launch config says), and runs the algorithm's trainer.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs, broadcast_object_list

from align.algorithms import algorithm_class, load_config, validate
from align.cli.usage import USAGE, full_help, help_section, wants_help
from align.config import Config, ConfigError, config_to_yaml
from align.runtime.distributed import check_deepspeed_json, fill_deepspeed_config
from align.runtime.precision import resolve_dtype
from align.runtime.threads import use_cpu_threads
from align.sources.preflight import checked_training_rows
from align.telemetry.trackers import accelerate_log_with
from align.training.loop import Trainer
from align.training.resume import check_resume, config_path


def make_accelerator(cfg: Config | None = None):
    """The Accelerator for this launch: plain, DDP, or DeepSpeed ZeRO as the launcher says.

    Under DeepSpeed (`accelerate launch --config_file launch/zero3.yaml ...`, or `--use_deepspeed`)
    the launch config's JSON is completed from `cfg` (clipping, precision, accumulation; see
    align.runtime.distributed.fill_deepspeed_config) and handed over as an explicit plugin.
    """
    # Several CPU processes talk over gloo (the default NCCL backend needs GPUs). WORLD_SIZE is
    # the launcher's (accelerate launch / torchrun) contract with every process it starts.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    handlers = [InitProcessGroupKwargs(backend="gloo")] if world > 1 and not torch.cuda.is_available() else []
    plugin = None
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if deepspeed and cfg is not None:
        check_deepspeed_json(os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"))
        launched = DeepSpeedPlugin()  # reads the launcher's DeepSpeed JSON / --zero_stage from the environment
        filled = fill_deepspeed_config(
            launched.deepspeed_config, max_grad_norm=cfg.train.max_grad_norm, dtype=resolve_dtype(cfg.model.dtype),
            batch_size=cfg.train.batch_size, world_size=world,
        )
        plugin = DeepSpeedPlugin(hf_ds_config=filled, zero3_init_flag=launched.zero3_init_flag)
    # Plain DDP on CPUs needs cpu=True (else accelerate sees no device backend and runs every process
    # as if alone: no DDP, no-op gathers). Never with DeepSpeed: cpu=True silently drops the plugin.
    multi_cpu = bool(handlers) and not deepspeed
    # step_scheduler_with_optimizer=False: accelerate otherwise steps a prepared scheduler once per
    # PROCESS per optimizer step (its convention for sharded dataloaders, which align does not use),
    # so with N ranks the schedule ran N times too fast.
    # Experiment trackers (log.report_to) go through accelerate's tracker API (align/telemetry/trackers.py).
    log_with = accelerate_log_with(cfg.log.report_to) if cfg is not None else None
    return Accelerator(cpu=multi_cpu, deepspeed_plugin=plugin, kwargs_handlers=handlers,
                       step_scheduler_with_optimizer=False, log_with=log_with)


def resolve_run_dir(cfg: Config, accelerator) -> Path:
    """log.run_dir, or runs/<recipe>/<time>; with resume=latest, the newest run that has a checkpoint."""
    if cfg.log.run_dir:
        return Path(cfg.log.run_dir)
    base = Path("runs") / (cfg.recipe or cfg.algo)
    if cfg.resume == "latest":
        runs = sorted(p for p in base.glob("*") if any(p.glob("checkpoints/step-*/trainer_state.json")))
        if runs:
            return runs[-1]
    stamp = [time.strftime("%Y%m%d-%H%M%S")]
    broadcast_object_list(stamp)  # every rank must agree on the folder
    return base / stamp[0]


def build_algorithm(cfg: Config):
    return algorithm_class(cfg.algo)(cfg)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # A crash in native code (a user reward's extension, a kernel) prints every thread's Python stack, so the
    # culprit is named even though nothing can be run after the signal; it costs nothing until then.
    faulthandler.enable()
    if wants_help(argv):
        print(full_help(help_section(argv), argv))
        return
    if not argv:  # a run needs at least a recipe: never start 100 steps on an untrained model by accident
        print(USAGE + "\n\n`python align/train.py --help` lists the recipes and every key.", file=sys.stderr)
        sys.exit(2)
    cfg = load_config(argv, int(os.environ.get("WORLD_SIZE", "1")))  # the launcher's process count
    accelerator = make_accelerator(cfg)
    validate(cfg, accelerator.num_processes)  # again, now that the number of processes is known
    # Before any engine or model exists: the launcher's OMP_NUM_THREADS (1 under accelerate launch) is not a choice.
    use_cpu_threads(cfg.train.cpu_threads, int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)))
    run_dir = resolve_run_dir(cfg, accelerator)
    cfg.log.run_dir = str(run_dir)  # the config printed and saved names the folder actually used
    say = print if accelerator.is_main_process else (lambda *a, **k: None)
    check_resume(cfg, run_dir, say)  # refuses a resume whose config changed, and a fresh run into an old folder
    rows = checked_training_rows(cfg, warn=say)  # every row, before anything is written
    accelerator.wait_for_everyone()  # every rank has looked at the folder before rank 0 writes into it
    if accelerator.is_main_process:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            config_path(run_dir).write_text(config_to_yaml(cfg))
        except OSError as error:
            raise ConfigError(
                f"log.run_dir={str(run_dir)!r} cannot be written ({error.strerror or error}); choose a writable log.run_dir"
            ) from error
    say(f"run folder: {run_dir}", flush=True)
    trainer = Trainer(cfg, accelerator, build_algorithm(cfg), run_dir, rows)
    try:
        trainer.train()
        trainer.export(run_dir / "final")
        accelerator.wait_for_everyone()
        say(f"run folder: {run_dir} (metrics.jsonl, samples.jsonl, checkpoints/, final/)", flush=True)
    finally:
        # Also after a failure: a rollout server keeps a trainer's transport until it is closed, and
        # would refuse the resumed run. The engine goes before end_training(): vLLM tears down the
        # process groups it created, and after end_training() destroyed them that prints a traceback.
        if trainer.engine is not None:  # offline rows without evaluation build no engine
            trainer.engine.close()
    accelerator.end_training()
