"""Summaries over repeated runs: every figure of the table is min / median / max of one number
measured once per run."""
import statistics


def spread(values) -> dict:
    values = sorted(values)
    return {"min": values[0], "median": statistics.median(values), "max": values[-1], "runs": len(values)}


def percentile(samples, q: float) -> float:
    """The q-quantile (0..1) by nearest rank of sorted samples."""
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def fmt(d: dict, digits: int = 2) -> str:
    """'median (min–max)'."""
    return f"{d['median']:.{digits}f} ({d['min']:.{digits}f}–{d['max']:.{digits}f})"


def goal_mark(ok: bool) -> str:
    return "yes" if ok else "**no**"
