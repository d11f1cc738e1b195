"""Package discovery for the one import package, ``caselink``.

The repository keeps the design card's top-level folders (``linkage/``, ``streams/`` ...); they
install as ``caselink.linkage``, ``caselink.streams`` ... so nothing generic lands at the top of
site-packages. pyproject.toml holds everything else; this file only maps the folders and finds
their packages (data folders such as ``schemas/avro`` included), so no package list is kept by
hand.
"""

from setuptools import find_namespace_packages, setup

# import package -> folder in the repository
ROOTS = {
    "caselink": "caselink",
    "caselink.connectors": "connectors",
    "caselink.infra": "infra",
    "caselink.linkage": "linkage",
    "caselink.schemas": "schemas",
    "caselink.streams": "streams",
}
SKIP = ("__pycache__", "*.egg-info")

packages: list[str] = []
for package, folder in ROOTS.items():
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in find_namespace_packages(folder, exclude=SKIP)]

setup(package_dir=ROOTS, packages=packages)
