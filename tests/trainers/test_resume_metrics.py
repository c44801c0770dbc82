"""A resumed Trainer's metrics.jsonl holds each step once: the rows a crashed run logged after its
last checkpoint are dropped when the run resumes from that checkpoint (CPU, tiny model, in process)."""

from align.telemetry.plots import read_metrics
from tests.trainers.in_process import make_trainer


def test_resume_keeps_only_the_rows_up_to_the_checkpoint(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    crashed = make_trainer(cache_dir, run_dir)
    path = crashed.save(2)
    for step in (1, 2, 3, 4):  # steps 3 and 4 were logged, then the run died before the next checkpoint
        crashed.logger.log(step, {"loss": float(step)})
    crashed.logger.close()
    resumed = make_trainer(cache_dir, run_dir, f"resume={path}")
    assert resumed.start_step == 2
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
    resumed.logger.close()
