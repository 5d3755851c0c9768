"""Rebuild thriftpy2 with a guarded skip, unless the installed one already has it.

thriftpy2 0.7.1's compiled decoder skips a container of an unknown element type by looping
`size` times while reading nothing, holding the GIL: 30 bytes declaring two billion elements
freeze every thread of the scheduler for seconds (long enough to lose its ZooKeeper session).
Apache Thrift raises on an unknown type; this makes thriftpy2's `c_skip` do the same.

Run by deploy/bootstrap.sh with the virtualenv's python; idempotent and quiet when done."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.7.1"
ANCHOR = """            read_i16(buf)
            c_skip(buf, f_type, budget)
    return 0"""
GUARDED = """            read_i16(buf)
            c_skip(buf, f_type, budget)
    else:
        raise ProtocolError("Unexpected TType %d for skip" % ttype)
    return 0"""


def is_guarded() -> bool:
    check = (
        "from thriftpy2.protocol.cybin import cybin\n"
        "from thriftpy2.transport.memory import TCyMemoryBuffer\n"
        "try:\n"
        "    cybin.skip(TCyMemoryBuffer(bytes(8)), 1)\n"
        "except Exception:\n"
        "    raise SystemExit(0)\n"
        "raise SystemExit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", check], check=False).returncode == 0


def extract(archive: tarfile.TarFile, into: Path) -> None:
    """Extract safely. Python before 3.11.4 (Debian 12's 3.11.2) has no extraction filters,
    so check every member stays inside `into` ourselves there."""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(into, filter="data")
        return
    root = into.resolve()
    for member in archive.getmembers():
        target = (into / member.name).resolve()
        if not target.is_relative_to(root) or member.issym() or member.islnk():
            raise SystemExit(f"bootstrap: refusing archive member {member.name!r}")
    archive.extractall(into)


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args], check=True
    )


def main() -> int:
    if is_guarded():
        return 0
    print(f"bootstrap: building thriftpy2 {VERSION} with a guarded skip", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pip("download", "--no-deps", "--no-binary", "thriftpy2", "-d", tmp, f"thriftpy2=={VERSION}")
        with tarfile.open(next(work.glob("thriftpy2-*.tar.gz"))) as archive:
            extract(archive, work)
        source = work / f"thriftpy2-{VERSION}"
        pyx = source / "thriftpy2/protocol/cybin/cybin.pyx"
        text = pyx.read_text()
        if ANCHOR not in text:
            print("bootstrap: unexpected thriftpy2 source; skip guard not applied", file=sys.stderr)
            return 1
        pyx.write_text(text.replace(ANCHOR, GUARDED, 1))
        pip("install", "cython>=3,<3.2", "setuptools>=68", "wheel")
        pip("wheel", "--no-build-isolation", "--no-deps", "-w", str(work / "dist"), str(source))
        wheel = next((work / "dist").glob("thriftpy2-*.whl"))
        pip("install", "--force-reinstall", "--no-deps", str(wheel))
    if not is_guarded():
        print("bootstrap: the rebuilt thriftpy2 is still unguarded", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
