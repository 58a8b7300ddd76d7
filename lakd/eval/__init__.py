"""Evaluation: zero-shot classification, image-text retrieval and compositional probes (also scored
by a head on token-by-patch maps, :mod:`lakd.eval.dense`), with results in clip_benchmark's format
(``lakd eval``)."""

from lakd.eval.evaluate import EvalConfig, evaluate
from lakd.eval.inputs import EvalInputs, load_inputs
from lakd.eval.probes import probe_choices, probe_conditions, probe_metrics
from lakd.eval.results import read_results, results_table, write_results, write_table
from lakd.eval.retrieval import retrieval_metrics, retrieval_ranks
from lakd.eval.tasks import TASKS, select_tasks
from lakd.eval.templates import DEFAULT_TEMPLATES, load_templates
from lakd.eval.zeroshot import embed_class_prompts, zeroshot_classifier, zeroshot_metrics

__all__ = [
    "DEFAULT_TEMPLATES",
    "TASKS",
    "EvalConfig",
    "EvalInputs",
    "embed_class_prompts",
    "evaluate",
    "load_inputs",
    "load_templates",
    "probe_choices",
    "probe_conditions",
    "probe_metrics",
    "read_results",
    "results_table",
    "retrieval_metrics",
    "retrieval_ranks",
    "select_tasks",
    "write_results",
    "write_table",
    "zeroshot_classifier",
    "zeroshot_metrics",
]
