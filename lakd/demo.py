"""``lakd demo``: the most complete offline loop that exists, on the shapes world.

Today: export a shapes-world split, build the shipped tiny models (random init) and save them as
lakd checkpoints, embed the data with each checkpoint into an embedding store, and print where
everything went. Later stages (geometry report, training, evaluation) join here as they land.
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


def _fresh_output(out: Path) -> None:
    """Replace a previous demo folder; refuse to touch a folder the demo did not make."""
    if out.exists():
        if not (out / MARKER).exists():
            raise LakdError(f"{out}: exists and was not written by `lakd demo`; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by lakd demo; replaced on the next run\n")


def run_demo(cfg: DemoConfig, echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the demo and return the paths it wrote, by name."""
    from lakd.data.shapes import export_shapes
    from lakd.embed import EmbedConfig, embed
    from lakd.models import load_model, save_checkpoint

    out = Path(cfg.out)
    _fresh_output(out)
    written: dict[str, Path] = {}

    data_dir = export_shapes(out / "data" / "shapes-val", split="val", n=cfg.n, seed=cfg.seed)
    written["data"] = data_dir
    echo(f"shapes world: {cfg.n} val scenes -> {data_dir}")

    for spec in cfg.models:
        name = spec.split(":", 1)[-1]
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

    echo(f"demo output: {out.resolve()}")
    return written
