"""The student as its teacher's draft model (issue 21, part 2), measured two ways.

``demo``: a finished demo run's teacher (``models/teacher_sft``) with three drafts — the untrained demo student,
the SFT student and the KD student of the same run (``--drafts``: any of its stages) — on the run's held-out prompts, greedy, one at a time,
exactly as the evaluation stage measures them (engine/evaluation/drafting.py: acceptance counted from transformers'
draft-verify rounds, speed-up = tokens/s with the draft ÷ without).

``real-shaped``: Qwen2.5-3B- and Qwen2.5-0.5B-shaped models from their published configs with random weights
(bfloat16). Random weights make acceptance meaningless, so this part measures what the shapes decide: the cost of
one draft token relative to one teacher token (c), and the teacher's plain and drafted tokens/s at whatever the
random pair accepts. The speed-up a real pair would get at acceptance α follows from c and the draft length γ
(Leviathan et al. 2023, eq. 1: (1 − α^(γ+1)) / ((1 − α)(γc + 1))); the script prints that table too, labelled as
computed, not measured.

    python bench/draft_acceptance.py demo --run <run folder> [--prompts 32] [--max-new-tokens 64]
    python bench/draft_acceptance.py real-shaped [--prompts 2] [--max-new-tokens 16]
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

log = logging.getLogger("draft_acceptance")


def _demo(args: argparse.Namespace) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.contract.spec import GenerationSpec, load_spec
    from engine.demo.kit import ensure_demo_kit
    from engine.evaluation.drafting import measure_draft
    from engine.training_data.formatting import prompt_texts
    from engine.training_data.loading import load_records
    from engine.training_data.splits import split_records

    run = Path(args.run)
    spec = load_spec(run / "spec.yaml")
    records = split_records(load_records(spec.data), spec.data).test[:args.prompts]
    teacher = AutoModelForCausalLM.from_pretrained(run / "models" / "teacher_sft")
    tok = AutoTokenizer.from_pretrained(run / "models" / "teacher_sft")
    prompts = prompt_texts(tok, records, spec.data.preset)
    drafts = {"untrained student": ensure_demo_kit().student_dir,
              **{stage: run / "models" / stage for stage in args.drafts}}
    gen = GenerationSpec(max_new_tokens=args.max_new_tokens)
    print(f"teacher {run.name}/teacher_sft, {len(prompts)} held-out prompts, greedy, ≤ {gen.max_new_tokens} "
          f"new tokens, {torch.get_num_threads()} thread(s)")
    print("| draft | acceptance | kept / proposed | rounds | plain tok/s | drafted tok/s | speed-up | identical |")
    print("|---|---|---|---|---|---|---|---|")
    for name, folder in drafts.items():
        student = AutoModelForCausalLM.from_pretrained(folder)
        report = measure_draft(teacher, tok, student, AutoTokenizer.from_pretrained(folder), prompts, gen, "cpu")
        d = report.as_dict()
        print(f"| {name} | {100 * d['acceptance']:.1f} % | {d['accepted']} / {d['proposed']} | {d['rounds']} "
              f"| {d['tokens_per_s_plain']} | {d['tokens_per_s_drafted']} | {d['speedup']:.2f}× "
              f"| {d['identical']}/{d['prompts']} |", flush=True)


def _random_model(name: str) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.models.known_configs import KNOWN_CONFIGS

    fields = dict(KNOWN_CONFIGS[name])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()


def _per_token_s(model: torch.nn.Module, ids: torch.Tensor, tokens: int) -> float:
    """Seconds per token of plain greedy decoding (the prefill excluded: a 1-token run is subtracted)."""
    from engine.evaluation.drafting import _timed

    def run(n: int) -> float:
        return _timed(model.generate, input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                      min_new_tokens=n, do_sample=False)[1]

    run(2)  # warm-up
    return (run(tokens + 1) - run(1)) / tokens


def _real_shaped(args: argparse.Namespace) -> None:
    from engine.evaluation.drafting import DraftCount, _timed, counting

    teacher, draft = _random_model("qwen2.5-3b"), _random_model("qwen2.5-0.5b")
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 151_000, (1, args.prompt_tokens), generator=gen) for _ in range(args.prompts)]
    t_teacher = _per_token_s(teacher, prompts[0], args.max_new_tokens)
    t_draft = _per_token_s(draft, prompts[0], args.max_new_tokens)
    c = t_draft / t_teacher
    print(f"Qwen2.5-3B-shaped teacher {t_teacher:.3f} s/token, 0.5B-shaped draft {t_draft:.3f} s/token: c = {c:.3f}"
          f" ({torch.get_num_threads()} thread(s), bfloat16, {args.prompt_tokens}-token prompts)")
    count, plain_s, drafted_s, tokens, identical = DraftCount(), 0.0, 0.0, 0, 0
    for ids in prompts:
        kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "do_sample": False,
                  "max_new_tokens": args.max_new_tokens, "min_new_tokens": args.max_new_tokens}
        plain, seconds = _timed(teacher.generate, **kwargs)
        plain_s += seconds
        with counting(teacher, count):
            drafted, seconds = _timed(teacher.generate, **kwargs, assistant_model=draft)
        drafted_s += seconds
        tokens += plain.shape[1] - ids.shape[1]
        identical += torch.equal(plain, drafted)  # bfloat16 rounding in the batched verification may flip a tie
    acceptance = count.accepted / count.proposed if count.proposed else 0.0
    print(f"random pair: acceptance {100 * acceptance:.1f} % ({count.accepted} / {count.proposed}, "
          f"{count.rounds} rounds); teacher {tokens / plain_s:.2f} tok/s plain, {tokens / drafted_s:.2f} tok/s "
          f"with the draft: {plain_s / drafted_s:.2f}×; outputs identical on {identical}/{len(prompts)} prompts")
    print("computed speed-up at acceptance α (per-token acceptance, draft length γ, the c above):")
    print("| α | γ = 3 | γ = 5 | γ = 8 |")
    print("|---|---|---|---|")
    for alpha in (0.5, 0.6, 0.7, 0.8, 0.9):
        cells = [(1 - alpha ** (g + 1)) / ((1 - alpha) * (g * c + 1)) for g in (3, 5, 8)]
        print(f"| {alpha:.1f} | " + " | ".join(f"{x:.2f}×" for x in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("demo")
    p.add_argument("--run", required=True, help="a finished demo run folder (models/teacher_sft, student_sft, "
                   "student_kd)")
    p.add_argument("--drafts", nargs="+", default=["student_sft", "student_kd"],
                   help="the run's stages whose models draft (beside the untrained demo student)")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p = sub.add_parser("real-shaped")
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    (_demo if args.what == "demo" else _real_shaped)(args)
    print(f"{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
