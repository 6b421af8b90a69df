"""What one process of a training job sees, written to $DUMP_DIR as JSON (or
as one `SY-DUMP` line of its log where there is no DUMP_DIR): its
arguments, working directory, environment, the host's config files and the
driver channel's JSON files. With more than one process it also joins the
process group (gloo) and sums the ranks, so the variables are shown to work,
not only to exist. With FAIL_CODE set it fails at once with that code
(writing no failure file: the launcher's is what is checked)."""
import json
import os
import sys

if os.environ.get("FAIL_CODE"):
    print("failing on purpose", flush=True)
    sys.exit(int(os.environ["FAIL_CODE"]))
here = os.getcwd()
env = dict(os.environ)
base = os.path.dirname(env.get("SM_INPUT_DIR", "/opt/ml/input"))


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return f"<{type(e).__name__}>"


config = env.get("SM_INPUT_CONFIG_DIR", "")
data = env.get("SM_INPUT_DATA_DIR", "")
dump = {
    "argv": sys.argv,
    "cwd": here,
    "base": base,
    "env": env,
    "files": {
        name: read(os.path.join(config, name))
        for name in ("hyperparameters.json", "resourceconfig.json", "inputdataconfig.json")
    },
    "drivers": {
        name: read(os.path.join(data, "sm_drivers", name))
        for name in ("sourcecode.json", "distributed.json")
    },
    "code": sorted(os.listdir(here)),
    "train": sorted(os.listdir(env["SM_CHANNEL_TRAIN"])) if "SM_CHANNEL_TRAIN" in env else None,
}
try:
    import tinyreq  # installed from requirements.txt, when the job has one

    dump["requirement"] = tinyreq.VALUE
except ImportError:
    dump["requirement"] = None
if int(env.get("WORLD_SIZE", "1")) > 1:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    t = torch.tensor([float(dist.get_rank())])
    dist.all_reduce(t)
    dump["rank_sum"] = t.item()
    dist.destroy_process_group()
name = f"{env.get('SM_CURRENT_HOST', 'host')}-{env.get('LOCAL_RANK', '0')}"
if "DUMP_DIR" in env:
    with open(os.path.join(env["DUMP_DIR"], name + ".json"), "w") as f:
        json.dump(dump, f)
    print(f"dumped {name}")
else:  # in a pod: the log carries it
    print("SY-DUMP " + json.dumps({"name": name, "dump": dump}), flush=True)
