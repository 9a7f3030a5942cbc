"""Run under ``torchrun --nproc_per_node 2``: ANCE training whose first refresh is waited for at step 2, so the
swap surely happens within the run; rank 0 records every rank's swap steps in densekit_train.json.

    torchrun --standalone --nproc_per_node 2 tests/distributed_ance.py MODEL_DIR BEIR_DIR MINED OUTPUT
"""

import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from densekit.training.config import TrainConfig
from densekit.training.train import train


class WaitForFirstRefresh(TrainerCallback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            deadline = time.time() + 600
            while not self.path.exists() and time.time() < deadline:
                time.sleep(0.5)
            time.sleep(2)  # the worker exits right after writing its result


def main() -> None:
    model, beir, mined, output = sys.argv[1:5]
    config = TrainConfig.from_options(model=model, data=mined, beir=beir, output=output, mode="ance", max_steps=5,
                                      global_batch_size=8, learning_rate=1e-3, refresh_steps=2, refresh_window=[1, 20],
                                      save_steps=100)
    train(config, callbacks=[WaitForFirstRefresh(Path(f"{output}.ance") / "negatives-0000.json")])


if __name__ == "__main__":
    main()
