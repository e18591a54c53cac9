"""Child Flux instances: one nested instance per node group of the enclosing
instance, reached from the Snakemake process through the enclosing instance.

* :mod:`.groups`: the enclosing ranks cut into node groups.
* :mod:`.launch`: a child as a job of the enclosing instance (whole nodes,
  pinned ranks, walltime = what is left of the allocation, its scheduler).
* :mod:`.keeper`: the task each child broker runs under; it leaves no process
  of the child behind and ends the whole child when one broker dies.
* :mod:`.carrier`: the ``FLUX_SSH`` program: Flux's ssh connector runs
  ``flux relay`` on the child's first node through the enclosing instance's
  ``rexec`` service, bytes carried both ways (no ssh, no child's local socket).
* :mod:`.relay`: child URIs and opening them through the carrier.
* :mod:`.child`: a running child (:class:`ChildInstance`: name, jobid, ranks,
  URI, a handle opener) and waiting for one to come up.
* :mod:`.watch`: a child's end seen from the enclosing instance, reported once.
* :mod:`.childset`: starting, finding and ending the children of a run.

For the router: ``start_children(handle, count)`` gives a :class:`ChildSet`;
``child.open`` is a handle opener and ``child.name`` its name;
``ChildSet.child_of_rank(rank)`` routes a placement; ``ChildSet.watch(on_lost)``
reports a lost child (fail its running jobs once, remove its ranks);
``child.reattach(jobids)`` re-attaches (``FluxExecutor.attach``) after a relay
died; ``ChildSet.close(handle)`` ends them all.
"""

from .child import ChildInstance, ChildStartError
from .childset import ChildSet, start_children
from .groups import split_ranks
from .launch import ChildPlan
from .watch import ChildLoss

__all__ = [
    "ChildInstance",
    "ChildLoss",
    "ChildPlan",
    "ChildSet",
    "ChildStartError",
    "split_ranks",
    "start_children",
]
