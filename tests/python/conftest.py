"""One throw-away CloudRouter gateway for the SDK tests of this folder.

The `gateway-testbed` binary (bench/src/bin/gateway-testbed.rs) creates a fresh database on
the local Postgres, starts a gateway in front of an in-process fake Claude, creates keys, and
prints their details as one JSON line. Set CLOUDROUTER_TESTBED to a built binary to skip the build.
"""

import json
import os
import subprocess

import pytest


@pytest.fixture(scope="session")
def testbed():
    binary = os.environ.get("CLOUDROUTER_TESTBED")
    if not binary:
        target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/cloudrouter-target")
        binary = os.path.join(target, "debug", "gateway-testbed")
    proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, "testbed did not start"
    info = json.loads(line)
    yield info
    proc.stdin.close()
    proc.wait(timeout=60)
    assert proc.returncode == 0
