"""Data: the LUME row format, the built-in bios world, trace facts, the SemEval loader, and TOFU / MUSE rows."""

from causal_unlearn.data.bios import BiosWorld, Person, UnlearningTask, make_bios_world
from causal_unlearn.data.encoding import QATemplate
from causal_unlearn.data.facts import TraceFact
from causal_unlearn.data.general_knowledge import make_general_knowledge
from causal_unlearn.data.probes import Probe
from causal_unlearn.data.rows import Row, row_kind, select
from causal_unlearn.data.stand_ins import stand_in_prompts
from causal_unlearn.data.semeval import SemEvalData, SemEvalFormatError, load_semeval, read_rows
from causal_unlearn.data.tofu import TofuFormatError, TofuRow, load_muse, load_tofu, read_muse, read_tofu

__all__ = [
    "BiosWorld", "Person", "Probe", "QATemplate", "Row", "SemEvalData", "SemEvalFormatError", "TofuFormatError",
    "TofuRow", "TraceFact", "UnlearningTask", "load_muse", "load_semeval", "load_tofu", "make_bios_world",
    "make_general_knowledge", "read_muse", "read_rows", "read_tofu", "row_kind", "select", "stand_in_prompts",
]
