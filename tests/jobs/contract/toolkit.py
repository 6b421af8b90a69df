"""The SageMaker training toolkit's own view of this rank, compared with what
Switchyard gave it: `Environment()` read from SAGEMAKER_BASE_DIR's config files
must succeed, its `to_env_vars()` must equal the rank's SM_* variables (JSON
values compared decoded), and `to_cmd_args()` the rank's argv."""
import json
import os
import sys

from sagemaker_training import environment


def decoded(v):
    try:
        return json.loads(v)
    except ValueError:
        return v


def differences():
    env = environment.Environment()
    want = env.to_env_vars()
    out = []
    for k, v in sorted(want.items()):
        got = os.environ.get(k)
        if got is None:
            out.append(f"{k} missing (toolkit: {v[:200]})")
        elif got != v:
            if isinstance(decoded(v), dict) and isinstance(decoded(got), dict):
                a, b = decoded(v), decoded(got)
                keys = sorted(set(a) | set(b))
                out.append(f"{k} differs: " + "; ".join(
                    f"{x}: toolkit {json.dumps(a.get(x, '<absent>'))[:160]} vs {json.dumps(b.get(x, '<absent>'))[:160]}"
                    for x in keys if a.get(x, "<absent>") != b.get(x, "<absent>")))
            else:
                out.append(f"{k} differs: toolkit {v[:200]!r} vs {got[:200]!r}")
    for k in sorted(os.environ):
        if k.startswith("SM_") and k not in want:
            out.append(f"{k} is not something the toolkit sets")
    if env.to_cmd_args() != sys.argv[1:]:
        out.append(f"argv: toolkit {env.to_cmd_args()} vs {sys.argv[1:]}")
    return out


if __name__ == "__main__":
    for d in differences():
        print(d)
