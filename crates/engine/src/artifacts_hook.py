"""Switchyard's stand-in for KFP's /s3/ artifact mount.

On a KFP cluster the launcher puts an artifact with URI s3://bucket/key at
/s3/bucket/key inside the task's container. Switchyard stages it in the run's
folder instead (SWITCHYARD_S3_MOUNT); this hook, found first on PYTHONPATH as
`sitecustomize`, points kfp's path mapping there when kfp's artifact module is
imported. Nothing else changes: artifact URIs stay s3://...; a program that
does not import kfp is untouched. The next `sitecustomize` on the path, if
any, still runs.
"""
import os
import sys

_MODULE = "kfp.dsl.types.artifact_types"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _patch(module):
    mount = os.environ.get("SWITCHYARD_S3_MOUNT")
    if mount and hasattr(module, "_S3_LOCAL_MOUNT_PREFIX"):
        module._S3_LOCAL_MOUNT_PREFIX = mount.rstrip("/") + "/"


class _SwitchyardArtifactMount:
    def find_spec(self, name, path=None, target=None):
        if name != _MODULE:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        inner = spec.loader.exec_module

        def exec_module(module):
            inner(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if _MODULE in sys.modules:
    _patch(sys.modules[_MODULE])
else:
    sys.meta_path.insert(0, _SwitchyardArtifactMount())

# Chain to the sitecustomize this one shadows (Debian's, a venv's).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
_ME = sys.modules.pop("sitecustomize", None)
try:
    import sitecustomize  # noqa: F401
except ImportError:
    if _ME is not None:
        sys.modules["sitecustomize"] = _ME
