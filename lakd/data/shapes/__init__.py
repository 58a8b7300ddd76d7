"""The shapes world: a procedural image-caption data set with ground truth for compositional probes.

Scenes of 1-3 coloured shapes (:mod:`.world`), captions that are true by construction and can be
checked against the scene (:mod:`.captions`), probes with hard negatives for the four conditions
of Kang et al. (:mod:`.probes`), on-the-fly datasets and the ``shapes:`` spec (:mod:`.dataset`),
and export to / reading from a folder in open_clip's CSV convention (:mod:`.export`).
"""

from lakd.data.shapes.captions import (
    RELATION_MARGIN,
    Caption,
    Conjunction,
    Count,
    Ref,
    Relation,
    clear_relations,
    clearly_false,
    describe_scene,
    holds,
    parse_caption,
)
from lakd.data.shapes.dataset import DEFAULT_N, SPLITS, ShapesProbes, ShapesWorld, open_shapes
from lakd.data.shapes.export import ShapesFolder, export_shapes, open_shapes_folder
from lakd.data.shapes.probes import PROBE_CONDITIONS, ProbeCaptions, sample_probe
from lakd.data.shapes.world import COLOURS, SHAPES, SIZES, Obj, Scene, render_scene, sample_scene

__all__ = [
    "COLOURS",
    "DEFAULT_N",
    "PROBE_CONDITIONS",
    "RELATION_MARGIN",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Caption",
    "Conjunction",
    "Count",
    "Obj",
    "ProbeCaptions",
    "Ref",
    "Relation",
    "Scene",
    "ShapesFolder",
    "ShapesProbes",
    "ShapesWorld",
    "clear_relations",
    "clearly_false",
    "describe_scene",
    "export_shapes",
    "holds",
    "open_shapes",
    "open_shapes_folder",
    "parse_caption",
    "render_scene",
    "sample_probe",
    "sample_scene",
]
