"""Switchyard's warm interpreter for KFP Python components.

Started once per managed environment, inside it, with kfp's executor imported
(and nothing of the user's). Each step is a fork: a fresh process with its own
environment, working directory, output, process group and parent-death
signal, which then runs kfp's executor exactly as `python3 -m
kfp.dsl.executor_main ARGS` would. One thread, no signal handlers left to the
steps: requests and ended children are multiplexed with `selectors`.

Protocol (a Unix socket, one connection per step): the client sends one JSON
document (argv for the executor, env, cwd) with the write end of its output
pipe attached (SCM_RIGHTS) and shuts its side down; the server answers
`pid N` once the step is forked and `exit CODE` or `signal SIG` when it ends.
"""
import array
import ctypes
import errno
import json
import os
import selectors
import signal
import socket
import sys

os.environ["_KFP_RUNTIME"] = "true"
import runpy  # noqa: E402

import kfp.dsl.executor_main  # noqa: E402,F401  (the point: imported once, here)


def warm_up():
    """Pays once, here, what every step would pay again: argparse's first
    parser loads `locale`, gettext's lookups and compiles its patterns (a
    quarter of a trivial step's time). Nothing a step can observe changes:
    only caches of the standard library are filled."""
    import argparse
    parser = argparse.ArgumentParser(description="warm-up")
    parser.add_argument("--a", type=str, required=True)
    parser.add_argument("--b", type=str, required=False, default=None)
    parser.parse_known_args(["--a", "x", "--b=y", "--c", "z"])
    import gc
    # Whatever exists now is never collected: a step's collections do not
    # walk (and copy-on-write) the server's objects.
    gc.freeze()

PR_SET_PDEATHSIG = 1


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


LIBC = _libc()
# Resolved once here, not in every step.
PRCTL = LIBC.prctl if LIBC is not None else None


def recv_request(conn):
    fds = array.array("i")
    chunks = []
    while True:
        data, ancdata, _, _ = conn.recvmsg(1 << 20, socket.CMSG_SPACE(4 * fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
        if not data:
            break
        chunks.append(data)
    return json.loads(b"".join(chunks)), list(fds)


def child(req, out_fd):
    """In the forked step: become what a fresh `python -m` process would be."""
    try:
        os.setpgid(0, 0)
        if PRCTL is not None:
            # Dies with the server; the server dies with switchyard.
            PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        for fd in (devnull, out_fd):
            if fd > 2:
                os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        mount = req["env"].get("SWITCHYARD_S3_MOUNT")
        if mount:
            # What the engine's sitecustomize hook does in a plain start.
            from kfp.dsl.types import artifact_types
            artifact_types._S3_LOCAL_MOUNT_PREFIX = mount.rstrip("/") + "/"
        sys.path[0] = os.getcwd()
        sys.argv = ["-m"] + req["argv"]
        # Run as __main__ afresh (its imports stay warm), as `python -m` does.
        sys.modules.pop("kfp.dsl.executor_main", None)
    except BaseException as e:  # noqa: BLE001
        os.write(2, f"switchyard: cannot prepare the step: {e}\n".encode())
        os._exit(70)
    code = 0
    try:
        runpy.run_module("kfp.dsl.executor_main", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def main():
    path = sys.argv[1]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    steps = {}
    warm_up()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in sel.select():
            if key.data == "accept":
                conn, _ = server.accept()
                try:
                    req, fds = recv_request(conn)
                except (OSError, ValueError) as e:
                    conn.close()
                    sys.stderr.write(f"bad request: {e}\n")
                    continue
                if len(fds) != 1:
                    for fd in fds:
                        os.close(fd)
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    server.close()
                    for c in steps.values():
                        c.close()
                    conn.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    child(req, fds[0])
                os.close(fds[0])
                steps[pid] = conn
                try:
                    conn.sendall(f"pid {pid}\n".encode())
                except OSError:
                    pass
            else:
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    except OSError as e:
                        if e.errno == errno.EINTR:
                            continue
                        raise
                    if pid == 0:
                        break
                    conn = steps.pop(pid, None)
                    if conn is None:
                        continue
                    if os.WIFSIGNALED(status):
                        msg = f"signal {os.WTERMSIG(status)}\n"
                    else:
                        msg = f"exit {os.WEXITSTATUS(status)}\n"
                    try:
                        conn.sendall(msg.encode())
                    except OSError:
                        pass
                    conn.close()


if __name__ == "__main__":
    main()
