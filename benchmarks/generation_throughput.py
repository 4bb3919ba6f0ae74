"""Generation throughput: mixlab's decode loop vs ``model.generate`` and lm-eval's ``generate_until``, one run.

Workload (default ``--workload cot-chat``): the first ``--prompts`` GSM8K test questions as the
``gsm8k_cot_chat`` task renders them (zero-shot "Let's think step by step." as a user turn in the
chat template), greedy, ``--new-tokens`` (256) new tokens. Engines, each on the same rendered prompts
with the same threads:

* ``loop``: :class:`mixlab.eval.generation.Generator` (the decode loop that drops finished rows and
  refills their slots), ``--batch-size`` prompts decoded together;
* ``generate``: the same Generator with ``engine="hf"``: left-padded batches of ``--batch-size``
  through transformers' ``model.generate`` in lock-step (mixlab's path before the loop);
* ``generate-1``: ``model.generate`` one prompt at a time, no padding: the reference answers;
* ``lm-eval``: lm-eval's HF backend ``HFLM.generate_until`` with ``batch_size=--batch-size``
  (its own length sorting, left padding, ``until`` = EOS, ``max_gen_toks``), on the prompts rendered
  with the same chat template (what its ``apply_chat_template`` produces).

For each it prints the wall and CPU time (``time.process_time``: on a shared, loaded machine the
less noisy of the two), tokens/s, the loop's speed-up over it, and how many answers equal the
reference's. tokens/s counts the reference answers' generated tokens (EOS included) for
every engine, so the speed-ups are ratios of wall time on identical work. ``--workload plain`` uses
"Question: ...\\nAnswer:" without a template; ``--engines`` picks a subset.

    .venv/bin/python benchmarks/generation_throughput.py --prompts 32 --threads 1 --models smollm2-135m
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mixlab.data.sources import load_records  # noqa: E402
from mixlab.eval.generation import Generator, render_prompt  # noqa: E402
from mixlab.eval.tasks import GenerationSpec, get_task  # noqa: E402
from mixlab.models.pretrained import LoadedModel, load_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from eval_throughput import proxy_model  # noqa: E402  (the same proxy as the scoring benchmark)

ENGINES = ("loop", "generate", "generate-1", "lm-eval")
REFERENCE = "generate-1"


def workload(kind: str, n_prompts: int, new_tokens: int) -> tuple[list[str], GenerationSpec]:
    questions = [r.question for r in load_records("gsm8k") if r.metadata["split"] == "test"][:n_prompts]
    if kind == "plain":
        return [f"Question: {q}\nAnswer:" for q in questions], GenerationSpec(max_new_tokens=new_tokens)
    task = get_task("gsm8k_cot_chat")
    prompts = [task.prompt.replace("{{question}}", q) for q in questions]
    return prompts, task.decoding.model_copy(update={"max_new_tokens": new_tokens})


def mixlab_engine(engine: str, batch_size: int) -> Callable[[LoadedModel, list[str], GenerationSpec], tuple[list[str], list[int]]]:
    def run(loaded: LoadedModel, prompts: list[str], spec: GenerationSpec) -> tuple[list[str], list[int]]:
        out = Generator(loaded.model, loaded.tokenizer, batch_size=batch_size, engine=engine).generate(prompts, spec)
        return [c[0].text for c in out], [c[0].n_tokens for c in out]
    return run


def lm_eval_engine(batch_size: int) -> Callable[[LoadedModel, list[str], GenerationSpec], tuple[list[str], list[int]]]:
    def run(loaded: LoadedModel, prompts: list[str], spec: GenerationSpec) -> tuple[list[str], list[int]]:
        from lm_eval.api.instance import Instance

        from mixlab.eval.harness import lm_eval_model

        if spec.temperature > 0:
            raise ValueError("the lm-eval comparison is greedy only")
        lm = lm_eval_model(loaded, batch_size=batch_size)
        kwargs = {"until": list(spec.stop), "max_gen_toks": spec.max_new_tokens, "do_sample": False}
        requests = [Instance(request_type="generate_until", doc={}, idx=0,
                             arguments=(render_prompt(loaded.tokenizer, p, spec.chat_template)[0], dict(kwargs)))
                    for p in prompts]
        return lm.generate_until(requests, disable_tqdm=True), []
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=["cot-chat", "plain"], default="cot-chat")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="smollm2-135m")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"subset of {','.join(ENGINES)}")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if unknown := set(engines) - set(ENGINES):
        ap.error(f"unknown engine(s) {sorted(unknown)}; known: {', '.join(ENGINES)}")
    runners = {"loop": mixlab_engine("loop", args.batch_size), "generate": mixlab_engine("hf", args.batch_size),
               "generate-1": mixlab_engine("hf", 1), "lm-eval": lm_eval_engine(args.batch_size)}
    torch.set_num_threads(args.threads)
    prompts, spec = workload(args.workload, args.prompts, args.new_tokens)
    print(f"{len(prompts)} GSM8K prompts ({args.workload}), {args.new_tokens} new tokens max, greedy, batch "
          f"{args.batch_size}, {args.threads} threads, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            loaded = proxy_model(Path(tmp) / "proxy") if name == "proxy" else load_model(name)
            runners["loop"](loaded, prompts[:2], GenerationSpec(max_new_tokens=4))  # warm-up
            texts: dict[str, list[str]] = {}
            counts: dict[str, list[int]] = {}
            wall: dict[str, float] = {}
            cpu: dict[str, float] = {}  # this process's CPU time: less sensitive than wall time to a loaded machine
            for engine in engines:
                t0, c0 = time.perf_counter(), time.process_time()
                texts[engine], counts[engine] = runners[engine](loaded, prompts, spec)
                wall[engine], cpu[engine] = time.perf_counter() - t0, time.process_time() - c0
                print(f"  {name} {engine}: {wall[engine]:.1f} s", flush=True)
            ref = REFERENCE if REFERENCE in engines else engines[0]
            tokens = sum(counts[ref]) if counts[ref] else sum(counts.get("loop", []))
            print(f"{name}: {tokens} generated tokens in the {ref} answers; same = answers equal to {ref}'s")
            print(f"  {'engine':<11} {'wall s':>7} {'tok/s':>6} {'CPU s':>7} {'tok/CPU-s':>9} "
                  f"{'loop speed-up (wall, CPU)':>26}  same")
            for engine in engines:
                same = sum(a == b for a, b in zip(texts[engine], texts[ref], strict=True))
                up = (f"{wall[engine] / wall['loop']:.2f}x, {cpu[engine] / cpu['loop']:.2f}x" if "loop" in wall
                      else "-")
                print(f"  {engine:<11} {wall[engine]:>7.1f} {tokens / wall[engine]:>6.1f} {cpu[engine]:>7.1f} "
                      f"{tokens / cpu[engine]:>9.1f} {up:>26}  {same}/{len(prompts)}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
