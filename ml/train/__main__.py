"""``python -m ml.train SPEC.json`` — one training process; torchrun starts one per rank:

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m ml.train spec.json

SPEC.json is a ``ml.train.run.TrainSpec`` (asset, settings, inputs, out_dir, work_dir, device).
"""

import sys

from ml.train.run import main

sys.exit(main())
