#!/usr/bin/python3
"""Runs one of Debian's Swift server programs (swift-proxy-server, swift-object-server, ...) with
swift.conf read from SWIFT_DIR instead of /etc/swift, so that a throwaway Swift is its own: its
hash prefix and suffix, its storage policy, whatever the machine's /etc/swift holds.

Swift has no environment variable or option for this: the path is fixed in swift.common.utils
(SWIFT_CONF_FILE = '/etc/swift/swift.conf'), and the servers' `swift_dir` moves only the rings.
utils.set_swift_dir() moves it, and must run before swift.common.storage_policy and
swift.common.constraints are first imported, since they read swift.conf at import. Importing
swift.common.utils alone imports neither.

usage: run-server.py SWIFT_DIR PROGRAM CONF [OPTION...]
"""
import runpy
import sys

from swift.common import utils

swift_dir, program = sys.argv[1], sys.argv[2]
for early in ("swift.common.storage_policy", "swift.common.constraints"):
    if early in sys.modules:
        sys.exit(f"run-server.py: {early} was imported before swift.conf was moved")
utils.set_swift_dir(swift_dir)
sys.argv = [program] + sys.argv[3:]
runpy.run_path(program, run_name="__main__")
