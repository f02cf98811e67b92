"""Build the compiled hot path.

Every ``_speedups/*.pyx`` becomes an extension module of the ``_speedups``
package.  Cython is a build requirement only (pyproject.toml); the generated
C files are not kept in git.

    python setup.py build_ext --inplace                 # developer build
    python setup.py build_ext --inplace --annotate      # + HTML annotation
    GATEWAY_CYTHON_TRACE=1 ...                          # line tracing for profilers
"""
import os
import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
ANNOTATE = "--annotate" in sys.argv
if ANNOTATE:
    sys.argv.remove("--annotate")


# C libraries a module links against (their -dev packages: scripts/setup.sh).
LIBRARIES = {"h2": ["nghttp2"], "tls": ["ssl", "crypto"], "tls_transport": ["ssl", "crypto"]}


def extensions():
    from Cython.Build import cythonize

    trace = os.environ.get("GATEWAY_CYTHON_TRACE") == "1"
    directives = {
        "language_level": "3",
        "boundscheck": False,
        "wraparound": False,
        "cdivision": True,
        "embedsignature": True,
        "profile": trace,
        "linetrace": trace,
    }
    macros = [("CYTHON_TRACE", "1")] if trace else []
    modules = [
        Extension(
            f"_speedups.{pyx.stem}",
            [str(pyx.relative_to(HERE))],
            define_macros=macros,
            extra_compile_args=["-O2"],
            libraries=LIBRARIES.get(pyx.stem, []),
        )
        for pyx in sorted((HERE / "_speedups").glob("*.pyx"))
    ]
    return cythonize(modules, compiler_directives=directives, annotate=ANNOTATE)


setup(ext_modules=extensions())
