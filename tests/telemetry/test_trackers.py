"""log.report_to: Weights & Biases, trackio and MLflow through accelerate's tracker API, offline
and under the run folder. One real two-step run writes to all three; each test reads back what its
tracker wrote (W&B's offline run file, trackio's sqlite store, MLflow's file store) and compares it
with metrics.jsonl, samples.jsonl and the resolved config."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from align.config import ConfigError, aliases
from align.algorithms import load_config
from align.telemetry.trackers import accelerate_log_with, sample_table
from tests.trainers.in_process import make_trainer

ROOT = Path(__file__).resolve().parents[2]
LR = 0.0007  # a value no default has: the trackers' config must hold it
PROJECT = "align-trackers-test"
RUN = ["recipe=grpo_math", "train.batch_size=8", "rollout.num_generations=4", "rollout.max_tokens=8",
       "data.options.size=16", "train.steps=2", "log.sample_every=1", "log.num_samples=1", "log.save_every=0",
       "log.console=false", "rollout.engine=hf", f"train.lr={LR}", f"log.project={PROJECT}"]
TRACKER_ENV = ("WANDB_", "TRACKIO_", "MLFLOW_", "DO_NOT_TRACK")


def launch(cache_dir: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """`python align/train.py` with no tracker settings in the environment and $HOME in tmp/home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(TRACKER_ENV)}
    env |= {"HF_HUB_OFFLINE": "1", "HOME": str(tmp / "home")}
    (tmp / "home").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "align/train.py", *RUN, f"model.cache_dir={cache_dir}", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run(cache_dir, tmp_path_factory) -> Path:
    for module in ("wandb", "trackio", "mlflow"):
        pytest.importorskip(module, reason=f"{module} is in requirements/cpu-lock.txt and align[trackers]")
    tmp = tmp_path_factory.mktemp("trackers")
    run_dir = tmp / "run"
    proc = launch(cache_dir, tmp, "log.report_to=[wandb,trackio,mlflow]", f"log.run_dir={run_dir}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return run_dir


def metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """metrics.jsonl: step -> the numbers logged at it (every log() call at that step)."""
    out: dict[int, dict[str, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.setdefault(row.pop("step"), {}).update({k: v for k, v in row.items() if k != "time"})
    return out


def samples(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def same(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) if isinstance(a, float) and math.isnan(a) else a == pytest.approx(b, rel=1e-6)


def test_nothing_is_written_to_home_and_each_tracker_writes_under_the_run_folder(run):
    home = run.parent / "home"
    assert not [p for p in home.rglob("*") if any(name in str(p).lower() for name in ("wandb", "trackio", "mlflow"))]
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (run / "trackio" / f"{PROJECT}.db").exists()
    assert (run / "mlruns").is_dir()
    assert not (run / "tb").exists()  # tensorboard is not in this run's log.report_to


# ------------------------------------------------------------------------------------------ W&B
def wandb_records(path: Path):
    """The protobuf records of a W&B transaction log (run-*.wandb): a 7-byte header (":W&B", magic,
    version), then LevelDB's log format (32 KiB blocks; each chunk: crc32, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record
        elif kind == 0:
            pending = b""


@pytest.fixture(scope="module")
def wandb_run(run) -> dict:
    [path] = (run / "wandb").glob("offline-run-*/run-*.wandb")
    out = {"config": {}, "history": {}, "folder": path.parent}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["name"], out["project"] = record.run.display_name, record.run.project
        elif kind == "config":
            out["config"] |= {item.key: json.loads(item.value_json) for item in record.config.update}
        elif kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            out["history"].setdefault(row["_step"], {}).update(row)
    return out


def test_wandb_offline_run_holds_config_metrics_at_their_steps_and_the_sample_table(run, wandb_run):
    assert (wandb_run["name"], wandb_run["project"]) == (str(run), PROJECT)
    assert wandb_run["config"]["train.lr"] == LR and wandb_run["config"]["log.report_to"] == ["wandb", "trackio", "mlflow"]
    logged = metrics(run)
    assert sorted(wandb_run["history"]) == sorted(logged) == [1, 2]
    for step, values in logged.items():
        for key, value in values.items():
            assert same(wandb_run["history"][step][key], value), (step, key)
    # the table: a file the history row points to, one row per completion of the logged prompt
    for step in (1, 2):
        cell = wandb_run["history"][step]
        assert cell["samples/_type"] == "table-file"
        table = json.loads((wandb_run["folder"] / "files" / cell["samples/path"]).read_text())
        columns, rows = sample_table(step, [s for s in samples(run) if s["step"] == step])
        assert table["columns"] == columns and len(table["data"]) == 4
        assert [r[:5] for r in table["data"]] == [r[:5] for r in rows]


# -------------------------------------------------------------------------------------- trackio
def test_trackio_local_store_holds_config_metrics_at_their_steps_and_the_sample_table(run):
    db = sqlite3.connect(run / "trackio" / f"{PROJECT}.db")
    db.row_factory = sqlite3.Row
    [config] = [json.loads(r["config"]) for r in db.execute("SELECT * FROM configs WHERE run_name = ?", (str(run),))]
    assert config["train.lr"] == LR and config["log.project"] == PROJECT
    rows: dict[int, dict] = {}
    for r in db.execute("SELECT step, metrics FROM metrics WHERE run_name = ?", (str(run),)):
        rows.setdefault(r["step"], {}).update(json.loads(r["metrics"]))
    logged = metrics(run)
    assert sorted(rows) == sorted(logged) == [1, 2]
    for step, values in logged.items():
        for key, value in values.items():
            assert same(rows[step][key], value), (step, key)
        table = rows[step]["samples"]
        assert table["_type"] == "trackio.table"
        columns, expected = sample_table(step, [s for s in samples(run) if s["step"] == step])
        assert [[row[c] for c in columns[:5]] for row in table["_value"]] == [r[:5] for r in expected]


# --------------------------------------------------------------------------------------- MLflow
def test_mlflow_file_store_holds_params_metric_histories_and_the_sample_table(run, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    experiment = client.get_experiment_by_name(PROJECT)
    [mlrun] = client.search_runs([experiment.experiment_id])
    assert mlrun.info.run_name == str(run) and mlrun.info.status == "FINISHED"
    assert float(mlrun.data.params["train.lr"]) == LR
    logged = metrics(run)
    for key in logged[1]:
        history = {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, key)}
        assert sorted(history) == [1, 2], key
        for step in (1, 2):
            assert same(history[step], float(logged[step][key])), (step, key)
    table = json.loads(Path(client.download_artifacts(mlrun.info.run_id, "samples.json", str(tmp_path))).read_text())
    columns, expected = sample_table(1, [s for s in samples(run) if s["step"] == 1])
    assert table["columns"] == columns and len(table["data"]) == 8  # appended: 4 completions x 2 steps
    assert [r[1:5] for r in table["data"][:4]] == [r[1:5] for r in expected]
    assert [r[0] for r in table["data"]] == [1] * 4 + [2] * 4


# ----------------------------------------------------------------------------- none, missing, names
def test_report_to_empty_writes_no_tracker(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    trainer = make_trainer(cache_dir, run_dir, "log.report_to=none", "train.steps=1", "log.sample_every=1",
                           "log.save_every=0")
    trainer.train()
    assert trainer.acc.trackers == [] and trainer.logger.trackers.names == []
    assert (run_dir / "metrics.jsonl").exists()
    assert not [p.name for p in run_dir.iterdir() if p.name in ("tb", "wandb", "trackio", "mlruns")]


@pytest.mark.parametrize("name, module, package", [("wandb", "wandb", "wandb"), ("trackio", "trackio", "trackio"),
                                                    ("mlflow", "mlflow", "mlflow-skinny")])
def test_a_missing_tracker_package_is_one_line_naming_the_install(name, module, package, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ConfigError, match=rf"pip install 'align\[trackers\]' \(or pip install {package}==") as err:
        accelerate_log_with(["tensorboard", name])
    assert "\n" not in str(err.value) and f"log.report_to={name}" in str(err.value)


def test_a_missing_tracker_package_stops_the_run_before_any_model_loads(cache_dir, tmp_path):
    code = ("import runpy, sys; sys.modules['wandb'] = None; sys.argv = ['align/train.py', *sys.argv[1:]]; "
            "runpy.run_path('align/train.py', run_name='__main__')")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *RUN, f"model.cache_dir={cache_dir}", "log.report_to=[wandb]",
                           f"log.run_dir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "align: error: log.report_to=wandb needs the wandb package, which is not installed: "
        "pip install 'align[trackers]' (or pip install wandb==0.31.0)"]


@pytest.fixture()
def fresh_announcements():
    aliases._announced.clear()
    yield
    aliases._announced.clear()


@pytest.mark.parametrize("args, expected", [
    ([], ["tensorboard"]),
    (["log.report_to=[]"], []), (["log.report_to=none"], []), (["log.report_to=wandb"], ["wandb"]),
    (["log.report_to=[wandb,mlflow]"], ["wandb", "mlflow"]),
    (["report_to=none"], []), (["report_to=trackio"], ["trackio"]), (["report_to=[wandb,tensorboard]"], ["wandb", "tensorboard"]),
    (["trainer.logger=[console,wandb]"], ["wandb"]), (["trainer.logger=[console,file]"], []),
])
def test_report_to_spellings_of_align_trl_and_verl(args, expected, fresh_announcements):
    assert load_config(args).log.report_to == expected


@pytest.mark.parametrize("arg, says", [
    ("log.report_to=[comet_ml]", "'comet_ml' is not a tracker here; choose any of tensorboard, wandb, trackio, mlflow"),
    ("report_to=all", "name the trackers"),
    ("log.tensorboard=false", "'log.tensorboard' is now log.report_to"),
    ("run_name=x", "its folder: log.run_dir"),
])
def test_report_to_errors_say_what_to_write(arg, says, fresh_announcements):
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("(", r"\(")):
        load_config([arg])


def test_project_names_are_log_project(fresh_announcements):
    assert load_config(["project=p1"]).log.project == "p1"
    assert load_config(["trainer.project_name=p2"]).log.project == "p2"
