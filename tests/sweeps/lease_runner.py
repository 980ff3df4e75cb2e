"""Another runner of a sweep, for tests/sweeps/test_lease.py: `python lease_runner.py URI TIMEOUT_S HEARTBEAT_S`.

Takes the lease and prints "held"; when its stdin closes, releases it and prints "released", or "lost" when
another runner took it over meanwhile.
"""

import sys

from sweeps.lease import take

if __name__ == "__main__":
    uri, timeout_s, heartbeat_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    lease = take(uri, timeout_s=timeout_s, heartbeat_s=heartbeat_s, settle_s=0.2)
    print("held", flush=True)
    sys.stdin.read()
    lost = lease.lost
    lease.release()
    print("lost" if lost else "released", flush=True)
