#!/usr/bin/env python3
"""Builds the sqlite-litestream wheel around a built extension (make dist).

    python build_wheel.py --library target/dist/liblitestream_vfs.so --version 0.1.0 --out target/dist

The platform tag is manylinux_X_Y for the newest glibc symbol version the library
needs (from its dynamic symbol table), so pip installs it exactly where it loads. The
package is assembled here (the module, the library, METADATA, WHEEL) and packed by the
`wheel` tool, which names the file from WHEEL's tag and writes RECORD.
"""

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "sqlite-litestream"
MODULE = "sqlite_litestream"


def glibc_needed(library):
    """(major, minor) of the newest GLIBC_x.y version the library refers to."""
    out = subprocess.run(["objdump", "-T", library], check=True, capture_output=True, text=True).stdout
    versions = {tuple(int(n) for n in v) for v in re.findall(r"\bGLIBC_(\d+)\.(\d+)(?:\.\d+)?\b", out)}
    if not versions:
        sys.exit(f"{library}: no GLIBC symbol versions found; is it a glibc build?")
    return max(versions)


def metadata(version):
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    return (
        "Metadata-Version: 2.1\n"
        f"Name: {NAME}\n"
        f"Version: {version}\n"
        "Summary: SQLite extension: continuous backup to object storage and read replicas, "
        "in Litestream's LTX format\n"
        "License: Apache-2.0\n"
        "Classifier: License :: OSI Approved :: Apache Software License\n"
        "Classifier: Operating System :: POSIX :: Linux\n"
        "Classifier: Topic :: Database\n"
        "Requires-Python: >=3.8\n"
        "Description-Content-Type: text/markdown\n"
        "\n" + readme
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True, help="the built liblitestream_vfs.so")
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", required=True, help="directory the wheel is written to")
    args = parser.parse_args()

    major, minor = glibc_needed(args.library)
    tag = f"py3-none-manylinux_{major}_{minor}_{platform.machine()}"
    with tempfile.TemporaryDirectory() as stage:
        package = os.path.join(stage, MODULE)
        os.makedirs(package)
        with open(os.path.join(HERE, MODULE, "__init__.py"), encoding="utf-8") as f:
            module = f.read().replace("@VERSION@", args.version)
        with open(os.path.join(package, "__init__.py"), "w", encoding="utf-8") as f:
            f.write(module)
        shutil.copy(args.library, os.path.join(package, "liblitestream_vfs.so"))
        info = os.path.join(stage, f"{MODULE}-{args.version}.dist-info")
        os.makedirs(info)
        with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as f:
            f.write(metadata(args.version))
        with open(os.path.join(info, "WHEEL"), "w", encoding="utf-8") as f:
            # Not purelib: the package holds a native library.
            f.write(f"Wheel-Version: 1.0\nGenerator: litestream-vfs build_wheel.py\nRoot-Is-Purelib: false\nTag: {tag}\n")
        with open(os.path.join(info, "top_level.txt"), "w", encoding="utf-8") as f:
            f.write(MODULE + "\n")
        os.makedirs(args.out, exist_ok=True)
        subprocess.run([sys.executable, "-m", "wheel", "pack", stage, "-d", args.out], check=True, stdout=subprocess.DEVNULL)
    wheel = os.path.join(args.out, f"{MODULE}-{args.version}-{tag}.whl")
    if not os.path.isfile(wheel):
        sys.exit(f"the wheel tool did not write {wheel}")
    print(wheel)


if __name__ == "__main__":
    main()
