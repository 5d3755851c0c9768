"""What pyproject.toml cannot say: the Thrift IDL (`thrift/`) and the examples (`examples/`) stay
where they are in a checkout, and ship inside the `api` package (`api/_idl`, `api/_examples`),
where `api/bundled.py` finds them in an installed wheel. (A top-level `thrift` directory would
land on Apache Thrift's `thrift` package.)"""

from setuptools import find_namespace_packages, setup

BUNDLED = {"api._idl": "thrift", "api._examples": "examples"}

setup(
    packages=[
        *find_namespace_packages(
            include=["updater*", "scheduler*", "api*"], exclude=["*__pycache__"]
        ),
        *BUNDLED,
    ],
    package_dir=BUNDLED,
)
