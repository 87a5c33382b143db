# nbdkit's S3 plugin exactly as Debian ships it (nbdkit-plugin-python 1.32.5), with one callback
# replaced, for bench/object.ts. The shipped block_size() answers the object size as the minimum
# block size, and nbdkit 1.32 refuses a minimum above 64 KiB ("plugin must set minimum block size
# between 1 and 64K"), so the plugin cannot serve 1 MiB objects as shipped. Here the minimum is
# capped at 64 KiB; nothing else changes: the plugin already turns any write that does not cover
# whole objects into a read-modify-write of them, and the benchmark puts nbdkit's blocksize
# filter (minblock=4k) in front, as nbdkit-S3-plugin(1) advises for small requests.
#   nbdkit --filter=blocksize python bench/nbdkit-s3-plugin.py [S3 plugin parameters] minblock=4k
import importlib.machinery
import importlib.util
import os

_path = os.environ.get("KINDLING_NBDKIT_S3_PLUGIN", "/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-S3-plugin")
_loader = importlib.machinery.SourceFileLoader("nbdkit_S3_plugin", _path)
_s3 = importlib.util.module_from_spec(importlib.util.spec_from_loader("nbdkit_S3_plugin", _loader))
_loader.exec_module(_s3)

# nbdkit's python plugin looks its callbacks up in this module: every one of the plugin's.
globals().update({name: value for name, value in vars(_s3).items() if not name.startswith("__")})


def block_size(server):
    size = _s3.cfg.obj_size
    if not size:
        return _s3.block_size(server)
    return (min(size, 64 * 1024), size, size)
