"""A stock moto_server (the S3 server `make setup` installs in .venv) on a free loopback
port with one bucket, for the benchmarks that replicate to S3. bench_replica.py runs its
own moto with ranged GETs served from memory; this one is moto as shipped."""

import os
import socket
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOTO = os.path.join(ROOT, ".venv", "bin", "moto_server")


def start(bucket, log_path=None):
    """Starts moto, waits until it answers (60 s at most) and creates `bucket`:
    (process, endpoint URL). Its output goes to `log_path` (or nowhere)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The machine's AWS_CA_BUNDLE makes plain-http S3 clients fail; moto needs none.
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            [MOTO, "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    finally:
        if log_path:
            log.close()
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        if proc.poll() is not None:
            tail = open(log_path).read()[-2000:] if log_path else "(make setup installs it in .venv)"
            raise RuntimeError("moto_server exited early: " + tail)
        try:
            urllib.request.urlopen(endpoint + "/", timeout=2).read()
            break
        except Exception:
            if time.time() > deadline:
                proc.kill()
                raise RuntimeError("moto_server did not answer within 60 s")
            time.sleep(0.1)
    req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT", data=b"")
    urllib.request.urlopen(req, timeout=10).read()
    return proc, endpoint
