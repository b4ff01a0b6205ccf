"""Runs moto's server (pinned in scripts/tools.sh) with its DynamoDB requests applied one at a time.

DynamoDB applies each request atomically: a conditional write checks and writes as one step, and a
transaction that is cancelled changes nothing. moto serves requests on threads, and its DynamoDB model
is not safe for that: a conditional PutItem checks, then writes, with no lock between, and a cancelled
TransactWriteItems puts back a copy of every table it touched taken when it began, erasing whatever
other requests wrote meanwhile (and copying a table while another request writes it fails with HTTP 500,
"dictionary changed size during iteration"). Under concurrent steps that loses acknowledged saga writes:
a chaos day on moto failed to balance now and then for that alone (README, "Tests"). One lock around DynamoDB's requests gives back
the atomicity the product relies on; the other services keep moto's threads (an SQS long poll must not
hold up the rest).

Two costs of moto's server that are not the emulation are also taken away, since the tests are bound by
moto's one process (about 93 s of its CPU in a 118 s run of the orders tests): to find the service of
each request it listed moto's package directory and checked every entry with a stat, under the
dispatcher's one lock, twice a request; the list is the installed package's, so it is read once here.
And every request was logged as a line of its own (method, path `/`, status): werkzeug's request log is
left at warnings, so errors still reach the log.

Usage: the venv's python scripts/moto_server.py -H 127.0.0.1 -p PORT (moto_server's own arguments).
"""

import logging
import sys
import threading

from moto import backends
from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _MODULES
logging.getLogger("werkzeug").setLevel(logging.WARNING)

_ONE_AT_A_TIME = threading.Lock()
_call_action = DynamoHandler.call_action


def _atomic_call_action(self):
    with _ONE_AT_A_TIME:
        return _call_action(self)


DynamoHandler.call_action = _atomic_call_action

if __name__ == "__main__":
    sys.exit(main())
