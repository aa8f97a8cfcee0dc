"""``kdanomaly review RUN``: review an inspection run's queue in the browser; decisions go to RUN/decisions.jsonl."""

from __future__ import annotations

import argparse
import webbrowser
from collections.abc import Sequence
from pathlib import Path

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def review_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdanomaly review", description=__doc__)
    parser.add_argument("run", type=Path, help="folder of a finished `kdanomaly inspect --out` run")
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free port)")
    parser.add_argument("--open", action="store_true", help="open the page in the default browser")
    return parser


def review_main(argv: Sequence[str]) -> int:
    args = review_parser().parse_args(argv)
    from kdanomaly.review.server import serve

    try:
        server = serve(args.run, args.host, args.port)
    except ValueError as error:
        raise SystemExit(f"kdanomaly review: {error}") from error
    except OSError as error:
        raise SystemExit(
            f"kdanomaly review: cannot listen on {args.host}:{args.port} ({error}); try another --port (0: any free)"
        ) from error
    with server:
        queued = len(server.run.queue)
        print(f"reviewing {queued} images of {args.run}; decisions go to {args.run / 'decisions.jsonl'}")
        if args.host not in LOOPBACK_HOSTS:
            print(f"warning: listening on {args.host}: anyone who can reach it and has the address can review")
        print(f"open {server.url}   (Ctrl-C stops the server)", flush=True)
        if args.open:
            webbrowser.open(server.url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped")
    return 0
