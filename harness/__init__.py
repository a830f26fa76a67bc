"""drill: rehearse an enterprise disaster-recovery design on one machine, for real.

The public Python API lives in the submodules; the CLI (`harness.cli`) and the pytest plugin are
thin layers over it.
"""

__version__ = "0.1.0"
