"""Compiles every pipeline defined in this folder with the real kfp SDK.

Usage: python compile.py OUT_DIR
Each module's pipelines (objects made by @dsl.pipeline) are written to
OUT_DIR/<function name>.yaml. Tests call this once per test binary.
"""
import importlib.util
import pathlib
import sys
import warnings

warnings.simplefilter("ignore")

from kfp import compiler  # noqa: E402
from kfp.dsl.graph_component import GraphComponent  # noqa: E402


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    here = pathlib.Path(__file__).parent
    sys.path.insert(0, str(here))
    seen = {}
    for path in sorted(here.glob("*.py")):
        if path.name in ("compile.py", "common.py"):
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, obj in vars(module).items():
            if isinstance(obj, GraphComponent):
                if name in seen and seen[name] != path.name:
                    raise SystemExit(f"pipeline name {name} defined in {seen[name]} and {path.name}")
                seen[name] = path.name
                compiler.Compiler().compile(obj, str(out / f"{name}.yaml"))
    print(f"compiled {len(seen)} pipelines into {out}")


if __name__ == "__main__":
    main()
