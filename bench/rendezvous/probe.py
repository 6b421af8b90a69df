"""Records when this rank started and when its rendezvous completed."""
import json
import os
import time

started = time.time()
import torch.distributed as dist  # noqa: E402

dist.init_process_group("gloo")
rendezvous = time.time()
with open(os.path.join(os.environ["PROBE_OUT"], f"{dist.get_rank()}.json"), "w") as f:
    json.dump({"started": started, "rendezvous": rendezvous}, f)
dist.barrier()
dist.destroy_process_group()
