"""The step benchmarks run end to end at toy sizes, so they cannot rot between the runs that matter
(bench/gpu_w1.py on a lent GPU, bench/step_vs_trl.py on smollm2-135m-instruct)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module", autouse=True)
def bench_on_path():
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


def _check(result: dict, batch: int, max_tokens: int) -> None:
    s = result["summary"]
    for side in ("align", "trl"):
        assert len(result["rows"][side]) == 2  # warm-up + timed, alternating
        m = s[side]
        assert m["step"] > 0 and m["generate"] > 0 and m["train"] > 0
        assert 0 < m["completion_tokens"] <= batch * max_tokens
        assert m["train_fraction_of_peak"] > 0 and m["params"] > 0
    assert s["align"]["sync"] > 0 and s["trl"]["sync"] == 0  # align verifies a sync every step; TRL has none
    # same workload: same model and prompt lengths -> same parameter count, similar token counts
    assert s["align"]["params"] == s["trl"]["params"]
    assert s["align"]["step"] / s["trl"]["step"] == pytest.approx(s["align_over_trl_step"])


def test_gpu_w1_runs_at_a_tiny_shape_on_cpu(tmp_path):
    pytest.importorskip("trl")
    import gpu_w1

    out = tmp_path / "w1.json"
    gpu_w1.main(["--shape", "tiny", "--prompts", "2", "--G", "2", "--max-tokens", "4", "--prompt-len", "8",
                 "--steps", "1", "--warmup", "1", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    result = json.loads(out.read_text())
    _check(result, batch=4, max_tokens=4)
    # prompts are exactly --prompt-len tokens: 4 completions x (8 prompt + <= 4 completion) tokens per side
    for side in ("align", "trl"):
        m = result["summary"][side]
        assert m["tokens"] == 4 * 8 + m["completion_tokens"]


def test_step_vs_trl_runs_on_the_tiny_model(tmp_path, cache_dir):
    pytest.importorskip("trl")
    import step_vs_trl

    out = tmp_path / "cmp.json"
    step_vs_trl.main(["--model", "tiny", "--prompts", "2", "--G", "2", "--max-tokens", "4", "--steps", "1",
                      "--warmup", "1", "--align-engine", "hf", "--dataset-size", "16", "--cache-dir", cache_dir, "--out", str(out)])
    _check(json.loads(out.read_text()), batch=4, max_tokens=4)


def test_gpu_w1_learning_curve_path_runs(tmp_path, cache_dir):
    import gpu_w1

    out = tmp_path / "learn.json"
    result = gpu_w1.main(["--learn", "tiny", "--minutes", "0.01", "--eval-every", "1", "--workdir", str(tmp_path),
                          "--out", str(out), "--cache-dir", cache_dir, "--align-override", "rollout.max_tokens=4",
                          "train.batch_size=4", "rollout.num_generations=2", "data.options.size=8"])
    steps = [step for step, _ in result["curve"]]
    assert steps[0] == 0 and len(steps) >= 2  # the starting point and at least one evaluation after training
    assert json.loads(out.read_text())["gain_points"] == pytest.approx(result["gain_points"])


def _bench_module(name: str):
    """A learning benchmark imported as `bench.<name>`, as its sibling scripts import each other."""
    import importlib

    sys.path.insert(0, str(BENCH.parent))
    try:
        return importlib.import_module(f"bench.{name}")
    finally:
        sys.path.remove(str(BENCH.parent))


def test_offline_rows_are_resampled_from_the_current_warm_start(tmp_path, monkeypatch):
    """A rows file left by an earlier benchmark run came from whatever warm start was current then
    (version 3 rows were once reused under version 4): each run samples its own."""
    bench = _bench_module("learning_grao_copg")
    calls = []

    def fake_sample(cmd, **kwargs):
        calls.append(cmd)
        Path(cmd[cmd.index("--out") + 1]).write_text("fresh\n")

    monkeypatch.setattr(bench.subprocess, "run", fake_sample)
    stale = tmp_path / "rows.jsonl"
    stale.write_text("rows of an older warm start\n")
    assert bench.offline_rows(stale, 16, []) == stale
    assert len(calls) == 1 and "sample" in calls[0] and stale.read_text() == "fresh\n"


def test_gcpo_bench_reports_aux_use_as_unknown_when_the_run_did_not_score_it(tmp_path):
    """Plain GRPO scores no constructions: its aux use is unknown (None, printed n/a), not 0."""
    bench = _bench_module("learning_gcpo")

    def run(rows: list[dict]) -> dict:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        return bench.summarize(folder)

    evals = [{"step": 0, "eval/mean@1": 0.5}, {"step": 1, "loss": 0.0, "time/step": 1.0}, {"step": 1, "eval/mean@1": 0.6}]
    plain = run(evals)
    assert plain["acc_after"] == 0.6 and plain["aux_helps_before"] is None and plain["aux_hurts_after"] is None
    scored = run([{**r, "eval/aux_helps/yes/aux_construction/rate": 0.25} if "eval/mean@1" in r else r for r in evals])
    assert scored["aux_helps_before"] == 0.25


@pytest.mark.parametrize("script", ["learning_gcpo", "learning_grao_copg", "learning_salt", "learning_grao_unseen"])
def test_a_variant_is_one_more_run_of_the_first_algorithm_with_its_overrides(tmp_path, monkeypatch, script):
    """`--variant NAME=k=v,k=[a,b]` trains the first of --algos again with those overrides, under NAME,
    for every seed, and the table, JSON and plot carry it beside the others."""
    bench = _bench_module(script)
    first = {"learning_gcpo": "grpo", "learning_grao_copg": "grpo", "learning_salt": "grpo", "learning_grao_unseen": "grpo"}[script]
    trained = []

    def fake_train(recipe, seed, run_dir, extra, **kwargs):
        trained.append((run_dir.name, recipe, extra))

    curve = {"steps": 1, "train_seconds": 1.0, "curve": [(0, 0.1), (1, 0.2)]}
    summary = {"acc_before": 0.1, "acc_after": 0.2, "success_before": 0.1, "success_after": 0.2, "edges_per_group": 1.0,
               "sign_flip_frac": 0.0, "aux_helps_before": None, "aux_helps_after": None, "aux_hurts_before": None,
               "aux_hurts_after": None, **curve,
               # learning_grao_unseen's accuracy on the families the warm start never saw: their mean
               "per_family_before": {"rectangle_perimeter": {"acc": 0.0}, "exterior_angle": {"acc": 0.1}},
               "per_family_after": {"rectangle_perimeter": {"acc": 0.4}, "exterior_angle": {"acc": 0.6}}}
    monkeypatch.setattr(bench, "train", fake_train)
    monkeypatch.setattr(bench, "summarize", lambda run_dir: summary)
    out = tmp_path / "out.json"
    monkeypatch.setattr(sys, "argv", [script, "--algos", first, "--seeds", "0", "1", "--out", str(out),
                                      "--variant", "cispo=loss_type=cispo,epsilon_high=5.0",
                                      "--variant", "two=reward.functions=[a,b],train.lr=1e-3"])
    bench.main()
    recipe = next(r for name, r, _ in trained if name == f"{first}-seed0")
    by_run = {name: (r, extra) for name, r, extra in trained}
    for seed in (0, 1):
        assert by_run[f"cispo-seed{seed}"][0] == recipe
        assert by_run[f"cispo-seed{seed}"][1][-2:] == ["loss_type=cispo", "epsilon_high=5.0"]
        assert by_run[f"two-seed{seed}"][1][-2:] == ["reward.functions=[a,b]", "train.lr=1e-3"]
    results = json.loads(out.read_text())["results"]
    assert set(results) == {first, "cispo", "two"} and set(results["cispo"]) == {"0", "1"}
    assert out.with_suffix(".png").exists()
    if script == "learning_grao_unseen":
        assert results["cispo"]["0"]["unseen_before"] == pytest.approx(0.05)
        assert results["cispo"]["0"]["unseen_after"] == pytest.approx(0.5)


def test_a_malformed_variant_is_one_line():
    with_variants = _bench_module("_runs").with_variants
    runs = {"grpo": ("grpo_math", [])}
    for bad in ("cispo", "cispo=", "cispo=loss_type", "grpo=train.lr=1"):
        with pytest.raises(SystemExit, match="--variant"):
            with_variants(["grpo"], [bad], dict(runs))


def test_soak_samples_the_memory_of_every_step(tmp_path, cache_dir):
    import soak

    out = tmp_path / "soak.json"
    result = soak.main(["--steps", "5", "--warmup", "1", "--window", "2", "--run-dir", str(tmp_path / "run"), "--out", str(out),
                        f"model.cache_dir={cache_dir}", "rollout.engine=hf", "train.batch_size=8", "rollout.num_generations=4",
                        "log.eval_every=0", "log.report_to=[]"])
    peaks = {int(k): v for k, v in json.loads(out.read_text())["peak_rss_mib_per_step"].items()}
    assert sorted(peaks) == [1, 2, 3, 4, 5] and min(peaks.values()) > 100  # a trainer with torch loaded
    assert result["rss_mib_start"] == pytest.approx(sum(peaks[s] for s in (2, 3)) / 2)
    assert result["growth"] == pytest.approx(result["rss_mib_end"] / result["rss_mib_start"] - 1)


def test_the_rare_setting_trains_every_peer_from_the_rare_warm_start_and_merge_keeps_runs_written_beside_it(
        tmp_path, monkeypatch):
    """--setting rare: GCPO is recipe gcpo_rare, both GRPO peers run on tiny-geometry-rare (plain GRPO
    scores constructions at weight 0 only); with --merge, runs another process wrote into --out while
    this one trained stay in the file."""
    bench = _bench_module("learning_gcpo")
    out = tmp_path / "rare.json"
    trained = []

    def fake_train(recipe, seed, run_dir, extra, **kwargs):
        trained.append((run_dir.name, recipe, extra))
        beside = {"results": {"grpo_aux": {"0": {"acc_before": 0.5, "acc_after": 0.4, "curve": [(0, 0.5), (1, 0.4)]}}}}
        out.write_text(json.dumps(beside))  # the run beside this one saved meanwhile

    summary = {"steps": 1, "acc_before": 0.5, "acc_after": 0.6, "aux_helps_before": None, "aux_helps_after": None,
               "aux_hurts_before": None, "aux_hurts_after": None, "curve": [(0, 0.5), (1, 0.6)]}
    monkeypatch.setattr(bench, "train", fake_train)
    monkeypatch.setattr(bench, "summarize", lambda run_dir: summary)
    monkeypatch.setattr(sys, "argv", ["learning_gcpo", "--setting", "rare", "--algos", "gcpo", "grpo", "--seeds", "0",
                                      "--out", str(out), "--merge"])
    bench.main()
    runs = {name: (recipe, extra) for name, recipe, extra in trained}
    assert runs["gcpo-seed0"][0] == "gcpo_rare"
    assert "model.name=tiny-geometry-rare" in runs["grpo-seed0"][1] and "reward.weights=[1.0,0.5,0.0]" in runs["grpo-seed0"][1]
    assert set(json.loads(out.read_text())["results"]) == {"gcpo", "grpo", "grpo_aux"}


def test_the_gcpo_summary_reads_the_training_accuracy_either_algorithm_logs(tmp_path):
    bench = _bench_module("learning_gcpo")
    evals = [{"step": 0, "eval/mean@1": 0.5}, {"step": 1, "eval/mean@1": 0.6}]
    for key in ("reward/accuracy/mean", "reward/geometry_accuracy/mean"):  # GCPO's, GRPO's
        folder = tmp_path / key.replace("/", "_")
        folder.mkdir()
        rows = [*evals, {"step": 1, "loss": 0.0, key: 0.25}, {"step": 2, "loss": 0.0, key: 0.75}]
        (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        assert bench.summarize(folder)["train_acc_last20"] == 0.5


def test_the_smollm2_summary_reads_before_and_after_per_family_and_the_reward_trend(tmp_path):
    bench = _bench_module("learning_smollm2")
    step = {"loss": 0.0, "time/step": 30.0, "time/generate": 10.0, "time/train": 18.0}
    rows = [{"step": 0, "eval/mean@1": 0.25, "eval/add/mean@1": 0.5, "eval/share/mean@1": 0.0},
            *({"step": s, **step, "reward/final_number/mean": r, "completion_len/mean": 100.0 - s}
              for s, r in enumerate([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], start=1)),
            {"step": 10, "eval/mean@1": 0.5, "eval/add/mean@1": 0.75, "eval/share/mean@1": 0.25}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    s = bench.summarize(tmp_path)
    assert (s["steps"], s["acc_before"], s["acc_after"]) == (10, 0.25, 0.5)
    assert s["per_family_before"] == {"add": 0.5, "share": 0.0} and s["per_family_after"] == {"add": 0.75, "share": 0.25}
    assert s["reward_first_fifth"] == pytest.approx(0.05) and s["reward_last_fifth"] == pytest.approx(0.85)
    assert (s["completion_len_first"], s["completion_len_last"]) == (99.0, 90.0)
    assert (s["train_seconds"], s["generate_seconds"], s["update_seconds"]) == (300.0, 100.0, 180.0)
    assert s["curve"] == [(0, 0.25), (10, 0.5)]
    (tmp_path / "metrics.jsonl").write_text(json.dumps(rows[0]))  # a run that died before its last evaluation
    with pytest.raises(SystemExit, match="1 evaluation"):
        bench.summarize(tmp_path)


def test_the_smollm2_bench_runs_the_recipe_per_seed_for_its_minutes_on_both_cores(tmp_path, monkeypatch):
    bench = _bench_module("learning_smollm2")
    calls = []
    monkeypatch.setattr(bench, "train", lambda recipe, seed, run_dir, extra, **kw: calls.append((recipe, seed, extra, kw)))
    summary = {"steps": 3, "acc_before": 0.1, "acc_after": 0.3, "reward_first_fifth": 0.1, "reward_last_fifth": 0.2,
               "train_seconds": 60.0, "per_family_before": {"add": 0.1}, "per_family_after": {"add": 0.3},
               "curve": [(0, 0.1), (3, 0.3)], "reward_per_step": [0.1, 0.3, 0.2]}
    monkeypatch.setattr(bench, "summarize", lambda run_dir: summary)
    out = tmp_path / "out.json"
    monkeypatch.setattr(sys, "argv", ["learning_smollm2", "--seeds", "0", "1", "--minutes", "7", "--out", str(out),
                                      "train.lr=1e-5"])
    bench.main()
    assert [(recipe, seed, extra) for recipe, seed, extra, _ in calls] == [("grpo_smollm2", 0, ["train.lr=1e-5"]),
                                                                          ("grpo_smollm2", 1, ["train.lr=1e-5"])]
    assert all(kw["minutes"] == 7 and kw["threads"] == 2 and kw["eval_every"] > 1000 for *_, kw in calls)
    assert set(json.loads(out.read_text())["results"]["grpo"]) == {"0", "1"} and out.with_suffix(".png").exists()
    assert (tmp_path / "out_reward.png").exists()  # the training reward per step, between the two held-out points


def test_the_scaling_grid_varies_one_factor_at_a_time_or_all():
    import train_scaling

    axes = train_scaling.grid("axes")
    assert len(axes) == len(set(axes)) == 6 and train_scaling.CENTRE in axes
    for point in axes:  # each point differs from the centre in one factor at most
        assert sum(a != b for a, b in zip(point, train_scaling.CENTRE)) <= 1
    assert len(train_scaling.grid("full")) == 18


def test_the_scaling_sides_train_the_same_batch_and_only_sharing_changes_the_work(cache_dir):
    """At a toy shape on the tiny model: the same gradient on all three sides (so they compute the same
    loss on the same tokens), and the shared forward computes the prompt once."""
    pytest.importorskip("trl")
    import argparse

    import train_scaling
    from align.demo import resolve_model_path

    path = resolve_model_path("tiny", cache_dir)
    args = argparse.Namespace(threads=1, micro_batch=2, warmup=0, steps=1)
    prompt, g, completion = 8, 4, 4
    shared = train_scaling.run_align(path, prompt, g, completion, args, shared=True)[0]
    unshared = train_scaling.run_align(path, prompt, g, completion, args, shared=False)[0]
    trl = train_scaling.run_trl(path, prompt, g, completion, args)[0]
    assert shared["forward_tokens"] == prompt + g * completion
    assert unshared["forward_tokens"] == trl["forward_tokens"] == g * (prompt + completion)
    assert shared["grad_norm"] == pytest.approx(unshared["grad_norm"], rel=1e-4)
    assert trl["grad_norm"] == pytest.approx(unshared["grad_norm"], rel=1e-3)
    for row in (shared, unshared, trl):
        assert row["train"] > 0 and row["peak"] >= row["rss_before"] > 0


@pytest.mark.parametrize("recipe, model, metric", [("gcpo_geometry", "tiny-geometry", "eval/mean@1"),
                                                   ("salt_grid", "tiny-grid", "eval/success")])
def test_async_vs_sync_runs_the_recipe_it_is_given_and_reads_its_held_out_metric(tmp_path, monkeypatch, recipe, model,
                                                                                  metric):
    """--recipe picks the job, the model its server serves, and the held-out figure the table reports."""
    bench = _bench_module("async_vs_sync")
    trained, served = [], []

    def fake_train(job, seed, run_dir, extra, **kwargs):
        trained.append((job, extra))
        run_dir.mkdir(parents=True)
        rows = [{"step": 1, "loss": 0.0, "time": 1.0, "time/step": 1.0},
                {"step": 1, "time": 2.0, "eval/mean@1": 0.25, "eval/success": 0.75}]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    class Server:
        def terminate(self):
            pass

        def wait(self, timeout):
            pass

    monkeypatch.setattr(bench, "train", fake_train)
    monkeypatch.setattr(bench, "start_server", lambda path, log, core: (served.append(path), (Server(), "http://x:1"))[1])
    monkeypatch.setattr("align.demo.resolve_model_path", lambda name, cache: f"/models/{name}")
    out = tmp_path / "out.json"
    bench.main(["--recipe", recipe, "--variants", "sync", "k1", "--steps", "1", "--out", str(out)])
    assert [job for job, _ in trained] == [recipe, recipe] and served == [f"/models/{model}"] * 2
    assert "rollout.max_staleness=1" in trained[1][1]
    results = json.loads(out.read_text())["results"]
    assert results["k1"]["0"]["final_accuracy"] == {"eval/mean@1": 0.25, "eval/success": 0.75}[metric]
