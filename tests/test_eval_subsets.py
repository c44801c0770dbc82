"""Held-out evaluation splits its numbers by family and by the aux_helps column (GCPO's signals)."""

from align.data.geometry import make_geometry_dataset
from align.training.evaluation import evaluate_engine
from rewards.runner import load_reward_functions
from align.rollout.base import Completion
from align.config import RolloutConfig


class ReferenceEngine:
    """Answers with the aux-style reference solution where aux helps and with a wrong direct answer
    where it hurts: the evaluation's numbers are then known exactly."""

    def __init__(self, rows):
        self.rows = rows

    def generate(self, prompt_ids, n, sampling):
        out = []
        for row in self.rows:
            text = row["solution_aux"] if row["aux_helps"] else "<think>x=1</think><answer>-1</answer>"
            out.append([Completion([0], [1], [0.0], text, "stop", 0)] * n)
        return out


class _Tokenizer:
    chat_template = "{{ messages }}"  # encode_prompt refuses chat prompts for a tokenizer without one

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        return " ".join(m["content"] for m in messages)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1] * 3}


def test_accuracy_and_aux_rates_per_family_and_per_aux_effect():
    dataset = make_geometry_dataset("test", 16, seed=0)
    rows = [dataset[i] for i in range(len(dataset))]
    accuracy, fmt, aux = load_reward_functions(["geometry_accuracy", "think_answer_format", "aux_construction"])
    metrics = evaluate_engine(ReferenceEngine(rows), _Tokenizer(), dataset, accuracy, RolloutConfig(), k=1, extra=[fmt, aux])
    assert metrics["eval/mean@1"] == 0.5
    assert metrics["eval/aux_helps/yes/mean@1"] == 1.0 and metrics["eval/aux_helps/no/mean@1"] == 0.0
    assert metrics["eval/aux_helps/yes/aux_construction/rate"] == 1.0
    assert metrics["eval/aux_helps/no/aux_construction/rate"] == 0.0
    assert metrics["eval/third_angle/mean@1"] == 1.0 and metrics["eval/supplement/mean@1"] == 0.0
    assert metrics["eval/supplement/aux_construction/rate"] == 0.0


def test_one_valued_or_missing_subset_column_adds_no_keys():
    dataset = make_geometry_dataset("test", 4, seed=0, families=["third_angle"])
    rows = [dataset[i] for i in range(len(dataset))]
    (accuracy,) = load_reward_functions(["geometry_accuracy"])
    metrics = evaluate_engine(ReferenceEngine(rows), _Tokenizer(), dataset, accuracy, RolloutConfig(), k=1)
    assert metrics["eval/mean@1"] == 1.0
    assert not [k for k in metrics if k.startswith("eval/aux_helps")]  # every row helps: same as overall
