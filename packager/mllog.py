"""LoadGen's ``mlperf_log_detail.txt``: one ``:::MLLOG {json}`` record per line.

Read by the harness (inside the image: the scenario results it reports) and by the
MLPerf export (outside: the user.conf it writes back), so it is core and stdlib-only.
"""

from __future__ import annotations

import json
from pathlib import Path

PREFIX = ":::MLLOG "


def read_detail(path: Path) -> dict[str, object]:
    """Each record's ``value`` by its ``key``; a later record of a key replaces an earlier one.

    Raises ``ValueError`` naming the line when a record is not a JSON object with a key."""
    values: dict[str, object] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith(PREFIX):
            continue
        try:
            record = json.loads(line[len(PREFIX):])
        except ValueError:
            raise ValueError(f"{path}:{number}: a {PREFIX.strip()} record is not JSON") from None
        if not isinstance(record, dict) or "key" not in record:
            raise ValueError(f"{path}:{number}: a {PREFIX.strip()} record has no key")
        values[record["key"]] = record.get("value")
    return values
