#!/usr/bin/env python3
"""Writes an OCI image archive (oci-archive, as podman load and skopeo read
it) from a list of layers, with no container engine and no registry.

Each layer is a directory; its files go into a tar with sorted names, owner
and mode from a manifest of the directory (root unless listed), and every
time set to SOURCE_DATE_EPOCH, so the same inputs give the same digests.

    oci_image.py --out IMG.tar --ref NAME:TAG --config CONFIG.json \
        --layer DIR[:OWNERS] ...

CONFIG.json holds the image's "config" (Entrypoint, Cmd, User, Env,
ExposedPorts, Labels, WorkingDir) and "comment"s for the layers' history.
OWNERS (optional) is a file of "PATH UID GID MODE" lines for paths of the
layer that are not root-owned or need another mode.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
import time


def epoch() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def read_owners(path):
    owners = {}
    if not path:
        return owners
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p, uid, gid, mode = line.split()
            owners[p.strip("/")] = (int(uid), int(gid), int(mode, 8))
    return owners


def layer_tar(root: str, owners) -> bytes:
    """An uncompressed, reproducible tar of root's tree."""
    buf = io.BytesIO()
    mtime = epoch()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                entries.append(os.path.relpath(full, root))
        for rel in sorted(entries):
            full = os.path.join(root, rel)
            info = tar.gettarinfo(full, arcname=rel)
            info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
            info.mtime = mtime
            if rel in owners:
                info.uid, info.gid, mode = owners[rel]
                info.mode = mode
            if info.isfile():
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


class Blobs:
    def __init__(self):
        self.blobs = {}

    def add(self, data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return {"digest": digest, "size": len(data)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--ref", required=True, help="NAME:TAG of the image in the archive")
    ap.add_argument("--config", required=True)
    ap.add_argument("--layer", action="append", required=True, help="DIR[:OWNERS]")
    args = ap.parse_args()

    with open(args.config) as f:
        spec = json.load(f)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch()))
    blobs = Blobs()
    layers, diff_ids, history = [], [], []
    comments = spec.get("comments", [])
    for i, arg in enumerate(args.layer):
        root, _, owners = arg.partition(":")
        raw = layer_tar(root, read_owners(owners))
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        gz = gzip.compress(raw, compresslevel=6, mtime=0)
        desc = blobs.add(gz)
        desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        layers.append(desc)
        history.append({"created": created, "created_by": comments[i] if i < len(comments) else root})

    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": spec["config"],
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    cdesc = blobs.add(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    cdesc["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cdesc,
        "layers": layers,
        "annotations": spec["config"].get("Labels", {}),
    }
    mdesc = blobs.add(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    mdesc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    mdesc["annotations"] = {"org.opencontainers.image.ref.name": args.ref.split(":", 1)[1]}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [mdesc]}

    mtime = epoch()

    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), mtime, 0o644
        tar.addfile(info, io.BytesIO(data))

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        for digest in sorted(blobs.blobs):
            add(tar, "blobs/sha256/" + digest.split(":", 1)[1], blobs.blobs[digest])
    os.replace(tmp, args.out)
    print(mdesc["digest"])


if __name__ == "__main__":
    main()
