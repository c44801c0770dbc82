"""Experiment trackers (`log.report_to`): Weights & Biases, trackio and MLflow through accelerate's
tracker API (`Accelerator(log_with=...)`, `init_trackers`, `log`, `get_tracker`, `end_training`).

Each gets the resolved config as the run's config (flat keys as on the command line: `train.lr`),
every metric at its step, and the sample table (one row per completion: prompt, completion, reward,
advantage, each reward function's score). The run's name is its folder (`log.run_dir`), its project
`log.project`. Offline by default and under the run folder, so a run needs no account, no network,
and writes nothing to $HOME:

    wandb    run_dir/wandb/offline-run-*/   WANDB_MODE=offline unless WANDB_MODE is set (`wandb sync` uploads it)
    trackio  run_dir/trackio/<project>.db   TRACKIO_DIR unless set (`trackio show` reads it there)
    mlflow   run_dir/mlruns/                a file store unless MLFLOW_TRACKING_URI is set (`mlflow ui --backend-store-uri`)

TensorBoard (`tensorboard` in log.report_to) stays RunLogger's own writer in run_dir/tb:
accelerate's TensorBoard tracker needs its folder when the Accelerator is built, before the run
folder is known (resolve_run_dir agrees on it through the Accelerator), and would nest the events
under the project name. The packages are optional (`pip install 'align[trackers]'`); a missing one
is a one-line error before any model loads.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Any

from align.config import Config, ConfigError

# report_to name -> (module, what to pip install). tensorboard is a core dependency.
PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb==0.31.0"),
    "trackio": ("trackio", "trackio==0.43.0"),
    "mlflow": ("mlflow", "mlflow-skinny==3.18.0"),
}
THROUGH_ACCELERATE = ("wandb", "trackio", "mlflow")
SAMPLES = "samples"  # the table's name in each tracker (MLflow: the artifact samples.json)

# Environment variables this process set itself: a later run in the same process may set them
# again, while a value the user set is never touched.
_SET_HERE: dict[str, str] = {}


def accelerate_log_with(report_to: list[str]) -> list[str] | None:
    """The `log_with` of the run's Accelerator: the trackers accelerate drives (None: none).

    Raises a one-line ConfigError naming the install command when a tracker's package is missing
    (accelerate itself would drop the tracker silently). Called at the start of a run: MLflow's
    switches are set here, before anything imports mlflow (DeepSpeed does, when it is installed)."""
    for name in report_to:
        module, package = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"log.report_to={name} needs the {module} package, which is not installed: "
                              f"pip install 'align[trackers]' (or pip install {package})")
    if "mlflow" in report_to and not _user_set("MLFLOW_TRACKING_URI"):  # align's file store (set in _offline_defaults)
        _default_env("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
        _default_env("MLFLOW_DISABLE_TELEMETRY", "true")  # a local store: no usage reports either
    names = [name for name in THROUGH_ACCELERATE if name in report_to]
    return names or None


def run_config(cfg: Config) -> dict[str, Any]:
    """The resolved config as flat `section.key` -> value (what a tracker shows as the run's config)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = list(value) if isinstance(value, tuple) else value

    walk(dataclasses.asdict(cfg), "")
    return flat


def sample_table(step: int, samples: list[dict]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the sample table: one row per completion (samples.py's groups, or one
    completion per sample as other sources log them)."""
    functions = sorted({name for s in samples for c in s.get("completions", ()) for name in c.get("rewards", {})})
    columns = ["step", "prompt", "completion", "reward", "advantage", *(f"reward/{f}" for f in functions), "answer"]
    rows = []
    for sample in samples:
        answer = str(sample.get("answer", ""))
        for c in sample.get("completions") or [{"text": sample.get("completion", ""), "reward": sample.get("reward"),
                                                 "advantage": sample.get("advantage")}]:
            per_function = c.get("rewards", {})
            rows.append([step, str(sample.get("prompt", "")), str(c.get("text", "")), _number(c.get("reward")),
                         _number(c.get("advantage")), *(_number(per_function.get(f)) for f in functions), answer])
    return columns, rows


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _user_set(name: str) -> bool:
    return name in os.environ and os.environ[name] != _SET_HERE.get(name)


def _default_env(name: str, value: str) -> bool:
    """Set an environment variable unless the user has; True when align's value is in force."""
    if _user_set(name):
        return False
    os.environ[name] = _SET_HERE[name] = value
    return True


def _offline_defaults(names: list[str], run_dir: Path) -> None:
    """Offline, under the run folder, unless the environment says otherwise (read by each package
    when it starts, so set before accelerate imports it)."""
    if "wandb" in names and _default_env("WANDB_MODE", "offline"):
        # wandb-core's logs and the staging of tables would otherwise go to ~/.cache and ~/.local/share.
        _default_env("WANDB_CACHE_DIR", str(run_dir / "wandb" / "cache"))
        _default_env("WANDB_DATA_DIR", str(run_dir / "wandb" / "data"))
    if "trackio" in names:
        # trackio reads TRACKIO_DIR once, when first imported: one store per process.
        _default_env("TRACKIO_DIR", str(run_dir / "trackio"))
    if "mlflow" in names:
        _default_env("MLFLOW_TRACKING_URI", (run_dir / "mlruns").as_uri())


class ExperimentTrackers:
    """The run's trackers on accelerate: started with the run's config; `log` and `log_samples` at a
    step; `finish` once (RunLogger.close calls it; accelerator.end_training() finishing them again is harmless).

    Only the main process writes (accelerate's trackers act on rank 0); RunLogger calls these there.
    """

    def __init__(self, accelerator, cfg: Config, run_dir: str | Path) -> None:
        self.accelerator = accelerator
        self.names = list(accelerate_log_with(cfg.log.report_to) or ())
        self.finished = not self.names
        if not self.names:
            return
        given = [str(tracker) for tracker in accelerator.log_with]
        if sorted(given) != sorted(self.names):
            raise ValueError(f"log.report_to asks for {self.names}, but the Accelerator was built with "
                             f"log_with={given}; build it with log_with=accelerate_log_with(cfg.log.report_to)")
        run_dir = Path(run_dir).resolve()
        if accelerator.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)  # W&B's dir must exist
        _offline_defaults(self.names, run_dir)
        name = str(cfg.log.run_dir or run_dir)
        accelerator.init_trackers(cfg.log.project, config=run_config(cfg), init_kwargs={
            "wandb": {"name": name, "dir": str(run_dir)},
            "trackio": {"name": name},
            "mlflow": {"run_name": name},
        })

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.finished:
            self.accelerator.log(values, step=step)

    def log_samples(self, step: int, samples: list[dict]) -> None:
        if self.finished or not samples:
            return
        columns, rows = sample_table(step, samples)
        for name in self.names:
            tracker = self.accelerator.get_tracker(name)
            if name == "wandb":
                tracker.log_table(SAMPLES, columns=columns, data=rows, step=step)
            elif name == "trackio":
                import trackio

                tracker.log({SAMPLES: trackio.Table(columns=columns, data=rows)}, step=step)
            elif name == "mlflow":  # one table artifact; each call appends its rows (the step is a column)
                import mlflow

                table = {column: [row[i] for row in rows] for i, column in enumerate(columns)}
                mlflow.log_table(table, artifact_file=f"{SAMPLES}.json", run_id=tracker.tracker.info.run_id)

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        for name in self.names:
            self.accelerator.get_tracker(name).finish()
