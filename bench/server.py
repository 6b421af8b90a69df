"""A `switchyard server` for a benchmark: started on a free loopback port with
its own data folder, no token, and its resident memory."""
import os
import socket
import subprocess
import time

import requests


def start(binary, home):
    """Starts the server and waits until it answers; returns (process, base URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "server", "--port", str(port), "--no-auth"],
                            env=dict(os.environ, SWITCHYARD_HOME=str(home)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            requests.get(url + "/apis/v2beta1/healthz", timeout=1)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not answer within 10 s")


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
