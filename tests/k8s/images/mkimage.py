#!/usr/bin/env python3
"""Packs layers into a docker-archive image tarball that `ctr images import` and
`docker load` both accept (no registry, no Docker daemon).

usage: mkimage.py OUT.tar NAME:TAG (--layer DIR | --layer-tar TAR)... [--entrypoint JSON]
                  [--cmd JSON] [--env K=V]...

Layers are applied in the order given: a --layer-tar is used as it is (for
example a debootstrap root filesystem packed once), a --layer folder is packed
with numeric owners."""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile


class Layer(argparse.Action):
    def __call__(self, parser, ns, value, option):
        ns.layers.append((option, value))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("ref")
    p.add_argument("--layer", action=Layer, dest="layers", default=[])
    p.add_argument("--layer-tar", action=Layer, dest="layers")
    p.add_argument("--entrypoint")
    p.add_argument("--cmd")
    p.add_argument("--env", action="append", default=[])
    a = p.parse_args()
    if not a.layers:
        p.error("give at least one --layer or --layer-tar")

    out_dir = os.path.dirname(os.path.abspath(a.out))
    tmp = tempfile.mkdtemp(dir=out_dir)
    try:
        diff_ids, paths = [], []
        for i, (kind, src) in enumerate(a.layers):
            layer = os.path.join(tmp, f"layer{i}.tar")
            if kind == "--layer":
                subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", src, "-cf", layer, "."], check=True)
            else:
                # A hard link where possible: the rootfs tarballs are large.
                try:
                    os.link(src, layer)
                except OSError:
                    shutil.copyfile(src, layer)
            digest = sha256_file(layer)
            os.makedirs(os.path.join(tmp, digest), exist_ok=True)
            os.rename(layer, os.path.join(tmp, digest, "layer.tar"))
            diff_ids.append("sha256:" + digest)
            paths.append(digest + "/layer.tar")
        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env
        cfg = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": env, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "tests/k8s/images/mkimage.py"} for _ in diff_ids],
        }
        if a.entrypoint:
            cfg["config"]["Entrypoint"] = json.loads(a.entrypoint)
        if a.cmd:
            cfg["config"]["Cmd"] = json.loads(a.cmd)
        cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
        cfg_id = hashlib.sha256(cfg_bytes).hexdigest()
        with open(os.path.join(tmp, cfg_id + ".json"), "wb") as f:
            f.write(cfg_bytes)
        manifest = [{"Config": cfg_id + ".json", "RepoTags": [a.ref], "Layers": paths}]
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f)
        members = ["manifest.json", cfg_id + ".json"] + sorted({x.split("/")[0] for x in paths})
        subprocess.run(["tar", "-C", tmp, "-cf", a.out + ".tmp"] + members, check=True)
        os.replace(a.out + ".tmp", a.out)
        print(a.ref, "->", a.out, os.path.getsize(a.out), "bytes")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
