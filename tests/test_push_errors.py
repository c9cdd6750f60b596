"""Which push failures wait in the outbox (the network) and which are refusals.

A refusal is reported and the job fails; a network failure keeps the job for ``sync``. An
HTTP 401/403 is a refusal only in the words git uses for it: a temporary directory such as
``/tmp/pytest-403/`` or a port such as 40305 in a message is not one.
"""

from __future__ import annotations

import pytest

from engine.publish.gitops import classify_push_error

UNREACHABLE = (
    "fatal: '/tmp/pytest-of-root/pytest-403/demo/origin.git' does not appear to be a git "
    "repository\nfatal: Could not read from remote repository."
)


@pytest.mark.parametrize(
    ("stderr", "network"),
    [
        (UNREACHABLE, True),
        (UNREACHABLE.replace("403", "401"), True),
        ("fatal: unable to access 'https://h:40305/x.git/': Failed to connect", True),
        (
            "fatal: unable to access 'https://github.com/o/r.git/': "
            "The requested URL returned error: 403",
            False,
        ),
        ("remote: HTTP 401\nfatal: Authentication failed", False),
        ("error: RPC failed; HTTP 403 curl 22", False),
        ("remote: 403 Forbidden\nfatal: unable to access", False),
        (" ! [rejected]        main -> main (non-fast-forward)", False),
        ("", True),
    ],
)
def test_push_errors_are_classified(stderr: str, network: bool) -> None:
    assert classify_push_error(stderr) is network
