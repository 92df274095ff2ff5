"""Import the prebuilt cdktf provider packages without importing every resource module they hold.

Each `cdktf_cdktf_provider_<name>/__init__.py` ends with `from . import <resource>` for every resource
of the provider (aws: ~2,200 modules). Measured on a 2-core machine, those Python imports are half of
the package's import cost (aws: 6.7 s of 13.4 s; the other half is the jsii kernel loading the
assembly), yet a fleet's stacks use about twenty of them.

The packages were generated before jsii-pacmak emitted lazily loaded (PEP 562) package modules, and
they are archived, so no regenerated release will come. The jsii runtime we pin already resolves
types from submodules that are not imported yet (`jsii._reference_map._try_import_type_module`), so
this finder runs the package's own `__init__` minus those imports, answers attribute access with an
import on demand (PEP 562), and registers the FQN -> module map that newer generated packages ship,
so the runtime can import a module for a type it meets first from the JavaScript side.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PROVIDER_PACKAGE_PREFIX = "cdktf_cdktf_provider_"
EAGER_SWITCH = "GPUFLEET_PROVIDER_IMPORTS"
_SUBMODULE_IMPORT = re.compile(r"^from \. import (\w+)[ \t]*$", re.MULTILINE)


def jsii_submodule_name(python_name: str) -> str:
    """`eks_cluster` -> `eksCluster`: jsii-pacmak snake-cases the jsii submodule name for Python."""
    first, *rest = python_name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


class _OnDemandSubmodulesLoader(importlib.abc.Loader):
    """Runs a provider package's `__init__` without its `from . import <resource>` lines."""

    def __init__(self, path: str) -> None:
        self.path = path

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        source = Path(self.path).read_text(encoding="utf-8")
        submodules = frozenset(_SUBMODULE_IMPORT.findall(source))
        code = compile(_SUBMODULE_IMPORT.sub("", source), self.path, "exec", dont_inherit=True)
        exec(code, module.__dict__)
        if not submodules:  # a package generated with its own lazy loading: nothing was stripped
            return
        package = module.__name__

        def __getattr__(name: str) -> ModuleType:
            if name in submodules:
                return importlib.import_module(f"{package}.{name}")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")

        # `publication.publish()` in that `__init__` put a public copy of the module in sys.modules.
        public = sys.modules[package]

        def __dir__() -> list[str]:
            return sorted(set(public.__dict__) | submodules)

        for target in {id(module): module, id(public): public}.values():
            target.__getattr__ = __getattr__  # type: ignore[method-assign]
            target.__dir__ = __dir__  # type: ignore[method-assign]

        from jsii import _reference_map

        assembly = module.__jsii_assembly__
        _reference_map._submodule_fqn_map.update(
            {f"{assembly.name}.{jsii_submodule_name(name)}": f"{package}.{name}" for name in submodules}
        )


class _ProviderPackageFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(PROVIDER_PACKAGE_PREFIX) or "." in fullname:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not spec.origin.endswith("__init__.py"):
            return None
        spec.loader = _OnDemandSubmodulesLoader(spec.origin)
        return spec


def import_providers_on_demand() -> None:
    """From now on, provider packages import a resource module only when it is used. Idempotent.

    GPUFLEET_PROVIDER_IMPORTS=eager turns this off (the packages' own import, every module).
    """
    if os.environ.get(EAGER_SWITCH) == "eager":
        return
    from jsii import _reference_map

    if not hasattr(_reference_map, "_submodule_fqn_map"):
        return  # a jsii runtime without lazy-module support: keep the packages' eager import
    if not any(isinstance(finder, _ProviderPackageFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ProviderPackageFinder())
