"""Packaging for mbroker.

``twisted.plugins`` is listed as a package on purpose: it ships
``twisted/plugins/mbroker_plugin.py`` into Twisted's plugin directory, which is how
``twistd mbroker`` finds the broker.  There is no ``__init__.py`` under ``twisted/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    """Read ``__version__`` from mbroker/__init__.py without importing the package."""
    text = (HERE / "mbroker" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("cannot find __version__ in mbroker/__init__.py")
    return match.group(1)


TEST_REQUIRES = [
    "pytest",
    "pytest-twisted",
    "pytest-timeout",
    "hypothesis",
    "mypy",
    "mypy-zope",
    "ruff",
    "pytest-cov",
    # the suite runs on both cores (.ci/run: -n 2 --dist loadfile)
    "pytest-xdist",
    "stomp.py",
    # STOMP over WebSocket (--stomp-ws) and its tests' WebSocket client
    "autobahn[twisted]>=23.1",
    # the dashboard's test drives Debian's chromium (and chromedriver) with it
    "selenium",
    # the cluster tests run nodes on a local Redis Cluster (redis-server from apt)
    "redis>=5.0",
]

setup(
    name="mbroker",
    version=read_version(),
    description="A message broker on Twisted with a line-based text protocol",
    long_description=(HERE / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    # An explicit root makes ``pip install -e .`` put the project directory on sys.path
    # (a static .pth file) instead of an import hook: Twisted finds plugins by scanning
    # sys.path for twisted/plugins/ directories, which an import hook never shows it.
    package_dir={"": "."},
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks", "examples"])
    + ["twisted.plugins"],
    package_data={"mbroker": ["py.typed"], "mbroker.server.http": ["static/*"]},
    include_package_data=False,
    zip_safe=False,
    python_requires=">=3.9",
    license="MIT",
    license_files=["LICENSE"],
    install_requires=[
        "twisted>=23.10",
        "attrs>=23.1",
        "zope.interface",
        "argon2-cffi>=23.1",
        "prometheus_client>=0.17",
        # recovery checks a CRC-32 per log record: zlib-ng's is zlib's, several times
        # faster on small records (mbroker.store.replay falls back to zlib without it)
        'zlib-ng>=0.4; platform_python_implementation == "CPython"',
        # --config FILE (TOML): tomllib is in the standard library from Python 3.11
        'tomli; python_version < "3.11"',
    ],
    extras_require={
        "test": TEST_REQUIRES,
        # The blocking facade (mbroker.blocking) runs the reactor in a thread with crochet.
        "blocking": ["crochet>=2.1"],
        "tls": ["twisted[tls]", "pyopenssl", "service_identity"],
        # STOMP over WebSocket (--stomp-ws), for stomp.js in browsers: optional, since
        # Autobahn (and its own dependencies) are of no use to native or TCP-STOMP users
        "ws": ["autobahn[twisted]>=23.1"],
        # cluster mode (--cluster): the nodes share their queues on Redis Cluster
        "cluster": ["redis>=5.0"],
        # the documentation and its API reference: sphinx-build -W -b html docs <dir>
        "docs": ["sphinx>=7"],
    },
    entry_points={
        "console_scripts": ["mbroker = mbroker.cli.main:main"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Topic :: System :: Networking",
        "Typing :: Typed",
    ],
)
