"""Run train.py in this process and SIGKILL it at a chosen moment, for tests/test_faults.py.

    python tests/fault_worker.py MOMENT N [train flags]

MOMENT: before-save   at the start of the N-th checkpoint write (the steps before it are logged, not saved)
        in-save       inside the N-th checkpoint write, after the model's files, before optimizer.safetensors
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import checkpoint  # noqa: E402
import train  # noqa: E402


def main() -> None:
    moment, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    saves = [0]
    real_save, real_file = train.save_checkpoint, checkpoint.save_file

    def save_checkpoint(*args, **kwargs):
        saves[0] += 1
        if moment == "before-save" and saves[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(*args, **kwargs)

    def save_file(tensors, path, *args, **kwargs):
        if moment == "in-save" and saves[0] == n and Path(path).name == "optimizer.safetensors":
            os.kill(os.getpid(), signal.SIGKILL)
        return real_file(tensors, path, *args, **kwargs)

    train.save_checkpoint, checkpoint.save_file = save_checkpoint, save_file
    train.main(argv)


if __name__ == "__main__":
    main()
