"""The command line: a thin click layer over the library, one module per command.

Library errors (SentictlError) become a one-line message on stderr and exit status 1; click's
usage errors keep click's exit status 2. Commands are registered explicitly below; each module
imports only click at import time and loads its library (and any heavy stack) inside the command.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__
from ..console import notice
from ..errors import SentictlError
from ..exitcodes import INTERRUPTED, OK
from . import bench, bridge, cache, export, info, score, serve
from .options import CONTEXT


class Group(click.Group):
    """Maps library errors to exit 1 with a clean message, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SentictlError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            # `sentictl score big.txt | head` closed our stdout: not an error worth a traceback.
            sys.stderr.close()
            ctx.exit(OK)
        except KeyboardInterrupt:
            notice("interrupted")
            ctx.exit(INTERRUPTED)


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="sentictl")
def cli() -> None:
    """Financial-sentiment classification with ONNX Runtime: export, score, serve, bridge.

    \b
    Quick start:
      echo "Profit fell sharply and the company cut its outlook." | sentictl score
      sentictl export                       # FinBERT from the Hugging Face hub → models/finbert
      sentictl score headlines.txt > results.jsonl

    \b
    Exit status (every command): 0 done; 1 could not start or finish (a bad model folder, an
    unreadable input, an output that cannot be written, an unreachable broker); 2 usage error;
    3 finished, but some records were bad; 4 a check you asked for failed (eval gates,
    info --verify); 130 interrupted. serve and bridge exit 0 after SIGTERM.

    Every option can also be set with a SENTICTL_* environment variable, shown in each --help.
    """


for _command in (
    export.export,
    score.score,
    serve.serve_command,
    bridge.bridge_command,
    cache.cache,
    info.info,
    bench.bench_command,
    bench.eval_command,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="sentictl")
