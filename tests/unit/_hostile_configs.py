"""Hostile configuration files: tuning databases, design-space files (``explore --space``), run-config files
(``--run-config``) and components (``components/<kind>/<name>.yaml``, through a manifest's ``use:``).

Each case writes one file (or puts a link, FIFO or directory where the file should be) and names the
reader it is handed to; every refusal is a ``BadInput`` (exit 2), one line naming the file, with the
case's message. YAML bodies are shared by the three YAML readers; the tuning database is JSON.
Used by ``test_hostile_configs.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _hostile import GiB, MiB

KINDS = ("space", "run-config", "component", "tuning-db")


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # which reader: one of KINDS
    make: Callable[[Path], None]  # writes the file at this path (its parent exists)
    message: str


CASES: list[Case] = []


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _sparse(size: int) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        with p.open("wb") as f:
            f.truncate(size)
    return make


# What any strict YAML reader must refuse, whatever the file is for.
YAML_BODIES: list[tuple[str, Callable[[Path], None], str]] = [
    ("depth-bomb-flow", _bytes(b"run: " + b"[" * 100_000 + b"]" * 100_000 + b"\n"), "levels deep"),
    ("depth-bomb-block", _bytes("".join(f"{' ' * i}k{i}:\n" for i in range(200)).encode() + b" " * 200 + b"v: 1\n"), "levels deep"),
    ("alias-bomb", _bytes(b"a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"),
     "aliases are not allowed"),
    ("merge-key-alias", _bytes(b"base: &b {threads: 1}\nrun:\n  <<: *b\n"), "aliases are not allowed"),
    ("huge-scalar-2MiB", _bytes(b"threads: '" + b"x" * (2 * MiB) + b"'\n"), "over the 1048576-byte limit"),
    ("sparse-4GiB", _sparse(4 * GiB), "over the 1048576-byte limit"),
    ("5000-digit-int", _bytes(b"threads: " + b"9" * 5000 + b"\n"), "Exceeds the limit"),
    ("date-2001-13-45", _bytes(b"threads: 2001-13-45\n"), "month must be in 1..12"),
    ("timestamp-offset-99h", _bytes(b"threads: 2001-12-14t21:59:43.10-99:00\n"), "offset must be a timedelta"),
    ("list-as-a-key", _bytes(b"? [a, b]\n: 1\n"), "unhashable"),
    ("python-tag", _bytes(b"threads: !!python/object/apply:os.system ['touch /tmp/request-pack-hostile-evil']\n"),
     "could not determine a constructor"),
    ("nan", _bytes(b"threads: .nan\n"), "not a finite number"),
    ("infinity", _bytes(b"threads: -.inf\n"), "not a finite number"),
    ("duplicate-key", _bytes(b"stage: functional\nstage: functional\n"), "duplicate key"),
    ("duplicate-1MiB-key", _bytes(b"k" * 600_000 + b": 1\n" + b"k" * 400_000 + b"k" * 200_000 + b": 2\n"), "over the 1048576-byte limit"),
    ("two-documents", _bytes(b"threads: 1\n---\nthreads: 2\n"), "but found another document"),
    ("utf16", _bytes("threads: 1\n".encode("utf-16")), "UTF-16"),
    ("utf8-bom", _bytes(b"\xef\xbb\xbfthreads: 1\n"), "byte-order mark"),
    ("latin1", _bytes(b"target: caf\xe9\n"), "not UTF-8"),
    ("nul-bytes", _bytes(b"threads: 1\x00\n"), "unacceptable character #x0000"),
    ("tab-indent", _bytes(b"run:\n\tthreads: 1\n"), "line 2"),
    ("unclosed-flow", _bytes(b"run: [1, 2\n"), "line "),
    ("fifo", lambda p: os.mkfifo(p), "is a FIFO"),
    ("directory", lambda p: p.mkdir(), "is a directory"),
    ("symlink-dev-zero", lambda p: p.symlink_to("/dev/zero"), "outside"),
    ("symlink-etc-hostname", lambda p: p.symlink_to("/etc/hostname"), "outside"),
]

# A component is looked up by name: what is not a regular file under components/ is no component at all.
_NOT_A_COMPONENT = {"fifo", "directory", "symlink-dev-zero"}
for label, make, message in YAML_BODIES:
    for kind in ("space", "run-config", "component"):
        CASES.append(Case(f"{kind}-{label}", kind, make,
                          "does not exist" if kind == "component" and label in _NOT_A_COMPONENT else message))

# Wrong shapes and types, per reader.
for label, body, message in [
    ("empty", b"", "a space file is a mapping"),
    ("a-list", b"- threads: 1\n", "a space file is a mapping"),
    ("unknown-key", b"stages: functional\n", "unknown key 'stages'"),
    ("stage-a-list", b"stage: [functional]\n", "is not one of"),
    ("run-a-list", b"run: [1, 2]\n", "run: must be a mapping"),
    ("no-values", b"run: {threads: []}\n", "has no values"),
    ("threads-a-mapping", b"run: {threads: {a: 1}}\n", "run.threads must be an integer"),
    ("threads-huge", b"run: {threads: 99999999999999999999}\n", "run.threads must be an integer from"),
    ("threads-bool", b"run: {threads: [true]}\n", "run.threads must be an integer"),
    ("cross-product-9^5", b"run: {threads: [1,2,3,4,5,6,7,8,9], inter_threads: [1,2,3,4,5,6,7,8,9], batch: [1,2,3,4,5,6,7,8,9],"
                          b" opt_level: [0,1,2,3], execution_provider: [a,b,c,d,e,f,g,h,i]}\n", "points (at most 4096)"),
    ("points-and-run", b"points: [{threads: 1}]\nrun: {threads: [1]}\n", "not both"),
    ("points-empty", b"points: []\n", "non-empty list"),
    ("points-of-strings", b"points: [a, b]\n", "non-empty list of mappings"),
    ("points-5000", b"points:\n" + b"".join(b"- {threads: %d}\n" % (i % 64 + 1) for i in range(5000)), "5000 points (at most 4096)"),
    ("points-20000-empty", b"points:\n" + b"- {}\n" * 20_000, "20000 points (at most 4096)"),
    ("points-4096-distinct-then-a-repeat", b"points:\n" + b"".join(b"- {threads: %d, batch: %d}\n" % (i % 64 + 1, i // 64 + 1)
                                                                  for i in range(4095)) + b"- {threads: 1, batch: 1}\n", "listed twice"),
    ("points-duplicate", b"points: [{threads: 1}, {threads: 1}]\n", "listed twice"),
    ("unknown-build-knob", b"build: {compiler: [gcc]}\n", "unknown build-time knob 'compiler'"),
    ("knob-name-1000-chars", b"run: {" + b"t" * 1000 + b": [1]}\n", "unknown knob"),
    ("target-control-chars", b'run: {target: ["llvm\\n-mcpu=evil"]}\n', "printable text"),
    ("target-long", b"run: {target: ['" + b"x" * 5000 + b"']}\n", "printable text"),
]:
    CASES.append(Case(f"space-{label}", "space", _bytes(body), message))

for label, body, message in [
    ("a-list", b"- 1\n", "must be a mapping of knob: value"),
    ("a-string", b"threads\n", "must be a mapping of knob: value"),
    ("unknown-knob", b"thread: 2\n", "did you mean 'threads'"),
    ("threads-zero", b"threads: 0\n", "run.threads must be an integer from 1"),
    ("threads-negative-string", b"threads: '-4'\n", "run.threads must be an integer from 1"),
    ("threads-float", b"threads: 1.5\n", "run.threads must be an integer"),
    ("threads-bool", b"threads: true\n", "run.threads must be an integer"),
    ("threads-a-list", b"threads: [1]\n", "run.threads must be an integer"),
    ("batch-huge", b"batch: 99999999999999999999999\n", "run.batch must be an integer from"),
    ("opt-level-9", b"opt_level: 9\n", "run.opt_level must be an integer from 0 to 3"),
    ("target-empty", b"target: ''\n", "printable text"),
    ("target-newline", b'target: "llvm\\n"\n', "printable text"),
    ("target-a-mapping", b"target: {kind: llvm}\n", "printable text"),
    ("provider-10000-chars", b"execution_provider: " + b"x" * 10_000 + b"\n", "printable text"),
    ("knob-1000-chars", b"t" * 1000 + b": 1\n", "unknown knob"),
]:
    CASES.append(Case(f"run-config-{label}", "run-config", _bytes(body), message))

for label, body, message in [
    ("empty", b"", "must be a mapping at the top level"),
    ("a-list", b"- kind: dataset\n", "must be a mapping at the top level"),
    ("wrong-kind", b"kind: model\ndataset: {layout: labels-tsv}\n", "kind is 'model'"),
    ("kind-a-list", b"kind: [dataset]\ndataset: {layout: labels-tsv}\n", "kind is ['dataset']"),
    ("unknown-key", b"kind: dataset\ndataset: {layout: labels-tsv}\npython: {}\n", "unknown key 'python'"),
    ("section-a-string", b"kind: dataset\ndataset: labels-tsv\n", "needs a mapping dataset:"),
    ("section-missing", b"kind: dataset\n", "needs a mapping dataset:"),
    ("layout-unknown", b"kind: dataset\ndataset: {layout: ../../etc}\n", "dataset.layout"),
    ("layout-1MiB-ish", b"kind: dataset\ndataset: {layout: '" + b"x" * 900_000 + b"'}\n", "dataset.layout"),
    ("key-1000-chars", b"kind: dataset\ndataset: {layout: labels-tsv}\n" + b"k" * 1000 + b": 1\n", "unknown key"),
]:
    CASES.append(Case(f"component-{label}", "component", _bytes(body), message))


# --- tuning databases (JSON, read by the harness inside the image and by request-pack tune) ---------

def db(**change: object) -> bytes:
    doc = {"format": "request-pack/metaschedule-database/v1", "tvm": "0.27.0", "target": "llvm -num-cores 4",
           "model_sha256": "0" * 64, "batch_sizes": [1], "trials": 64, "seed": 0, "cost_model": "random",
           "tuning_seconds": 12.5, "tuned_on": {"cpu_model": "x", "cores": 4, "platform": "linux/amd64", "machine": "x86_64"},
           "workloads": [["h", {"m": 1}]], "records": [[0, [1, 2]]]}
    doc.update(change)
    return json.dumps(doc, sort_keys=True).encode()


def _field(text: bytes) -> bytes:
    return db()[:-1] + b", " + text + b"}"


for label, make, message in [
    ("fifo", lambda p: os.mkfifo(p), "is a FIFO"),
    ("directory", lambda p: p.mkdir(), "is a directory"),
    ("symlink-dev-zero", lambda p: p.symlink_to("/dev/zero"), "is a symlink"),
    ("sparse-3GiB", _sparse(3 * GiB), "over the 67108864-byte limit"),
    ("nested-100000", _bytes(b"[" * 100_000 + b"]" * 100_000), "levels deep"),
    ("nested-in-a-workload", _bytes(db(workloads=[["h", "__N__"]]).replace(b'"__N__"', b"[" * 1000 + b"]" * 1000)), "levels deep"),
    ("nan", _bytes(_field(b'"x": NaN')), "NaN is not a finite number"),
    ("1e999", _bytes(db().replace(b"12.5", b"1e999")), "overflows to infinity"),
    ("huge-int", _bytes(db().replace(b'"trials": 64', b'"trials": ' + b"9" * 5000)), "Exceeds the limit"),
    ("duplicate-key", _bytes(_field(b'"trials": 1')), "duplicate key 'trials'"),
    ("utf16", _bytes(db().decode().encode("utf-16")), "UTF-16"),
    ("bom", _bytes(b"\xef\xbb\xbf" + db()), "byte-order mark"),
    ("truncated", _bytes(db()[:100]), "not valid JSON"),
    ("a-list", _bytes(b"[]"), "a tuning database is a JSON object"),
    ("other-format", _bytes(db(format="tvm-log")), "format is 'tvm-log'"),
    ("unknown-1MiB-key", _bytes(_field(b'"' + b"k" * MiB + b'": 1')), "keys differ"),
    ("missing-key", _bytes(json.dumps({k: v for k, v in json.loads(db()).items() if k != "seed"}).encode()), "missing ['seed']"),
    ("trials-negative", _bytes(db(trials=-1)), "trials must be a non-negative integer"),
    ("trials-bool", _bytes(db(trials=True)), "trials must be a non-negative integer"),
    ("batch-sizes-empty", _bytes(db(batch_sizes=[])), "batch_sizes must be a non-empty list"),
    ("batch-sizes-zero", _bytes(db(batch_sizes=[0])), "batch_sizes must be a non-empty list"),
    ("tuned-on-extra", _bytes(db(tuned_on={"cores": 1})), "tuned_on must hold exactly"),
    ("cores-a-string", _bytes(db(tuned_on={"cpu_model": "x", "cores": "4", "platform": "p", "machine": "m"})), "cores must be an integer"),
    ("workloads-20001", _bytes(db(workloads=[["h", "m"]] * 20_001)), "more than 20000 workloads or records"),
    ("workload-not-a-pair", _bytes(db(workloads=[["h"]])), "workloads[0] is not"),
    ("record-index-out-of-range", _bytes(db(records=[[5, []]])), "records[0] is not [workload index < 1"),
    ("record-index-bool", _bytes(db(records=[[True, []]])), "records[0] is not"),
    ("target-empty", _bytes(db(target="")), "target must be a non-empty string"),
    ("tvm-an-int", _bytes(db(tvm=27)), "tvm must be a non-empty string"),
]:
    CASES.append(Case(f"tuning-db-{label}", "tuning-db", make, message))
