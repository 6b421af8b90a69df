"""Asserts the runtime contract on one rank, then records what it saw.

Run by tests/jobs/contract.yaml on every rank; exits non-zero (with the reason in
output/failure) when anything is missing or inconsistent.
"""
import json
import os
import sys

import toolkit


def fail(msg):
    path = os.path.join(os.environ.get("SM_OUTPUT_DIR", "."), "failure")
    text = f"contract check failed on rank {os.environ.get('RANK')}: {msg}"
    with open(path, "w") as f:
        f.write(text)
    print(text, file=sys.stderr, flush=True)
    sys.exit(2)


def need(name):
    if name not in os.environ:
        fail(f"{name} is not set")
    return os.environ[name]


def check(cond, msg):
    if not cond:
        fail(msg)


nodes, procs = int(need("PET_NNODES")), int(need("PET_NPROC_PER_NODE"))
world, rank, local = int(need("WORLD_SIZE")), int(need("RANK")), int(need("LOCAL_RANK"))
node = int(need("NODE_RANK"))
check(world == nodes * procs, "WORLD_SIZE != nnodes * nproc_per_node")
check(0 <= rank < world and 0 <= local < procs, "rank out of range")
check(rank == node * procs + local, "RANK != NODE_RANK * nproc + LOCAL_RANK")
check(need("GROUP_RANK") == str(node) and need("PET_NODE_RANK") == str(node), "GROUP_RANK/PET_NODE_RANK")
check(need("LOCAL_WORLD_SIZE") == str(procs), "LOCAL_WORLD_SIZE")
check(need("MASTER_ADDR") == need("PET_MASTER_ADDR"), "PET_MASTER_ADDR")
check(need("MASTER_PORT") == need("PET_MASTER_PORT") and int(need("MASTER_PORT")) > 0, "MASTER_PORT")
need("TORCHELASTIC_RUN_ID")

hosts = json.loads(need("SM_HOSTS"))
check(hosts == [f"algo-{i + 1}" for i in range(nodes)], f"SM_HOSTS {hosts}")
check(need("SM_CURRENT_HOST") == f"algo-{node + 1}", "SM_CURRENT_HOST")
base = need("SAGEMAKER_BASE_DIR")
for var, sub in [("SM_MODEL_DIR", "model"), ("SM_OUTPUT_DATA_DIR", "output/data"), ("SM_INPUT_DIR", "input"),
                 ("SM_INPUT_CONFIG_DIR", "input/config"), ("SM_OUTPUT_DIR", "output")]:
    check(need(var) == os.path.join(base, sub), f"{var} is {need(var)}")
    check(os.path.isdir(need(var)), f"{var} {need(var)} is not a directory")
check(int(need("SM_NUM_CPUS")) >= 1 and int(need("SM_NUM_GPUS")) == 0, "SM_NUM_CPUS/GPUS")

channels = json.loads(need("SM_CHANNELS"))
check(channels == ["train", "val-data"], f"SM_CHANNELS {channels}")
for ch, file in [("train", "train.csv"), ("val-data", "validation.csv")]:
    # The toolkit keeps the name's "-" (SM_CHANNEL_VAL-DATA).
    d = need(f"SM_CHANNEL_{ch.upper()}")
    check(d == os.path.join(base, "input/data", ch), f"SM_CHANNEL_{ch.upper()}")
    check(os.path.isfile(os.path.join(d, file)), f"{d}/{file} missing")

hps = json.loads(need("SM_HPS"))
check(hps == {"epochs": 5, "lr": 0.05, "optimizer": "adam", "layers": [64, 32], "e": 3, "amp": True,
              "opts": {"b": 2, "a": "x"}, "tiny": 1e-05}, f"SM_HPS {hps}")
check(need("SM_HP_EPOCHS") == "5" and need("SM_HP_OPTIMIZER") == "adam" and need("SM_HP_LR") == "0.05", "SM_HP_*")
# The toolkit's to_cmd_args: Python's str() of each value, one-letter names with one dash.
check(sys.argv[1:] == ["--amp", "True", "-e", "3", "--epochs", "5", "--layers", "[64, 32]", "--lr", "0.05",
                       "--optimizer", "adam", "--opts", "a=x,b=2", "--tiny", "1e-05"], f"argv {sys.argv[1:]}")
check(json.loads(need("SM_USER_ARGS")) == sys.argv[1:], "SM_USER_ARGS")
check(need("SM_USER_ENTRY_POINT") == "check.py" and os.path.isfile(os.path.join(need("SM_MODULE_DIR"), "check.py")), "entry point")

cfg = need("SM_INPUT_CONFIG_DIR")
hp_file = json.load(open(os.path.join(cfg, "hyperparameters.json")))
check(all(isinstance(v, str) for v in hp_file.values()), "hyperparameters.json values are strings")
decoded = {k: json.loads(v) for k, v in hp_file.items()}
check({k: v for k, v in decoded.items() if not k.startswith("sagemaker_")} == hps, "hyperparameters.json decodes to SM_HPS")
# What SageMaker's SDK adds to a framework job's hyperparameters, on every backend.
check(decoded["sagemaker_program"] == "check.py" and decoded["sagemaker_job_name"] == "contract-check"
      and decoded["sagemaker_torch_distributed_enabled"] is True
      and decoded["sagemaker_mpi_num_of_processes_per_host"] == procs, f"sagemaker_* hyperparameters {decoded}")
rc = json.load(open(os.path.join(cfg, "resourceconfig.json")))
check(rc["current_host"] == need("SM_CURRENT_HOST") and rc["hosts"] == hosts, "resourceconfig.json")
check(json.loads(need("SM_RESOURCE_CONFIG")) == rc, "SM_RESOURCE_CONFIG")
idc = json.load(open(os.path.join(cfg, "inputdataconfig.json")))
check(sorted(idc) == sorted(channels) and idc["train"]["TrainingInputMode"] == "File", "inputdataconfig.json")
env = json.loads(need("SM_TRAINING_ENV"))
check(env["current_host"] == need("SM_CURRENT_HOST") and env["hosts"] == hosts and env["hyperparameters"] == hps, "SM_TRAINING_ENV")
check(env["channel_input_dirs"]["train"] == need("SM_CHANNEL_TRAIN"), "SM_TRAINING_ENV channel_input_dirs")
check(need("LOG_LEVEL") == "debug", "spec.env reaches the rank")
check(need("TRAINING_JOB_NAME") == "contract-check", "TRAINING_JOB_NAME")
for name in ["SM_IS_MASTER", "SM_MASTER_ADDR", "SM_CHECKPOINT_DIR"]:
    check(name not in os.environ, f"{name} is set, but no SageMaker container has it")
# The SageMaker training toolkit's own Environment(), built from this rank's
# config files, gives exactly this rank's SM_* variables and argv.
diffs = toolkit.differences()
check(not diffs, "the SageMaker toolkit sees it differently: " + " | ".join(diffs))

# Shared checkpoint directory: every rank leaves its mark for the test to find.
with open(os.path.join(base, "checkpoints", f"rank-{rank}.json"), "w") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith(("SM_", "PET_")) or k in (
        "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")}, f)
if rank == 0:
    with open(os.path.join(need("SM_MODEL_DIR"), "model.txt"), "w") as f:
        f.write("trained")
print(f"contract ok on rank {rank} of {world} (host {need('SM_CURRENT_HOST')}) loss=0.{rank}")
