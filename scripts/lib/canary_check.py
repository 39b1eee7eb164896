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

usage: canary_check.py OUTPUT_LOG [SOURCE_DIR ...]
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


def main():
    log = pathlib.Path(sys.argv[1])
    sources = sys.argv[2:] or ["tests", "services/registry-server/tests", "crates/registry-testkit/src"]
    needles = {}
    for secret in markers(sources):
        needles[secret] = secret
        for variant in b64_variants(secret):
            needles[variant] = f"{secret} (base64)"
    text = log.read_text(errors="replace")
    lines = text.splitlines()
    findings = []
    for number, line in enumerate(lines, 1):
        for needle, secret in needles.items():
            if needle in line:
                findings.append((number, f"secret {secret!r}", line))
        for what, shape in SHAPES.items():
            if shape.search(line):
                findings.append((number, what, line))
    print(f"canary: {len(lines)} lines of output checked for {len(needles)} markers "
          f"and {len(SHAPES)} secret shapes")
    for number, what, line in findings[:50]:
        print(f"  line {number}: {what}: {line[:300]}")
    if findings:
        print(f"canary: {len(findings)} findings")
        return 1
    print("canary: clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
