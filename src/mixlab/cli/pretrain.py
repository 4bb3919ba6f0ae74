"""`mixlab pretrain` and `mixlab validate`: thin layers over :mod:`mixlab.train.pretrain` and the config models."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.progress import TextColumn

from mixlab.cli.common import DistBackendOption, NprocOption, SetOption, console, err_console, progress
from mixlab.config import config_hash, read_yaml
from mixlab.errors import ConfigError


@dataclass(frozen=True)
class ConfigKind:
    """A config family ``mixlab validate`` recognizes: its pydantic model and the keys that give it away."""

    model: str  # "module:Class"
    keys: frozenset[str]

    def load(self) -> Any:
        mod, _, cls = self.model.partition(":")
        return getattr(importlib.import_module(mod), cls)


# Other stages add their config here: a `kind:` field in the YAML wins, else the marker keys decide.
CONFIG_KINDS: dict[str, ConfigKind] = {
    "pretrain": ConfigKind("mixlab.train.pretrain:PretrainConfig", frozenset({"duration"})),
    "data": ConfigKind("mixlab.data.build:DataConfig", frozenset({"domains"})),
    "swarm": ConfigKind("mixlab.mixopt.swarm:SwarmConfig", frozenset({"variants"})),
}


def detect_kind(data: dict[str, Any], source: str) -> str:
    """The config kind: the explicit ``kind:`` field, else the kind whose marker keys appear."""
    if "kind" in data:
        kind = str(data["kind"])
        if kind not in CONFIG_KINDS:
            raise ConfigError(f"{source}: field `kind`: unknown config kind {kind!r}; known: {', '.join(CONFIG_KINDS)}")
        return kind
    hits = [k for k, ck in CONFIG_KINDS.items() if ck.keys & set(data)]
    if len(hits) != 1:
        raise ConfigError(f"{source}: cannot tell which kind of config this is; add `kind:` "
                          f"(one of {', '.join(CONFIG_KINDS)})")
    return hits[0]


def validate_file(path: Path, overrides: list[str] | None = None) -> tuple[str, Any]:
    """Validate a config of any registered kind; returns (kind, validated model)."""
    from mixlab.config import apply_overrides, validate

    data, lines = read_yaml(path)
    data = apply_overrides(data, overrides or [])
    kind = detect_kind(data, str(path))
    return kind, validate(CONFIG_KINDS[kind].load(), data, str(path), lines)


def _run_pretrain(config: Path, out: Path | None, overrides: list[str], dry_run: bool, nproc: int = 1,
                  dist_backend: str = "auto") -> None:
    from mixlab.train import distributed
    from mixlab.train import pretrain as recipe

    cfg = recipe.load_pretrain_config(config, overrides)
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    if nproc != 1 or dist_backend != "auto":
        dist_backend = distributed.check_run(cfg, nproc, dist_backend)  # type: ignore[arg-type]
    if dry_run:
        with err_console.status("reading and tokenizing sources") as st:
            prep = recipe.prepare(cfg, status=lambda m: st.update(m))
        console.print(recipe.format_plan(prep.plan, recipe.estimate_seconds(prep.plan)), soft_wrap=True, highlight=False)
        if nproc > 1:
            console.print(f"processes    {nproc} ({dist_backend}), {cfg.train.batch_size // nproc} sequences each per step",
                          soft_wrap=True, highlight=False)
        console.print(f"config hash  {config_hash(cfg)}" + (f"; would write {out}" if out else ""), soft_wrap=True, highlight=False)
        return
    if out is None:
        raise ConfigError("--out DIR is required to train (or pass --dry-run to print the plan)")
    if recipe.is_complete(cfg, out):
        console.print(f"already complete: {out} (same config hash); nothing to do", soft_wrap=True, highlight=False)
        return
    result = distributed.run(pretrain_with_progress, cfg, out, nproc=nproc, backend=dist_backend)  # type: ignore[arg-type]
    if result.skipped:
        console.print(f"already complete: {result.final_checkpoint}", soft_wrap=True, highlight=False)
        return
    bpb = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("bpb/")}
    console.print(f"done: {result.steps} steps, {result.tokens:,} tokens -> {result.final_checkpoint}", soft_wrap=True, highlight=False)
    console.print(f"held-out bits/byte: {bpb}", soft_wrap=True, highlight=False)
    console.print(f"wall time: {result.timings}", soft_wrap=True, highlight=False)


def pretrain_with_progress(cfg: Any, out: Path) -> Any:
    """``pretrain(cfg, out)`` under a progress bar; in a process group only rank 0 draws it."""
    from mixlab.train import distributed
    from mixlab.train import pretrain as recipe

    if not distributed.is_main():
        return recipe.pretrain(cfg, out)
    cols = (TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[loss]}"))
    with progress(*cols) as bar:
        task = bar.add_task("setup", total=None, rate="", loss="")

        def on_step(info) -> None:
            loss = f"loss {info.loss:.3f}" if info.loss is not None else None
            bar.update(task, description="pretrain", total=info.total_steps, completed=info.step,
                       rate=f"{info.tokens_per_s:,.0f} tok/s" if info.tokens_per_s else "",
                       **({"loss": loss} if loss else {}))

        return recipe.pretrain(cfg, out, on_step=on_step, status=lambda m: bar.update(task, description=m))


def register(app: typer.Typer) -> None:
    @app.command("pretrain")
    def pretrain_cmd(
        config: Path = typer.Argument(..., help="Pretraining config (YAML), e.g. configs/pretrain/ci_tiny.yaml"),
        out: Path = typer.Option(None, "--out", help="Run directory; a run there with checkpoints is resumed."),
        overrides: list[str] = SetOption,
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved plan and estimated time; train nothing."),
        nproc: int = NprocOption,
        dist_backend: str = DistBackendOption,
    ) -> None:
        """Pretrain a proxy model on a token-proportion mixture of text sources.

        Example: mixlab pretrain configs/pretrain/ci_tiny.yaml --out runs/ci_tiny --nproc 2
        """
        _run_pretrain(config, out, overrides or [], dry_run, nproc, dist_backend)

    @app.command("validate")
    def validate_cmd(
        config: Path = typer.Argument(..., help="Any mixlab config (pretrain, data, ...)."),
        overrides: list[str] = SetOption,
    ) -> None:
        """Check a config without running it: detects its kind and reports every invalid field.

        Example: mixlab validate configs/finetune/toyworld_sft.yaml --set train.lr=1e-5
        """
        kind, cfg = validate_file(config, overrides or [])
        console.print(f"{config}: valid {kind} config (hash {config_hash(cfg)})", soft_wrap=True, highlight=False)
