"""The demo pipeline's spec: teacher SFT → student SFT baseline → token-level KD → evaluation on the demo kit,
with the students holding references for a tenth of the prompts (the teacher answers the rest for KD); and its
cross-tokenizer variant (a teacher with another tokenizer; SFT vs sequence-level vs cross-tokenizer KD).

Stdlib only, so the studio can show and launch exactly what ``compression-engine demo`` runs. The numbers come
from the demo kit's calibration (bench/demo_calibration.py; results in bench/RESULTS.md).
"""
from __future__ import annotations

from engine.contract.spec import RunSpec, build, to_dict

# Per stage: (learning rate, optimizer steps). Student SFT and KD get the same steps: a fair comparison.
DEMO_SCHEDULE = {"teacher_sft": (2e-3, 1200), "student_sft": (3e-3, 600), "student_kd": (3e-3, 600)}
DEMO_BATCH_SIZE = 16
DEMO_MAX_LENGTH = 128  # the longest demo record is 86 tokens
DEMO_MAX_NEW_TOKENS = 40  # the longest reference answer is 28 tokens
DEMO_EVAL_SAMPLES = 200
# One CPU thread: the demo's models are so small that a second thread costs more than it brings (measured
# here: a teacher step took 0.21 s on one thread, 0.8 s on two while another process used a core).
DEMO_CPU_THREADS = 1
# The students see the references of only 10 % of the training prompts; the teacher (fine-tuned on all of them)
# answers the rest, which only distillation can use — a case where distillation genuinely helps. With every
# reference in hand the demo's 0.5 M student learns all its 1.9 M teacher knows, and KD lost to SFT (0.484 vs
# 0.518); at 10 % KD won on 3 of 3 seeds by +3.8 ± 1.4 ROUGE-L points (bench/RESULTS.md).
DEMO_STUDENT_REFERENCES = 0.1


def demo_spec(*, quick: bool = False, seed: int = 0) -> RunSpec:
    """The demo run; ``quick`` cuts every stage to a handful of steps (a smoke test, not a result)."""

    def train(stage: str) -> dict:
        lr, steps = DEMO_SCHEDULE[stage]
        return {"learning_rate": lr, "max_steps": 4 if quick else steps, "batch_size": DEMO_BATCH_SIZE,
                "logging_steps": 1 if quick else 10, "save_steps": 100, "warmup_ratio": 0.05, "seed": seed}

    generation = {"max_new_tokens": 16 if quick else DEMO_MAX_NEW_TOKENS, "batch_size": 32}
    stages = [
        {"kind": "sft", "name": "teacher_sft", "model": "teacher", "train": train("teacher_sft")},
        {"kind": "sft", "name": "student_sft", "model": "student", "train": train("student_sft"),
         "references": DEMO_STUDENT_REFERENCES},
        {"kind": "distill", "name": "student_kd", "model": "student", "teacher": "teacher_sft",
         "train": train("student_kd"), "references": DEMO_STUDENT_REFERENCES,
         "distill": {"method": "token"}},  # the paper's joint loss with DistillSpec's defaults (α, T, D)
        {"kind": "evaluate", "name": "eval", "reference": "teacher", "generation": generation,
         "max_eval_samples": 16 if quick else DEMO_EVAL_SAMPLES,
         "models": {"teacher": "teacher_sft", "sft_student": "student_sft", "kd_student": "student_kd"}},
    ]
    return build(RunSpec, {"name": "demo-quick" if quick else "demo", "stages": stages,
                           "cpu_threads": DEMO_CPU_THREADS,
                           "teacher": {"source": "demo:teacher"}, "student": {"source": "demo:student"},
                           "data": {"preset": "demo", "max_length": DEMO_MAX_LENGTH, "seed": seed,
                                    "max_samples": 300 if quick else 0}})


def cross_tokenizer_demo_spec(*, quick: bool = False, seed: int = 0) -> RunSpec:
    """The demo with a teacher that tokenizes differently (demo:teacher_bpe, a BPE trained on the demo text, and
    Zephyr chat markers) and three students made at equal student compute (the same steps, batch and
    references): SFT only, sequence-level KD (the teacher's answers) and cross-tokenizer KD (ULD on the teacher's
    cached top-64 probabilities, aligned by character offsets). ``compression-engine demo --cross-tokenizer``;
    bench/cross_tokenizer_demo.py runs it over seeds."""
    spec = demo_spec(quick=quick, seed=seed)
    stages = to_dict(spec)["stages"]
    teacher_sft, student_sft, token_kd, evaluate = stages
    sequence_kd = {**token_kd, "name": "student_seq_kd",
                   "distill": {**token_kd["distill"], "method": "sequence", "max_new_tokens": DEMO_MAX_NEW_TOKENS}}
    cross_kd = {**token_kd, "name": "student_xtok_kd",
                "distill": {**token_kd["distill"], "method": "cross_tokenizer",
                            "teacher_cache": {**token_kd["distill"]["teacher_cache"], "enabled": True}}}
    evaluate["models"] = {"teacher": "teacher_sft", "sft_student": "student_sft", "seq_kd_student": "student_seq_kd",
                          "xtok_kd_student": "student_xtok_kd"}
    data = to_dict(spec)
    data.update({"name": "demo-cross-tokenizer-quick" if quick else "demo-cross-tokenizer",
                 "teacher": {"source": "demo:teacher_bpe"},
                 "stages": [teacher_sft, student_sft, sequence_kd, cross_kd, evaluate]})
    return build(RunSpec, data)
