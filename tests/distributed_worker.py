"""Run under ``torchrun --nproc_per_node 2``: one real ``densekit train`` step of every case in
``tests/distributed_cases.py`` (4 rows per rank), with and without cross-device gathering.

    torchrun --standalone --nproc_per_node 2 tests/distributed_worker.py MODEL_DIR DATA_DIR OUT_DIR
"""

import sys
from pathlib import Path

from tests.distributed_cases import CASES, one_step


def main() -> None:
    model_dir, data, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    for name in CASES:
        for gather in (True, False):
            one_step(name, model_dir, data, out, world=2, gather=gather)


if __name__ == "__main__":
    main()
