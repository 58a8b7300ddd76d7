"""``lakd demo``: the most complete offline loop that exists, on the shapes world.

Today: export a shapes-world split, build the shipped tiny models (random init) and save them as
lakd checkpoints, embed the data with each checkpoint into an embedding store, fit the first
model's (the teacher's) whitening statistics, evaluate every model (zero-shot classification and
retrieval on the exported split, compositional probes on ``shapes:probes``), and end with the
geometry report of the teacher (256-d) against the student (128-d), printing its summary and the
path of report.html. Training joins here when it lands.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lakd.errors import LakdError

MARKER = ".lakd_demo"


@dataclass
class DemoConfig:
    """Where the demo writes, how many scenes it uses, and which shipped models it runs."""

    out: str = "lakd_demo"
    n: int = 512
    seed: int = 0
    models: tuple[str, ...] = field(default=("lakd:tiny-vit", "lakd:tiny-resnet"))
    batch_size: int = 64
    tsne_items: int = 300
    probes: int = 200


def _fresh_output(out: Path) -> None:
    """Replace a previous demo folder; refuse to touch a folder the demo did not make."""
    if out.exists():
        if not (out / MARKER).exists():
            raise LakdError(f"{out}: exists and was not written by `lakd demo`; choose another `out`")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by lakd demo; replaced on the next run\n")


def run_demo(cfg: DemoConfig, echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the demo and return the paths it wrote, by name."""
    from lakd.data.shapes import export_shapes
    from lakd.data.store.whitening import WhitenFitConfig, fit_store_whitening
    from lakd.eval import EvalConfig, evaluate
    from lakd.eval.results import format_summary
    from lakd.models import ModelSpec, load_model, save_checkpoint
    from lakd.models.embed import EmbedConfig, embed
    from lakd.report import ReportConfig, geometry_report, report_summary

    out = Path(cfg.out)
    _fresh_output(out)
    written: dict[str, Path] = {}

    data_dir = export_shapes(out / "data" / "shapes-val", split="val", n=cfg.n, seed=cfg.seed)
    written["data"] = data_dir
    echo(f"shapes world: {cfg.n} val scenes -> {data_dir}")

    for spec in cfg.models:
        name = ModelSpec.parse(spec).display_name
        model, _, _ = load_model(spec)
        ckpt = save_checkpoint(model, out / "models" / f"{name}.pt", extra={"note": "random init (demo)"})
        written[f"model/{name}"] = ckpt
        store = embed(
            EmbedConfig(
                model=str(ckpt),
                data=str(data_dir),
                out=str(out / "embeddings" / name),
                batch_size=cfg.batch_size,
            )
        )
        written[f"embeddings/{name}"] = out / "embeddings" / name
        echo(
            f"{name}: checkpoint {ckpt}; embeddings {out / 'embeddings' / name} "
            f"({store.n_items} images, {store.n_texts} captions, dim {store.dim('image')})"
        )

    stores = [str(written[f"embeddings/{ModelSpec.parse(spec).display_name}"]) for spec in cfg.models]
    whitening = fit_store_whitening(
        WhitenFitConfig(stores[0], str(out / "whitening" / "teacher.safetensors"))
    )
    written.update({f"whitening/{m}": path for m, path in whitening.items()})
    echo(f"teacher whitening statistics: {', '.join(str(p) for p in whitening.values())}")

    for spec in cfg.models:
        name = ModelSpec.parse(spec).display_name
        ckpt = str(written[f"model/{name}"])
        for data, task in (
            (str(data_dir), "all"),
            (f"shapes:probes?n={cfg.probes}&seed={cfg.seed}", "probes"),
        ):
            result_file = out / "eval" / f"{name}-{task}.json"
            records = evaluate(
                EvalConfig(model=ckpt, data=data, task=task, out=str(result_file), batch_size=cfg.batch_size)
            )
            written[f"eval/{name}-{task}"] = result_file
            echo(f"{name} eval ({data}):\n{format_summary(list(records.values()))}")

    report = geometry_report(
        ReportConfig(
            out=str(out / "report"),
            teacher=stores[0],
            students=tuple(stores[1:]),
            seed=cfg.seed,
            tsne_items=cfg.tsne_items,
        )
    )
    written["report"] = report / "report.html"
    echo(report_summary(report))

    echo(f"demo output: {out.resolve()}")
    return written
