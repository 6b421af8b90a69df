"""Asserts the runtime contract on one rank, then records what it saw.

Run by tests/jobs/contract.yaml on every rank; exits non-zero (with the reason in
output/failure) when anything is missing or inconsistent.
"""
import json
import os
import sys


def fail(msg):
    path = os.path.join(os.environ.get("SM_OUTPUT_DIR", "."), "failure")
    with open(path, "w") as f:
        f.write(f"contract check failed on rank {os.environ.get('RANK')}: {msg}")
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
                 ("SM_INPUT_CONFIG_DIR", "input/config"), ("SM_OUTPUT_DIR", "output"), ("SM_CHECKPOINT_DIR", "checkpoints")]:
    check(need(var) == os.path.join(base, sub), f"{var} is {need(var)}")
    check(os.path.isdir(need(var)), f"{var} {need(var)} is not a directory")
check(int(need("SM_NUM_CPUS")) >= 1 and int(need("SM_NUM_GPUS")) == 0, "SM_NUM_CPUS/GPUS")

channels = json.loads(need("SM_CHANNELS"))
check(sorted(channels) == ["train", "validation"], f"SM_CHANNELS {channels}")
for ch in channels:
    d = need(f"SM_CHANNEL_{ch.upper()}")
    check(d == os.path.join(base, "input/data", ch), f"SM_CHANNEL_{ch.upper()}")
    check(os.path.isfile(os.path.join(d, f"{ch}.csv")), f"{d}/{ch}.csv missing")

hps = json.loads(need("SM_HPS"))
check(hps == {"epochs": 5, "lr": 0.05, "optimizer": "adam", "layers": [64, 32]}, f"SM_HPS {hps}")
check(need("SM_HP_EPOCHS") == "5" and need("SM_HP_OPTIMIZER") == "adam" and need("SM_HP_LR") == "0.05", "SM_HP_*")
check(sys.argv[1:] == ["--epochs", "5", "--layers", "[64,32]", "--lr", "0.05", "--optimizer", "adam"], f"argv {sys.argv[1:]}")
check(json.loads(need("SM_USER_ARGS")) == sys.argv[1:], "SM_USER_ARGS")
check(need("SM_USER_ENTRY_POINT") == "check.py" and os.path.isfile(os.path.join(need("SM_MODULE_DIR"), "check.py")), "entry point")

cfg = need("SM_INPUT_CONFIG_DIR")
hp_file = json.load(open(os.path.join(cfg, "hyperparameters.json")))
check(all(isinstance(v, str) for v in hp_file.values()), "hyperparameters.json values are strings")
check({k: json.loads(v) for k, v in hp_file.items()} == hps, "hyperparameters.json decodes to SM_HPS")
rc = json.load(open(os.path.join(cfg, "resourceconfig.json")))
check(rc["current_host"] == need("SM_CURRENT_HOST") and rc["hosts"] == hosts, "resourceconfig.json")
check(json.loads(need("SM_RESOURCE_CONFIG")) == rc, "SM_RESOURCE_CONFIG")
idc = json.load(open(os.path.join(cfg, "inputdataconfig.json")))
check(sorted(idc) == sorted(channels) and idc["train"]["TrainingInputMode"] == "File", "inputdataconfig.json")
env = json.loads(need("SM_TRAINING_ENV"))
check(env["current_host"] == need("SM_CURRENT_HOST") and env["hosts"] == hosts and env["hyperparameters"] == hps, "SM_TRAINING_ENV")
check(env["channel_input_dirs"]["train"] == need("SM_CHANNEL_TRAIN"), "SM_TRAINING_ENV channel_input_dirs")
check(need("LOG_LEVEL") == "debug", "spec.env reaches the rank")

# Shared checkpoint directory: every rank leaves its mark for the test to find.
with open(os.path.join(need("SM_CHECKPOINT_DIR"), f"rank-{rank}.json"), "w") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith(("SM_", "PET_")) or k in (
        "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")}, f)
if rank == 0:
    with open(os.path.join(need("SM_MODEL_DIR"), "model.txt"), "w") as f:
        f.write("trained")
print(f"contract ok on rank {rank} of {world} (host {need('SM_CURRENT_HOST')}) loss=0.{rank}")
