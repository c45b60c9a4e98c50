"""Tables and number formats of the reports: Markdown for docs/, aligned plain text for the GPU
check's summary.txt. A value that was not measured (None, an empty cell, NaN) reads "n/a"
everywhere rather than "None" or "nan"."""
import math

MIB = 1024.0 * 1024.0


def missing(v):
    """True for what stands for "not measured": None, an empty CSV cell, NaN."""
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v))


def fmt(v, digits=2):
    """Fixed point, "n/a" for a missing value."""
    return "n/a" if missing(v) else f"{v:.{digits}f}"


def sci(v, digits=1):
    """Scientific notation (errors that span orders of magnitude), "n/a" for a missing value."""
    return "n/a" if missing(v) else f"{v:.{digits}e}"


def mib(b):
    """Bytes as MiB with one decimal; "n/a" for a missing or negative count (the meters write -1
    where they did not run)."""
    if b is None or b == "" or b < 0:
        return "n/a"
    return f"{b / MIB:.1f}"


def duration(seconds):
    """"1h05m" from an hour on, else "3m07s": a run's wall time at a glance."""
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def markdown_table(header, rows):
    """A GitHub Markdown table (one string, no trailing newline); cells are str()'d."""
    out = ["| " + " | ".join(str(c) for c in header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def text_table(header, rows):
    """A plain-text table as a list of lines: columns padded to their widest cell, a dashed rule
    under the header, no trailing blanks (summary.txt is read in a terminal)."""
    cols = list(zip(header, *rows)) if rows else [(h,) for h in header]
    widths = [max(len(str(c)) for c in col) for col in cols]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return out
