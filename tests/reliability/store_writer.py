"""Writes to a local artifact store as its own process, for `test_store_faults.py`.

``python -m tests.reliability.store_writer STORE SOURCE BYTES`` stores the file SOURCE as an object,
a BYTES-long report and a record of about BYTES bytes, and prints, as one JSON object on stdout, what
each write raised (its type, exit code and message) or that it succeeded. The faults come from the
process's real surroundings, set up by the test (a file-size limit, a full or read-only file system, a
directory it may not write); nothing here provokes or fakes them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from squeezeflow.store.artifacts import LocalStore


def main(root: str, source: str, size: int) -> None:
    store = LocalStore(root)
    writes: dict[str, Callable[[], Any]] = {
        "put_file": lambda: store.put_file(Path(source), suffix=".onnx"),
        "put_text": lambda: store.put_text("reports/job/report.html", "r" * size),
        "write_record": lambda: store.write_record("gate", "verdict", {"evidence": "e" * size}),
    }
    outcome: dict[str, dict[str, Any]] = {}
    for name, write in writes.items():
        try:
            write()
        except Exception as err:
            outcome[name] = {
                "raised": type(err).__name__,
                "exit_code": getattr(err, "exit_code", None),
                "message": str(err),
            }
        else:
            outcome[name] = {"raised": None}
    print(json.dumps(outcome))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
