"""The theorems of THEORY.md section 4 as executable checks (proofs: docs/PROOFS.md).

Each theorem object has `statement_text`, `statement_typst`, `hypotheses_text`, `check_hypotheses(run)`,
`per_step(run)` and `check(run) -> TheoremResult` (status "holds" / "violated" / "hypotheses not met",
worst margin, tightness per step).  Runs come from `paired_run` (reference and perturbed trajectory of the
same scheme with identical noise).
"""

from .base import Hypothesis, PairedRun, Theorem, TheoremResult, paired_run
from .t1 import T1
from .t1m import T1m
from .t2 import T2
from .t3 import T3
from .t4 import T4
from .t5 import T5
from .t6 import T6

THEOREMS: dict[str, Theorem] = {th.name: th for th in (T1(), T1m(), T2(), T3(), T4(), T5(), T6())}

__all__ = ["THEOREMS", "T1", "T1m", "T2", "T3", "T4", "T5", "T6", "Hypothesis", "PairedRun", "Theorem",
           "TheoremResult", "paired_run"]
