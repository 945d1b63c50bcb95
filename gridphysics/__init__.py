"""gridphysics: differentiable, batched power flow in JAX.

Importing gridphysics turns on JAX's float64 mode; see :mod:`gridphysics.precision`
for why and how to opt out.
"""

from gridphysics.precision import configure_dispatch_on_import as _configure_dispatch
from gridphysics.precision import configure_on_import as _configure_on_import

_configure_on_import()
_configure_dispatch()

from gridphysics.ac import STARTS as AC_STARTS  # noqa: E402
from gridphysics.cases import case_names, load_case, load_matpower, save_matpower  # noqa: E402
from gridphysics.contingency import (  # noqa: E402
    ContingencyReport,
    N1Plan,
    Scenarios,
    contingencies,
    n1_dc_flows,
    n1_plan,
)
from gridphysics.errors import (  # noqa: E402
    CaseFileError,
    CaseFormatError,
    ConvergenceWarning,
    DuplicateBusError,
    GridPhysicsError,
    InputTypeError,
    InvalidValueError,
    MatpowerParseError,
    NetworkError,
    NoSlackError,
    PrecisionError,
    ReferenceMovedWarning,
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
from gridphysics.outage import OutageFlowResult, OutageFlows, OutageSystem  # noqa: E402
from gridphysics.pandapower_io import from_pandapower  # noqa: E402
from gridphysics.ppc import from_ppc, to_ppc  # noqa: E402
from gridphysics.ratings import Ratings, fill_missing_ratings, rating_rule  # noqa: E402
from gridphysics.results import PowerFlowResult, loading_percent, lost_load_mw  # noqa: E402
from gridphysics.sensitivity import bridges, lodf, otdf, ptdf  # noqa: E402
from gridphysics.solve import SolveOptions, solve  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AC_STARTS",
    "BranchData",
    "BusData",
    "CaseFileError",
    "CaseFormatError",
    "ContingencyReport",
    "ConvergenceWarning",
    "DuplicateBusError",
    "GenData",
    "GridPhysicsError",
    "InputTypeError",
    "InvalidValueError",
    "LoadData",
    "MatpowerParseError",
    "N1Plan",
    "Network",
    "NetworkError",
    "NoSlackError",
    "OutageFlowResult",
    "OutageFlows",
    "OutageSystem",
    "PowerFlowResult",
    "PrecisionError",
    "Ratings",
    "ReferenceMovedWarning",
    "Scenarios",
    "ShuntData",
    "SolveOptions",
    "Topology",
    "UnknownBusError",
    "UnknownCaseError",
    "UnsupportedError",
    "ZeroImpedanceError",
    "bridges",
    "case_names",
    "contingencies",
    "fill_missing_ratings",
    "from_pandapower",
    "from_ppc",
    "load_case",
    "load_matpower",
    "loading_percent",
    "lodf",
    "lost_load_mw",
    "n1_dc_flows",
    "n1_plan",
    "otdf",
    "ptdf",
    "rating_rule",
    "save_matpower",
    "solve",
    "to_ppc",
]
