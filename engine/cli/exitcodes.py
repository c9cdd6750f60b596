"""Exit statuses of every command, documented in the README ("Exit codes")."""

OK = 0
#: the command ran and found a problem: error findings, default profile cannot run
FAILED_CHECK = 1
#: bad command line (argparse's own status)
USAGE = 2
#: generation: the answer hit the token budget or the context before the JSON closed
TRUNCATED = 3
#: generation: a degenerate repetition was detected and stopped
LOOPING = 4
#: generation cancelled
CANCELLED = 5
#: the model's answer did not validate as a ChangeProposal
INVALID = 6
#: an expected failure (config, model, backend, repository, network) with its message
ERROR = 7
#: publish: queued in the outbox (network failure), to be retried by `agent-tui sync`
QUEUED = 8
#: Ctrl-C
INTERRUPTED = 130
