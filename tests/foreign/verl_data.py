"""A verl-schema dataset (as verl's examples/data_preprocess/gsm8k.py writes it) and a verl reward file."""

from __future__ import annotations

from pathlib import Path

QUESTIONS = [("Natalia sold 48 clips in April and half as many in May. How many in all?", "72"),
             ("What is 12 + 30?", "42"), ("What is 9 * 3?", "27"), ("What is 100 - 1?", "99"),
             ("What is 7 + 8?", "15"), ("What is 6 * 6?", "36"), ("What is 50 / 5?", "10"), ("What is 3 + 4?", "7")]

# verl's calling convention, with a check of every argument it must receive: 1.0 only when the
# data_source, ground truth and extra_info of the completion's own row arrive (and the text is a str).
VERL_REWARD = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    ok = (data_source == "openai/gsm8k" and isinstance(solution_str, str) and isinstance(extra_info, dict)
          and extra_info["answer_copy"] == ground_truth and ground_truth.isdigit())
    return {"score": 1.0 if ok else 0.0, "acc": ok}
'''


def write_verl_parquet(folder: Path, splits=("train", "test")) -> Path:
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        rows = [{"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": q + " Answer after ####."}],
                 "ability": "math", "reward_model": {"style": "rule", "ground_truth": a},
                 "extra_info": {"split": split, "index": i, "answer_copy": a, "question": q}}
                for i, (q, a) in enumerate(QUESTIONS)]
        datasets.Dataset.from_list(rows).to_parquet(str(folder / f"{split}.parquet"))
    (folder.parent / "gsm8k_reward.py").write_text(VERL_REWARD)
    return folder
