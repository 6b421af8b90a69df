"""Python steps run as forks of a warm interpreter: what one step changes in
its process must not reach the next, a step's children die with it, and a
fork server that dies takes only its running step along (retried)."""
from kfp import dsl

from common import BASE


@dsl.component(base_image=BASE)
def pollute() -> str:
    import json
    import os
    import signal
    import sys
    import types
    os.environ["SWITCHYARD_LEAK"] = "1"
    os.chdir("/")
    sys.modules["leaky_module"] = types.ModuleType("leaky_module")
    signal.signal(signal.SIGUSR1, lambda *a: None)
    json.leaky = True
    return "polluted"


@dsl.component(base_image=BASE)
def inspect_state(after: str) -> dict:
    import json
    import os
    import signal
    import sys
    return {"after": after, "env": "SWITCHYARD_LEAK" in os.environ, "cwd": os.getcwd(),
            "module": "leaky_module" in sys.modules, "json": hasattr(json, "leaky"),
            "usr1_default": signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL,
            "path0": sys.path[0], "argv0": sys.argv[0], "main": sys.modules["__main__"].__name__,
            "runtime": os.environ.get("_KFP_RUNTIME")}


@dsl.pipeline(name="warm-isolation")
def warm_isolation() -> dict:
    return inspect_state(after=pollute().output).output


@dsl.component(base_image=BASE)
def nap_once(flag_dir: str, seconds: float) -> str:
    import os
    import subprocess
    import time
    started = os.path.join(flag_dir, "started")
    if os.path.exists(started):
        return "second attempt"
    child = subprocess.Popen(["sleep", "300"])
    with open(started + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    os.rename(started + ".tmp", started)
    time.sleep(seconds)
    return "slept"


@dsl.pipeline(name="warm-nap")
def warm_nap(flag_dir: str, seconds: float = 60.0) -> str:
    return nap_once(flag_dir=flag_dir, seconds=seconds).set_retry(num_retries=1, backoff_duration="0s").output
