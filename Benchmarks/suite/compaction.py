"""Section 3: compaction time of every built-in method against its roofline, by `kvd-bench`
(Benchmarks/compaction), which times exactly what a Compact request runs inside the daemon."""
import json
import subprocess
import tempfile
from pathlib import Path

from .processes import release_binary


def run_once(tokens: int, repeats: int) -> list:
    """One kvd-bench run: rows {method, threads, best_s, roofline_s, read_pass_s, sgemm_s}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compaction.json"
        subprocess.run([str(release_binary("kvd-bench")), "--tokens", str(tokens), "--repeats", str(repeats),
                        "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
        doc = json.loads(out.read_text())
    rows = []
    for r in doc["rows"]:
        rows.append({"method": r["method"], "threads": r["threads"], "best_s": min(r["seconds"]),
                     "roofline_s": r["roofline_s"], "read_pass_s": r["read_pass_s"], "sgemm_s": r["sgemm_s"],
                     "cores": doc["cores"], "blas_core": doc["blas_core"]})
    return rows
