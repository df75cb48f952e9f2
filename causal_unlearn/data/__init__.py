"""Data: the LUME row format, the built-in bios world, trace facts, and the SemEval loader."""

from causal_unlearn.data.bios import BiosWorld, Person, UnlearningTask, make_bios_world
from causal_unlearn.data.facts import TraceFact
from causal_unlearn.data.general_knowledge import make_general_knowledge
from causal_unlearn.data.probes import Probe
from causal_unlearn.data.rows import Row, row_kind, select
from causal_unlearn.data.stand_ins import stand_in_prompts
from causal_unlearn.data.semeval import SemEvalData, SemEvalFormatError, load_semeval, read_rows

__all__ = [
    "BiosWorld", "Person", "Probe", "Row", "SemEvalData", "SemEvalFormatError", "TraceFact", "UnlearningTask",
    "load_semeval",
    "make_bios_world", "make_general_knowledge", "read_rows", "row_kind", "select", "stand_in_prompts",
]
