"""Command line: ``python -m analysis agreement|preference FILE.csv [--json] ...``,
``python -m analysis pass1 RESULTS.csv [--json]``, ``python -m analysis simulate --reps N
[--json]`` and
``python -m analysis power --conditions K --win-rate P ... [--json]``.

Prints readable tables by default and the summary dict as JSON with ``--json``. A problem
in the file is one line on stderr naming the line and column, and exit code 2.
"""

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import pandas as pd

from analysis.agreement import agreement_summary
from analysis.alignment import pass_at_1_table
from analysis.contracts import LEVELS, InputError
from analysis.power import DESIGNS, SIMULATIONS, StudyDesign, sample_size
from analysis.preference import preference_summary
from analysis.simulate import Design, coverage
from analysis.style import CONTROLS, parse_controls

EXIT_INPUT_ERROR = 2
PAIR_COLUMNS = (
    "a|b|n|wins|ties|losses|win a (tie=1/2)|Wilson|bootstrap|win a (no ties)|Wilson|p sign|p Holm"
    "|p item-cluster|p Holm"
)


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV of strings indexed by the line number each row ends on, so that an
    `InputError`'s row is the line to fix. Blank lines are skipped; short rows are padded
    with empty cells."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fp:
            reader = csv.reader(fp)
            header = [name.strip() for name in next(reader, [])]
            if not header:
                raise InputError("the file is empty or has no header", row=1)
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise InputError(f"column(s) {', '.join(repeated)} appear twice", row=1)
            rows, lines = [], []
            for record in reader:
                if not any(cell.strip() for cell in record):
                    continue
                if len(record) > len(header):
                    raise InputError(
                        f"{len(record)} fields but the header has {len(header)}",
                        row=reader.line_num,
                    )
                rows.append(record + [""] * (len(header) - len(record)))
                lines.append(reader.line_num)
    except csv.Error as error:
        raise InputError(f"not a readable CSV file ({error})") from error
    except UnicodeDecodeError as error:
        raise InputError(f"not UTF-8 text ({error.reason} at byte {error.start})") from error
    return pd.DataFrame(rows, columns=header, index=pd.Index(lines, name="line"), dtype=object)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0, or 2 for bad input)."""
    args = _parser().parse_args(argv)
    if args.command == "power":
        return _power(args)
    if args.command == "simulate":
        return _simulate(args)
    try:
        table = read_table(args.file)
        if args.command == "agreement":
            summary = agreement_summary(table, args.level, bootstrap=args.bootstrap, seed=args.seed)
        elif args.command == "pass1":
            summary = pass_at_1_table(table)
        else:
            summary = preference_summary(
                table,
                bootstrap=args.bootstrap,
                seed=args.seed,
                controls=parse_controls(args.control) if args.control else (),
                focus=args.focus,
            )
    except OSError as error:
        print(f"error: {args.file}: {error.strerror}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except InputError as error:
        print(f"error: {_where(args.file, error)}: {error.reason}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    if args.json:
        print(json.dumps(summary, indent=2))
    elif args.command == "agreement":
        print(format_agreement(summary))
    elif args.command == "pass1":
        print(format_pass_at_1(summary))
    else:
        print(format_preference(summary))
    return 0


def _power(args: argparse.Namespace) -> int:
    try:
        # Every field of the design has its option of the same name.
        design = StudyDesign(**{f.name: getattr(args, f.name) for f in fields(StudyDesign)})
        plan = sample_size(design, args.power, simulations=args.simulations, seed=args.seed)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    if args.json:
        print(json.dumps(plan, indent=2))
    else:
        print("\n".join(f"{key}: {value}" for key, value in plan.items()))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    if args.reps < 1:
        print("error: --reps must be 1 or more", file=sys.stderr)
        return EXIT_INPUT_ERROR
    result = coverage(Design(), args.reps, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [[r["interval"], str(r["n"]), f"{r['coverage']:.3f}", f"{r['se']:.3f}"]
            for r in result["intervals"]]
    tests = [[r["test"], str(r["n"]), f"{r['rejection_rate']:.3f}", f"{r['se']:.3f}"]
             for r in result["tests"]]
    print(f"Coverage of the report's 95 % intervals over {result['reps']} simulated studies "
          f"(analysis/simulate.py)\n\n" + _table(["interval", "n", "coverage", "SE"], rows)
          + "\n\n" + _table(["test", "n", "rejection rate", "SE"], tests))
    return 0


def _where(path: Path, error: InputError) -> str:
    parts = [str(path)]
    if error.row is not None:
        parts.append(f"line {error.row}")
    elif error.column is not None:
        parts.append("line 1 (header)")
    if error.column is not None:
        parts.append(f"column '{error.column}'")
    return ", ".join(parts)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    agreement = commands.add_parser(
        "agreement", help="inter-rater agreement of a unit,rater,value CSV"
    )
    agreement.add_argument("--level", required=True, choices=LEVELS)
    preference = commands.add_parser(
        "preference",
        help="pairwise preference of an item,rater,condition_a,condition_b,winner[,side_a] CSV",
    )
    preference.add_argument(
        "--control",
        metavar="LIST",
        help="style-controlled Bradley-Terry with these covariates, comma-separated: "
        + ", ".join(CONTROLS)
        + " (columns NAME_a, NAME_b)",
    )
    preference.add_argument(
        "--focus",
        metavar="CONDITION",
        help="the condition the style-control sentence is about (default: top raw rating)",
    )
    pass1 = commands.add_parser(
        "pass1",
        help="Pass@1 per condition of an item,condition,sample,passed CSV, each against the "
        "first condition in file order: flips, McNemar's exact test, paired interval",
    )
    pass1.add_argument("file", type=Path, metavar="RESULTS.csv")
    pass1.add_argument("--json", action="store_true", help="print JSON instead of a table")
    simulate = commands.add_parser(
        "simulate", help="coverage of the report's intervals on simulated studies (a benchmark)"
    )
    simulate.add_argument("--reps", type=int, default=500, metavar="N", help="default 500")
    simulate.add_argument("--seed", type=int, default=0, metavar="S", help="default 0")
    simulate.add_argument("--json", action="store_true", help="print JSON")
    power = commands.add_parser(
        "power", help="items, judgments and raters a study needs to detect a preference"
    )
    power.add_argument("--conditions", type=int, required=True, metavar="K")
    power.add_argument(
        "--win-rate",
        type=float,
        required=True,
        metavar="P",
        help="the first condition's win rate among decisive verdicts (e.g. 0.6 = 60/40)",
    )
    power.add_argument("--tie-rate", type=float, default=0.0, metavar="T")
    power.add_argument(
        "--raters-per-pair", type=int, default=1, metavar="k", help="overlap (default 1)"
    )
    power.add_argument(
        "--item-sd", type=float, default=0.0, metavar="S", help="log-odds SD between items"
    )
    power.add_argument(
        "--rater-sd", type=float, default=0.0, metavar="S", help="log-odds SD between raters"
    )
    power.add_argument("--design", choices=DESIGNS, default="all-pairs")
    power.add_argument("--power", type=float, default=0.8)
    power.add_argument("--alpha", type=float, default=0.05)
    power.add_argument(
        "--items-per-rater", type=int, metavar="N", help="most pairs one rater judges"
    )
    power.add_argument(
        "--simulations",
        type=int,
        default=SIMULATIONS,
        metavar="N",
        help=f"simulated studies per size tried (default {SIMULATIONS})",
    )
    power.add_argument("--seed", type=int, default=0, metavar="S", help="default 0")
    power.add_argument("--json", action="store_true", help="print JSON")
    for command in (agreement, preference):
        command.add_argument("file", type=Path, metavar="FILE.csv")
        command.add_argument("--json", action="store_true", help="print JSON instead of tables")
        command.add_argument(
            "--bootstrap",
            type=_non_negative_int,
            default=1000,
            metavar="N",
            help="bootstrap replicates for the CIs (default 1000; 0 = none)",
        )
        command.add_argument("--seed", type=int, default=0, metavar="S", help="default 0")
    return parser


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _interval(ci: list[float] | None, digits: int = 3) -> str:
    return "-" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def format_agreement(summary: dict) -> str:
    """The agreement summary as a readable table."""
    s = summary
    if s["alpha_ci"] is not None:
        alpha_ci = (
            f"95% CI {_interval(s['alpha_ci'])} "
            f"({s['bootstrap_valid']} unit-bootstrap replicates, seed {s['seed']})"
        )
    else:
        alpha_ci = f"no CI ({s['bootstrap_valid']} valid bootstrap replicates)"
    rows = [
        ["Krippendorff's alpha", _number(s["alpha"]), s["alpha_note"] or alpha_ci],
        ["Fleiss' kappa", _number(s["fleiss_kappa"]), s["fleiss_kappa_note"] or ""],
        [
            "Mean pairwise Cohen's kappa",
            _number(s["cohen_kappa_mean"]),
            f"{s['cohen_kappa_pairs']} rater pairs",
        ],
        [
            "Pairwise percent agreement",
            _number(s["percent_agreement"]),
            f"{s['n_rating_pairs']} pairs of ratings",
        ],
    ]
    head = (
        f"Agreement ({s['level']}): {s['n_units']} units, {s['n_raters']} raters, "
        f"{s['n_ratings']} ratings, {s['n_pairable_units']} units rated at least twice"
    )
    return head + "\n\n" + _table(["statistic", "value", "note"], rows)


def format_pass_at_1(summary: dict) -> str:
    """`pass_at_1_table`'s output as a readable table."""
    rows = []
    for row in summary["conditions"]:
        versus = row["versus_reference"] or {}
        rows.append([
            row["condition"],
            str(row["n_problems"]),
            _number(row["pass_at_1"]),
            _interval(row["pass_at_1_ci"]),
            str(versus.get("right_to_wrong", "-")),
            str(versus.get("wrong_to_right", "-")),
            _number(versus.get("difference")),
            _interval(versus.get("difference_ci")) if versus.get("difference_ci")
            else (versus.get("difference_ci_note") or "-"),
            _p(versus.get("p")),
            _p(versus.get("p_holm")),
            versus.get("test") or "",
        ])
    header = ["condition", "problems", "Pass@1", "95% CI", "right->wrong", "wrong->right",
              "difference", "paired 95% CI", "p", "p Holm", "test"]
    return (f"Pass@1 against {summary['reference']} (the reference) on the problems both "
            "answered; flips are counted against the reference\n\n" + _table(header, rows))


def format_preference(summary: dict) -> str:
    """The preference summary as readable tables."""
    s = summary
    head = (
        f"Preference: {s['n_judgments']} judgments, {s['n_items']} items, "
        f"{s['n_raters']} raters, {len(s['conditions'])} conditions; 95% CIs, "
        f"{s['bootstrap']} item-bootstrap replicates, seed {s['seed']}"
    )
    pairs = _table(PAIR_COLUMNS.split("|"), [_pair_cells(pair) for pair in s["pairs"]])
    bt = s["bradley_terry"]
    ratings = _table(
        ["rank", "condition", "BT rating", "95% CI", "Elo"],
        [
            [
                str(row["rank"]),
                row["condition"],
                _number(row["rating"], 1),
                _interval(row["rating_ci"], 1),
                _number(_elo(s, row["condition"]), 1),
            ]
            for row in bt["conditions"]
        ],
    )
    sections = [
        head,
        "Pairs (wins, ties, losses and win rates are condition a's)\n" + pairs,
        f"Bradley-Terry (ties count 1/2 each way, regularisation {bt['alpha']}; "
        "rank = 1 + conditions whose CI is entirely above) and online Elo (K=4)\n" + ratings,
    ]
    sections.append(_format_ties(s["ties_model"]))
    if s["style_control"] is not None:
        sections.append(_format_style(s["style_control"]))
    if s["position_bias"] is not None:
        sections.append(_format_position_bias(s["position_bias"]))
    return "\n\n".join(sections)


def _format_ties(ties: dict) -> str:
    rows = [
        [row["condition"], _number(row["rating"], 1), _interval(row["rating_ci"], 1)]
        for row in ties["conditions"]
    ]
    return (
        f"{ties['model']}: tie parameter nu = {_number(ties['tie_parameter'])} "
        f"{_interval(ties['tie_parameter_ci'])}, P(tie | equal conditions) = "
        f"{_number(ties['tie_probability_equal'])}\n"
        + _table(["condition", "rating", "95% CI"], rows)
    )


def _format_style(style: dict) -> str:
    coefficients = _table(
        ["control", "coefficient", "95% CI", "unit"],
        [
            [
                name,
                _number(value),
                _interval(style["coefficients_ci"][name]),
                style["units"][name],
            ]
            for name, value in style["coefficients"].items()
        ],
    )
    ratings = _table(
        ["condition", "rating after control", "95% CI", "raw rating (same model)"],
        [
            [
                row["condition"],
                _number(row["rating"], 1),
                _interval(row["rating_ci"], 1),
                _number(row["raw_rating"], 1),
            ]
            for row in style["conditions"]
        ],
    )
    return (
        f"Style-controlled Bradley-Terry ({', '.join(style['controls'])})\n"
        f"{coefficients}\n\n{ratings}\n{style['sentence']}"
    )


def _pair_cells(pair: dict) -> list[str]:
    counts = [pair[key] for key in ("n", "wins", "ties", "losses")]
    return [
        pair["condition_a"],
        pair["condition_b"],
        *map(str, counts),
        _number(pair["win_rate_ties_half"]),
        _interval(pair["win_rate_ties_half_ci_wilson"]),
        _interval(pair["win_rate_ties_half_ci_cluster"]),
        _number(pair["win_rate_ties_excluded"]),
        _interval(pair["win_rate_ties_excluded_ci_wilson"]),
        _p(pair["p_sign_test"]),
        _p(pair["p_holm"]),
        _p(pair["p_cluster"]),
        _p(pair["p_cluster_holm"]),
    ]


def _elo(summary: dict, condition: str) -> float:
    return next(row["rating"] for row in summary["elo"] if row["condition"] == condition)


def _format_position_bias(bias: dict) -> str:
    rows = [["all raters", *_left_cells(bias["overall"]), "-"]]
    rows += [[r["rater"], *_left_cells(r), _p(r["p_holm"])] for r in bias["per_rater"]]
    return "Position bias: P(left chosen) = 0.5? (ties and unknown sides excluded)\n" + _table(
        ["rater", "decisive", "left", "left rate", "Wilson", "p", "p Holm"], rows
    )


def _left_cells(test: dict) -> list[str]:
    return [
        str(test["n_decisive"]),
        str(test["n_left"]),
        _number(test["left_rate"]),
        _interval(test["left_rate_ci"]),
        _p(test["p_value"]),
    ]


if __name__ == "__main__":
    sys.exit(main())
