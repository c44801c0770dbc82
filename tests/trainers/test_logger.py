"""RunLogger (JSONL, TensorBoard, console, PNG, rank gating) and plots.py (panels, edge cases)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from align.telemetry.logger import RunLogger
from align.telemetry.plots import default_panels, metric_series, moving_average, plot_metrics, read_metrics
from align.telemetry.report import Signal


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


def _series(keys, constant=()):
    return {k: ([0, 1, 2], [1.0, 1.0, 1.0] if k in constant else [0.0, 0.5, 1.0]) for k in keys}


def test_default_panels_lead_with_held_out_accuracy_then_declared_signals_and_drop_constant_curves():
    keys = [
        "lr", "time/step", "reward/format/mean", "reward/mean", "reward/std", "gcpo/acc_with_aux", "loss",
        "kl", "clip_frac/low", "clip_frac/high", "completion_len/mean", "completion_len/max",
        "tokens_per_s/generate", "sync/probe_diff", "weight_version", "eval/mean@1", "eval/pass@1",
        "eval/third_angle/mean@1", "eval/supplement/mean@1", "eval/aux_helps/no/aux_construction/rate",
        "gcpo/mask_pos", "gcpo/mask_neg", "entropy",
    ]
    signals = (Signal("eval/aux_helps/no/aux_construction/rate", "aux where it hurts", "aux use"),
               Signal("gcpo/mask_pos", "mask +1", "mask"), Signal("gcpo/mask_neg", "mask -1", "mask"),
               Signal("gcpo/absent", "never logged", "mask"))
    flat_accuracy = default_panels(_series(["eval/mean@1", "eval/supplement/mean@1", "loss"],
                                           constant={"eval/mean@1", "eval/supplement/mean@1"}))
    assert flat_accuracy == [("held-out accuracy", ["eval/mean@1"]), ("loss", ["loss"])]  # a flat result is shown
    panels = default_panels(_series(keys, constant={"kl", "clip_frac/low", "clip_frac/high"}), signals)
    assert panels == [
        ("held-out accuracy", ["eval/mean@1"]),  # pass@1 = mean@1: not drawn twice
        ("held-out accuracy per group", ["eval/supplement/mean@1", "eval/third_angle/mean@1"]),
        ("reward (training batch)", ["reward/format/mean", "reward/mean"]),
        ("aux use", ["eval/aux_helps/no/aux_construction/rate"]),
        ("mask", ["gcpo/mask_pos", "gcpo/mask_neg"]),
        ("completion length", ["completion_len/mean"]),
        ("throughput (tokens/s)", ["tokens_per_s/generate"]),
        ("loss", ["loss"]),
        ("entropy", ["entropy"]),
    ]  # constant KL and clip fractions are gone; gcpo/acc_with_aux is not declared here: not drawn


def test_moving_average_is_trailing():
    assert moving_average([0.0, 2.0, 4.0, 6.0], 2) == [0.0, 1.0, 3.0, 5.0]


def test_signal_labels_reach_the_plot_and_smoothing_draws_more(tmp_path):
    path = tmp_path / "m.jsonl"
    rng = np.random.default_rng(0)
    path.write_text("".join(json.dumps({"step": s, "reward/mean": float(rng.random()), "gcpo/mask_neg": float(s % 3)})
                            + "\n" for s in range(1, 40)))
    plain = plot_metrics(path, tmp_path / "plain.png")
    with_signal = plot_metrics(path, tmp_path / "signal.png", signals=(Signal("gcpo/mask_neg", "mask -1", "mask"),))
    assert _png_size(with_signal)[0] > _png_size(plain)[0]  # the declared signal adds a panel


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


# --------------------------------------------------------------------------------- report.py
def test_console_tables_at_each_evaluation_and_a_before_after_summary(tmp_path, capsys):
    signals = (Signal("eval/aux_helps/no/aux_construction/rate", "aux use where it hurts", "aux"),
               Signal("gcpo/mask_neg", "groups where aux cost", "mask"),
               Signal("gcpo/never_logged", "absent signal", "mask"))
    logger = RunLogger(tmp_path, 4, tensorboard=True, console=True, signals=signals)

    def evaluation(acc, third, hurts):
        return {"eval/mean@1": acc, "eval/pass@1": acc, "eval/third_angle/mean@1": third,
                "eval/supplement/mean@1": 0.5, "eval/aux_helps/no/aux_construction/rate": hurts}

    logger.log(0, evaluation(0.125, 0.0, 0.25))
    for step, neg in zip(range(1, 5), [4.0, 2.0, 1.0, 0.0]):
        logger.log(step, {"loss": 1.0, "gcpo/mask_neg": neg})
        if step == 2:
            logger.log(2, evaluation(0.25, 0.125, 0.125))
    logger.log(4, evaluation(0.5, 0.375, 0.0))
    logger.close()
    out = capsys.readouterr().out
    at_2 = out[out.index("held-out evaluation at step 2"):out.index("held-out evaluation at step 4")]
    assert "held-out accuracy (mean@1)" in at_2 and "third_angle" in at_2 and "supplement" in at_2
    assert _row(at_2, "held-out accuracy") == ["0.125", "0.250", "+0.125"]
    assert _row(at_2, "third_angle") == ["0.000", "0.125", "+0.125"]
    assert _row(at_2, "aux use where it hurts") == ["0.250", "0.125", "-0.125"]
    assert _row(at_2, "groups where aux cost") == ["3.000", "3.000", "+0.000"]  # mean of steps 1-2
    assert "absent signal" not in out  # a declared signal that was never logged is left out
    summary = out[out.index("what the run learned (step 0 -> step 4)"):]
    assert _row(summary, "held-out accuracy") == ["0.125", "0.500", "+0.375"]
    assert _row(summary, "groups where aux cost") == ["3.000", "0.500", "-2.500"]  # steps 1-2 vs 3-4
    assert f"run folder: {tmp_path}" in summary and str(tmp_path / "metrics.png") in summary
    assert f"tensorboard --logdir {tmp_path / 'tb'}" in summary


def _row(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if label in line)
    return line.split(label, 1)[1].split()[-3:]


def test_no_evaluation_no_table(tmp_path, capsys):
    logger = RunLogger(tmp_path, 2, tensorboard=False, console=True)
    logger.log(1, {"loss": 1.0})
    logger.close()
    out = capsys.readouterr().out
    assert "held-out" not in out and "what the run learned" not in out and "run folder:" in out


def test_a_resumed_run_summarises_from_the_first_evaluation_of_the_whole_run(tmp_path, capsys):
    first = RunLogger(tmp_path, 6, tensorboard=False, console=False)
    first.log(0, {"eval/mean@1": 0.125})
    first.log(1, {"loss": 1.0})
    first.log(2, {"loss": 1.0})
    first.log(2, {"eval/mean@1": 0.25})
    first.log(3, {"loss": 1.0})
    first.log(3, {"eval/mean@1": 0.9})  # crash after this: the resume redoes step 3 from the step-2 checkpoint
    first.close()
    capsys.readouterr()
    resumed = RunLogger(tmp_path, 6, tensorboard=False, console=True)
    resumed.log(3, {"loss": 1.0})
    resumed.log(4, {"loss": 1.0})
    resumed.log(4, {"eval/mean@1": 0.5})
    resumed.close()
    summary = capsys.readouterr().out.split("what the run learned")[1]
    assert summary.startswith(" (step 0 -> step 4)")
    assert _row(summary, "held-out accuracy") == ["0.125", "0.500", "+0.375"]
    assert [s for s, _ in resumed._history] == [0, 1, 2, 2, 3, 4, 4]  # the crashed run's step 3 is gone


def test_resume_drops_the_rows_after_the_checkpoint_so_no_step_is_logged_twice(tmp_path):
    # The crashed run logged steps 1-4 but saved its last checkpoint at step 2: the resumed run redoes 3 and 4.
    crashed = RunLogger(tmp_path, 10, tensorboard=False, console=False)
    for step, metrics in enumerate(_steps(4), start=1):
        crashed.log(step, metrics)
    crashed._metrics_file.write('{"step": 5, "ti')  # and died mid-line
    crashed._metrics_file.close()
    resumed = RunLogger(tmp_path, 10, tensorboard=False, console=False)
    resumed.resume_from(2)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    for step in (3, 4):
        resumed.log(step, {"loss": 0.5})
    resumed.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # every line is JSON, each step once


def test_non_finite_metrics_are_written_as_null_and_read_back_as_nan(tmp_path):
    logger = RunLogger(tmp_path, 10, tensorboard=False, console=False)
    logger.log(1, {"loss": float("nan"), "kl": float("inf"), "reward/mean": 0.5})
    logger.close()

    def strict(constant):  # what a JSON parser other than Python's (jq, JavaScript, pandas' ujson) does
        raise ValueError(f"{constant} is not JSON")

    line = (tmp_path / "metrics.jsonl").read_text().splitlines()[0]
    record = json.loads(line, parse_constant=strict)
    assert record["loss"] is None and record["kl"] is None and record["reward/mean"] == 0.5
    read = read_metrics(tmp_path / "metrics.jsonl")[0]  # the repo's reader: null is the NaN it stood for
    assert np.isnan(read["loss"]) and np.isnan(read["kl"]) and read["reward/mean"] == 0.5
    assert "loss" not in metric_series(read_metrics(tmp_path / "metrics.jsonl"))
    RunLogger(tmp_path, 10, tensorboard=False, console=False).close()  # a resumed run reads it back
