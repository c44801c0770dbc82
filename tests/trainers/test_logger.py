"""RunLogger (JSONL, TensorBoard, console, PNG, rank gating) and plots.py (panels, edge cases)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from align.trainers.logger import RunLogger
from align.trainers.plots import default_keys, metric_series, plot_metrics, read_metrics


def _steps(n: int) -> list[dict[str, float]]:
    return [
        {"reward/mean": 0.1 * s, "loss": 1.0 / s, "tokens_per_s/generate": 800.0 + s, "kl": 0.01 * s}
        for s in range(1, n + 1)
    ]


def _png_size(path) -> tuple[int, int]:
    height, width = imread(str(path)).shape[:2]
    return width, height


def test_log_appends_flushed_jsonl_lines(tmp_path):
    logger = RunLogger(tmp_path, 10, tensorboard=False, console=False)
    logger.log(1, {"reward/mean": 0.5, "loss": torch.tensor(0.25), "count": np.int64(3), "acc/empty": None})
    # readable before close: a crashed run keeps every logged step
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["step"] == 1 and record["reward/mean"] == 0.5 and record["loss"] == 0.25 and record["count"] == 3.0
    assert isinstance(record["time"], float) and "acc/empty" not in record
    logger.log(2, {"reward/mean": 0.75})
    logger.close()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_non_numeric_metric_is_a_one_line_error(tmp_path):
    logger = RunLogger(tmp_path, 10, tensorboard=False, console=False)
    with pytest.raises(TypeError) as err:
        logger.log(1, {"reward/mean": 0.5, "note": "hello"})
    assert "'note'" in str(err.value) and "\n" not in str(err.value)
    logger.close()


def test_tensorboard_events_hold_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = RunLogger(tmp_path, 5, tensorboard=True, console=False)
    for step, metrics in enumerate(_steps(3), start=1):
        logger.log(step, metrics)
    logger.close()
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    rewards = acc.Scalars("reward/mean")
    assert [e.step for e in rewards] == [1, 2, 3]
    assert [e.value for e in rewards] == pytest.approx([0.1, 0.2, 0.3])


def test_console_lines_samples_and_png(tmp_path, capsys):
    logger = RunLogger(tmp_path, 4, tensorboard=False, console=True)
    logger.print_config("model: tiny\ntrain:\n  lr: 1.0e-05\n")
    logger.print("resumed from [step 3]")  # brackets must not be eaten as rich markup
    for step, metrics in enumerate(_steps(4), start=1):
        logger.log(step, metrics)
    logger.log_samples(4, [
        {"prompt": "Q" * 100 + "tail-xyz", "completion": "<answer>4</answer>", "reward": 1.0},
        {"prompt": "short", "completion": "x" * 500, "reward": 0.0, "extra": {"a": 1}},
    ])
    logger.close()
    out = capsys.readouterr().out
    assert "lr: 1.0e-05" in out and "resumed from [step 3]" in out
    # output is not a terminal here: one plain line per log, with the key metrics and an ETA
    assert "step 4/4  reward 0.4  loss 0.25  tok/s 804" in out
    assert "eta 0:00:00" in out
    assert "samples at step 4" in out and "tail-xyz" in out and "<answer>4</answer>" in out
    assert "Q" * 100 not in out  # the prompt is cut to its tail

    samples = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [4, 4] and samples[1]["completion"] == "x" * 500
    assert samples[1]["extra"] == {"a": 1}
    width, height = _png_size(tmp_path / "metrics.png")
    assert width > 1000 and height > 200  # a 3-column grid of 4 panels, not the placeholder


def test_live_bar_on_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats captured stdout as a terminal
    monkeypatch.delenv("NO_COLOR", raising=False)
    logger = RunLogger(tmp_path, 3, tensorboard=False, console=True)
    for step, metrics in enumerate(_steps(3), start=1):
        logger.log(step, metrics)
    logger.close()
    out = capsys.readouterr().out
    assert "3/3" in out and "reward 0.3" in out and "tok/s 803" in out
    assert "step 3/3" not in out  # no plain lines when the bar is live


def test_resume_mid_run_counts_eta_from_the_resume_point(tmp_path):
    logger = RunLogger(tmp_path, 100, tensorboard=False, console=False)
    logger.log(50, {"loss": 1.0})
    task = logger._progress.tasks[0]
    assert task.completed == 50 and task.speed is None  # the jump 0 -> 50 is not a speed sample
    logger.close()


def test_non_main_rank_is_a_no_op(tmp_path, capsys):
    run_dir = tmp_path / "rank1"
    logger = RunLogger(run_dir, 10, is_main=False)
    logger.print_config("a: 1")
    logger.print("hello")
    logger.log(1, {"loss": 1.0, "bad": "not a number"})
    logger.log_samples(1, [{"prompt": "p", "completion": "c", "reward": 1.0}])
    logger.close()
    assert not run_dir.exists()
    assert capsys.readouterr().out == ""


def test_console_off_still_prints_messages(tmp_path, capsys):
    logger = RunLogger(tmp_path, 10, tensorboard=False, console=False)
    logger.print("resumed from step 3")
    logger.log(1, {"loss": 1.0})
    logger.log_samples(1, [{"prompt": "p", "completion": "c", "reward": 1.0}])
    logger.close()
    logger.close()  # idempotent
    logger.log(2, {"loss": 0.5})  # after close: ignored, not a crash
    assert capsys.readouterr().out == "resumed from step 3\n"
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


# --------------------------------------------------------------------------------- plots.py
def test_plot_empty_missing_and_torn_files_write_a_placeholder(tmp_path):
    placeholder = _png_size(plot_metrics(tmp_path / "absent.jsonl", tmp_path / "a.png"))
    (tmp_path / "empty.jsonl").write_text("")
    assert _png_size(plot_metrics(tmp_path / "empty.jsonl", tmp_path / "b.png")) == placeholder
    (tmp_path / "torn.jsonl").write_text('{"step": 1, "time": 0.0}\n{"step": 2, "loss": 0.')
    assert _png_size(plot_metrics(tmp_path / "torn.jsonl", tmp_path / "c.png")) == placeholder
    assert read_metrics(tmp_path / "torn.jsonl") == [{"step": 1, "time": 0.0}]

    (tmp_path / "one.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    single = _png_size(plot_metrics(tmp_path / "one.jsonl", tmp_path / "d.png"))
    assert single != placeholder
    # asked-for keys that were never logged: placeholder, not an error
    assert _png_size(plot_metrics(tmp_path / "one.jsonl", tmp_path / "e.png", keys=["kl"])) == placeholder


def test_plot_panels_follow_keys(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"step": s, **m}) + "\n" for s, m in enumerate(_steps(5), start=1)))
    one = _png_size(plot_metrics(path, tmp_path / "one.png", keys=["loss", "absent"]))
    two = _png_size(plot_metrics(path, tmp_path / "two.png", keys=["loss", "kl"]))
    assert two[0] > one[0] and two[1] == one[1]


def test_default_keys_pick_the_main_curves_in_order():
    keys = [
        "lr", "time/step", "reward/format", "reward/mean", "reward/std", "gcpo/acc_with_aux", "loss",
        "kl", "clip_frac/low", "clip_frac/high", "completion_len/mean", "completion_len/max",
        "tokens_per_s/generate", "sync/probe_diff", "weight_version",
    ]
    assert default_keys(keys) == [
        "reward/mean", "gcpo/acc_with_aux", "loss", "kl", "clip_frac/high", "clip_frac/low",
        "completion_len/mean", "tokens_per_s/generate", "sync/probe_diff",
    ]


def test_metric_series_after_resume_drops_the_redone_steps():
    records = [
        {"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}, {"step": 2, "eval/acc": 0.5},
        {"step": 3, "loss": 3.0, "note": "text", "bad": float("nan")}, {"step": 4, "loss": 4.0},
        # crash, resume from the step-2 checkpoint: steps 3.. are redone
        {"step": 3, "loss": 30.0},
    ]
    series = metric_series(records)
    assert series["loss"] == ([1, 2, 3], [1.0, 2.0, 30.0])
    assert series["eval/acc"] == ([2], [0.5])
    assert "note" not in series and "bad" not in series and "time" not in series
