"""Exit statuses, the same for every command (README and each command's --help give this table).

| status | meaning |
|---|---|
| 0 | done: every record was handled |
| 1 | the run could not start or could not finish (a bad model folder, an unreadable input, an output that cannot be written, an unreachable broker, a tampered model) |
| 2 | usage error: an unknown option, a bad value (click's own status) |
| 3 | the run finished, but some records were bad (reported on stderr or in --errors; the rest were scored) |
| 4 | a check you asked for failed (eval/bench --min-accuracy, --max-drop and other gates; info --verify) |
| 130 | interrupted (Ctrl-C) |

serve and bridge exit 0 after SIGTERM once in-flight work is finished and committed.
"""

from __future__ import annotations

OK = 0
FAILED = 1
USAGE = 2
BAD_RECORDS = 3
CHECK_FAILED = 4
INTERRUPTED = 130
