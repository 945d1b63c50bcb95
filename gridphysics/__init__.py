"""gridphysics: differentiable, batched power flow in JAX.

Importing gridphysics turns on JAX's float64 mode; see :mod:`gridphysics.precision`
for why and how to opt out.
"""

from gridphysics.precision import configure_dispatch_on_import as _configure_dispatch
from gridphysics.precision import configure_on_import as _configure_on_import

_configure_on_import()
_configure_dispatch()

from gridphysics.cases import case_names, load_case, load_matpower, save_matpower  # noqa: E402
from gridphysics.errors import (  # noqa: E402
    CaseFormatError,
    ConvergenceWarning,
    DuplicateBusError,
    GridPhysicsError,
    InvalidValueError,
    MatpowerParseError,
    NetworkError,
    NoSlackError,
    PrecisionError,
    UnknownBusError,
    UnknownCaseError,
    UnsupportedError,
    ZeroImpedanceError,
)
from gridphysics.network import (  # noqa: E402
    BranchData,
    BusData,
    GenData,
    LoadData,
    Network,
    ShuntData,
    Topology,
)
from gridphysics.pandapower_io import from_pandapower  # noqa: E402
from gridphysics.ppc import from_ppc, to_ppc  # noqa: E402
from gridphysics.results import PowerFlowResult  # noqa: E402
from gridphysics.solve import SolveOptions, solve  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BranchData",
    "BusData",
    "CaseFormatError",
    "ConvergenceWarning",
    "DuplicateBusError",
    "GenData",
    "GridPhysicsError",
    "InvalidValueError",
    "LoadData",
    "MatpowerParseError",
    "Network",
    "NetworkError",
    "NoSlackError",
    "PowerFlowResult",
    "PrecisionError",
    "ShuntData",
    "SolveOptions",
    "Topology",
    "UnknownBusError",
    "UnknownCaseError",
    "UnsupportedError",
    "ZeroImpedanceError",
    "case_names",
    "from_pandapower",
    "from_ppc",
    "load_case",
    "load_matpower",
    "save_matpower",
    "solve",
    "to_ppc",
]
