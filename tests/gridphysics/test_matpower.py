"""Tests of gridphysics.matpower: parsing, errors, writing, round trips and fuzzing.

Reference numbers come from PYPOWER's own case dicts or are written out by hand;
none are taken from this parser's output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gridphysics.errors import CaseFormatError, MatpowerParseError
from gridphysics.matpower import (
    format_matpower,
    load_matpower_dict,
    parse_matpower,
    write_matpower,
)
from tests.conftest import fuzz_examples

CASES = Path(__file__).resolve().parents[2] / "cases" / "matpower"
INF, NAN = np.inf, np.nan
FUZZ = settings(
    max_examples=fuzz_examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    """Exact equality, NaN equal to NaN, and -0.0 told apart from 0.0."""
    got, want = np.asarray(got), np.asarray(want, dtype=np.float64)
    assert got.dtype == np.float64
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.array_equal(got[ok].view(np.int64), want[ok].view(np.int64))


# --------------------------------------------------------------------------------------
# hand-written fixtures

AWKWARD = """\
function mpc = awkward % trailing comment on the header
%AWKWARD  hand-written case with awkward formatting
%{
mpc.bus = [ this block comment must be ignored ];
%}
mpc.version = '2';   % it's a comment with an apostrophe
mpc.baseMVA = 1.0e2 ;

%% bus data: commas, tabs, a continuation inside a row, two rows on one line
mpc.bus = [
\t1,\t3,\t0,\t0,\t0,\t0,\t1,\t1.06,\t0,\t0,\t1,\t1.06,\t0.94; % row 1
\t2 2 21.7 12.7 0 0 1 1.045 -4.98 ...  the rest of this line is a comment
\t   0 1 1.06 0.94
  3 1 +94.2 .19 0 0 1 1.01 -12.72 0 1 Inf -Inf;  4 1 47.8 -3.9 0 NaN 1 1 0 0 1 1.1 0.9
]
mpc.gen = [1 232.4 -16.9 10 0 1.06 100 1 332.4 0 7 8; 2 4e1 4.24E+01 50 -40 1.045 100 1 140 0 1.5e-3 -2.5D2];
mpc.branch = [   % the first line of this matrix holds only a comment

\t1\t2\t0.01938\t0.05917\t0.0528\t0\t0\t0\t0\t0\t1 ;
\t1\t3\t0.05403\t0.22304\t0.0492\t0\t0\t0\t0.978\t0\t1 ;

\t2\t4\t0.05811\t0.17632\t0.034\t0\t0\t0\t0\t0\t0
];
mpc.gencost = [
\t2 0 0 3 0.0430292599 20 0 0
\t1 0 0 2 0 0 100 4000
]
mpc.bus_name = {
\t'Bus 1 % not a comment';
\t'O''Hare';  % a trailing comment
\t\"double \"\"quoted\"\"\";
\t'four'
};
mpc.dcline = [
\t1 2 1 10 0;
];
mpc.bus_geo = [1, 2.5, 3; 2, 4, 5e-1];
mpc.scalar_extra = 42;
mpc.gentype = { 'NG'; 'COW' };
mpc.foo.bar = [1 2 3];
mpc.userfcn = struct('a', {1, 2});
mpc.note = 'free text; with [brackets] and %';
x = 5;
"""

AWKWARD_BUS = [
    [1, 3, 0, 0, 0, 0, 1, 1.06, 0, 0, 1, 1.06, 0.94],
    [2, 2, 21.7, 12.7, 0, 0, 1, 1.045, -4.98, 0, 1, 1.06, 0.94],
    [3, 1, 94.2, 0.19, 0, 0, 1, 1.01, -12.72, 0, 1, INF, -INF],
    [4, 1, 47.8, -3.9, 0, NAN, 1, 1, 0, 0, 1, 1.1, 0.9],
]
AWKWARD_GEN = [
    [1, 232.4, -16.9, 10, 0, 1.06, 100, 1, 332.4, 0, 7, 8],
    [2, 40, 42.4, 50, -40, 1.045, 100, 1, 140, 0, 0.0015, -250],
]
AWKWARD_BRANCH = [
    [1, 2, 0.01938, 0.05917, 0.0528, 0, 0, 0, 0, 0, 1],
    [1, 3, 0.05403, 0.22304, 0.0492, 0, 0, 0, 0.978, 0, 1],
    [2, 4, 0.05811, 0.17632, 0.034, 0, 0, 0, 0, 0, 0],
]
AWKWARD_GENCOST = [[2, 0, 0, 3, 0.0430292599, 20, 0, 0], [1, 0, 0, 2, 0, 0, 100, 4000]]
AWKWARD_NAMES = ["Bus 1 % not a comment", "O'Hare", 'double "quoted"', "four"]


def check_awkward(case: dict) -> None:
    assert case["version"] == "2"
    assert case["baseMVA"] == 100.0
    assert_same(case["bus"], AWKWARD_BUS)
    assert_same(case["gen"], AWKWARD_GEN)
    assert_same(case["branch"], AWKWARD_BRANCH)
    assert_same(case["gencost"], AWKWARD_GENCOST)
    assert case["bus_name"] == AWKWARD_NAMES
    assert_same(case["dcline"], [[1, 2, 1, 10, 0]])
    assert_same(case["bus_geo"], [[1, 2.5, 3], [2, 4, 0.5]])
    assert case["scalar_extra"] == 42.0
    for skipped in ("gentype", "foo", "bar", "userfcn", "note", "x", "areas"):
        assert skipped not in case


def test_awkward_formatting():
    check_awkward(parse_matpower(AWKWARD))


def test_crlf_line_endings():
    check_awkward(parse_matpower(AWKWARD.replace("\n", "\r\n")))


def test_old_mac_line_endings_and_bom():
    check_awkward(parse_matpower("\ufeff" + AWKWARD.replace("\n", "\r")))


def test_tabs_and_spaces_only_matrix_on_one_line_without_semicolon():
    text = (
        "mpc.baseMVA = 100\n"
        "mpc.bus = [1 3 0 0 0 0 1 1 0 345 1 1.1 0.9]\n"
        "mpc.gen = [1\t0\t0\t0\t0\t1\t100\t1\t0\t0]\n"
        "mpc.branch = [1,1,0,0.1,0,0,0,0,0,0,1]"
    )
    case = parse_matpower(text)
    assert_same(case["bus"], [[1, 3, 0, 0, 0, 0, 1, 1, 0, 345, 1, 1.1, 0.9]])
    assert_same(case["gen"], [[1, 0, 0, 0, 0, 1, 100, 1, 0, 0]])
    assert_same(case["branch"], [[1, 1, 0, 0.1, 0, 0, 0, 0, 0, 0, 1]])
    assert case["version"] == "1"  # no version field and fewer than 21 gen columns
    assert "gencost" not in case


VERSION1 = """\
function [baseMVA, bus, gen, branch, areas, gencost] = case3v1
%CASE3V1  MATPOWER version 1 style: bare assignments
baseMVA = 100;
bus = [
 1 3 0 0 0 0 1 1 0 230 1 1.1 0.9;
 2 1 90 30 0 0 1 1 0 230 1 1.1 0.9;
];
gen = [
 1 0 0 300 -300 1 100 1 250 10;
];
branch = [
 1 2 0.01 0.085 0.176 250 250 250 0 0 1;
];
areas = [
 1 1;
];
gencost = [
 2 1500 0 3 0.11 5 150;
];
helper = [9 9 9];  % a local variable, not an output
mpc.bus = [];      % not an output either
"""


def test_version1_style():
    case = parse_matpower(VERSION1)
    assert case["version"] == "1"
    assert case["baseMVA"] == 100.0
    assert_same(
        case["bus"],
        [
            [1, 3, 0, 0, 0, 0, 1, 1, 0, 230, 1, 1.1, 0.9],
            [2, 1, 90, 30, 0, 0, 1, 1, 0, 230, 1, 1.1, 0.9],
        ],
    )
    assert_same(case["gen"], [[1, 0, 0, 300, -300, 1, 100, 1, 250, 10]])
    assert_same(case["branch"], [[1, 2, 0.01, 0.085, 0.176, 250, 250, 250, 0, 0, 1]])
    assert_same(case["areas"], [[1, 1]])
    assert_same(case["gencost"], [[2, 1500, 0, 3, 0.11, 5, 150]])
    assert "helper" not in case and "mpc" not in case


def test_only_function_outputs_count():
    other = SMALL.replace("function mpc = small", "function s = small")
    case = parse_matpower(other.replace("mpc.", "s."))
    assert case["bus"].shape == (3, 13) and case["gencost"].shape == (2, 7)
    with pytest.raises(MatpowerParseError, match=r"required table missing: mpc\.baseMVA, mpc\.bus"):
        parse_matpower(other)  # mpc.* are locals of a function returning s


def test_script_without_header():
    case = parse_matpower(SMALL.split("\n", 1)[1])  # mpc.* fields
    assert case["bus"].shape == (3, 13)
    bare = VERSION1.split("\n", 2)[2].replace("mpc.bus = [];", "")
    case = parse_matpower(bare)  # bare names; every numeric variable is kept
    assert case["version"] == "1"
    assert case["gencost"].shape == (1, 7)
    assert_same(case["helper"], [[9, 9, 9]])


def test_row_cell_array_of_names_and_numeric_version():
    text = (
        "function mpc = c\nmpc.version = 2;\nmpc.baseMVA = 100;\n"
        "mpc.bus = [1 3 0 0 0 0 1 1 0 345 1 1.1 0.9; 2 1 0 0 0 0 1 1 0 345 1 1.1 0.9];\n"
        "mpc.gen = [1 0 0 0 0 1 100 1 0 0];\n"
        "mpc.branch = [1 2 0 0.1 0 0 0 0 0 0 1];\n"
        "mpc.bus_name = {'a', 'b c'};\n"
    )
    case = parse_matpower(text)
    assert case["version"] == "2"
    assert case["bus_name"] == ["a", "b c"]


def test_continuation_across_statement():
    text = (
        "mpc.baseMVA = ...\n 100;\n"
        "mpc.bus = [1 3 0 0 0 0 1 1 0 ... comment\n 345 1 1.1 0.9];\n"
        "mpc.gen = [1 0 0 0 0 1 100 1 0 0];\n"
        "mpc.branch = [1 1 0 0.1 0 0 0 0 0 0 1];\n"
    )
    case = parse_matpower(text)
    assert case["baseMVA"] == 100.0
    assert_same(case["bus"], [[1, 3, 0, 0, 0, 0, 1, 1, 0, 345, 1, 1.1, 0.9]])


# --------------------------------------------------------------------------------------
# malformed input: the error names the line and the table

SMALL = """\
function mpc = small
mpc.version = '2';
mpc.baseMVA = 100;
mpc.bus = [
\t1\t3\t0\t0\t0\t0\t1\t1\t0\t230\t1\t1.1\t0.9;
\t2\t1\t90\t30\t0\t0\t1\t1\t0\t230\t1\t1.1\t0.9;
\t3\t2\t0\t0\t0\t0\t1\t1\t0\t230\t1\t1.1\t0.9;
];
mpc.gen = [
\t1\t0\t0\t300\t-300\t1\t100\t1\t250\t10;
\t3\t85\t0\t300\t-300\t1\t100\t1\t270\t10;
];
mpc.branch = [
\t1\t2\t0.01\t0.085\t0.176\t250\t250\t250\t0\t0\t1;
\t2\t3\t0.017\t0.092\t0.158\t250\t250\t250\t0\t0\t1;
\t1\t3\t0.039\t0.17\t0.358\t150\t150\t150\t0\t0\t1;
];
mpc.gencost = [
\t2\t1500\t0\t3\t0.11\t5\t150;
\t2\t2000\t0\t3\t0.085\t1.2\t600;
];
"""
SMALL_LINES = SMALL.splitlines()


def edit(lineno: int, new: str) -> str:
    """SMALL with its 1-based line ``lineno`` replaced by ``new``."""
    lines = list(SMALL_LINES)
    lines[lineno - 1] = new
    return "\n".join(lines) + "\n"


def test_small_is_valid():
    case = parse_matpower(SMALL)
    assert case["bus"].shape == (3, 13)
    assert case["gen"].shape == (2, 10)
    assert case["branch"].shape == (3, 11)
    assert case["gencost"].shape == (2, 7)
    assert case["version"] == "2"


MALFORMED = {
    "short row": (
        edit(15, "\t2\t3\t0.017\t0.092\t0.158\t250\t250\t250\t0\t0;"),
        15,
        "mpc.branch row 2 has 10 values, expected 11",
    ),
    "long row": (
        edit(7, SMALL_LINES[6].replace(";", "\t7;")),
        7,
        "mpc.bus row 3 has 14 values, expected 13",
    ),
    "bad number": (edit(10, "\t1\t0\t0\t1.2.3\t-300\t1\t100\t1\t250\t10;"), 10, "'1.2.3'"),
    "word": (edit(19, "\t2\t1500\t0\t3\tabc\t5\t150;"), 19, "'abc'"),
    "expression": (edit(6, SMALL_LINES[5].replace("90", "90 - 1")), 6, "'-'"),
    "unterminated matrix": (edit(17, ""), 13, "mpc.branch: '[' is never closed"),
    "unterminated last matrix": (edit(21, "% no closing bracket"), 18, "mpc.gencost"),
    "unterminated string": (edit(2, "mpc.version = '2;"), 2, "never closed"),
    "mismatched bracket": (edit(6, SMALL_LINES[5] + ")"), 6, "')' does not match '['"),
    "stray bracket": (edit(12, "];]"), 12, "unmatched ']'"),
    "bad baseMVA": (edit(3, "mpc.baseMVA = abc;"), 3, "mpc.baseMVA"),
    "negative baseMVA": (edit(3, "mpc.baseMVA = -100;"), 3, "mpc.baseMVA"),
    "empty baseMVA": (edit(3, "mpc.baseMVA = ;"), 3, "mpc.baseMVA"),
    "matrix version": (edit(2, "mpc.version = [2];"), 2, "mpc.version"),
    "string bus": (edit(4, "mpc.bus = 'none'; x = ["), 4, "mpc.bus"),
    "cell bus": (edit(4, "mpc.bus = {1, 2}; x = ["), 4, "mpc.bus must be a numeric matrix"),
    "empty element": (edit(10, SMALL_LINES[9].replace("\t0\t0", ",,0", 1)), 10, "empty value"),
    "nested matrix": (edit(6, "[" + SMALL_LINES[5] + "]"), 6, "mpc.bus must hold literal numbers"),
    "text after matrix": (edit(12, "]';"), 12, "mpc.gen: unexpected text after ']'"),
    "gencost rows": (edit(20, ""), 18, "mpc.gencost has 1 rows, expected 2 or 4"),
    "gencost ncost": (edit(20, "\t2\t2000\t0\t4\t0.085\t1.2\t600;"), 18, "mpc.gencost row 2"),
    "gencost pwl": (edit(20, "\t1\t2000\t0\t2\t0.085\t1.2\t600;"), 18, "mpc.gencost row 2"),
    "gencost fractional ncost": (edit(19, "\t2\t1500\t0\t2.5\t0.11\t5\t150;"), 18, "NCOST"),
    "indexed assignment": (SMALL + "mpc.bus(1, 3) = 5;\n", 22, "mpc.bus"),
    # MATLAB would change the case; they were skipped as unknown statements
    "eval": (SMALL + "eval('mpc.bus(1, 3) = 0');\n", 22, "uses eval(...)"),
    "evalc in an assignment": (SMALL + "x = evalc('mpc.baseMVA = 1');\n", 22, "uses evalc"),
    "load command": (SMALL + "load other.mat\n", 22, "uses load"),
    "whole struct": (SMALL + "mpc = loadcase('case9');\n", 22, "uses loadcase"),
    "whole struct literal": (SMALL + "mpc = [];\n", 22, "whole case (mpc = ...)"),
    # control flow decides which assignments happen; MATLAB gives 100, they read 50
    "if false": (SMALL + "if false\n mpc.baseMVA = 50;\nend\n", 22, "'if' is not supported"),
    "for over nothing": (SMALL + "for k = []\nmpc.baseMVA = 50;\nend\n", 22, "'for'"),
    "after return": (SMALL + "return;\nmpc.baseMVA = 50;\n", 22, "after 'return'"),
    "dynamic field": (SMALL + "mpc.('baseMVA') = 50;\n", 22, "not a plain assignment"),
    "deal": (SMALL + "[mpc.baseMVA] = deal(50);\n", 22, "multiple assignment"),
    "handle": (SMALL + "cellfun(@eval, {'mpc.baseMVA=50;'});\n", 22, "function handle"),
    "clear": (SMALL + "clear mpc\n", 22, "'clear'"),
    "cell index": (SMALL + "mpc.bus{1} = 3;\n", 22, "not a plain assignment"),
    "names count": (
        SMALL + "mpc.bus_name = {'a'; 'b'};\n",
        22,
        "mpc.bus_name has 2 names for 3 buses",
    ),
    "names not strings": (SMALL + "mpc.bus_name = {\n'a';\n 2;\n'c'};\n", 24, "mpc.bus_name"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_names_the_line(name):
    text, line, fragment = MALFORMED[name]
    with pytest.raises(MatpowerParseError) as err:
        parse_matpower(text, path="bad.m")
    assert err.value.line == line
    assert f"bad.m:line {line}: " in str(err.value)
    assert fragment in str(err.value)


def test_dynamic_words_as_names_fields_or_strings_are_data():
    """Only calls are refused: the same words in strings, as a field or in a longer
    name change nothing; a trailing return or end is no statement after return."""
    text = SMALL + "y = 'eval(1) if @'; x_load(2) = 1; mpc.load = [1 2];\nz = \"run it\";\n"
    text += "return;\nend\n"
    case = parse_matpower(text)
    np.testing.assert_array_equal(case["load"], [[1.0, 2.0]])
    assert parse_matpower(SMALL)["bus"].tolist() == case["bus"].tolist()


def test_bus_with_too_few_columns_reports_matrix_start():
    text = SMALL.replace("\t0.9;", ";")  # every bus row loses its last value
    with pytest.raises(MatpowerParseError, match=r"line 4: mpc\.bus has 12 columns"):
        parse_matpower(text)


def test_gen_and_branch_column_minimums():
    gen9 = SMALL.replace("\t250\t10;", "\t250;").replace("\t270\t10;", "\t270;")
    with pytest.raises(MatpowerParseError, match=r"line 9: mpc\.gen has 9 columns"):
        parse_matpower(gen9)
    br10 = SMALL.replace("\t0\t1;", "\t1;")
    with pytest.raises(MatpowerParseError, match=r"line 13: mpc\.branch has 10 columns"):
        parse_matpower(br10)


@pytest.mark.parametrize("table", ["baseMVA", "bus", "gen", "branch"])
def test_missing_required_table(table):
    lines = SMALL.splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"mpc.{table} "))
    end = (
        start
        if table == "baseMVA"
        else next(i for i in range(start, len(lines)) if lines[i] == "];\n")
    )
    text = "".join(lines[:start] + lines[end + 1 :])
    with pytest.raises(MatpowerParseError) as err:
        parse_matpower(text)
    assert err.value.line is None
    assert f"mpc.{table}" in str(err.value)
    assert "line" not in str(err.value)


def test_line_numbers_survive_crlf_comments_and_continuations():
    bad = AWKWARD.replace("0.05403", "0.05x03")  # branch row 2
    line = AWKWARD[: AWKWARD.index("0.05403")].count("\n") + 1
    for text in (bad, bad.replace("\n", "\r\n")):
        with pytest.raises(MatpowerParseError, match=rf"line {line}: mpc\.branch: .*'0\.05x03'"):
            parse_matpower(text)
    ragged = AWKWARD.replace("\t   0 1 1.06 0.94", "\t   0 1 1.06")  # bus row 2, continued
    line = AWKWARD[: AWKWARD.index("\t2 2 21.7")].count("\n") + 1
    with pytest.raises(MatpowerParseError, match=rf"line {line}: mpc\.bus row 2 has 12 values"):
        parse_matpower(ragged.replace("\n", "\r\n"))


def test_parse_error_is_a_case_format_error():
    assert issubclass(MatpowerParseError, CaseFormatError)
    with pytest.raises(CaseFormatError):
        parse_matpower("")


# --------------------------------------------------------------------------------------
# the shipped case files against PYPOWER's own copies


@pytest.fixture(scope="module")
def pypower_api():
    return pytest.importorskip("pypower.api")


# Rows (0-based) whose TAP column the MATPOWER files set from 0 to 1, as their headers
# document: case118 "Branches 86--87, 68--116 changed ... to transformers (tap ratio = 1)
# ... on 2019-02-15"; case300 "v2 - 2025-06-14 ... Set tap parameter of branches # 71,
# 90, 188, ... 325 to 1.0".
TAP_CHANGED = {
    "case118": [133, 182],
    "case300": [
        n - 1
        for n in (
            *(71, 90, 188, 189, 190, 191, 192, 193, 208, 232, 233),
            *(267, 279, 299, 310, 313, 315, 316, 318, 320, 324, 325),
        )
    ],
}


@pytest.mark.parametrize("name", ["case14", "case30", "case57", "case118", "case300"])
def test_matches_pypower(name, pypower_api):
    got = load_matpower_dict(CASES / f"{name}.m")
    want = getattr(pypower_api, name)()
    assert got["baseMVA"] == want["baseMVA"]
    assert got["version"] == want["version"] == "2"
    for table in ("bus", "gen", "branch", "gencost"):
        g, w = got[table], np.asarray(want[table], dtype=np.float64)
        assert g.shape == w.shape, table
        if table == "branch":
            # MATPOWER 5.0 re-converted the IEEE CDF cases (CHANGES.md, 11/18/14:
            # "No longer uses 9900 MVA as proxy for unlimited line capacity"; the files
            # list "MVA limit of branch ... not given, set to 0"); PYPOWER kept 9900.
            limitless = w[:, 5] != g[:, 5]
            assert np.all(w[limitless, 5] == 9900) and np.all(g[limitless, 5] == 0)
            w = w.copy()
            w[limitless, 5] = 0
            rows = TAP_CHANGED.get(name, [])
            assert np.all(w[rows, 8] == 0) and np.all(g[rows, 8] == 1)
            w[rows, 8] = 1
        differ = np.argwhere(g != w)
        # PYPOWER's copies were printed with 6 significant digits (case300's conversion
        # note says "setting Pmax at slack bus (bus 7049) to 2399.01" for the stored
        # 2399.005); every other entry is equal exactly.
        for r, c in differ:
            assert float(f"{g[r, c]:.6g}") == w[r, c], (table, r, c, g[r, c], w[r, c])


SHAPES = {
    "case14": (14, 20, 5),
    "case30": (30, 41, 6),
    "case57": (57, 80, 7),
    "case118": (118, 186, 54),
    "case300": (300, 411, 69),
    "case1354pegase": (1354, 1991, 260),
    "case2869pegase": (2869, 4582, 510),
    "case9241pegase": (9241, 16049, 1445),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_all_shipped_cases_parse(name):
    case = load_matpower_dict(CASES / f"{name}.m")
    n_bus, n_branch, n_gen = SHAPES[name]
    assert case["bus"].shape == (n_bus, 13)
    assert case["branch"].shape == (n_branch, 13)
    assert case["gen"].shape == (n_gen, 21)
    assert case["gencost"].shape[0] == n_gen
    assert case["baseMVA"] == 100.0
    if "bus_name" in case:
        assert len(case["bus_name"]) == n_bus


def test_bus_names_of_case14():
    case = load_matpower_dict(CASES / "case14.m")
    assert case["bus_name"][0] == "Bus 1     HV"
    assert case["bus_name"][13] == "Bus 14    LV"


# --------------------------------------------------------------------------------------
# writing and round trips


@pytest.mark.parametrize("name", ["case118", "case300"])
def test_round_trip_pypower(name, pypower_api):
    want = getattr(pypower_api, name)()
    got = parse_matpower(format_matpower(want, name))
    assert got["baseMVA"] == want["baseMVA"]
    for table in ("bus", "gen", "branch", "gencost"):
        assert_same(got[table], want[table])


def test_format_spelling():
    case = {
        "baseMVA": 100,
        "bus": np.array([[1, 3, 0, -0.0, 0.1, 1e-300, 1, 1, 0, 345, 1, np.inf, -np.inf]]),
        "gen": np.array([[1, np.nan, 0, 0, 0, 1, 100, 1, 1e20, 0]]),
        "branch": np.array([[1, 1, 0, 0.1 + 0.5j, 0, 0, 0, 0, 0, 0, 1]]),
        "bus_name": ["it's %"],
    }
    text = format_matpower(case, "tiny")
    assert text.startswith("function mpc = tiny\n")
    assert "mpc.version = '2';" in text
    assert "mpc.baseMVA = 100;" in text
    assert "\t1\t3\t0\t-0\t0.1\t1e-300\t1\t1\t0\t345\t1\tInf\t-Inf;" in text
    assert "\t1\tNaN\t0\t0\t0\t1\t100\t1\t1e+20\t0;" in text
    assert "%\tbus_i\ttype\tPd" in text
    assert "'it''s %';" in text
    back = parse_matpower(text)
    assert_same(back["branch"], [[1, 1, 0, 0.1, 0, 0, 0, 0, 0, 0, 1]])  # real part
    assert back["bus_name"] == ["it's %"]


def test_format_rejects_bad_input():
    with pytest.raises(CaseFormatError):
        format_matpower({"baseMVA": 100, "bus": np.zeros((1, 13))})
    with pytest.raises(CaseFormatError):
        format_matpower(parse_matpower(SMALL), "not a name")
    with pytest.raises(CaseFormatError):
        format_matpower(parse_matpower(SMALL) | {"bus_name": ["a", "b\nc", "d"]})


def test_write_and_load_file(tmp_path):
    case = parse_matpower(SMALL)
    path = tmp_path / "my-case.m"
    write_matpower(case, path)
    assert path.read_text().startswith("function mpc = my_case\n")
    back = load_matpower_dict(path)
    for table in ("bus", "gen", "branch", "gencost"):
        assert_same(back[table], case[table])
    path.write_bytes(SMALL.replace("0.11", "0.1\xff1").encode("latin-1"))
    with pytest.raises(MatpowerParseError, match=r"my-case\.m:line 19: "):
        load_matpower_dict(path)


any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def random_cases(draw):
    n_bus, n_gen, n_branch = (draw(st.integers(1, 4)) for _ in range(3))

    def table(rows, min_cols):
        cols = draw(st.integers(min_cols, min_cols + 4))
        return draw(hnp.arrays(np.float64, (rows, cols), elements=any_float))

    ncost = draw(st.integers(0, 4))
    coefs = draw(hnp.arrays(np.float64, (n_gen, 3 + ncost), elements=any_float))
    gencost = np.column_stack(
        [np.full(n_gen, 2.0), coefs[:, :2], np.full(n_gen, ncost), coefs[:, 2:]]
    )
    case = {
        "baseMVA": draw(st.floats(1e-300, 1e300)),
        "bus": table(n_bus, 13),
        "gen": table(n_gen, 10),
        "branch": table(n_branch, 11),
        "gencost": gencost,
        "areas": table(draw(st.integers(1, 3)), 2),
    }
    if draw(st.booleans()):
        names = st.text(st.characters(blacklist_characters="\r\n"), max_size=12)
        case["bus_name"] = draw(st.lists(names, min_size=n_bus, max_size=n_bus))
    return case


@FUZZ
@given(random_cases())
def test_round_trip_random(case):
    back = parse_matpower(format_matpower(case))
    assert back["baseMVA"] == case["baseMVA"]
    for table in ("bus", "gen", "branch", "gencost", "areas"):
        assert_same(back[table], case[table])
    assert back.get("bus_name") == case.get("bus_name")


# --------------------------------------------------------------------------------------
# fuzzing: anything either parses or raises MatpowerParseError


def parse_or_parse_error(text: str) -> None:
    try:
        case = parse_matpower(text)
    except MatpowerParseError:
        return
    assert case["bus"].shape[1] >= 13 and case["baseMVA"] > 0


@FUZZ
@given(st.text())
def test_fuzz_random_text(text):
    parse_or_parse_error(text)


@FUZZ
@given(st.text(alphabet=list("[]{}()'\";,%.\n\r\t 019eE+-=...mpcbusgenfunction"), max_size=200))
def test_fuzz_matlab_like_text(text):
    parse_or_parse_error(text)


mutation = st.tuples(
    st.sampled_from(["del_char", "ins_char", "dup_char", "del_line", "dup_line", "swap_lines"]),
    st.integers(0, 10_000),
    st.sampled_from([*"[]{}()'\";,%.\n\r\t 0-+eEI", "...", "%{", "Inf", "NaN", "mpc."]),
)


@FUZZ
@given(st.sampled_from([SMALL, AWKWARD, VERSION1]), st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_mutations_of_valid_cases(text, mutations):
    for op, where, piece in mutations:
        lines = text.split("\n")
        i, k = where % (len(text) + 1), where % len(lines)
        if op == "del_char":
            text = text[:i] + text[i + 1 :]
        elif op == "ins_char":
            text = text[:i] + piece + text[i:]
        elif op == "dup_char":
            text = text[:i] + text[i : i + 1] * 2 + text[i + 1 :]
        elif op == "del_line":
            text = "\n".join(lines[:k] + lines[k + 1 :])
        elif op == "dup_line":
            text = "\n".join(lines[: k + 1] + lines[k:])
        else:
            j = (k + 1) % len(lines)
            lines[k], lines[j] = lines[j], lines[k]
            text = "\n".join(lines)
    parse_or_parse_error(text)


def _case14_text():
    return (Path(__file__).parents[2] / "cases/matpower/case14.m").read_text()


def test_a_long_bad_number_fails_in_linear_time():
    """A digit run followed by a letter was quadratic in the number regex (46 s at 32k
    digits); 200k digits must now fail at once, with the typed error."""
    import time

    from gridphysics.matpower import parse_matpower

    text = _case14_text()
    at = text.index("\n", text.index("mpc.bus = [")) + 1
    bad = text[:at] + "\t" + "9" * 200_000 + "x\t" + text[at:]
    start = time.perf_counter()
    with pytest.raises(MatpowerParseError, match="cannot read"):
        parse_matpower(bad)
    assert time.perf_counter() - start < 2.0


def test_a_long_one_line_cell_array_parses_in_linear_time():
    """Each name's closing quote was searched with a scan to the end of the line
    (quadratic on one long line: 124 s for 4 MB); 2 MB of names must take seconds."""
    import time

    from gridphysics.matpower import parse_matpower

    names = "mpc.bus_name = {" + " ".join(f"'bus{k}'" for k in range(180_000)) + "};\n"
    start = time.perf_counter()
    with pytest.raises(MatpowerParseError, match="180000 names for 14 buses"):
        parse_matpower(_case14_text() + names)
    assert time.perf_counter() - start < 10.0


def test_case_text_above_the_size_limit_is_refused(monkeypatch, tmp_path):
    from gridphysics import matpower

    monkeypatch.setattr(matpower, "MAX_CASE_CHARS", 1000)
    with pytest.raises(MatpowerParseError, match="above the limit"):
        matpower.parse_matpower(_case14_text())
    path = tmp_path / "big.m"
    path.write_text(_case14_text())
    with pytest.raises(MatpowerParseError, match="above the limit"):
        matpower.load_matpower_dict(path)


@pytest.mark.parametrize("inside", ["x = {};", "x = '{}';"])
def test_a_long_word_of_dynamic_names_is_read_in_linear_time(inside):
    """Each 'load' hit in one long word walked back to the word's start: 20 KB took
    2.6 s, 36 KB 257 s (hostile rerun 3)."""
    import time

    text = _case14_text() + inside.format("load" * 50_000) + "\n"  # 200 KB
    start = time.perf_counter()
    assert parse_matpower(text)["bus"].shape == (14, 13)
    assert time.perf_counter() - start < 2.0


def test_a_case_of_many_tiny_statements_is_refused_quickly():
    """Each statement costs Python work (about 10 us): 100,000 one-line assignments were
    read at 1.4 MB/s; above MAX_STATEMENTS the parse stops at once with a typed error."""
    import time

    from gridphysics import matpower

    text = _case14_text() + "".join(f"mpc.x{i} = [1 2 3];\n" for i in range(100_000))
    start = time.perf_counter()
    with pytest.raises(MatpowerParseError, match="more than 10,000 statements"):
        matpower.parse_matpower(text)
    assert time.perf_counter() - start < 2.0  # the limit, not the file, bounds the work
    ok = _case14_text() + "".join(f"x{i} = 1;\n" for i in range(matpower.MAX_STATEMENTS - 50))
    assert matpower.parse_matpower(ok)["bus"].shape == (14, 13)


def test_a_data_row_after_the_closing_bracket_is_an_error_not_dropped():
    from gridphysics.matpower import parse_matpower

    text = _case14_text()
    end = text.index("];", text.index("mpc.branch = ["))
    row = "\n\t1\t5\t0.05403\t0.22304\t0.0492\t0\t0\t0\t0\t0\t1\t-360\t360;\n"
    with pytest.raises(MatpowerParseError, match="row of numbers outside any matrix"):
        parse_matpower(text[: end + 2] + row + text[end + 2 :])


def test_many_empty_lines_cost_linear_time_and_bounded_memory():
    """50 MB of newlines took 3.4 GB (per-line lists); the parser keeps no per-line
    structure now: 5 MB of them parse in well under a second and allocate a few copies
    of the text at most (tracemalloc peak)."""
    import time
    import tracemalloc

    from gridphysics.matpower import parse_matpower

    text = _case14_text() + "\n" * 5_000_000
    tracemalloc.start()
    start = time.perf_counter()
    case = parse_matpower(text)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert case["bus"].shape == (14, 13)
    assert peak < 10 * len(text), peak
    assert elapsed < 5.0


@pytest.mark.parametrize("body", ["\n" * 4_000_000 + "1", "1\n" * 2_000_000])
def test_newlines_inside_a_matrix_stay_within_ten_times_the_text(body):
    """Per-line counts of a matrix body were int64 arrays kept for the whole body:
    18x the text for 4 MB of newlines in a matrix (hostile rerun 3)."""
    import tracemalloc

    text = _case14_text() + "mpc.x = [" + body + "];\n"
    tracemalloc.start()
    case = parse_matpower(text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert case["x"].shape == ((1, 1) if body.startswith("\n") else (2_000_000, 1))
    assert peak < 10 * len(text), peak / len(text)


# --------------------------------------------------------------------------------------
# the vectorised reader of plain-number matrices against Python's float, token by token

number_token = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.9e}".replace("e", "D")),
    st.integers(-(10**12), 10**12).map(str),
    st.sampled_from(["Inf", "-Inf", "+Inf", "NaN", "nan", "inf", ".5", "5.", "-.5e-3", "+1E+2"]),
)


@FUZZ
@given(
    st.integers(1, 4).flatmap(
        lambda cols: st.lists(st.lists(number_token, min_size=cols, max_size=cols), min_size=1)
    ),
    st.sampled_from([" ", "\t", ",", " , ", "  \t"]),
    st.sampled_from([";\n", "\n", ";", " ;\n\n"]),
)
def test_plain_numbers_read_as_float_reads_them_on_both_paths(rows, item_sep, row_sep):
    """The bulk reader (numpy over the bytes) and the token-by-token reader give what
    ``float`` gives for every spelling MATLAB writes ('D' exponents, Inf, NaN, '.5')."""
    import gridphysics.matpower as mp

    text = "[" + row_sep.join(item_sep.join(r) for r in rows) + "]"
    want = np.array([[float(t.replace("D", "e")) for t in r] for r in rows])
    parser = mp._Parser(text, None)
    close = parser.match_close(0, "t")[0]
    fast = mp._matrix_fast(parser.src, 1, close)
    assert fast is not None
    assert_same(fast, want)
    real = mp._matrix_fast
    try:
        mp._matrix_fast = lambda *a: None  # force the token-by-token path
        assert_same(parser.matrix(0, close, "t"), want)
    finally:
        mp._matrix_fast = real


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("1 2; 3 4x", "cannot read '4x'"),
        ("1 2; 3 1-2", "cannot read '1-2'"),
        ("1 2; 3 inF", "cannot read 'inF'"),
        ("1 2; 3 1e", "cannot read '1e'"),
        ("1 2; 3", "row 2 has 1 values"),
        ("1 ,, 2", "empty value"),
    ],
)
def test_the_bulk_reader_leaves_every_error_to_the_named_message(body, match):
    with pytest.raises(MatpowerParseError, match=match):
        parse_matpower(f"function mpc = c\nmpc.baseMVA = 100;\nmpc.bus = [{body}];\n")


@FUZZ
@given(st.lists(st.text(alphabet="0123456789.+-eEdD", min_size=1, max_size=24), min_size=1))
def test_any_token_of_number_characters_is_read_as_float_reads_it_or_refused(tokens):
    """Random strings of the characters numbers are made of: the bulk reader's byte-class
    grammar and its exact fast conversion agree with ``float`` bit for bit, and hand
    every token ``float`` refuses to the token-by-token path (None)."""
    import gridphysics.matpower as mp

    want = []
    for t in tokens:
        try:
            want.append(float(t.replace("d", "e").replace("D", "e")))
        except ValueError:
            want = None
            break
    got = mp._matrix_fast(" ".join(tokens), 0, len(" ".join(tokens)))
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert_same(got, np.array([want]))


def test_the_bulk_reader_is_exact_across_its_chunks_and_names_a_bad_last_token():
    """A matrix several times ``_CHUNK_CHARS`` long, of numbers spelled every way (17-digit
    repr, exponents beyond 1e22, 'D' exponents, Inf, NaN, -0), in many rows or in one:
    read exactly as ``float`` reads each one; one bad token at the very end is still
    named."""
    import gridphysics.matpower as mp

    rng = np.random.default_rng(5)
    x = rng.standard_normal(180_000) * 10.0 ** rng.integers(-30, 30, 180_000)
    spellings = [repr, lambda v: f"{v:.6g}", lambda v: f"{v:.4e}".replace("e", "D"), str]
    tokens = [spellings[k % 4](float(v)) for k, v in enumerate(x)]
    tokens[7::997] = ["Inf"] * len(tokens[7::997])
    tokens[11::991] = ["-0"] * len(tokens[11::991])
    tokens[13::983] = ["NaN"] * len(tokens[13::983])
    rows = [" ".join(tokens[i : i + 6]) for i in range(0, len(tokens), 6)]
    body = ";\n".join(rows)
    assert len(body) > 2 * mp._CHUNK_CHARS
    want = np.array([float(t.replace("D", "e")) for t in tokens]).reshape(-1, 6)
    assert_same(mp._matrix_fast(body, 0, len(body)), want)
    line = " ".join(tokens)  # one row: the chunks are cut inside the line
    assert_same(mp._matrix_fast(line, 0, len(line)), want.reshape(1, -1))
    text = f"function mpc = c\nmpc.baseMVA = 100;\nmpc.bus = [{body[:-1]}1x];\n"
    with pytest.raises(MatpowerParseError, match=r"cannot read '[^']*1x'"):
        parse_matpower(text)


def test_percent_signs_in_strings_and_quotes_in_comments_keep_their_meaning():
    """Lines copied in bulk have their comments cut by a regex; a line with a quote
    before a '%' is read character by character. Both kinds, mixed on purpose."""
    names = (
        "% it's a comment with a quote and a % sign\n"
        "mpc.bus_name = {'50% load'; ... a continuation, then a comment 'x'\n"
        "  'it''s % not a comment';  % but this is: 'y'\n"
        '  "two % signs %"};  % closing\n'
    )
    case = parse_matpower(SMALL.replace("mpc.gencost = [", names + "mpc.gencost = [", 1))
    assert case["bus_name"] == ["50% load", "it's % not a comment", "two % signs %"]
    assert_same(case["gencost"][:, 4], [0.11, 0.085])


def test_long_mantissas_near_halfway_points_read_as_float_reads_them():
    """Tokens of 16 to 19 significant digits (``repr`` writes 17) are read in extended
    precision with one check for the double rounding's single ambiguous case. The
    reference is ``float``: random tokens, decimal roundings of the exact midpoints
    between adjacent doubles (the hardest inputs), and integers just past 2**53 that
    are exact midpoints."""
    from decimal import Decimal

    import gridphysics.matpower as mp

    rng = np.random.default_rng(11)
    tokens = []
    for m, e in zip(
        rng.integers(10**15, 10**18, 4000) * rng.integers(1, 9, 4000),
        rng.integers(-30, 31, 4000),
        strict=True,
    ):
        tokens.append(f"{m}e{e}")
    for v in rng.uniform(1e-3, 1e3, 3000) * 10.0 ** rng.integers(-8, 9, 3000):
        mid = (Decimal(float(v)) + Decimal(float(np.nextafter(v, np.inf)))) / 2
        tokens += [format(mid, f".{d - 1}e") for d in (16, 17, 18, 19)]
    tokens += [str(2**53 + 2 * k + 1) for k in range(200)]  # exact ties: to even
    tokens += [f"-{2**60 + 256 * k + 128}" for k in range(200)]
    body = " ".join(tokens)
    want = np.array([[float(t) for t in tokens]])
    got = mp._matrix_fast(body, 0, len(body))
    assert got is not None
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize(
    ("cell", "want"),
    [
        ("{'a'; 'b c'; 'd%e'}", ["a", "b c", "d%e"]),
        ("{ 'a', \"b\" ;\n 'x}y' }", ["a", "b", "x}y"]),
        ("{'it''s'; 'ok'; 'z'}", ["it's", "ok", "z"]),  # a doubled quote: the general reader
        ("{''; 'a'; 'b'}", ["", "a", "b"]),
        ("{'a' 'b' 'c'}", ["a", "b", "c"]),
    ],
)
def test_cell_arrays_of_names_on_the_fast_and_the_general_path(cell, want):
    """A body of plain quoted strings is read by one regex; anything else (doubled
    quotes) by the general reader. Both give MATLAB's strings."""
    text = SMALL.replace("mpc.gencost = [", f"mpc.bus_name = {cell};\nmpc.gencost = [", 1)
    assert parse_matpower(text)["bus_name"] == want


def test_lines_with_names_then_a_continuation_or_a_block_comment_are_still_read():
    """Lines of names without a '%' are skipped in bulk when looking for lines to read
    one by one; a '...' or a '%{' on the line of a later '%' is still found."""
    extra = (
        "mpc.bus_name = {'a';\n 'b'; 'c'};\n"
        "x = 1 ... % a continuation with a comment\n"
        "  + 2;\n"
        "%{\n mpc.gencost = [1 2 3];\n%}\n"
        "y = 'q'; % 'z'\n"
    )
    text = SMALL.replace("mpc.gencost = [", extra + "mpc.gencost = [", 1)
    case = parse_matpower(text)
    assert case["bus_name"] == ["a", "b", "c"]
    assert_same(case["gencost"][:, 4], [0.11, 0.085])


def test_short_matrix_bodies_read_as_the_chunked_path_reads_them(monkeypatch):
    """Bodies up to _SMALL_BODY characters are read token by token (a million one-number
    matrices took minutes through the chunked reader's numpy setup); both readers give
    the same matrix, or both give way to the general reader (None)."""
    from gridphysics import matpower

    rng = np.random.default_rng(0)
    words = ["1", "-2.5", "3e2", "4D-1", "+.5", "7.", "Inf", "-NaN", "1 - 2", "0x1", "1_0"]
    bodies = ["1", "1;2", "1 2;3 4", "1,2\n3,4;", "1 2;3", "", "  ;  "]
    for _ in range(300):
        rows = [" ".join(rng.choice(words, rng.integers(1, 4))) for _ in range(rng.integers(1, 4))]
        bodies.append(rng.choice([";", "\n", ";\n"]).join(rows))
    for body in bodies:
        small = matpower._matrix_small(body)
        monkeypatch.setattr(matpower, "_SMALL_BODY", -1)
        chunked = matpower._matrix_fast(body, 0, len(body))
        monkeypatch.undo()
        if chunked is None:
            assert small is None, body
        else:
            np.testing.assert_array_equal(small, chunked, err_msg=body)


def test_reading_a_case_file_sets_aside_memory_for_that_file_only():
    """The bounded read asked for MAX_CASE_CHARS characters: Python set aside 200 MB for
    every file (89x pegase13659's size); reading a file stays within 10x its size."""
    import tracemalloc

    from gridphysics.cases import cases_dir
    from gridphysics.matpower import load_matpower_dict

    path = cases_dir() / "matpower/case13659pegase.m"
    load_matpower_dict(path)  # imports and caches out of the measurement
    tracemalloc.start()
    case = load_matpower_dict(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert case["bus"].shape[0] == 13659
    assert peak < 10 * path.stat().st_size, peak / path.stat().st_size


@pytest.mark.parametrize("name", ["ieee14", "ieee118", "pegase1354"])
def test_a_saved_network_reads_back_bit_for_bit(tmp_path, name):
    """Hostile rerun 10: save_matpower then load_matpower changed va_rad by 1 ulp on
    most buses (radians to degrees and back). Every leaf now reads back identical."""
    import jax

    import gridphysics as gp

    net = gp.load_case(name)
    gp.save_matpower(net, tmp_path / "rt.m")
    back = gp.load_matpower(tmp_path / "rt.m", name=name)
    for a, b in zip(jax.tree.leaves(net), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_degrees_read_back_as_the_same_radians_wherever_some_float_does():
    """to_degrees picks the degree value that np.deg2rad maps back to the radians
    exactly. Where it finds none, brute force over 64 ulps either side finds none
    either (deg2rad skips some floats), and it never does worse than np.rad2deg."""
    from gridphysics.ppc import to_degrees

    rad = np.random.default_rng(7).uniform(-np.pi, np.pi, 20_000)
    deg = to_degrees(rad)
    exact = np.deg2rad(deg) == rad
    assert exact.sum() >= (np.deg2rad(np.rad2deg(rad)) == rad).sum()
    np.testing.assert_allclose(deg, np.rad2deg(rad), rtol=1e-15)
    for r in rad[~exact][:200]:
        lo = hi = np.rad2deg(r)
        for _ in range(64):
            lo, hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
            assert np.deg2rad(lo) != r and np.deg2rad(hi) != r


def test_a_network_the_readers_would_refuse_is_not_saved(tmp_path):
    """Hostile rerun 11: a network with a NaN voltage angle (a failed AC solve written
    back into it) was saved over a good file, which load_matpower then refused."""
    import gridphysics as gp
    from gridphysics.errors import CaseFormatError

    net = gp.load_case("ieee14")
    path = tmp_path / "case.m"
    gp.save_matpower(net, path)
    good = path.read_text()
    for value in (np.nan, np.inf, 1e308):
        va = np.asarray(net.bus.va_rad).copy()
        va[3] = value
        with pytest.raises(CaseFormatError, match=r"nothing written .* bus row 4 has VA"):
            gp.save_matpower(net.replace(bus=net.bus.replace(va_rad=va)), path)
        assert path.read_text() == good
