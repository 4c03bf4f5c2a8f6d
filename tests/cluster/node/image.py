#!/usr/bin/env python3
"""Assembles the test node's images as OCI archives for `ctr images import`,
without a container engine:

    image.py app DOCKERFILE BINARY NAME OUT    the project's image
    image.py pause BINARY NAME OUT             the node's sandbox image

`app` reads the final stage of the Dockerfile: the path its COPY puts the
binary at, its USER, ENTRYPOINT, CMD and EXPOSE, so the image runs as the
published one does. What the Dockerfile's base image (distroless cc) gives
the binary is added from this machine: the shared libraries `ldd` names,
the CA roots, /etc/passwd and /etc/group with its `nonroot` user, and /tmp.
`pause` is one static binary run as 65535, as Kubernetes' pause image is.

Every file has the same owner and time, so the same inputs give the same
digests, and importing again changes nothing.
"""

import hashlib
import io
import json
import pathlib
import shlex
import subprocess
import sys
import tarfile

PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = "root:x:0:\nnonroot:x:65532:\n"
CA_ROOTS = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")


def final_stage(dockerfile):
    """The instructions after the Dockerfile's last FROM, as (word, rest)."""
    stage = []
    for line in pathlib.Path(dockerfile).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stage = []
        else:
            stage.append((word.upper(), rest.strip()))
    return stage


def exec_form(rest):
    return json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]


def app_config(dockerfile):
    """Where the binary goes, and the image config the Dockerfile sets."""
    binary_path, config = None, {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    for word, rest in final_stage(dockerfile):
        if word == "COPY":
            binary_path = [w for w in shlex.split(rest) if not w.startswith("--")][-1]
        elif word == "USER":
            config["User"] = rest
        elif word == "ENTRYPOINT":
            config["Entrypoint"] = exec_form(rest)
        elif word == "CMD":
            config["Cmd"] = exec_form(rest)
        elif word == "EXPOSE":
            config["ExposedPorts"] = {f"{p}/tcp" if "/" not in p else p: {} for p in rest.split()}
    if binary_path is None or "Entrypoint" not in config:
        sys.exit(f"image.py: {dockerfile}: its final stage has no COPY of the binary or no ENTRYPOINT")
    return binary_path, config


def shared_libraries(binary):
    """The files `ldd` says the binary loads, by the path it loads them at."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    paths = []
    for line in out.splitlines():
        words = line.split()
        if "=>" in words and len(words) > 2 and words[2].startswith("/"):
            paths.append(words[2])
        elif words and words[0].startswith("/"):
            paths.append(words[0])
    return paths


def layer(files, directories):
    """An uncompressed tar of files (path in image, bytes, mode) and of
    directories (path, mode, owner's uid and gid)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        made = set()

        def directory(path, mode=0o755, owner=0):
            parts = pathlib.PurePosixPath(path).parts[1:]
            for i in range(1, len(parts) + 1):
                name = "/".join(parts[:i])
                if name not in made:
                    made.add(name)
                    info = tarfile.TarInfo(name)
                    info.type = tarfile.DIRTYPE
                    info.mode, info.uid, info.gid = (mode, owner, owner) if i == len(parts) else (0o755, 0, 0)
                    tar.addfile(info)

        for path, mode, owner in directories:
            directory(path, mode, owner)
        for path, data, mode in sorted(files):
            directory(str(pathlib.PurePosixPath(path).parent))
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_archive(out, name, layer_bytes, config):
    """An OCI image layout in a tar, its one manifest named `name`."""
    blobs = {}

    def blob(data, media_type):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    layer_descriptor = blob(layer_bytes, "application/vnd.oci.image.layer.v1.tar")
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_descriptor["digest"]]},
    }
    config_descriptor = blob(json.dumps(image_config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_descriptor, "layers": [layer_descriptor]}
    manifest_descriptor = blob(json.dumps(manifest, sort_keys=True).encode(), manifest["mediaType"])
    manifest_descriptor["annotations"] = {"io.containerd.image.name": name,
                                          "org.opencontainers.image.ref.name": name.rpartition(":")[2]}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [manifest_descriptor]}
    entries = [("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
               ("index.json", json.dumps(index, sort_keys=True).encode())]
    entries += [(f"blobs/sha256/{d.split(':')[1]}", data) for d, data in sorted(blobs.items())]
    with tarfile.open(out, "w") as tar:
        for path, data in entries:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


def app(dockerfile, binary, name, out):
    binary_path, config = app_config(dockerfile)
    files = [(binary_path, pathlib.Path(binary).read_bytes(), 0o755)]
    files += [(lib, pathlib.Path(lib).resolve().read_bytes(), 0o755) for lib in shared_libraries(binary)]
    files += [("/etc/passwd", PASSWD.encode(), 0o644), ("/etc/group", GROUP.encode(), 0o644)]
    if CA_ROOTS.exists():
        files.append((str(CA_ROOTS), CA_ROOTS.read_bytes(), 0o644))
    directories = [("/tmp", 0o1777, 0), ("/home/nonroot", 0o700, 65532)]
    write_archive(out, name, layer(files, directories), config)


def pause(binary, name, out):
    files = [("/pause", pathlib.Path(binary).read_bytes(), 0o755)]
    write_archive(out, name, layer(files, []), {"User": "65535:65535", "Entrypoint": ["/pause"]})


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["app", dockerfile, binary, name, out]:
            app(dockerfile, binary, name, out)
        case ["pause", binary, name, out]:
            pause(binary, name, out)
        case _:
            sys.exit(__doc__)
