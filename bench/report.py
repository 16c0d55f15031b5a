"""report.py - what the markdown reports of run_peers.py, compare.py and
run_fanout.py share: the medians of the repeats, figures and ratios as
table cells, the CPU cell, the lines every report opens with (date,
machine, quiet waits, command) and the closing list of problems.

A run's results are key=value dicts from loadgen (numbers as floats);
the runs of one table cell are a list of them.
"""
import datetime
import os
import platform
import statistics
import subprocess

DASH = "—"                      # a cell without a figure

# Below the "Every run" tables.
EVERY_RUN_NOTE = "\n(* a run with errors, left out of the median)\n"


def median(kvs, key):
    """The median of key over the runs that had no errors, or None."""
    vals = [kv[key] for kv in kvs
            if isinstance(kv.get(key), float) and kv.get("errors", 0) == 0]
    return statistics.median(vals) if vals else None


def fmt(v, key, small_keys=None):
    """A figure as a cell: wire ratios to three places; µs, and figures
    under 100 (only those of small_keys, when given), to one; the rest
    whole, with thousands separators."""
    if v is None:
        return DASH
    if key.startswith("wire_ratio"):
        return f"{v:.3f}"
    if key.endswith("_us") or \
            (v < 100 and (small_keys is None or key in small_keys)):
        return f"{v:,.1f}"
    return f"{v:,.0f}"


def ratio(a, b):
    """a / b as a cell, or a dash when either is missing (or b is 0)."""
    return DASH if a is None or not b else f"{a / b:.2f}"


def cpu(kvs):
    """Server / loadgen / rest of the machine: the medians of the CPU
    percentages of the runs, as a cell."""
    s = median(kvs, "server_cpu")
    c = median(kvs, "client_cpu")
    o = median(kvs, "other_cpu")
    return DASH if s is None else f"{s:.0f} / {c:.0f} / {o:.0f}"


def run_figure(kv, key):
    """One run's figure, starred when the run had errors."""
    return fmt(kv.get(key), key) + ("*" if kv.get("errors") else "")


def table_head(cols, align="---:"):
    """The two head lines of a table whose first column is the
    measurement."""
    return ["| measurement | " + " | ".join(cols) + " |",
            "|---|" + f"{align}|" * len(cols)]


def table_row(label, cells):
    return f"| {label} | " + " | ".join(cells) + " |"

# ----------------------------------------------------------------------
# The lines a report opens with
# ----------------------------------------------------------------------


def output(cmd):
    """The stripped standard output of cmd, or "?" when it cannot run."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def commit(root):
    """git describe of the tree at root, with the last commit's date and
    subject."""
    described = output(["git", "-C", root, "describe", "--always",
                        "--dirty"])
    return described + " (" + output(["git", "-C", root, "log", "-1",
                                      "--format=%cs %s"]) + ")"


def machine():
    """(CPUs, CPU model, kernel release)."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return os.cpu_count(), model, platform.release()


def date_line(elapsed):
    return (f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}; the run "
            f"took {elapsed / 60:.1f} min")


def machine_line():
    nproc, model, kernel = machine()
    return (f"- machine: {nproc} CPUs (`nproc`), {model}, kernel {kernel}; "
            "shared and noisy: compare the ratios of one run, not figures "
            "across runs")


def not_pinned(pinned):
    """What follows the pinning line when nothing could be pinned."""
    return "" if pinned else " (NOT pinned: taskset or a second CPU missing)"


def quiet_line(args):
    """How long the run waited for a quiet machine (wait_quiet)."""
    return (f"- before each row the run waited for the machine to be quiet "
            f"(under {args.quiet_threshold:g}% of a core busy, at most "
            f"{args.quiet_wait:g} s): {args.waited:.0f} s of waiting in all")


def command_line(args):
    return f"- command: `{args.command}`"

# ----------------------------------------------------------------------
# The line a report closes with
# ----------------------------------------------------------------------


def problems_section(problems, none):
    """The "Errors and problems" section: each problem, or none (the
    sentence for a clean run)."""
    lines = ["## Errors and problems\n"]
    if problems:
        lines += [f"- {p}" for p in problems]
    else:
        lines.append(none)
    lines.append("")
    return lines
