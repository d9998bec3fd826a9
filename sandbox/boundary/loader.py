"""How a child interpreter loads this package, and nothing else of ``sandbox``."""

from __future__ import annotations

import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE_NAME = "boundary"  # what the package is called inside a child


def child_program(module: str, function: str) -> str:
    """The ``python -I -c`` program that loads this package from the directory in ``sys.argv[1]``
    under the name ``boundary``, then calls ``boundary.<module>.<function>()``.

    Loading the package from its own directory keeps the ``sandbox`` package (and with it the
    engine, litellm and the frameworks) out of the process that runs untrusted code.
    """
    return ("import sys, importlib.util as u; "
            f"s = u.spec_from_file_location({PACKAGE_NAME!r}, sys.argv[1] + '/__init__.py', "
            "submodule_search_locations=[sys.argv[1]]); "
            f"m = u.module_from_spec(s); sys.modules[{PACKAGE_NAME!r}] = m; s.loader.exec_module(m); "
            f"from {PACKAGE_NAME}.{module} import {function}; {function}()")
