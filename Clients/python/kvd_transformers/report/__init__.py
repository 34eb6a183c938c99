"""Quality report of kvd's compaction methods on SmolLM2-135M-Instruct (not part of CI).

    python -m kvd_transformers.report --start-daemon --out results/ [--resume]

For every method × budget × prompt length it measures needle accuracy, next-token KL against the
full cache, attention-output error, KV kept and compaction time, keeps each finished row in a JSON
lines checkpoint (``--resume`` skips them), and writes ``quality.md``, ``accuracy_vs_kv.png``,
``kl_vs_kv.png`` and ``docs/QUALITY.md``. One concern per module:

* :mod:`.cli` — arguments and the main loop;           * :mod:`.daemon` — a temporary kvd;
* :mod:`.prompts` — license-text prompts and needles;  * :mod:`.methods` — the method grid;
* :mod:`.prefill` — one uncompressed prefill per prompt, restored into a kvd sequence per method;
* :mod:`.metrics` — needle, KL, attention error;       * :mod:`.cell` — one table row;
* :mod:`.checkpoint` — JSON lines; :mod:`.interrupt` — SIGTERM stops between rows;  * :mod:`.progress` — ETA;  * :mod:`.table`, :mod:`.plots`,
  :mod:`.claims`, :mod:`.docs` — the outputs.
"""
