#!/bin/sh
# Idempotent set-up on a fresh Debian machine (run as root): the system packages pulsegate needs
# (ZooKeeper, a JRE, the Thrift compiler for the interop test, Chromium for the web UI's browser
# tests) and a virtualenv at .venv with the package installed in editable mode. Fast when
# everything is already there.
set -eu
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
need_apt=""
[ -e /usr/share/java/zookeeper.jar ] || need_apt="$need_apt zookeeper"
command -v java >/dev/null 2>&1 || need_apt="$need_apt default-jre-headless"
command -v thrift >/dev/null 2>&1 || need_apt="$need_apt thrift-compiler"
# Playwright drives Debian's browser (tests/test_ui_browser.py); `playwright install` would
# download its own, which we never do.
[ -x /usr/bin/chromium ] || need_apt="$need_apt chromium"
# Debian's python3 needs python3-venv for `-m venv`; thriftpy2's rebuild needs a C compiler and
# the Python headers.
"$PY" -c "import ensurepip, venv" >/dev/null 2>&1 || need_apt="$need_apt python3-venv"
command -v gcc >/dev/null 2>&1 || need_apt="$need_apt gcc"
"$PY" -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" >/dev/null 2>&1 || need_apt="$need_apt python3-dev"
if [ -n "$need_apt" ]; then
    echo "bootstrap: installing$need_apt" >&2
    if [ "$(id -u)" != 0 ]; then
        echo "bootstrap: need root to install$need_apt (or install them yourself)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.pulsegate-installed
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
    .venv/bin/python deploy/patch_thriftpy2.py
    touch "$stamp"
fi
