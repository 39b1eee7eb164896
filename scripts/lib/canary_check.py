#!/usr/bin/env python3
"""The canary check: no secret the tests hand the service appears in what
it logged, in a span field, an error message or a panic.

The markers are the secrets themselves: every string literal of at least
12 characters that the test sources give a secret field or constant
(token, password, secret_access_key, session_token, a *TOKEN/*PASSWORD/
*SECRET constant), and the `c4n4ry` marker the canary test puts in every
credential field. A marker is found raw, JSON-escaped, or as base64 at any
of the three alignments it can take inside a longer base64 value (a docker
`auth` of `user:secret`, a Secret's data). Besides markers, a PEM private
key header and anything shaped like a JWT are findings: both are secrets
whatever their value.

usage: canary_check.py OUTPUT [OUTPUT ...]
Each OUTPUT is a log file or a directory whose files are all read.
"""

import base64
import pathlib
import re
import sys

FIELD = re.compile(
    r'(?:\b(?:token|password|access_key_id|secret_access_key|session_token|secret)\b|'
    r'\b[A-Z_]*(?:TOKEN|PASSWORD|SECRET)[A-Z_]*\b)'
    r'[^"\n]{0,40}?"([A-Za-z0-9_/+=!-]{12,})"'
)
PREFIXED = re.compile(r'"((?:ghp_|github_pat_|dckr_pat_|glpat-|AKIA|ASIA)[A-Za-z0-9_]{12,})"')
SHAPES = {
    "a PEM private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"),
}
CANARY = "c4n4ryS3cr3t"
# Placeholders and values the tests use as non-secrets.
IGNORED = re.compile(r"x{6,}|^[a-z-]+$")


def markers(sources):
    found = {CANARY}
    for source in sources:
        for path in pathlib.Path(source).rglob("*.rs"):
            text = path.read_text(errors="replace")
            for value in FIELD.findall(text) + PREFIXED.findall(text):
                if not IGNORED.search(value):
                    found.add(value)
    return found


def b64_variants(secret):
    """Base64 fragments that appear wherever `secret` is encoded inside a
    longer value, whatever bytes come before it."""
    variants = set()
    raw = secret.encode()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        # Drop the characters touched by the padding bytes or the unknown
        # neighbours: what stays is fixed by the secret alone.
        start = (shift * 8 + 5) // 6 + (1 if shift else 0)
        core = encoded[start: len(encoded) - 4]
        if len(core) >= 8:
            variants.add(core)
    return variants


ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = [ROOT / d for d in ("tests", "services/registry-server/tests", "crates/registry-testkit/src")]


def outputs(paths):
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    needles = {}
    for secret in markers(SOURCES):
        needles[secret] = secret
        for variant in b64_variants(secret):
            needles[variant] = f"{secret} (base64)"
    findings = []
    files = 0
    checked = 0
    for log in outputs(sys.argv[1:]):
        files += 1
        for number, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
            checked += 1
            for needle, secret in needles.items():
                if needle in line:
                    findings.append((f"{log}:{number}", f"secret {secret!r}", line))
            for what, shape in SHAPES.items():
                if shape.search(line):
                    findings.append((f"{log}:{number}", what, line))
    print(f"canary: {checked} lines in {files} files checked for {len(needles)} markers "
          f"and {len(SHAPES)} secret shapes")
    for where, what, line in findings[:50]:
        print(f"  {where}: {what}: {line[:300]}")
    if findings:
        print(f"canary: {len(findings)} findings")
        return 1
    print("canary: clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
