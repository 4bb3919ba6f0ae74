"""mixlab's log-likelihood engine vs lm-eval's Hugging Face backend: same model, same items, one run.

Tasks: ARC-Easy, PIQA, BoolQ (the first ``--limit`` items of the shared files), MMLU (``--limit``
items spread evenly over the 14,042 test items, so many subjects) and HellaSwag-format items. HellaSwag
itself is not in the shared data, so its format is rebuilt from local text: each item is a WikiText-2
sentence plus the first words of the next one (``ctx_a``, ``ctx_b``) and four endings, the true rest
of that sentence and the rests of three other items' sentences; lm-eval scores them with its own
``hellaswag`` preprocessing (``lm_eval/tasks/hellaswag/utils.py``, copied), mixlab with its
``hellaswag`` task file.

Models: SmolLM2-135M and a proxy checkpoint (the registry's ``proxy-5m`` shape, random weights, SmolLM2's
tokenizer). Both engines get the same cores: lm-eval runs in this process with ``--threads`` torch
threads; mixlab splits its forward passes over ``--threads`` worker processes of one thread each
(``Scorer(workers=...)``, what ``mixlab eval`` does by default). Same batch size. Each timing
includes reading the data, building prompts and tokenizing. Prints wall times, the ratio, whether
acc/acc_norm (and the prediction) are identical item by item, the largest log-likelihood difference,
and the load average before and after.

Where the time goes, per task: the token positions lm-eval's forward passes take (counted by a hook on
the model, padding included) against the positions mixlab must compute (every node of each item's
token trie, ``Scorer.layout``) and what it forwards with padding; ``dense tok/s`` is this model's own
forward speed on full rows without masks or padding (one thread, times the workers: the machine's
speed for this model, measured in this run), ``eff`` is mixlab's positions per second as a share of it
(tokenizing, masks, attention over packed rows and the output head included), and ``bound`` is lm-eval's
time over the time the dense speed needs for mixlab's positions plus its head projections: the
speedup of an engine that computed exactly what mixlab computes, with no overhead at all.

    .venv/bin/python benchmarks/eval_throughput.py --limit 100 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from mixlab.eval.harness import LM_EVAL_LOCAL, lm_eval_model, run_lm_eval, write_task_yaml  # noqa: E402
from mixlab.eval.runner import score_task  # noqa: E402
from mixlab.eval.scoring import Scorer  # noqa: E402
from mixlab.eval.tasks import DataSpec, build_items, get_task, load_docs  # noqa: E402
from mixlab.models.pretrained import LoadedModel, load_model  # noqa: E402
from mixlab.settings import data_dir  # noqa: E402

TASKS = ("arc_easy", "piqa", "boolq", "mmlu", "hellaswag")
MMLU_DESCRIPTION = "The following are multiple choice questions (with answers) about {{subject | replace('_', ' ')}}.\n\n"


def proxy_model(folder: Path) -> LoadedModel:
    """The registry's proxy-5m (5 layers, d=256) with SmolLM2's tokenizer, random weights."""
    from mixlab.models.registry import ModelConfig, build_model, hf_config

    tok = load_model("smollm2-135m").tokenizer
    cfg = hf_config(ModelConfig(size="proxy-5m"), len(tok), 2048, tok.bos_token_id, tok.eos_token_id)
    build_model(cfg, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return load_model(str(folder))


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def mmlu_file(tmp: Path, limit: int) -> Path:
    docs, _ = load_docs(get_task("mmlu"))
    step = max(1, len(docs) // limit)
    keep = ("question", "choices", "label", "subject")
    return _write_jsonl(tmp / "mmlu.jsonl", [{k: d[k] for k in keep} for d in docs[::step][:limit]])


def hellaswag_file(tmp: Path, limit: int, seed: int = 0) -> Path:
    """HellaSwag-format items (activity_label, ctx_a, ctx_b, 4 endings, label) from WikiText-2."""
    lines = (data_dir() / "corpus_wikitext2" / "test.txt").read_text(encoding="utf-8").splitlines()
    parts = []
    for line in lines:
        sents = [s.strip() for s in line.split(" . ") if s.strip()]
        if len(sents) >= 2 and 6 <= len(sents[0].split()) <= 40 and 14 <= len(sents[1].split()) <= 40:
            words = sents[1].split()
            parts.append((sents[0] + ".", " ".join(words[:4]), " ".join(words[4:]) + "."))
        if len(parts) == limit:
            break
    rng = random.Random(seed)
    rows = []
    for i, (ctx_a, ctx_b, ending) in enumerate(parts):
        others = [parts[j][2] for j in rng.sample([j for j in range(len(parts)) if j != i], 3)]
        label = rng.randrange(4)
        endings = others[:label] + [ending] + others[label:]
        rows.append({"activity_label": "Wikipedia", "ctx_a": ctx_a, "ctx_b": ctx_b, "endings": endings,
                     "label": str(label)})
    return _write_jsonl(tmp / "hellaswag_format.jsonl", rows)


def lm_eval_task(task: str, tmp: Path, data: Path) -> str:
    """Write an lm-eval task over ``data`` with lm-eval's own prompt format for ``task``."""
    name = f"bench_{task}"
    if task in LM_EVAL_LOCAL:
        write_task_yaml(tmp, name, data, **LM_EVAL_LOCAL[task][1])
    elif task == "mmlu":  # lm_eval/tasks/mmlu/default/_default_template_yaml, one task over all subjects
        write_task_yaml(tmp, name, data, metrics=["acc"], description=MMLU_DESCRIPTION,
                        doc_to_text="{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}"
                                    "\nD. {{choices[3]}}\nAnswer:", doc_to_choice=["A", "B", "C", "D"],
                        doc_to_target="{{label}}")
    else:  # lm_eval/tasks/hellaswag/hellaswag.yaml with its utils.py
        import lm_eval

        shutil.copy(Path(lm_eval.__file__).parent / "tasks" / "hellaswag" / "utils.py", tmp / "hellaswag_utils.py")
        (tmp / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
            "test_split: test\noutput_type: multiple_choice\nprocess_docs: !function hellaswag_utils.process_docs\n"
            "doc_to_text: '{{query}}'\ndoc_to_target: '{{label}}'\ndoc_to_choice: choices\nmetric_list:\n"
            "  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
            "  - {metric: acc_norm, aggregation: mean, higher_is_better: true}\n", encoding="utf-8")
    return name


def run_mixlab(loaded: LoadedModel, task: str, data: Path, limit: int, batch_size: int,
               workers: int) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    spec = get_task(task)
    if task not in LM_EVAL_LOCAL:  # items written by this script; the others read the shared files
        spec = spec.model_copy(update={"data": DataSpec(path=str(data))})
    docs, pool = load_docs(spec)
    items = build_items(spec, docs[:limit], pool)
    scorer = Scorer(loaded.model, loaded.tokenizer, batch_size=batch_size, workers=workers)
    _, rows = score_task(spec, items, scorer)
    return time.perf_counter() - t0, rows


def run_harness(loaded: LoadedModel, name: str, limit: int, batch_size: int,
                tmp: Path) -> tuple[float, list[dict], int]:
    """(wall time, per-item samples, token positions its forward passes took, padding included)."""
    seen = [0]

    def count(_module, args, kwargs):
        ids = args[0] if args else kwargs.get("input_ids")
        seen[0] += int(ids.numel())

    hook = loaded.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        t0 = time.perf_counter()
        lm = lm_eval_model(loaded, batch_size=batch_size)
        out = run_lm_eval(lm, [name], include_path=tmp, include_defaults=False, limit=limit, log_samples=True)
        wall = time.perf_counter() - t0
    finally:
        hook.remove()
    return wall, sorted(out["samples"][name], key=lambda s: s["doc_id"]), seen[0]


def layout(loaded: LoadedModel, task: str, data: Path, limit: int, batch_size: int) -> dict[str, int]:
    spec = get_task(task)
    if task not in LM_EVAL_LOCAL:
        spec = spec.model_copy(update={"data": DataSpec(path=str(data))})
    docs, pool = load_docs(spec)
    items = build_items(spec, docs[:limit], pool)
    return Scorer(loaded.model, loaded.tokenizer, batch_size=batch_size).layout([it.pairs for it in items])


def dense_speed(loaded: LoadedModel, workers: int, rows: int = 8, width: int = 256,
                repeats: int = 3) -> tuple[float, float]:
    """(positions/s of the model body, positions/s of the output head): one thread, full rows, no
    mask or padding, best of ``repeats``, times ``workers`` (each worker is one such thread)."""
    model = loaded.model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ids = torch.randint(0, model.config.vocab_size, (rows, width))
        hidden = torch.randn(rows * width, model.config.hidden_size)
        body = head = float("inf")
        with torch.inference_mode():
            for _ in range(repeats):
                t0 = time.perf_counter()
                model.base_model(input_ids=ids, use_cache=False)
                body = min(body, time.perf_counter() - t0)
                t0 = time.perf_counter()
                model.get_output_embeddings()(hidden)
                head = min(head, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return workers * rows * width / body, workers * rows * width / head


def compare(mine: list[dict], theirs: list[dict]) -> tuple[bool, float]:
    """(acc, acc_norm and prediction identical for every item, largest |log-likelihood difference|)."""
    if len(mine) != len(theirs):
        return False, float("inf")
    same, worst = True, 0.0
    for a, b in zip(mine, theirs, strict=True):
        lls = [r[0] for r in b["filtered_resps"]]
        worst = max(worst, max(abs(x - y) for x, y in zip(a["lls"], lls, strict=True)))
        same &= a["pred"] == _argmax(lls) and a["acc"] == b["acc"]
        if "acc_norm" in a and "acc_norm" in b:
            same &= a["acc_norm"] == b["acc_norm"]
    return same, worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="lm-eval's torch threads = mixlab's worker processes")
    ap.add_argument("--models", default="proxy,smollm2-135m")
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    tasks = [t for t in args.tasks.split(",") if t]
    files = {t: data_dir() / LM_EVAL_LOCAL[t][0] for t in tasks if t in LM_EVAL_LOCAL}
    if "mmlu" in tasks:
        files["mmlu"] = mmlu_file(tmp, args.limit)
    if "hellaswag" in tasks:
        files["hellaswag"] = hellaswag_file(tmp, args.limit)
    names = {t: lm_eval_task(t, tmp, files[t]) for t in tasks}
    load0 = os.getloadavg()
    print(f"limit={args.limit} batch_size={args.batch_size} lm-eval threads={args.threads} "
          f"mixlab workers={args.threads}x1 thread torch={torch.__version__} cpus={os.cpu_count()} "
          f"load before={load0[0]:.2f},{load0[1]:.2f},{load0[2]:.2f}")
    print(f"{'model':14s} {'task':10s} {'lm-eval s':>10s} {'mixlab s':>9s} {'speedup':>8s}  identical  max|dll|"
          f"  {'lm-eval pos':>11s} {'mixlab pos':>10s} {'padded':>7s} {'dense tok/s':>11s} {'eff':>5s} {'bound':>6s}")
    totals = {"lm": 0.0, "mx": 0.0}
    all_same = True
    for model in args.models.split(","):
        loaded = proxy_model(tmp / "proxy") if model == "proxy" else load_model(model)
        for task in tasks:
            run_mixlab(loaded, task, files[task], 2, args.batch_size, 1)  # warm-up (allocator, lazy imports)
            t_lm, theirs, lm_pos = run_harness(loaded, names[task], args.limit, args.batch_size, tmp)
            t_mx, mine = run_mixlab(loaded, task, files[task], args.limit, args.batch_size, args.threads)
            same, worst = compare(mine, theirs)
            all_same &= same
            totals["lm"] += t_lm
            totals["mx"] += t_mx
            plan = layout(loaded, task, files[task], args.limit, args.batch_size)
            body, head = dense_speed(loaded, args.threads)
            eff = plan["tokens"] / t_mx / body
            bound = t_lm / (plan["tokens"] / body + plan["head_positions"] / head)
            print(f"{model:14s} {task:10s} {t_lm:10.2f} {t_mx:9.2f} {t_lm / t_mx:7.2f}x  {str(same):9s}  {worst:.1e}"
                  f"  {lm_pos:11d} {plan['tokens']:10d} {plan['padded_tokens']:7d} {body:11.0f} {eff:5.2f} "
                  f"{bound:5.1f}x", flush=True)
    print(f"{'total':25s} {totals['lm']:10.2f} {totals['mx']:9.2f} {totals['lm'] / totals['mx']:7.2f}x  {all_same}")
    load1 = os.getloadavg()
    print(f"load after={load1[0]:.2f},{load1[1]:.2f},{load1[2]:.2f}")
    return 0 if all_same else 1


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


if __name__ == "__main__":
    sys.exit(main())
