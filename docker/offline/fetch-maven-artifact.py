"""Download one Maven artifact by its coordinates and check its SHA-256 (inside an image build).

    python fetch-maven-artifact.py REPO_URL GROUP:ARTIFACT:VERSION SHA256 DEST

REPO_URL is Maven Central or its mirror (MAVEN_REPO_URL). A wrong hash fails the build, naming
both hashes, so a mirror serving something else is never built into an image.
"""

from __future__ import annotations

import hashlib
import sys
import urllib.request


def main(argv: list[str]) -> int:
    repo, coordinates, want, dest = argv
    group, artifact, version = coordinates.split(":")
    url = f"{repo.rstrip('/')}/{group.replace('.', '/')}/{artifact}/{version}/{artifact}-{version}.jar"
    with urllib.request.urlopen(url, timeout=120) as response:
        data = response.read()
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        print(f"{url}: sha256 {got}, expected {want}: refusing it", file=sys.stderr)
        return 1
    with open(dest, "wb") as out:
        out.write(data)
    print(f"{url}: {len(data):,} bytes, sha256 ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
