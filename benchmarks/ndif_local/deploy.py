"""Deploy one model on the local NDIF server, once its controller is up (run with the server's
Python by serve_and_trace.py): `python deploy.py '<spec as JSON>' <timeout seconds>`."""

import json
import os
import sys
import time

import ray
from ndif.cli.lib.deploy import deploy


def main(spec: dict, timeout_s: float) -> None:
    ray.init(address=os.environ["NDIF_RAY_ADDRESS"], namespace="NDIF", logging_level="error")
    deadline = time.monotonic() + timeout_s
    while True:  # the controller actor is created asynchronously by its launcher
        try:
            ray.get(ray.get_actor("Controller", namespace="NDIF").__ray_ready__.remote(), timeout=10)
            break
        except Exception as error:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the NDIF controller did not come up in {timeout_s} s") from error
            time.sleep(1)
    print(deploy([spec], ray_address=os.environ["NDIF_RAY_ADDRESS"], redis_url=os.environ["NDIF_REDIS_URL"],
                 on_message=print))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), float(sys.argv[2]))
