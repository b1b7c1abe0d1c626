"""``python tests/count_host_syncs.py <launch.py flags>``: runs launch.py and counts the
cross-process equality checks (``multihost_utils.assert_equal``: an all-gather fetched to the
host, which ``jax.device_put`` runs for a host value on several processes) made inside
PSS-Net training steps (``draw.sampled_step``); prints ``host syncs in steps: N`` at exit."""

import atexit
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jax.experimental import multihost_utils  # noqa: E402

from pssnet_dcff.cli import run  # noqa: E402

calls = []
original = multihost_utils.assert_equal


def counted(*args, **kwargs):
    if any(frame.name == "sampled_step" for frame in traceback.extract_stack()):
        calls.append(traceback.format_stack(limit=6)[0])
    return original(*args, **kwargs)


multihost_utils.assert_equal = counted
atexit.register(lambda: print(f"host syncs in steps: {len(calls)}", *calls[:1], flush=True))
run()
